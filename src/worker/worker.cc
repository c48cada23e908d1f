#include "taskmill/worker.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "pg/connection.h"
#include "store/migrate.h"
#include "store/task_store.h"
#include "worker/executor.h"

namespace taskmill {

namespace {

using std::chrono::duration;
using std::chrono::milliseconds;
using Seconds = duration<double>;

constexpr auto kQueryTimeout = std::chrono::seconds(30);
constexpr auto kProgressInterval = milliseconds(500);
// While supervising, how often the task's state is read as a fallback for a
// lost cancel notification.
constexpr auto kStatePollInterval = std::chrono::seconds(1);

// Written by signal handlers, read by the loop through the self-pipe.
int g_signal_pipe[2] = {-1, -1};

void OnSignal(int signo) {
  int saved = errno;
  unsigned char b = static_cast<unsigned char>(signo);
  [[maybe_unused]] ssize_t n = write(g_signal_pipe[1], &b, 1);
  errno = saved;
}

// In a task's child process: SIGUSR1 means "canceled".
std::atomic<bool> g_child_cancel{false};
void OnChildCancel(int) { g_child_cancel.store(true); }

Clock::duration ToDuration(double seconds) {
  return std::chrono::duration_cast<Clock::duration>(Seconds(seconds));
}

std::string SignalDescription(int signo) {
  const char* abbrev = sigabbrev_np(signo);
  return abbrev != nullptr ? fmt::format("signal {} (SIG{})", signo, abbrev)
                           : fmt::format("signal {}", signo);
}

std::string Hostname() {
  char buf[256] = {0};
  gethostname(buf, sizeof(buf) - 1);
  return buf;
}

void WriteAll(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = write(fd, data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;
    }
    off += static_cast<size_t>(n);
  }
}

}  // namespace

class Worker::Impl {
 public:
  Impl(WorkerOptions options, const TaskRegistry& registry)
      : options_(std::move(options)), registry_(registry), rng_(std::random_device{}()) {
    if (options_.name.empty()) options_.name = fmt::format("{}@{}", getpid(), Hostname());
    if (options_.listen_url.empty()) options_.listen_url = options_.database_url;
  }

  int Run();

 private:
  enum class StopMode { kNone, kGraceful, kAbort, kAbortNow };

  struct Supervision {
    bool cancel_requested = false;
    bool aborted = false;
    bool fenced = false;
    // We could not heartbeat for most of our TTL: we are about to be declared
    // dead, so the task is stopped before anyone else may start a
    // conflicting one.
    bool self_fenced = false;
    // Immediate tasks: past this the task is stopped like a canceled one and
    // fails "timed out" once it has stopped.
    std::optional<Deadline> time_limit;
    double timeout_seconds = 0;
    bool timed_out = false;
    std::optional<Deadline> kill_at;
    // A thread past its kill time (it ignores its cancel): logged once.
    bool stubborn_logged = false;
  };

  // --- connections -------------------------------------------------------
  void Connect();
  void Register();
  void ConnectListener();
  // Registers under a new identity (the old one was declared dead) and
  // listens on the new channel.
  void Rejoin();
  // Sleeps with capped, jittered backoff until the database answers again.
  // Returns false if a stop was requested meanwhile.
  bool Reconnect(const pg::Error& cause);

  // --- the loop ------------------------------------------------------------
  void Heartbeat();
  void MaybeHeartbeat();
  void MaybeJanitor();
  // Janitor: one warning when something starts holding back the xmin
  // horizon for longer than options_.snapshot_warning, one line when it ends.
  void WatchHorizon(Deadline deadline);
  // Waits for a notification, a signal or the deadline. Returns true on a
  // "work" wakeup.
  bool WaitIdle(Deadline until);
  // Drains the listener; returns true if any wakeup arrived. Sets
  // `cancel_for` when a cancel for `current` arrived.
  bool DrainNotifications(const std::string* current, bool* cancel_for);
  void DrainSignals();

  // --- running one task ----------------------------------------------------
  // Runs the task and records its outcome; returns the next task if the
  // outcome was recorded together with a claim.
  std::optional<Task> RunTask(const Task& task);
  worker::Outcome RunInChild(const Task& task, Supervision& sup);
  worker::Outcome RunOnThread(const Task& task, Supervision& sup);
  // One step of supervision, shared by both ways of running: `child` (a
  // process to signal) or `run` (a thread to tell), not both.
  void SuperviseTick(const Task& task, Supervision& sup, pid_t child, worker::ThreadRun* run);
  // What supervision decided, if it overrides what the function returned.
  std::optional<worker::Outcome> SupervisedOutcome(const Task& task, const Supervision& sup) const;
  void FlushProgress(const Task& task, bool force);
  std::optional<Task> RecordOutcome(const Task& task, const worker::Outcome& outcome,
                                    bool claim_next);

