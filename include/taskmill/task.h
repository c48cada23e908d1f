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

// The Pulp-compatible JSON of a task: pulp_href, pulp_created, state, name,
// logging_cid, unblocked_at, started_at, finished_at, error, worker,
// parent_task, task_group, reserved_resources_record (exclusive names plain,
// shared ones prefixed "shared:"), result, progress_reports, and taskmill's
// own additions (immediate, deferred, worker_name). Hrefs are under
// `api_root` (default "/pulp/api/v3/").
nlohmann::json TaskToJson(const Task& task, std::string_view api_root = "/pulp/api/v3/");

// A process that runs tasks: a worker or an API server.
struct App {
  std::string id;
  std::string app_type;  // "worker" or "api"
  std::string name;
  std::string hostname;
  int pid = 0;
  std::string version;
  std::string started_at;
  std::string last_heartbeat;
  double ttl_seconds = 0;
  bool online = false;
  std::optional<std::string> current_task;  // the oldest of current_tasks
  int slots = 1;                            // tasks it runs at once
  std::vector<std::string> current_tasks;   // every task it runs, oldest first
};

nlohmann::json AppToJson(const App& app, std::string_view api_root = "/pulp/api/v3/");

}  // namespace taskmill
