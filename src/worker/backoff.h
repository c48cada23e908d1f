// Capped, jittered exponential backoff: how taskmill waits before trying a
// database again, written once for every retry loop of the worker.
#pragma once

#include <algorithm>
#include <chrono>
#include <random>

#include "taskmill/deadline.h"

namespace taskmill::worker {

inline Clock::duration SecondsToDuration(double seconds) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

// `base` seconds times a uniform factor in [low, high).
inline Clock::duration Jittered(std::mt19937_64& rng, double base, double low = 0.5,
                                double high = 1.5) {
  return SecondsToDuration(base * std::uniform_real_distribution<double>(low, high)(rng));
}

class Backoff {
 public:
  // First wait about `initial` seconds, doubling up to `max` (each +-50%).
  Backoff(double initial, double max) : initial_(initial), max_(max), next_(initial) {}

  Clock::duration Next(std::mt19937_64& rng) {
    auto wait = Jittered(rng, next_);
    next_ = std::min(next_ * 2, max_);
    return wait;
  }
  void Reset() { next_ = initial_; }

 private:
  double initial_;
  double max_;
  double next_;
};

}  // namespace taskmill::worker