  Clock::duration Jitter(double base_seconds) {
    std::uniform_real_distribution<double> d(0.5, 1.5);
    return ToDuration(base_seconds * d(rng_));
  }

  WorkerOptions options_;
  const TaskRegistry& registry_;
  std::mt19937_64 rng_;

  pg::Connection conn_;
  pg::Connection listener_;
  std::string app_id_;
  std::string channel_;
  std::optional<std::string> current_task_;  // the task being run, if any
  // A task thread that would not stop was left running at shutdown: the
  // process must exit without deregistering, so that its task keeps its
  // resources until the janitor finds this process gone.
  bool abandoned_thread_ = false;

  StopMode stop_ = StopMode::kNone;
  std::optional<Deadline> abort_at_;
  Deadline next_heartbeat_{};
  Deadline last_heartbeat_ok_{};
  Deadline next_janitor_{};
  // Declaring others dead needs our own view of time to be continuous: not
  // before we have been connected for a whole TTL.
  Deadline janitor_eligible_at_{};
  bool wakeup_pending_ = true;

  // Fallback for a lost cancel notification: the running task's state is
  // read this often, starting one interval after it started (short tasks
  // cost no extra query).
  Deadline next_state_poll_{};
  std::map<std::string, nlohmann::json> pending_progress_;
  Deadline next_progress_flush_{};
  uint64_t tasks_run_ = 0;
  std::optional<store::HorizonHolder> horizon_episode_;
};

void Worker::Impl::Connect() {
  conn_ = pg::Connection::Open(options_.database_url, DeadlineIn(std::chrono::seconds(10)));
  janitor_eligible_at_ = Clock::now() + ToDuration(options_.ttl);
}

void Worker::Impl::Register() {
  store::AppRegistration reg;
  reg.app_type = "worker";
  reg.name = options_.name;
  reg.hostname = Hostname();
  reg.pid = getpid();
  reg.ttl_seconds = options_.ttl;
  reg.functions = registry_.Names();
  auto app = store::RegisterApp(conn_, reg, DeadlineIn(kQueryTimeout));
  app_id_ = app.id;
  channel_ = app.channel;
  next_heartbeat_ = Clock::now() + ToDuration(options_.heartbeat_interval);
  last_heartbeat_ok_ = Clock::now();
  spdlog::info("worker {} registered as {} (heartbeat {}s, ttl {}s, {})", options_.name, app_id_,
               options_.heartbeat_interval, options_.ttl,
               options_.in_process ? "in-process" : "child process per task");
}

void Worker::Impl::ConnectListener() {
  if (!options_.listen) return;
  listener_ = pg::Connection::Open(options_.listen_url, DeadlineIn(std::chrono::seconds(10)));
  listener_.Listen(channel_, DeadlineIn(kQueryTimeout));
  wakeup_pending_ = true;  // anything sent before LISTEN was missed
}

void Worker::Impl::Rejoin() {
  Register();
  listener_ = pg::Connection();
  ConnectListener();
}

bool Worker::Impl::Reconnect(const pg::Error& cause) {
  spdlog::warn("database unavailable ({}); reconnecting with backoff", cause.what());
  double backoff = 0.1;
  Deadline since = Clock::now();
  while (stop_ == StopMode::kNone || stop_ == StopMode::kGraceful) {
    DrainSignals();
    std::this_thread::sleep_for(Jitter(backoff));
    backoff = std::min(backoff * 2, 5.0);
    try {
      Connect();
      if (!store::Heartbeat(conn_, app_id_, DeadlineIn(kQueryTimeout))) {
        spdlog::warn(
            "this worker was declared dead while the database was away; rejoining as a "
            "new worker");
        Register();
      }
      listener_ = pg::Connection();
      ConnectListener();
      int lost = store::RequeueLost(conn_, app_id_, current_task_, DeadlineIn(kQueryTimeout));
      if (lost > 0) spdlog::warn("put {} task(s) claimed during the outage back in line", lost);
      spdlog::info("database reachable again after {:.1f}s", Seconds(Clock::now() - since).count());
      return true;
    } catch (const pg::Error& e) {
      if (!e.retryable()) throw;
    }
    if (stop_ != StopMode::kNone) return false;
  }
  return false;
}

