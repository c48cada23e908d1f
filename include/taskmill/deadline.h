// Deadline: the point in time by which a blocking call must give up.
//
// Every call in taskmill that can block (a query, a connect, waiting for a
// child process, waiting for a notification) takes a Deadline rather than a
// timeout, so that a chain of calls shares one budget instead of each adding
// its own.
#pragma once

#include <chrono>

namespace taskmill {

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;

// A deadline `d` from now.
inline Deadline DeadlineIn(Clock::duration d) { return Clock::now() + d; }

// Milliseconds left until `deadline`, clamped at zero; for poll(2).
inline int MillisLeft(Deadline deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  if (left.count() <= 0) return 0;
  if (left.count() > 24 * 3600 * 1000) return 24 * 3600 * 1000;
  return static_cast<int>(left.count());
}

inline bool Expired(Deadline deadline) { return Clock::now() >= deadline; }

}  // namespace taskmill
