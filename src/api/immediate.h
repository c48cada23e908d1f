// Immediate tasks run inside the API process, and what becomes of one that
// runs past its time limit.
//
// An immediate task dispatched with this process as its owner is inserted
// `running`, holding its resources, and its function runs on a thread
// (worker::ThreadRun) while the request waits, at most the immediate timeout
// plus a short grace after the cancel flag is raised. A function still
// running then cannot be stopped (a thread cannot be killed), so its task is
// not finished: it stays `running` and owned by this process, its resources
// held, and the request answers with the task still running. This object
// keeps such an overdue run and, once its function has really returned,
// records it failed ("Immediate task ... timed out after N seconds.") and
// releases its resources. The number of overdue runs is bounded: at the
// bound, MayRunInline() says no and new immediate tasks go to workers.
#pragma once

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "taskmill/deadline.h"
#include "taskmill/registry.h"
#include "taskmill/task.h"
#include "worker/executor.h"

namespace taskmill::api {

class ImmediateRunner {
 public:
  // Records the outcome of a task this process owns (finish, then release)
  // and returns its final state, or nullopt if the task is no longer ours.
  // May throw (a database fault); the runner then tries again later.
  using Recorder =
      std::function<std::optional<TaskState>(const Task& task, const worker::Outcome& outcome)>;

  // `registry` must outlive this object. `timeout_seconds`: the immediate
  // timeout. `max_overdue`: how many overdue runs may exist before new
  // immediate tasks stop running here. Starts the thread that waits for
  // overdue runs.
  ImmediateRunner(const TaskRegistry& registry, double timeout_seconds, size_t max_overdue,
                  Recorder record);
  ImmediateRunner(const ImmediateRunner&) = delete;
  ImmediateRunner& operator=(const ImmediateRunner&) = delete;
  // Stops the waiting thread. Overdue runs still going are left to the
  // process's exit (their threads are detached); call Drain() first.
  ~ImmediateRunner();

  // Whether an immediate task of function `name` may run in this process
  // now: the function is registered inline_ok, and fewer than max_overdue
  // runs are overdue. Otherwise it is to be dispatched for a worker. (Up to
  // one request per HTTP thread can pass this at once, so overdue runs stay
  // below max_overdue plus the HTTP threads.)
  bool MayRunInline(const std::string& name) const;

  // Runs `task` (dispatched `running`, owned by this process as
  // task.app_lock) on a thread under the timeout. Returns the outcome if
  // the function returned in time (or within the grace after its cancel;
  // then the outcome is the timeout's): the caller records it. Returns
  // nullopt if it is overdue: this object then owns the run and records it
  // once the function has returned.
  std::optional<worker::Outcome> Run(const Task& task);

  // True while `task_id` is an overdue run of this object (its outcome is
  // still to be recorded).
  bool Owns(const std::string& task_id) const;
  size_t overdue() const;
  // Waits until every overdue run has been recorded or `until` passes;
  // returns how many are left.
  size_t Drain(Deadline until);

 private:
  void Reap();

  const TaskRegistry& registry_;
  const double timeout_seconds_;
  const size_t max_overdue_;
  const Recorder record_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<worker::ThreadRun>> overdue_;  // under mu_
  bool stop_ = false;                                        // under mu_
  std::thread reaper_;
};

}  // namespace taskmill::api