void Worker::Impl::Heartbeat() {
  next_heartbeat_ = Clock::now() + ToDuration(options_.heartbeat_interval);
  if (store::Heartbeat(conn_, app_id_, DeadlineIn(kQueryTimeout))) {
    last_heartbeat_ok_ = Clock::now();
  } else {
    spdlog::error(
        "this worker ({}) was declared dead by the janitor (no heartbeat within {}s); "
        "its tasks were failed; rejoining as a new worker",
        app_id_, options_.ttl);
    Rejoin();
  }
}

void Worker::Impl::MaybeHeartbeat() {
  if (Clock::now() >= next_heartbeat_) Heartbeat();
}

void Worker::Impl::MaybeJanitor() {
  if (!options_.janitor || Clock::now() < next_janitor_) return;
  // Every interval (at most 20% early): a dead worker is declared missing
  // within TTL plus one interval.
  next_janitor_ = Clock::now() + ToDuration(options_.heartbeat_interval *
                                            std::uniform_real_distribution<double>(0.8, 1.0)(rng_));
  if (Clock::now() < janitor_eligible_at_) return;
  auto deadline = DeadlineIn(kQueryTimeout);
  if (!store::TryLease(conn_, "janitor", app_id_, options_.heartbeat_interval * 3, deadline)) {
    return;
  }
  for (const auto& app : store::DeleteMissingApps(conn_, deadline)) {
    spdlog::warn("declared {} {} ({}) missing: no heartbeat within its ttl", app.app_type, app.name,
                 app.id);
  }
  int finalized = 0;
  for (const auto& orphan : store::OrphanedTasks(conn_, 100, deadline)) {
    auto final_state = store::FinalizeOrphan(conn_, orphan.id, deadline);
    if (final_state) {
      spdlog::warn("task {} of a missing process is now {}", orphan.id,
                   TaskStateName(*final_state));
      ++finalized;
    }
  }
  // Let the tasks behind them through now (and wake idle workers for them),
  // not at the next poll.
  if (finalized > 0) {
    store::ProcessReleases(conn_, deadline);
    wakeup_pending_ = true;
  }
  WatchHorizon(deadline);
}

void Worker::Impl::WatchHorizon(Deadline deadline) {
  if (options_.snapshot_warning <= 0) return;
  auto holders = store::HorizonHolders(conn_, options_.snapshot_warning, deadline);
  auto describe = [](const store::HorizonHolder& h) {
    std::string who = h.pid > 0 ? fmt::format("{} pid {} (application_name \"{}\", state {})",
                                              h.kind, h.pid, h.name, h.state)
                                : fmt::format("{} \"{}\" ({})", h.kind, h.name, h.state);
    return h.age_seconds >= 0 ? fmt::format("{}, {:.0f}s old", who, h.age_seconds) : who;
  };
  if (horizon_episode_ && (holders.empty() || holders.front().key != horizon_episode_->key)) {
    spdlog::info("the old snapshot is gone: {}; vacuum can clean up again",
                 describe(*horizon_episode_));
    horizon_episode_.reset();
  }
  if (!holders.empty() && !horizon_episode_) {
    horizon_episode_ = holders.front();
    spdlog::warn(
        "old snapshot: {} holds back the database's xmin horizon ({} transactions): vacuum "
        "cannot remove dead rows of taskmill's tables while it lasts (docs/operations.md)",
        describe(*horizon_episode_), horizon_episode_->xmin_age);
  }
}

void Worker::Impl::DrainSignals() {
  unsigned char buf[16];
  for (;;) {
    ssize_t n = read(g_signal_pipe[0], buf, sizeof(buf));
    if (n <= 0) return;
    for (ssize_t i = 0; i < n; ++i) {
      int signo = buf[i];
      if (signo == SIGTERM) {
        if (stop_ == StopMode::kNone) {
          spdlog::info("SIGTERM: no new tasks; the running task may finish; then exiting");
          stop_ = StopMode::kGraceful;
        }
      } else if (signo == SIGINT) {
        if (stop_ == StopMode::kAbort || stop_ == StopMode::kAbortNow) {
          spdlog::warn("second SIGINT: aborting the running task now");
          stop_ = StopMode::kAbortNow;
        } else {
          spdlog::info(
              "SIGINT: no new tasks; the running task is aborted after {}s "
              "(SIGINT again to abort now)",
              options_.shutdown_grace);
          stop_ = StopMode::kAbort;
          abort_at_ = Clock::now() + ToDuration(options_.shutdown_grace);
        }
      }
    }
  }
}

