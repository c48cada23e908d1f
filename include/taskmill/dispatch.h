// Dispatch: creating a task.
//
// Three doors, one semantics (all end in the SQL function
// taskmill.dispatch_task defined in migrations/0001_init.sql):
//   * C++:  taskmill::Client::Dispatch(request) (include/taskmill/client.h);
//   * SQL:  SELECT taskmill.dispatch(name, args, kwargs, exclusive, shared),
//           inside the caller's own transaction (READ COMMITTED);
//   * CLI:  taskmill dispatch NAME [--args JSON] [--kwargs JSON]
//           [--exclusive R]... [--shared R]...
//
// Contract: the task is visible to workers when the dispatching transaction
// commits. Among tasks that conflict, creation order is the order in which
// their dispatches took the resources' insert locks; a task never starts
// before an earlier conflicting task has finished. Dispatches that share no
// resource never wait on each other.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "taskmill/task.h"

namespace taskmill {

struct DispatchRequest {
  std::string name;                               // a registered function (taskmill.task_function)
  nlohmann::json args = nlohmann::json::array();  // must be an array
  nlohmann::json kwargs = nlohmann::json::object();  // must be an object
  // Names: 1-512 bytes, no control characters, at most 256 of each kind. A
  // name in both lists is exclusive. Order and duplicates do not matter.
  std::vector<std::string> exclusive_resources;
  std::vector<std::string> shared_resources;
  // Short task that may run in the dispatching process (see the API server).
  bool immediate = false;
  // If it cannot run at once: wait for a worker (true) or be canceled.
  // Must be true unless immediate.
  bool deferred = true;
  std::optional<std::string> task_group;
  std::optional<std::string> parent_task;
  std::string logging_cid;  // empty: a fresh one is made
};

struct DispatchOutcome {
  std::string id;
  TaskState state = TaskState::kWaiting;
  bool ready = false;  // its resources were free at dispatch
};

}  // namespace taskmill
