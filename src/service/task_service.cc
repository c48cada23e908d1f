#include "service/task_service.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace taskmill::service {

Status CheckDispatchRequest(const DispatchRequest& request) {
  if (!request.args.is_array()) {
    return MakeError(ErrorCode::kInvalidArgument, "args must be a JSON array");
  }
  if (!request.kwargs.is_object()) {
    return MakeError(ErrorCode::kInvalidArgument, "kwargs must be a JSON object");
  }
  return Status::Ok();
}

Result<DispatchOutcome> Dispatch(pg::Connection& conn, const DispatchRequest& request,
                                 const std::optional<std::string>& run_here, Deadline deadline) {
  if (auto st = CheckDispatchRequest(request); !st.ok()) return st.error();
  return store::DispatchTask(conn, request, run_here, deadline);
}

Result<std::vector<std::string>> DispatchMany(pg::Connection& conn,
                                              const std::vector<DispatchRequest>& requests,
                                              Deadline deadline) {
  for (size_t i = 0; i < requests.size(); ++i) {
    if (auto st = CheckDispatchRequest(requests[i]); !st.ok()) {
      return MakeError(st.error().code, fmt::format("tasks[{}]: {}", i, st.error().message));
    }
  }
  return store::DispatchMany(conn, requests, deadline);
}

Result<std::vector<std::string>> DispatchManyJson(pg::Connection& conn, const nlohmann::json& batch,
                                                  Deadline deadline) {
  if (batch.is_array()) {
    for (size_t i = 0; i < batch.size(); ++i) {
      if (!batch[i].is_object()) {
        return MakeError(ErrorCode::kInvalidArgument,
                         fmt::format("tasks[{}]: a task must be a JSON object", i));
      }
    }
  }
  return store::DispatchManyJson(conn, batch, deadline);
}

int ReleaseAfterFinish(pg::Connection& conn, Deadline deadline) {
  try {
    return store::ProcessReleases(conn, deadline);
  } catch (const DatabaseError& e) {
    spdlog::warn("unblocking behind finished tasks: {} (the next claim of a worker does it)",
                 e.what());
    return 0;
  }
}

Result<TaskState> Cancel(pg::Connection& conn, const std::string& task_id, Deadline deadline) {
  auto state = store::CancelTask(conn, task_id, deadline);
  // Only a task canceled while waiting released its resources; a canceling
  // one keeps them until its owner has stopped it.
  if (state.ok() && *state == TaskState::kCanceled) ReleaseAfterFinish(conn, deadline);
  return state;
}

Result<int> CancelGroup(pg::Connection& conn, const std::string& group_id, Deadline deadline) {
  auto n = store::CancelTaskGroup(conn, group_id, deadline);
  if (n.ok()) ReleaseAfterFinish(conn, deadline);
  return n;
}

std::optional<TaskState> FinishAndRelease(pg::Connection& conn, const std::string& task_id,
                                          const std::string& app_id, TaskState state,
                                          const nlohmann::json& result, const nlohmann::json& error,
                                          Deadline deadline) {
  auto final_state = store::FinishTask(conn, task_id, app_id, state, result, error, deadline);
  // Only after the finish committed can the tasks queued behind it be judged
  // free.
  ReleaseAfterFinish(conn, deadline);
  return final_state;
}

std::vector<pg::Connection::Statement> FinishAndReleaseStatements(
    const std::string& app_id, const std::vector<store::TaskOutcome>& outcomes) {
  std::vector<pg::Connection::Statement> statements;
  statements.reserve(outcomes.size() + 1);
  for (const auto& o : outcomes) {
    statements.push_back(store::FinishStatement(o.task_id, app_id, o.state, o.result, o.error));
  }
  statements.push_back(store::ProcessReleasesStatement());
  return statements;
}

Status DeleteTask(pg::Connection& conn, const std::string& task_id, Deadline deadline) {
  return store::DeleteFinishedTask(conn, task_id, deadline);
}

Result<int64_t> Purge(pg::Connection& conn, const PurgeRequest& request, Deadline deadline) {
  if (request.states.empty()) {
    return MakeError(ErrorCode::kInvalidArgument, "states must be a list of final states");
  }
  for (const auto& name : request.states) {
    auto state = ParseTaskState(name);
    if (!state || !IsFinal(*state)) {
      return MakeError(
          ErrorCode::kInvalidArgument,
          fmt::format("\"{}\" is not a final state (completed, failed, canceled)", name));
    }
  }
  return store::PurgeTasks(conn, request.finished_before, request.states, deadline);
}

Status CheckLiveness(double ttl_seconds, double heartbeat_seconds) {
  if (ttl_seconds > heartbeat_seconds) return Status::Ok();
  return MakeError(ErrorCode::kInvalidArgument,
                   fmt::format("--ttl ({}) must be longer than --heartbeat-interval ({})",
                               ttl_seconds, heartbeat_seconds));
}

}  // namespace taskmill::service
