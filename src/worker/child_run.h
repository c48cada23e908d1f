// One task function running in a forked child process of its own: the
// worker's default way to run a task, so that a crash, a leak or a stop of
// the task cannot hurt the worker or its other tasks.
//
// The child runs the function and sends its progress and outcome on a pipe
// (worker/child_channel.h); SIGUSR1 tells it the task was canceled
// (TaskContext::canceled() turns true); it gets SIGKILL if the worker dies.
// The worker owns the child: the destructor kills and reaps a child still
// running.
#pragma once

#include <sys/types.h>

#include <map>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "taskmill/registry.h"
#include "taskmill/task.h"
#include "worker/child_channel.h"
#include "worker/executor.h"

namespace taskmill::worker {

class ChildRun {
 public:
  // Forks; the child runs `task`'s function from `registry` and exits
  // without returning here. Throws std::system_error if no pipe or process
  // can be created.
  ChildRun(const TaskRegistry& registry, const Task& task);
  ChildRun(const ChildRun&) = delete;
  ChildRun& operator=(const ChildRun&) = delete;
  ~ChildRun();

  // Descriptors to poll(2) for POLLIN: the pipe until the child closed it,
  // and a pidfd (readable once the child exited) where the kernel has them;
  // -1 where there is none. Without a pidfd, a child that closed its pipe
  // but has not exited yet is found by calling Poll() again soon
  // (needs_prompt_poll()).
  int pipe_fd() const { return pipe_fd_; }
  int exit_fd() const { return pid_fd_; }
  bool needs_prompt_poll() const { return pipe_fd_ < 0 && pid_fd_ < 0 && !done_; }

  // Reads what the child sent and reaps it if it exited; never blocks. A
  // child found stopped (SIGSTOP and the like) is killed: a stopped task can
  // do nothing, not even handle its cancel, yet would hold its resources.
  // Returns done().
  bool Poll();
  bool done() const { return done_; }
  pid_t pid() const { return pid_; }
  // Sends `signo` to the child if it has not been reaped.
  void Signal(int signo);
  // The progress reports received since the last call, the latest per code.
  std::map<std::string, nlohmann::json> TakeProgress();
  // Once done(): the outcome the child sent, or a failure saying how the
  // process ended (killed by a signal, stopped, exited without an outcome).
  Outcome outcome() const;

 private:
  void ReadPipe();

  pid_t pid_ = -1;
  int pipe_fd_ = -1;
  int pid_fd_ = -1;
  bool done_ = false;
  int status_ = 0;
  std::optional<int> stopped_by_;
  ChildChannelReader reader_;
  std::optional<Outcome> sent_;
  std::map<std::string, nlohmann::json> progress_;
};

// "signal 9 (SIGKILL)".
std::string SignalDescription(int signo);

}  // namespace taskmill::worker
