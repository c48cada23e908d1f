// The task service: the rules of taskmill's doors written once.
//
// The CLI, the REST API, the C++ Client (include/taskmill/client.h) and
// taskmill-bench all create, cancel and delete tasks through these
// functions, so that each rule has one home:
//   * the checks of a dispatch request that the SQL functions leave to the
//     caller (args a JSON array, kwargs a JSON object);
//   * cancel-then-release: a task canceled while waiting gives up its
//     resources at once, and the tasks queued behind it are let through now
//     (store::ProcessReleases, in a transaction of its own after the
//     cancel's), not at the next claim of some worker;
//   * the same after a task this process owns finishes (immediate tasks);
//   * group cancel, delete and purge, with their checks;
//   * the TTL-versus-heartbeat check of a process's liveness settings.
// Every function runs on a connection the caller owns and returns expected
// failures as Result errors; database faults are thrown as the store throws
// them (taskmill/errors.h). No SQL is written here: the store has it all.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "pg/connection.h"
#include "store/task_store.h"
#include "taskmill/deadline.h"
#include "taskmill/dispatch.h"
#include "taskmill/result.h"
#include "taskmill/task.h"

namespace taskmill::service {

// --- dispatch ----------------------------------------------------------------

// kInvalidArgument "args must be a JSON array" / "kwargs must be a JSON
// object" if the request's arguments have the wrong type; OK otherwise (the
// rest is checked by taskmill.dispatch_task).
Status CheckDispatchRequest(const DispatchRequest& request);

// CheckDispatchRequest, then store::DispatchTask. `run_here`: the id of the
// calling process for an immediate task it will run itself if free.
Result<DispatchOutcome> Dispatch(pg::Connection& conn, const DispatchRequest& request,
                                 const std::optional<std::string>& run_here, Deadline deadline);

// CheckDispatchRequest for each (its message prefixed "tasks[i]: "), then
// store::DispatchMany: all or nothing.
Result<std::vector<std::string>> DispatchMany(pg::Connection& conn,
                                              const std::vector<DispatchRequest>& requests,
                                              Deadline deadline);

// A batch already in the JSON form of taskmill.dispatch_many (the CLI's
// --file, the benchmark): every element must be a JSON object ("tasks[i]: a
// task must be a JSON object"); the SQL function checks the rest.
Result<std::vector<std::string>> DispatchManyJson(pg::Connection& conn, const nlohmann::json& batch,
                                                  Deadline deadline);

// --- cancel, finish, release -------------------------------------------------

// Cancels a task: kCanceled (it was waiting; the tasks behind it were let
// through) or kCanceling (its owner is stopping it). kNotFound for an
// unknown id, kConflict for a finished task (nothing changes).
Result<TaskState> Cancel(pg::Connection& conn, const std::string& task_id, Deadline deadline);

// Cancels every unfinished task of a group, then lets through what queued
// behind them. Returns how many were canceled or are being canceled.
Result<int> CancelGroup(pg::Connection& conn, const std::string& group_id, Deadline deadline);

// Lets through the tasks queued behind tasks that finished or were canceled
// in transactions that have committed (store::ProcessReleases). Best
// effort: a database fault is logged and swallowed, because the next claim
// of any worker does the same work. Returns how many were unblocked (0 on a
// fault).
int ReleaseAfterFinish(pg::Connection& conn, Deadline deadline);

// Records the outcome of a task `app_id` owns (store::FinishTask), then,
// once that committed, ReleaseAfterFinish. Returns the final state, or
// nullopt if the task is no longer ours (nothing was written). A fault of
// the finish is thrown.
std::optional<TaskState> FinishAndRelease(pg::Connection& conn, const std::string& task_id,
                                          const std::string& app_id, TaskState state,
                                          const nlohmann::json& result, const nlohmann::json& error,
                                          Deadline deadline);

// The same as one pipeline: one finish per outcome (each its own
// transaction), then the release. The result of statement i < outcomes.size()
// is the final state of outcome i (NULL: no longer ours).
std::vector<pg::Connection::Statement> FinishAndReleaseStatements(
    const std::string& app_id, const std::vector<store::TaskOutcome>& outcomes);

// --- delete, purge -----------------------------------------------------------

// Deletes a finished task; kNotFound, or kConflict if it is unfinished.
Status DeleteTask(pg::Connection& conn, const std::string& task_id, Deadline deadline);

struct PurgeRequest {
  // timestamptz input (ISO 8601 with a zone); nullopt: 30 days ago.
  std::optional<std::string> finished_before;
  // State names, final states only.
  std::vector<std::string> states = {"completed"};
};
// Deletes the tasks in `request.states` finished before the date; returns
// how many. kInvalidArgument ("\"running\" is not a final state
// (completed, failed, canceled)") for the first name that is not a final
// state, or for no state; nothing is deleted then.
Result<int64_t> Purge(pg::Connection& conn, const PurgeRequest& request, Deadline deadline);

// --- process settings --------------------------------------------------------

// kInvalidArgument "--ttl (T) must be longer than --heartbeat-interval (H)"
// unless ttl_seconds > heartbeat_seconds: a process must be able to
// heartbeat within its TTL to stay alive.
Status CheckLiveness(double ttl_seconds, double heartbeat_seconds);

}  // namespace taskmill::service