bool Worker::Impl::DrainNotifications(const std::string* current, bool* cancel_for) {
  bool wakeup = false;
  if (!listener_.ok()) return false;
  while (auto n = listener_.NextNotification()) {
    if (n->payload.rfind("cancel ", 0) == 0) {
      if (current != nullptr && cancel_for != nullptr && n->payload.substr(7) == *current) {
        *cancel_for = true;
      }
    } else {
      wakeup = true;
    }
  }
  return wakeup;
}

bool Worker::Impl::WaitIdle(Deadline until) {
  until = std::min({until, next_heartbeat_, options_.janitor ? next_janitor_ : until});
  pollfd fds[2];
  int nfds = 0;
  fds[nfds++] = {g_signal_pipe[0], POLLIN, 0};
  if (listener_.ok()) fds[nfds++] = {listener_.socket(), POLLIN, 0};
  int rc = poll(fds, nfds, MillisLeft(until));
  if (rc < 0 && errno != EINTR) throw std::system_error(errno, std::generic_category(), "poll");
  DrainSignals();
  if (nfds > 1 && (fds[1].revents & (POLLIN | POLLERR | POLLHUP))) {
    try {
      return DrainNotifications(nullptr, nullptr);
    } catch (const pg::ConnectionError& e) {
      spdlog::warn("listener connection lost ({}); reopening", e.what());
      listener_ = pg::Connection();
      ConnectListener();
      return true;
    }
  }
  return false;
}

void Worker::Impl::FlushProgress(const Task& task, bool force) {
  if (pending_progress_.empty()) return;
  if (!force && Clock::now() < next_progress_flush_) return;
  next_progress_flush_ = Clock::now() + kProgressInterval;
  for (const auto& [code, report] : pending_progress_) {
    store::ReportProgress(conn_, task.id, app_id_, report, DeadlineIn(kQueryTimeout));
  }
  pending_progress_.clear();
}

void Worker::Impl::SuperviseTick(const Task& task, Supervision& sup, pid_t child,
                                 worker::ThreadRun* run) {
  DrainSignals();
  bool cancel = false;
  try {
    if (listener_.ok()) DrainNotifications(&task.id, &cancel);
  } catch (const pg::ConnectionError&) {
    listener_ = pg::Connection();
  }
  try {
    if (Clock::now() >= next_heartbeat_) {
      next_heartbeat_ = Clock::now() + ToDuration(options_.heartbeat_interval);
      if (store::Heartbeat(conn_, app_id_, DeadlineIn(kQueryTimeout))) {
        last_heartbeat_ok_ = Clock::now();
      } else {
        spdlog::error(
            "this worker was declared dead while running task {}; stopping the task "
            "without recording anything (the janitor already decided its outcome)",
            task.id);
        sup.fenced = true;
      }
    }
    // Busy workers do janitor work too: a fleet whose every worker runs a
    // long task must still find its dead.
    if (!sup.fenced) MaybeJanitor();
    if (!sup.cancel_requested && Clock::now() >= next_state_poll_) {
      next_state_poll_ = Clock::now() + kStatePollInterval;
      auto state = store::TaskStateOf(conn_, task.id, DeadlineIn(kQueryTimeout));
      if (state == TaskState::kCanceling) cancel = true;
    }
    FlushProgress(task, false);
  } catch (const pg::Error& e) {
    if (!e.retryable()) throw;
    // The database is away: keep supervising; try to reconnect each tick.
    if (!conn_.ok()) {
      try {
        conn_ = pg::Connection::Open(options_.database_url, DeadlineIn(std::chrono::seconds(2)));
        janitor_eligible_at_ = Clock::now() + ToDuration(options_.ttl);
      } catch (const pg::Error&) {
      }
    }
  }

  auto signal_child = [&](int signo) {
    if (child > 0) kill(child, signo);
  };
  if (!sup.self_fenced && !sup.fenced &&
      Clock::now() - last_heartbeat_ok_ > ToDuration(options_.ttl * 0.8)) {
    spdlog::error(
        "no heartbeat for {:.1f}s (ttl {}s): stopping task {} before this worker is "
        "declared dead",
        Seconds(Clock::now() - last_heartbeat_ok_).count(), options_.ttl, task.id);
    sup.self_fenced = true;
    if (run != nullptr) run->Cancel();
    signal_child(SIGKILL);
  }
  if (sup.fenced) {
    signal_child(SIGKILL);
    if (run != nullptr) run->Cancel();
    return;
  }
  if (cancel && !sup.cancel_requested) {
    spdlog::info("task {} canceled: signalling it (SIGKILL after {}s)", task.id,
                 options_.cancel_grace);
    sup.cancel_requested = true;
    if (run != nullptr) run->Cancel();
    signal_child(SIGUSR1);
    sup.kill_at = Clock::now() + ToDuration(options_.cancel_grace);
  }
  if (sup.time_limit && Clock::now() >= *sup.time_limit && !sup.timed_out &&
      !sup.cancel_requested) {
    spdlog::warn("immediate task {} timed out after {:g}s: stopping it (SIGKILL after {}s)",
                 task.id, sup.timeout_seconds, options_.cancel_grace);
    sup.timed_out = true;
    if (run != nullptr) run->Cancel();
    signal_child(SIGUSR1);
    sup.kill_at = Clock::now() + ToDuration(options_.cancel_grace);
  }
  bool abort_now = stop_ == StopMode::kAbortNow ||
                   (stop_ == StopMode::kAbort && abort_at_ && Clock::now() >= *abort_at_);
  if (abort_now && !sup.aborted && !sup.cancel_requested) {
    spdlog::warn("aborting task {} for shutdown", task.id);
    sup.aborted = true;
    if (run != nullptr) run->Cancel();
    signal_child(SIGUSR1);
    sup.kill_at = Clock::now() + (stop_ == StopMode::kAbortNow
                                      ? Clock::duration::zero()
                                      : ToDuration(std::min(options_.cancel_grace, 5.0)));
  }
  if (stop_ == StopMode::kAbortNow && sup.kill_at) sup.kill_at = Clock::now();
  if (sup.kill_at && Clock::now() >= *sup.kill_at) {
    if (child > 0) {
      spdlog::warn("task {} did not stop after SIGUSR1: SIGKILL", task.id);
      signal_child(SIGKILL);
    } else if (!sup.stubborn_logged) {
      // A thread cannot be killed: the task keeps its resources (and this
      // worker claims nothing else) until the function returns.
      spdlog::error(
          "task {} ignores its cancel; it runs on a thread, which cannot be killed: it keeps "
          "its resources until it returns",
          task.id);
      sup.stubborn_logged = true;
    }
    sup.kill_at.reset();
  }
}

