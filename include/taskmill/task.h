// Task: one unit of work as stored in PostgreSQL, and its lifecycle states.
//
// A task names a registered function, carries JSON args and kwargs, and holds
// sets of exclusive and shared resources. Two tasks conflict when one holds a
// resource exclusively and the other holds it at all; conflicting tasks run one
// at a time in creation order. The database is the only owner of task state:
// a Task value is a snapshot read from it.
//
// States and who moves a task between them (all guarded SQL updates):
//   waiting   -> running    a worker claims it (or the dispatcher, for an
//                           immediate task whose resources are free)
//   waiting   -> canceled   cancel before it started; resources pass on at once
//   running   -> completed  the owner records the function's result
//   running   -> failed     the owner records an error, or the janitor finds the
//                           owner dead ("Worker has gone missing.")
//   running   -> canceling  cancel while running; the owner stops the function
//   canceling -> canceled   the owner (or the janitor, if the owner died)
// completed, failed and canceled are final.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace taskmill {

enum class TaskState { kWaiting, kRunning, kCompleted, kFailed, kCanceling, kCanceled };

std::string_view TaskStateName(TaskState state);
std::optional<TaskState> ParseTaskState(std::string_view name);
inline bool IsFinal(TaskState s) {
  return s == TaskState::kCompleted || s == TaskState::kFailed || s == TaskState::kCanceled;
}

struct Task {
  std::string id;  // uuid
  int64_t seq = 0;
  std::string name;
  nlohmann::json args = nlohmann::json::array();
  nlohmann::json kwargs = nlohmann::json::object();
  std::vector<std::string> exclusive_resources;
  std::vector<std::string> shared_resources;
  TaskState state = TaskState::kWaiting;
  // ISO 8601 UTC timestamps with microseconds, e.g. "2026-11-24T09:13:23.123456Z".
  std::string created_at;
  std::optional<std::string> unblocked_at;
  std::optional<std::string> started_at;
  std::optional<std::string> finished_at;
  std::optional<std::string> app_lock;     // id of the owning process
  std::optional<std::string> worker_name;  // name of the process that ran it
  nlohmann::json result;                   // null if none
  nlohmann::json error;                    // null or {"description", "traceback"} / {"reason"}
  nlohmann::json progress_reports = nlohmann::json::array();
  bool immediate = false;
  bool deferred = true;
  std::optional<std::string> parent_task;
  std::optional<std::string> task_group;
  std::string logging_cid;
};

}  // namespace taskmill
