// A reference model of Pulp's unblocking scan, for tests that check the
// database's ready set against it: walk the unfinished tasks in creation
// order, reserving every task's resources whether it may run or not; a task
// is ready when nothing reserved before it conflicts.
#pragma once

#include <set>
#include <string>
#include <vector>

namespace taskmill::testing {

struct ModelTask {
  std::string id;
  std::set<std::string> x, s;  // exclusive and shared resources (disjoint)
  bool finished = false;
  bool running = false;
};

// The ids of the unfinished tasks that are ready (or running), given
// `tasks` in creation order.
inline std::set<std::string> ModelReady(const std::vector<ModelTask>& tasks) {
  std::set<std::string> taken_x, taken_s, ready;
  for (const auto& t : tasks) {
    if (t.finished) continue;
    bool free = true;
    for (const auto& r : t.x) free = free && !taken_x.count(r) && !taken_s.count(r);
    for (const auto& r : t.s) free = free && !taken_x.count(r);
    if (free) ready.insert(t.id);
    taken_x.insert(t.x.begin(), t.x.end());
    taken_s.insert(t.s.begin(), t.s.end());
  }
  return ready;
}

}  // namespace taskmill::testing