std::optional<worker::Outcome> Worker::Impl::SupervisedOutcome(const Task& task,
                                                               const Supervision& sup) const {
  worker::Outcome out;
  if (sup.self_fenced) {
    out.state = TaskState::kFailed;
    out.error = {{"reason", "Stopped: the worker lost the database for longer than its TTL."}};
  } else if (sup.aborted) {
    out.state = TaskState::kFailed;
    out.error = {{"reason", "Aborted during worker shutdown."}};
  } else if (sup.cancel_requested) {
    out.state = TaskState::kCanceled;
  } else if (sup.timed_out) {
    out = worker::TimedOut(task, sup.timeout_seconds);
  } else {
    return std::nullopt;
  }
  return out;
}

worker::Outcome Worker::Impl::RunInChild(const Task& task, Supervision& sup) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) throw std::system_error(errno, std::generic_category(), "pipe");
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    close(fds[0]);
    close(fds[1]);
    throw std::system_error(errno, std::generic_category(), "fork");
  }
  if (pid == 0) {
    // The child: never returns. It must not touch the parent's database
    // connections (their sockets are shared); it exits with _exit so no
    // destructor sends anything on them.
    close(fds[0]);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(70);
    std::signal(SIGINT, SIG_IGN);  // the worker decides what a Ctrl-C means
    std::signal(SIGTERM, SIG_IGN);
    std::signal(SIGUSR1, OnChildCancel);
    std::signal(SIGPIPE, SIG_IGN);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    int out = fds[1];
    worker::ProgressSink progress = [out](const nlohmann::json& report) {
      WriteAll(out, nlohmann::json{{"progress", report}}.dump() + "\n");
    };
    worker::Outcome o = worker::RunFunction(registry_, task, g_child_cancel, progress);
    nlohmann::json msg{{"state", TaskStateName(o.state)}, {"result", o.result}, {"error", o.error}};
    WriteAll(out, nlohmann::json{{"outcome", msg}}.dump() + "\n");
    _exit(0);
  }
  close(fds[1]);
  int rd = fds[0];
  fcntl(rd, F_SETFL, fcntl(rd, F_GETFL) | O_NONBLOCK);

  std::string buffer;
  std::optional<nlohmann::json> outcome_msg;
  bool eof = false;
  int status = 0;
  auto handle_lines = [&] {
    size_t pos;
    while ((pos = buffer.find('\n')) != std::string::npos) {
      std::string line = buffer.substr(0, pos);
      buffer.erase(0, pos + 1);
      auto j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded()) continue;
      if (j.contains("progress")) {
        const auto& r = j["progress"];
        pending_progress_[r.value("code", "")] = r;
      } else if (j.contains("outcome")) {
        outcome_msg = j["outcome"];
      }
    }
  };
  auto drain = [&] {
    char chunk[65536];
    for (;;) {
      ssize_t got = read(rd, chunk, sizeof(chunk));
      if (got > 0) {
        buffer.append(chunk, static_cast<size_t>(got));
        continue;
      }
      if (got == 0) eof = true;
      break;
    }
    handle_lines();
  };
  // A stopped child (SIGSTOP, or SIGTSTP/SIGTTIN/SIGTTOU) can do nothing
  // until something continues it, yet it would hold its resources and this
  // worker indefinitely, and could not even handle a cancel's SIGUSR1: it is
  // killed at once, and the task fails saying so.
  std::optional<int> stopped_by;
  for (;;) {
    if (!eof) {
      pollfd pfds[3];
      int n = 0;
      pfds[n++] = {rd, POLLIN, 0};
      pfds[n++] = {g_signal_pipe[0], POLLIN, 0};
      if (listener_.ok()) pfds[n++] = {listener_.socket(), POLLIN, 0};
      Deadline wake = std::min(next_heartbeat_, DeadlineIn(std::chrono::milliseconds(200)));
      if (sup.kill_at) wake = std::min(wake, *sup.kill_at);
      if (sup.time_limit && !sup.timed_out) wake = std::min(wake, *sup.time_limit);
      poll(pfds, n, MillisLeft(wake));
      drain();
    }
    int st = 0;
    pid_t r = waitpid(pid, &st, WNOHANG | WUNTRACED);
    if (r == pid && WIFSTOPPED(st)) {
      if (!stopped_by) {
        stopped_by = WSTOPSIG(st);
        spdlog::warn("task {} ({}): its process was stopped by {}; killing it", task.id, task.name,
                     SignalDescription(*stopped_by));
      }
      kill(pid, SIGKILL);
    } else if (r == pid) {
      // Everything it wrote is in the pipe by now; a process it left behind
      // holding the pipe open must not keep the task running.
      status = st;
      if (!eof) drain();
      break;
    }
    // The child closed its end but has not exited yet: wait for it, while
    // still honouring kills.
    if (eof) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    SuperviseTick(task, sup, pid, nullptr);
  }
  close(rd);
  FlushProgress(task, true);

  if (auto decided = SupervisedOutcome(task, sup)) return *decided;
  worker::Outcome out;
  if (stopped_by) {
    out.state = TaskState::kFailed;
    out.error = {{"description",
                  fmt::format("Task process was stopped by {} and killed: a stopped task cannot "
                              "finish.",
                              SignalDescription(*stopped_by))}};
  } else if (outcome_msg && WIFEXITED(status) && WEXITSTATUS(status) == 0) {
    out.state =
        ParseTaskState((*outcome_msg)["state"].get<std::string>()).value_or(TaskState::kFailed);
    out.result = (*outcome_msg)["result"];
    out.error = (*outcome_msg)["error"];
  } else if (WIFSIGNALED(status)) {
    out.state = TaskState::kFailed;
    out.error = {{"description", fmt::format("Task process was killed by {}.",
                                             SignalDescription(WTERMSIG(status)))}};
  } else {
    out.state = TaskState::kFailed;
    out.error = {{"description", fmt::format("Task process died unexpectedly with exit code {}.",
                                             WIFEXITED(status) ? WEXITSTATUS(status) : -1)}};
  }
  return out;
}

