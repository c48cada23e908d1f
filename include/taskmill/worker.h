// Worker: a process that claims ready tasks and runs up to `concurrency` of
// them at once (its slots).
//
// A worker registers one row in taskmill.app, heartbeats it, and loops:
// claim as many ready tasks as it has free slots (immediate ones first) in
// one statement, run them, and record their outcomes. Outcomes that finish
// while a write is in flight go out together in the next one, with the claim
// of the next tasks, in one commit; nothing waits for company, so a lone task
// is not slowed down. An outcome counts as recorded only once that commit
// returned. Whatever the number of slots, the process has one connection for
// claims and outcomes, one for LISTEN, one row and one heartbeat.
//
// Ordinary tasks run in a forked child process each (a crash or leak in the
// task cannot hurt the worker; the child gets SIGKILL if the worker dies);
// with in_process they run on threads of the worker. Immediate tasks run
// under immediate_timeout, on a thread if their function is registered
// inline_ok, else in a child. A task on a thread that outlives its timeout or
// cancel keeps its slot and its resources until the function returns: a
// thread cannot be killed. A child that stops (SIGSTOP and the like) is
// killed and its task failed.
//
// Waking: a ready task wakes one idle worker (one with a free slot) through a
// NOTIFY on that worker's own channel, received on the LISTEN connection.
// The notification is a hint: an idle worker also polls, every
// poll_interval (jittered +-50%) stretched by the size of the idle fleet, so
// that the fleet as a whole polls about 8 times per poll_interval however
// many workers are idle, and with notifications lost or disabled (listen =
// false, e.g. behind a transaction pooler) work is still found within about
// poll_interval.
//
// Janitor duties (declaring missing processes dead, finalising their tasks)
// are done by one worker at a time, holding the lease row "janitor"; a
// worker that does not hold it writes nothing when it tries.
//
// Fencing: a worker whose row was declared dead (no heartbeat within its
// ttl) stops every task it runs and records nothing (the janitor has decided
// their outcomes), then rejoins under a new identity. A worker that cannot
// reach the database for 80% of its ttl stops its tasks before anyone else
// may take their resources.
//
// Stopping: RequestStop() stops claiming, lets every running task finish,
// deregisters and makes Run() return 0. RequestAbort() does the same but
// aborts the running tasks after shutdown_grace ("Aborted during worker
// shutdown."); a second RequestAbort() aborts them at once. Cancels keep
// working while stopping. The Worker installs no signal handlers: a program
// that wants SIGTERM/SIGINT to mean stop/abort creates a WorkerSignals
// beside it (the `taskmill worker` command does).
#pragma once

#include <memory>
#include <string>

#include "taskmill/deadline.h"
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
  // Tasks run at once (1-1000).
  int concurrency = 1;
  bool in_process = false;
  double heartbeat_interval = 5.0;  // seconds, jittered -10%..+0%
  double ttl = 30.0;                // declared missing after this long silent
  double poll_interval = 1.0;       // idle polling, see above
  double cancel_grace = 10.0;       // cancel: SIGUSR1, then SIGKILL after this
  double shutdown_grace = 30.0;     // RequestAbort: abort running tasks after this
  double immediate_timeout = 5.0;
  bool janitor = true;  // take part in janitor duties
  // The janitor warns (once per episode) when a snapshot, prepared
  // transaction or replication slot older than this many seconds holds back
  // the database's xmin horizon; 0: never.
  double snapshot_warning = 60.0;
  bool burst = false;  // Run() returns 0 once no task is ready and no slot is busy
};

class Worker {
 public:
  // `registry` must outlive the worker. Throws std::invalid_argument if
  // options.concurrency is outside 1-1000, std::system_error if the wake-up
  // pipe cannot be created.
  Worker(WorkerOptions options, const TaskRegistry& registry);
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;
  // Must not run while Run() does.
  ~Worker();

  // Runs until stopped, on the calling thread; returns the process exit code:
  // 0 after a stop, 2 if the database has no or another taskmill schema or
  // refuses us for good, 1 if a task's thread had to be left running at
  // shutdown (the worker then did not deregister, and the janitor fails the
  // task once this process is gone) or on an unexpected database error.
  // Call it once.
  int Run();

  // Ask Run() to stop gracefully (see above). Thread-safe and
  // async-signal-safe: a signal handler may call them. Before Run(), they
  // make Run() return 0 at once.
  void RequestStop();
  void RequestAbort();

  // From another thread than Run()'s: RequestStop(), then RequestAbort() at
  // once if tasks still run at `deadline`, and waits until Run() returned
  // (or, if Run() never started, returns at once).
  void Stop(Deadline deadline);

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

// SIGTERM and SIGINT as stop requests for one Worker: SIGTERM calls
// RequestStop(), SIGINT RequestAbort() (a second SIGINT aborts at once).
// Installs the handlers when constructed and restores the previous ones when
// destroyed; SIGPIPE is ignored meanwhile. A signal handler cannot be given
// an argument, so at most one WorkerSignals may exist in a process at a time
// (the constructor throws std::logic_error otherwise); `worker` must outlive
// it. Programs that handle signals themselves do not create one and call
// RequestStop()/RequestAbort() from their own handling.
class WorkerSignals {
 public:
  explicit WorkerSignals(Worker& worker);
  WorkerSignals(const WorkerSignals&) = delete;
  WorkerSignals& operator=(const WorkerSignals&) = delete;
  ~WorkerSignals();
};

}  // namespace taskmill
