// Executing one task function and turning what happened into an outcome.
//
// Shared by the worker (child process or thread) and by the API server
// (immediate tasks). The caller owns the claim on the task; this code only
// runs the function and reports.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "taskmill/deadline.h"
#include "taskmill/registry.h"
#include "taskmill/task.h"

namespace taskmill::worker {

struct Outcome {
  TaskState state = TaskState::kFailed;  // kCompleted, kFailed or kCanceled
  nlohmann::json result;                 // the function's return value if completed
  nlohmann::json error;                  // {"description", "traceback"} or {"reason"}
};

// Receives progress reports (already JSON objects of Pulp's progress shape:
// message, code, state, total, done, suffix).
using ProgressSink = std::function<void(const nlohmann::json& report)>;

// Runs the registered function of `task` on the calling thread and catches
// everything it throws. Unknown names fail with a clear description.
// `progress` is called on this thread, during the call only.
Outcome RunFunction(const TaskRegistry& registry, const Task& task, const std::atomic<bool>& cancel,
                    const ProgressSink& progress);

// The outcome of an immediate task that ran past its time limit: failed,
// "Immediate task <id> (type: <name>) timed out after N seconds.".
Outcome TimedOut(const Task& task, double seconds);

// A fixed set of threads that run task functions for one owner (a worker's
// in-process slots): as many threads as the owner has slots, so a new task
// always finds a free thread (a thread is busy only while its task holds a
// slot). Thread creation per task cost a worker about a tenth of a core at
// 2,000 tasks/s. One eventfd, readable when any job has ended, stands in for
// a pipe per task.
class ThreadPool {
 public:
  // Starts `threads` threads. Throws std::system_error if they or the
  // eventfd cannot be created.
  explicit ThreadPool(int threads);
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;
  // Joins the threads if none is running a job; otherwise (a job that would
  // not stop, at an owner's abandoning shutdown) detaches them: they end
  // with the process.
  ~ThreadPool();

  // Runs `job` on a free thread (queued if none is free).
  void Submit(std::function<void()> job);
  // Readable once a job has ended since the last ClearWake().
  int wake_fd() const;
  void ClearWake();

 private:
  struct State;
  std::shared_ptr<State> state_;
  std::vector<std::thread> threads_;
};

// One task function running on a thread of its own: the only way taskmill
// runs a function on a thread (the worker's in-process and immediate runs,
// the API server's immediate tasks).
//
// A thread cannot be killed. So the function, the task and everything the
// thread touches (cancel flag, progress, outcome, wake-up pipe) are copied
// into a block owned jointly by this object and the thread: the thread
// reads nothing of the caller's, and the registry and the caller may go
// away before it returns. Whoever owns the task must keep it (and its
// resources) until done() is true: a run past its time limit is told to
// stop with Cancel() and then waited for, never forgotten.
class ThreadRun {
 public:
  // Starts `task`'s function (looked up in `registry` and copied) on a new
  // thread. An unknown name is done at once with a failed outcome. Throws
  // std::system_error if no thread can be created.
  ThreadRun(const TaskRegistry& registry, Task task);
  // The same on a thread of `pool` (which must outlive this object and have
  // a free thread: see ThreadPool); wake_fd() is then the pool's.
  ThreadRun(const TaskRegistry& registry, Task task, ThreadPool& pool);
  ThreadRun(const ThreadRun&) = delete;
  ThreadRun& operator=(const ThreadRun&) = delete;
  // Joins the thread if the function has returned. Otherwise the thread is
  // detached and ends on its own when the function returns; only a process
  // that is exiting (and has left its tasks to the janitor) should let that
  // happen.
  ~ThreadRun();

  const Task& task() const;
  // From now on the function's TaskContext::canceled() is true.
  void Cancel();
  // True once the function has returned (its outcome is then final).
  bool done() const;
  // Waits until the function has returned or `until` passes; returns done().
  bool Wait(Deadline until);
  // A descriptor that becomes readable once the function has returned, for
  // poll(); owned by this object.
  int wake_fd() const;
  // The progress reports made since the last call, the latest one per code.
  std::map<std::string, nlohmann::json> TakeProgress();
  // What the function returned or threw. Only once done().
  Outcome outcome() const;

 private:
  struct Shared;
  std::shared_ptr<Shared> shared_;
  std::thread thread_;
};

}  // namespace taskmill::worker