worker::Outcome Worker::Impl::RunOnThread(const Task& task, Supervision& sup) {
  worker::ThreadRun run(registry_, task);
  std::optional<Deadline> abandon_at;
  // Until the function returns the task stays ours, whatever happens: a
  // thread cannot be killed, and the resources of a task whose code may
  // still run must not be released. Only a shutdown past its grace (or a
  // second SIGINT) leaves it behind, and then the process exits without
  // deregistering (see abandoned_thread_).
  while (!run.done()) {
    pollfd pfds[3];
    int n = 0;
    pfds[n++] = {run.wake_fd(), POLLIN, 0};
    pfds[n++] = {g_signal_pipe[0], POLLIN, 0};
    if (listener_.ok()) pfds[n++] = {listener_.socket(), POLLIN, 0};
    Deadline wake = std::min(next_heartbeat_, DeadlineIn(std::chrono::milliseconds(200)));
    if (sup.kill_at) wake = std::min(wake, *sup.kill_at);
    if (sup.time_limit && !sup.timed_out) wake = std::min(wake, *sup.time_limit);
    poll(pfds, n, MillisLeft(wake));
    for (auto& [code, report] : run.TakeProgress()) pending_progress_[code] = std::move(report);
    if (run.done()) break;
    SuperviseTick(task, sup, 0, &run);
    // Shutting down by SIGINT: the function was told to stop; where a child
    // would now get SIGKILL, a thread is left behind instead.
    bool aborting = stop_ == StopMode::kAbortNow ||
                    (stop_ == StopMode::kAbort && abort_at_ && Clock::now() >= *abort_at_);
    if (aborting) {
      auto grace = stop_ == StopMode::kAbortNow ? std::chrono::seconds(1)
                                                : ToDuration(std::min(options_.cancel_grace, 5.0));
      Deadline limit = Clock::now() + grace;
      abandon_at = abandon_at ? std::min(*abandon_at, limit) : limit;
    }
    if (abandon_at && Clock::now() >= *abandon_at && !run.done()) {
      spdlog::critical(
          "task {} ignores its cancel and this worker is shutting down: exiting with it still "
          "running on its thread, without deregistering, so that its resources stay held "
          "until the janitor declares this process missing",
          task.id);
      abandoned_thread_ = true;
      return {};
    }
  }
  for (auto& [code, report] : run.TakeProgress()) pending_progress_[code] = std::move(report);
  FlushProgress(task, true);
  if (auto decided = SupervisedOutcome(task, sup)) return *decided;
  return run.outcome();
}

