#include "taskmill/task.h"

#include <array>

namespace taskmill {

namespace {
constexpr std::array<std::string_view, 6> kStateNames = {"waiting", "running",   "completed",
                                                         "failed",  "canceling", "canceled"};
}  // namespace

std::string_view TaskStateName(TaskState state) { return kStateNames[static_cast<size_t>(state)]; }

std::optional<TaskState> ParseTaskState(std::string_view name) {
  for (size_t i = 0; i < kStateNames.size(); ++i) {
    if (kStateNames[i] == name) return static_cast<TaskState>(i);
  }
  return std::nullopt;
}

}  // namespace taskmill
