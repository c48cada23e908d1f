// Immediate tasks in the API process: dispatch with this process as the
// owner, run on a thread under the timeout (api/immediate.h), record the
// outcome and release; and the sweep of those whose outcome was lost.
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "api/server_impl.h"
#include "service/task_service.h"

namespace taskmill::api {

InflightMark::InflightMark(std::mutex& mu, std::set<std::string>& set, std::string id)
    : mu_(mu), set_(set), id_(std::move(id)) {
  std::lock_guard<std::mutex> lock(mu_);
  set_.insert(id_);
}

InflightMark::~InflightMark() {
  std::lock_guard<std::mutex> lock(mu_);
  set_.erase(id_);
}

Task Server::RunningImmediate(const std::string& id, const DispatchRequest& request,
                              const std::string& app_id) {
  Task task;
  task.id = id;
  task.name = request.name;
  task.args = request.args;
  task.kwargs = request.kwargs;
  task.exclusive_resources = request.exclusive_resources;
  task.shared_resources = request.shared_resources;
  task.immediate = true;
  task.deferred = request.deferred;
  task.state = TaskState::kRunning;
  task.app_lock = app_id;
  return task;
}

Result<std::string> Server::DispatchOne(pg::Connection& conn, const DispatchRequest& original) {
  // An immediate task runs here only if its function is declared safe to
  // run in this process and not too many overdue ones are still running;
  // otherwise it waits for a worker, as a deferred one would.
  bool run_inline = original.immediate && immediate_runs_.MayRunInline(original.name);
  const DispatchRequest* request = &original;
  DispatchRequest for_workers;
  if (original.immediate && !run_inline && !original.deferred) {
    for_workers = original;
    for_workers.deferred = true;
    request = &for_workers;
  }
  std::optional<std::string> run_here;
  if (run_inline) run_here = AppId();
  auto out = service::Dispatch(conn, *request, run_here, DeadlineIn(kQueryTimeout));
  if (!out.ok() && run_here && out.error().code == ErrorCode::kFenced) {
    // We were declared dead (our row is gone, so dispatch refused us as the
    // owner): register again and dispatch once more.
    run_here = ReRegister(conn, *run_here);
    out = service::Dispatch(conn, *request, run_here, DeadlineIn(kQueryTimeout));
  }
  if (!out.ok()) {
    // A task group or parent that does not exist is a bad request body, not
    // a missing resource at this URL.
    if (out.error().code == ErrorCode::kNotFound) {
      return MakeError(ErrorCode::kInvalidArgument, out.error().message);
    }
    return out.error();
  }
  dispatched_.Add({}).Increment();
  if (request->immediate) {
    if (run_here && out->state == TaskState::kRunning) {
      RunImmediate(conn, RunningImmediate(out->id, *request, *run_here), *run_here);
    } else {
      immediate_.Add({{"outcome", out->state == TaskState::kCanceled ? "refused" : "deferred"}})
          .Increment();
    }
  }
  return out->id;
}

TaskState Server::RunImmediate(pg::Connection& conn, const Task& task, const std::string& app_id) {
  InflightMark mark(inflight_mu_, inflight_, task.id);
  auto o = immediate_runs_.Run(task);
  if (!o) {
    // Still running past its timeout: recorded when it returns.
    immediate_.Add({{"outcome", "overdue"}}).Increment();
    return TaskState::kRunning;
  }
  auto final_state = FinishImmediate(conn, task.id, app_id, *o);
  TaskState st = final_state.value_or(o->state);
  immediate_.Add({{"outcome", std::string(TaskStateName(st))}}).Increment();
  return st;
}

std::optional<TaskState> Server::RecordOverdue(const Task& task, const worker::Outcome& outcome) {
  auto conn = pool_.Acquire(DeadlineIn(kAcquireTimeout));
  auto st = FinishImmediate(*conn, task.id, task.app_lock.value_or(""), outcome);
  immediate_.Add({{"outcome", std::string(TaskStateName(st.value_or(outcome.state)))}}).Increment();
  return st;
}

std::optional<TaskState> Server::FinishImmediate(pg::Connection& conn, const std::string& task_id,
                                                 const std::string& app_id,
                                                 const worker::Outcome& outcome) {
  Deadline give_up = DeadlineIn(std::chrono::seconds(60));
  std::optional<TaskState> final_state;
  for (int attempt = 0;; ++attempt) {
    try {
      if (!conn.ok()) conn = pg::Connection::Open(options_.database_url, DeadlineIn(kQueryTimeout));
      final_state = store::FinishTask(conn, task_id, app_id, outcome.state, outcome.result,
                                      outcome.error, DeadlineIn(kQueryTimeout));
      break;
    } catch (const pg::Error& e) {
      if (!e.retryable() || Expired(give_up)) {
        spdlog::error(
            "could not record the outcome of immediate task {}: {}; it stays running "
            "until the sweep or the janitor ends it",
            task_id, e.what());
        throw;
      }
      if (attempt == 0)
        spdlog::warn("recording immediate task {}: {}; retrying", task_id, e.what());
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }
  service::ReleaseAfterFinish(conn, DeadlineIn(kQueryTimeout));
  return final_state;
}

void Server::SweepLostImmediates(pg::Connection& conn) {
  std::string app_id = AppId();
  // Old enough that its dispatch answer, had it arrived, would have put it in
  // the in-flight set long ago.
  double min_age = std::chrono::duration<double>(kQueryTimeout).count() + 5;
  for (const auto& id :
       store::OwnedTasksOlderThan(conn, app_id, min_age, 100, DeadlineIn(kQueryTimeout))) {
    {
      std::lock_guard<std::mutex> lock(inflight_mu_);
      if (inflight_.count(id) != 0) continue;
    }
    if (immediate_runs_.Owns(id)) continue;
    nlohmann::json error = {
        {"description",
         "The API process lost track of this immediate task (a database fault); its "
         "outcome is unknown."}};
    spdlog::warn("finalising immediate task {}: its outcome was never recorded", id);
    service::FinishAndRelease(conn, id, app_id, TaskState::kFailed, nullptr, error,
                              DeadlineIn(kQueryTimeout));
  }
}

}  // namespace taskmill::api