std::optional<Task> Worker::Impl::RecordOutcome(const Task& task, const worker::Outcome& outcome,
                                                bool claim_next) {
  // The outcome must not be lost to a passing database fault: retry until it
  // is written or we learn that we no longer own the task.
  bool retried = false;
  for (;;) {
    try {
      if (!conn_.ok()) Connect();
      std::optional<TaskState> final_state;
      std::optional<Task> next;
      if (claim_next && !retried) {
        auto r = store::FinishAndClaim(conn_, task.id, app_id_, outcome.state, outcome.result,
                                       outcome.error, DeadlineIn(kQueryTimeout));
        final_state = r.finished;
        next = std::move(r.next);
      } else {
        final_state = store::FinishTask(conn_, task.id, app_id_, outcome.state, outcome.result,
                                        outcome.error, DeadlineIn(kQueryTimeout));
      }
      if (!final_state) {
        // Either our identity was declared dead (the janitor decided), or an
        // earlier attempt was written before its answer got lost.
        auto now = store::GetTask(conn_, task.id, DeadlineIn(kQueryTimeout));
        bool ours = now.ok() && now->app_lock == app_id_ && IsFinal(now->state) && retried;
        if (ours) {
          spdlog::debug("task {} was already recorded as {}", task.id, TaskStateName(now->state));
        } else {
          spdlog::warn(
              "task {} is no longer ours (this worker was declared dead); its outcome "
              "was not recorded",
              task.id);
        }
      } else {
        spdlog::log(
            *final_state == TaskState::kCompleted ? spdlog::level::debug : spdlog::level::info,
            "task {} ({}) {}", task.id, task.name, TaskStateName(*final_state));
      }
      return next;
    } catch (const pg::Error& e) {
      if (!e.retryable()) throw;
      retried = true;
      if (!Reconnect(e)) {
        spdlog::error(
            "stopping before the outcome of task {} could be written; the janitor will "
            "fail it",
            task.id);
        return std::nullopt;
      }
    }
  }
}

std::optional<Task> Worker::Impl::RunTask(const Task& task) {
  spdlog::debug("task {} ({}) started", task.id, task.name);
  Supervision sup;
  worker::Outcome outcome;
  current_task_ = task.id;
  pending_progress_.clear();
  next_state_poll_ = Clock::now() + kStatePollInterval;
  if (task.immediate) {
    sup.timeout_seconds = options_.immediate_timeout;
    sup.time_limit = DeadlineIn(ToDuration(options_.immediate_timeout));
  }
  // On a thread only what may run there: a function not declared inline_ok
  // could crash or stop this worker with it.
  auto fn_options = registry_.OptionsOf(task.name);
  bool on_thread = options_.in_process || (task.immediate && fn_options && fn_options->inline_ok);
  outcome = on_thread ? RunOnThread(task, sup) : RunInChild(task, sup);
  ++tasks_run_;
  struct ClearCurrent {
    std::optional<std::string>& c;
    ~ClearCurrent() { c.reset(); }
  } clear_current{current_task_};
  if (abandoned_thread_) return std::nullopt;
  if (sup.fenced) {
    // Our identity was declared dead: rejoin as a new worker.
    Rejoin();
    return std::nullopt;
  }
  // While stopping, nothing new is claimed.
  return RecordOutcome(task, outcome, stop_ == StopMode::kNone && !options_.burst);
}

