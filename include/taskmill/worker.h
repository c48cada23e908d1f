// Worker: a process that claims ready tasks and runs them, one at a time.
//
// A worker registers a row in taskmill.app, heartbeats it, and loops: claim
// the next ready task (immediate ones first), run it, record the outcome.
// Ordinary tasks run in a forked child process (a crash or leak in the task
// cannot hurt the worker; the child gets SIGKILL if the worker dies); with
// in_process they run on a thread of the worker. Immediate tasks run under
// immediate_timeout, on a thread if their function is registered inline_ok,
// else in a child. A task on a thread that outlives its timeout or cancel
// keeps its resources (and the worker, which claims nothing else) until the
// function returns: a thread cannot be killed. A child that stops (SIGSTOP
// and the like) is killed and its task failed.
//
// Waking: a ready task wakes one idle worker through a NOTIFY on that
// worker's own channel, received on a connection used only for LISTEN. The
// notification is a hint: an idle worker also polls every poll_interval
// (jittered), so work is found within about that time with notifications
// lost or disabled (listen = false, e.g. behind a transaction pooler).
//
// Janitor duties (declaring missing processes dead, finalising their tasks)
// are done by one worker at a time, holding the lease row "janitor".
//
// Stopping: RequestStop() (or SIGTERM) stops claiming, lets the running task
// finish, deregisters and returns 0. RequestAbort() (SIGINT) does the same
// but aborts the running task after shutdown_grace ("Aborted during worker
// shutdown."); a second SIGINT aborts at once. Cancels keep working while
// stopping. The Worker owns its connections and its child process.
#pragma once

#include <memory>
#include <string>

#include "taskmill/registry.h"

namespace taskmill {

struct WorkerOptions {
  std::string database_url;
  // Connection for LISTEN; empty: database_url. Point it past a transaction
  // pooler, straight at PostgreSQL.
  std::string listen_url;
  bool listen = true;
  // Shown in `taskmill workers list`; default "<pid>@<hostname>".
  std::string name;
  bool in_process = false;
  double heartbeat_interval = 5.0;  // seconds
  double ttl = 30.0;                // declared missing after this long silent
  double poll_interval = 1.0;       // idle polling, jittered +-50%
  double cancel_grace = 10.0;       // cancel: SIGUSR1, then SIGKILL after this
  double shutdown_grace = 30.0;     // SIGINT: abort the running task after this
  double immediate_timeout = 5.0;
  bool janitor = true;  // take part in janitor duties
  // The janitor warns (once per episode) when a snapshot, prepared
  // transaction or replication slot older than this many seconds holds back
  // the database's xmin horizon; 0: never.
  double snapshot_warning = 60.0;
  bool burst = false;  // exit 0 once no task is ready
};

class Worker {
 public:
  // `registry` must outlive the worker.
  Worker(WorkerOptions options, const TaskRegistry& registry);
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;
  ~Worker();

  // Runs until stopped; returns the process exit code (1 if it had to leave
  // a task's thread running at shutdown: it then did not deregister, and
  // the janitor fails the task once this process is gone). Installs
  // handlers for SIGTERM and SIGINT for its duration.
  int Run();

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace taskmill