int Worker::Impl::Run() {
  if (pipe2(g_signal_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
    spdlog::critical("cannot create the signal pipe: {}", std::strerror(errno));
    return 1;
  }
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  // Start-up: a database that is not there yet is waited for, not a crash.
  double backoff = 0.2;
  bool logged = false;
  for (;;) {
    DrainSignals();
    if (stop_ != StopMode::kNone) return 0;
    try {
      Connect();
      auto schema = store::CheckSchema(conn_, DeadlineIn(kQueryTimeout));
      if (!schema.ok()) {
        spdlog::critical("{}", schema.error().message);
        return 2;
      }
      Register();
      ConnectListener();
      int unblocked = store::UnblockAll(conn_, DeadlineIn(std::chrono::minutes(5)));
      if (unblocked > 0) spdlog::info("start-up pass unblocked {} task(s)", unblocked);
      break;
    } catch (const pg::Error& e) {
      if (!e.retryable()) {
        spdlog::critical("cannot start: {}", e.what());
        return 2;
      }
      if (!logged) {
        spdlog::warn("database not reachable yet ({}); retrying", e.what());
        logged = true;
      }
      std::this_thread::sleep_for(Jitter(backoff));
      backoff = std::min(backoff * 2, 5.0);
    }
  }

  next_janitor_ = Clock::now() + Jitter(options_.heartbeat_interval);
  Deadline next_poll = Clock::now();
  std::optional<Task> next;  // claimed together with the last outcome
  while (stop_ == StopMode::kNone) {
    try {
      MaybeHeartbeat();
      MaybeJanitor();
      if (next) {
        Task task = std::move(*next);
        next.reset();
        next = RunTask(task);
        // With nothing more claimed, the plain claim below examines our own
        // release and finds what it freed.
        wakeup_pending_ = true;
        continue;
      }
      if (wakeup_pending_ || Clock::now() >= next_poll) {
        wakeup_pending_ = false;
        auto claimed = store::Claim(conn_, app_id_, !options_.burst, DeadlineIn(kQueryTimeout));
        if (!claimed.ok()) {
          // Fenced: declared dead between heartbeats.
          spdlog::error("claim refused: {}; rejoining as a new worker", claimed.error().message);
          Rejoin();
          continue;
        }
        if (claimed->has_value()) {
          next = RunTask(**claimed);
          wakeup_pending_ = true;  // look for more at once
          continue;
        }
        if (options_.burst) break;
        next_poll = Clock::now() + Jitter(options_.poll_interval);
      }
      if (WaitIdle(next_poll)) wakeup_pending_ = true;
    } catch (const pg::Error& e) {
      // A task claimed but not started is given up: after a reconnect it is
      // put back in line (RequeueLost), and running it too would run it twice.
      next.reset();
      if (store::IsFenced(e)) {
        // Declared dead between two of our calls: rejoin under a new identity.
        spdlog::error("{}; rejoining as a new worker", e.what());
        Rejoin();
        continue;
      }
      if (!e.retryable()) {
        spdlog::critical("unexpected database error: {} (SQLSTATE {})", e.what(), e.sqlstate());
        return 1;
      }
      if (!Reconnect(e)) break;
      wakeup_pending_ = true;
    }
  }

  spdlog::info("worker {} stopping after {} task(s)", options_.name, tasks_run_);
  try {
    if (conn_.ok() && !abandoned_thread_)
      store::DeregisterApp(conn_, app_id_, DeadlineIn(std::chrono::seconds(5)));
  } catch (const pg::Error& e) {
    spdlog::warn("could not deregister ({}); the janitor will remove this worker", e.what());
  }
  std::signal(SIGTERM, SIG_DFL);
  std::signal(SIGINT, SIG_DFL);
  return abandoned_thread_ ? 1 : 0;
}

Worker::Worker(WorkerOptions options, const TaskRegistry& registry)
    : impl_(std::make_unique<Impl>(std::move(options), registry)) {}
Worker::~Worker() = default;
int Worker::Run() { return impl_->Run(); }

}  // namespace taskmill
