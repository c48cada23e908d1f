#include "taskmill/worker.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <csignal>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "pg/connection.h"
#include "store/migrate.h"
#include "store/task_store.h"
#include "worker/backoff.h"
#include "worker/child_run.h"
#include "worker/executor.h"
#include "worker/janitor.h"

namespace taskmill {

namespace {

using std::chrono::milliseconds;
using Seconds = std::chrono::duration<double>;
using worker::Jittered;
using worker::SecondsToDuration;

constexpr auto kQueryTimeout = std::chrono::seconds(30);
constexpr auto kProgressInterval = milliseconds(500);
// While tasks run, how often their states are read (one query for all) as a
// fallback for lost cancel notifications; tasks younger than this cost none.
constexpr auto kStatePollInterval = std::chrono::seconds(1);
// How often running slots are looked at when nothing else wakes the loop.
constexpr auto kSuperviseTick = milliseconds(200);
// Idle workers space their polls so that the idle fleet as a whole polls
// about this many times per poll_interval.
constexpr int kFleetPollsPerInterval = 8;
// An outcome waits at most this long for others to share its commit, and
// only while other slots are still running: a lone task is not slowed down.
constexpr auto kOutcomeLinger = std::chrono::milliseconds(2);

std::string Hostname() {
  char buf[256] = {0};
  gethostname(buf, sizeof(buf) - 1);
  return buf;
}

enum class StopMode { kNone, kGraceful, kAbort, kAbortNow };

// What supervision decided about one running task.
struct Supervision {
  bool cancel_requested = false;
  bool aborted = false;
  // The row was declared dead: the task is stopped and nothing is recorded.
  bool fenced = false;
  // No heartbeat for most of the ttl: stopped before we are declared dead.
  bool self_fenced = false;
  // Immediate tasks: past this the task is stopped like a canceled one and
  // fails "timed out" once it has stopped.
  std::optional<Deadline> time_limit;
  double timeout_seconds = 0;
  bool timed_out = false;
  std::optional<Deadline> kill_at;
  bool stubborn_logged = false;        // a thread past its kill time: logged once
  std::optional<Deadline> abandon_at;  // a thread at shutdown: left behind then
};

// One busy slot: a task and what runs it (a child process or a thread).
struct Slot {
  Task task;
  Deadline started;
  Supervision sup;
  std::unique_ptr<worker::ChildRun> child;
  std::unique_ptr<worker::ThreadRun> thread;
  std::map<std::string, nlohmann::json> progress;  // not written yet

  bool done() const { return child ? child->done() : thread->done(); }
  // Asks the function to stop: SIGUSR1 to a child, the cancel flag of a thread.
  void AskToStop() {
    if (child) child->Signal(SIGUSR1);
    if (thread) thread->Cancel();
  }
  void Kill() {
    if (child) child->Signal(SIGKILL);
    if (thread) thread->Cancel();
  }
  void CollectProgress() {
    auto fresh = child ? child->TakeProgress() : thread->TakeProgress();
    for (auto& [code, report] : fresh) progress[code] = std::move(report);
  }
};

// An outcome not yet known to be durable.
struct PendingOutcome {
  store::TaskOutcome outcome;
  std::string task_name;
  std::map<std::string, nlohmann::json> progress;  // written before the outcome
  bool retried = false;                            // an earlier write may have committed
};

}  // namespace

class Worker::Impl {
 public:
  Impl(WorkerOptions options, const TaskRegistry& registry)
      : options_(std::move(options)),
        registry_(registry),
        rng_(std::random_device{}()),
        janitor_({options_.heartbeat_interval, options_.ttl, options_.snapshot_warning}) {
    if (options_.concurrency < 1 || options_.concurrency > 1000) {
      throw std::invalid_argument(
          fmt::format("concurrency must be 1 to 1000, not {}", options_.concurrency));
    }
    if (options_.name.empty()) options_.name = fmt::format("{}@{}", getpid(), Hostname());
    if (options_.listen_url.empty()) options_.listen_url = options_.database_url;
    if (pipe2(wake_pipe_, O_CLOEXEC | O_NONBLOCK) != 0) {
      throw std::system_error(errno, std::generic_category(), "worker wake-up pipe");
    }
    if (options_.in_process) pool_ = std::make_unique<worker::ThreadPool>(options_.concurrency);
  }
  ~Impl() {
    close(wake_pipe_[0]);
    close(wake_pipe_[1]);
  }

  int Run();

  void RequestStop() {
    stop_requested_.store(true);
    Poke();
  }
  void RequestAbort() {
    abort_requests_.fetch_add(1);
    Poke();
  }
  void Stop(Deadline deadline) {
    RequestStop();
    std::unique_lock<std::mutex> lock(run_mutex_);
    if (!running_) return;
    if (!run_cv_.wait_until(lock, deadline, [this] { return !running_; })) {
      RequestAbort();
      RequestAbort();
      run_cv_.wait(lock, [this] { return !running_; });
    }
  }

 private:
  void Poke() {
    unsigned char b = 1;
    [[maybe_unused]] ssize_t n = write(wake_pipe_[1], &b, 1);
  }

  // --- connections -------------------------------------------------------
  void Connect();
  void Register();
  void ConnectListener();
  // Registers under a new identity (the old one was declared dead).
  void Rejoin();
  // The database went away: from now on reconnect with backoff while the
  // running tasks go on.
  void LostDatabase(const pg::Error& cause);
  void TryReconnect();

  // --- the loop ------------------------------------------------------------
  int RunLoop();
  void TakeStopRequests();
  bool stopping() const { return stop_ != StopMode::kNone; }
  void Heartbeat();
  void DrainNotifications();
  // Every running task: cancels, time limits, shutdown, kills, self-fencing.
  void Supervise();
  void PollStates();
  // A cancel of `task_id` arrived (notification or state read): tell its
  // slot, once.
  void Canceled(const std::string& task_id);
  // Queues an outcome for the next write (and starts its linger).
  void AddPending(PendingOutcome outcome);
  // Moves the outcomes of finished slots to pending_.
  void CollectFinished();
  // Writes pending outcomes and claims tasks for free slots, in one commit.
  void WriteAndClaim();
  // Writes the running tasks' progress, at most every kProgressInterval.
  void FlushProgress();
  void Start(Task task);
  // Declared dead: every task stops, nothing of ours is recorded.
  void Fenced(const std::string& why);
  void Wait();

  // Pending outcomes go out now: nothing else runs that could join them, or
  // the oldest has waited kOutcomeLinger, or we are stopping.
  bool OutcomesDue() const {
    if (pending_.empty()) return false;
    bool company_possible = false;
    for (const auto& s : slots_) company_possible |= !s->sup.fenced;
    return !company_possible || stopping() || Clock::now() >= first_pending_at_ + kOutcomeLinger;
  }
  int free_slots() const { return options_.concurrency - static_cast<int>(slots_.size()); }
  std::vector<std::string> OwnedTaskIds() const;
  Clock::duration PollDelay() {
    double stretch = std::max(1.0, static_cast<double>(idle_processes_) / kFleetPollsPerInterval);
    return Jittered(rng_, options_.poll_interval * stretch);
  }
  void ScheduleHeartbeat() {
    next_heartbeat_ = Clock::now() + Jittered(rng_, options_.heartbeat_interval, 0.9, 1.0);
  }

  WorkerOptions options_;
  const TaskRegistry& registry_;
  std::mt19937_64 rng_;
  worker::Janitor janitor_;
  int wake_pipe_[2] = {-1, -1};

  std::atomic<bool> stop_requested_{false};
  std::atomic<int> abort_requests_{0};
  int aborts_seen_ = 0;
  std::mutex run_mutex_;
  std::condition_variable run_cv_;
  bool running_ = false;

  pg::Connection conn_;
  pg::Connection listener_;
  std::string app_id_;
  std::string channel_;
  bool db_down_ = false;
  Deadline db_down_since_{};
  Deadline next_reconnect_{};
  worker::Backoff reconnect_backoff_{0.1, 5.0};

  std::unique_ptr<worker::ThreadPool> pool_;  // with in_process: one thread per slot
  std::vector<std::unique_ptr<Slot>> slots_;
  std::vector<PendingOutcome> pending_;
  Deadline first_pending_at_{};  // when the oldest of pending_ finished
  // A task thread that would not stop was left running at shutdown: the
  // process must exit without deregistering, so that its task keeps its
  // resources until the janitor finds this process gone.
  bool abandoned_thread_ = false;

  StopMode stop_ = StopMode::kNone;
  std::optional<Deadline> abort_at_;
  Deadline next_heartbeat_{};
  Deadline last_heartbeat_ok_{};
  bool wakeup_pending_ = true;
  Deadline next_poll_{};
  int idle_processes_ = 0;
  bool burst_done_ = false;
  Deadline next_state_poll_{};
  Deadline next_progress_flush_{};
  uint64_t tasks_run_ = 0;
};

// --- connections ------------------------------------------------------------

void Worker::Impl::Connect() {
  conn_ = pg::Connection::Open(options_.database_url, DeadlineIn(std::chrono::seconds(10)));
  janitor_.Connected();
}

void Worker::Impl::Register() {
  store::AppRegistration reg;
  reg.app_type = "worker";
  reg.name = options_.name;
  reg.hostname = Hostname();
  reg.pid = getpid();
  reg.ttl_seconds = options_.ttl;
  reg.functions = registry_.Names();
  reg.slots = options_.concurrency;
  auto app = store::RegisterApp(conn_, reg, DeadlineIn(kQueryTimeout));
  app_id_ = app.id;
  channel_ = app.channel;
  // A fleet started together must not heartbeat in lockstep: the first beat
  // falls anywhere in the first interval.
  next_heartbeat_ = Clock::now() + Jittered(rng_, options_.heartbeat_interval, 0.1, 1.0);
  last_heartbeat_ok_ = Clock::now();
  spdlog::info("worker {} registered as {} ({} slot(s), {}; heartbeat {}s, ttl {}s)", options_.name,
               app_id_, options_.concurrency,
               options_.in_process ? "in-process" : "a child process per task",
               options_.heartbeat_interval, options_.ttl);
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

void Worker::Impl::LostDatabase(const pg::Error& cause) {
  if (!db_down_) {
    spdlog::warn("database unavailable ({}); reconnecting with backoff; {} task(s) keep running",
                 cause.what(), slots_.size());
    db_down_since_ = Clock::now();
    reconnect_backoff_.Reset();
  }
  db_down_ = true;
  conn_ = pg::Connection();
  listener_ = pg::Connection();
  for (auto& p : pending_) p.retried = true;
  next_reconnect_ = Clock::now() + reconnect_backoff_.Next(rng_);
}

void Worker::Impl::TryReconnect() {
  try {
    Connect();
    if (!store::Heartbeat(conn_, app_id_, DeadlineIn(kQueryTimeout))) {
      Fenced("this worker was declared dead while the database was away");
    } else {
      last_heartbeat_ok_ = Clock::now();
      ScheduleHeartbeat();
      listener_ = pg::Connection();
      ConnectListener();
      // A claim whose answer was lost left tasks ours that we do not run.
      int lost = store::RequeueLost(conn_, app_id_, OwnedTaskIds(), DeadlineIn(kQueryTimeout));
      if (lost > 0) spdlog::warn("put {} task(s) claimed during the outage back in line", lost);
    }
    db_down_ = false;
    wakeup_pending_ = true;
    spdlog::info("database reachable again after {:.1f}s",
                 Seconds(Clock::now() - db_down_since_).count());
  } catch (const pg::Error& e) {
    if (!e.retryable()) throw;
    conn_ = pg::Connection();
    next_reconnect_ = Clock::now() + reconnect_backoff_.Next(rng_);
  }
}

std::vector<std::string> Worker::Impl::OwnedTaskIds() const {
  std::vector<std::string> ids;
  for (const auto& s : slots_) {
    if (!s->sup.fenced) ids.push_back(s->task.id);
  }
  for (const auto& p : pending_) ids.push_back(p.outcome.task_id);
  return ids;
}

// --- stopping ---------------------------------------------------------------

void Worker::Impl::TakeStopRequests() {
  unsigned char buf[64];
  while (read(wake_pipe_[0], buf, sizeof(buf)) > 0) {
  }
  if (stop_requested_.load() && stop_ == StopMode::kNone) {
    spdlog::info("stop requested: no new tasks; the {} running task(s) may finish; then exiting",
                 slots_.size());
    stop_ = StopMode::kGraceful;
  }
  int aborts = abort_requests_.load();
  if (aborts > aborts_seen_) {
    aborts_seen_ = aborts;
    if (stop_ == StopMode::kAbort || stop_ == StopMode::kAbortNow || aborts >= 2) {
      if (stop_ != StopMode::kAbortNow) {
        spdlog::warn("abort requested again: aborting the {} running task(s) now", slots_.size());
      }
      stop_ = StopMode::kAbortNow;
    } else {
      spdlog::info(
          "abort requested: no new tasks; the {} running task(s) are aborted after {}s "
          "(again to abort now)",
          slots_.size(), options_.shutdown_grace);
      stop_ = StopMode::kAbort;
      abort_at_ = Clock::now() + SecondsToDuration(options_.shutdown_grace);
    }
  }
}

// --- heartbeat, notifications ------------------------------------------------

void Worker::Impl::Heartbeat() {
  ScheduleHeartbeat();
  auto beat = store::HeartbeatFleet(conn_, app_id_, DeadlineIn(kQueryTimeout));
  if (!beat.alive) {
    Fenced(
        fmt::format("this worker ({}) was declared dead by the janitor (no heartbeat within {}s)",
                    app_id_, options_.ttl));
    return;
  }
  last_heartbeat_ok_ = Clock::now();
  idle_processes_ = beat.idle_processes;
}

void Worker::Impl::Fenced(const std::string& why) {
  if (!slots_.empty() || !pending_.empty()) {
    spdlog::error(
        "{}: stopping its {} running task(s) and recording nothing for them or {} finished "
        "one(s) (the janitor has decided their outcomes); rejoining as a new worker",
        why, slots_.size(), pending_.size());
  } else {
    spdlog::error("{}; rejoining as a new worker", why);
  }
  for (auto& s : slots_) {
    s->sup.fenced = true;
    s->Kill();
  }
  pending_.clear();
  Rejoin();
}

void Worker::Impl::DrainNotifications() {
  if (!listener_.ok()) return;
  try {
    while (auto n = listener_.NextNotification()) {
      if (n->payload.rfind("cancel ", 0) == 0) {
        Canceled(n->payload.substr(7));
      } else {
        wakeup_pending_ = true;
      }
    }
  } catch (const pg::ConnectionError& e) {
    spdlog::warn("listener connection lost ({}); reopening", e.what());
    listener_ = pg::Connection();
    wakeup_pending_ = true;
    try {
      ConnectListener();
    } catch (const pg::Error&) {
      // Retried at the next poll; polling finds work meanwhile.
    }
  }
}

// --- supervision --------------------------------------------------------------

void Worker::Impl::Canceled(const std::string& task_id) {
  for (auto& s : slots_) {
    if (s->task.id != task_id || s->sup.fenced || s->sup.cancel_requested) continue;
    spdlog::info("task {} canceled: signalling it (SIGKILL after {}s)", task_id,
                 options_.cancel_grace);
    s->sup.cancel_requested = true;
    s->AskToStop();
    s->sup.kill_at = Clock::now() + SecondsToDuration(options_.cancel_grace);
  }
}

void Worker::Impl::PollStates() {
  if (db_down_ || Clock::now() < next_state_poll_) return;
  next_state_poll_ = Clock::now() + kStatePollInterval;
  std::vector<std::string> ids;
  Deadline old_enough = Clock::now() - kStatePollInterval;
  for (const auto& s : slots_) {
    if (!s->sup.fenced && !s->sup.cancel_requested && s->started <= old_enough) {
      ids.push_back(s->task.id);
    }
  }
  if (ids.empty()) return;
  for (const auto& id : store::CancelingAmong(conn_, ids, DeadlineIn(kQueryTimeout))) Canceled(id);
}

void Worker::Impl::Supervise() {
  auto now = Clock::now();
  bool lost_too_long = now - last_heartbeat_ok_ > SecondsToDuration(options_.ttl * 0.8);
  bool abort_now =
      stop_ == StopMode::kAbortNow || (stop_ == StopMode::kAbort && abort_at_ && now >= *abort_at_);
  for (auto& slot : slots_) {
    Slot& s = *slot;
    auto& sup = s.sup;
    if (s.child) s.child->Poll();
    if (s.done()) continue;
    if (sup.fenced) {
      s.Kill();
      continue;
    }
    if (lost_too_long && !sup.self_fenced) {
      spdlog::error(
          "no heartbeat for {:.1f}s (ttl {}s): stopping task {} before this worker is declared "
          "dead",
          Seconds(now - last_heartbeat_ok_).count(), options_.ttl, s.task.id);
      sup.self_fenced = true;
      s.Kill();
    }
    if (sup.time_limit && now >= *sup.time_limit && !sup.timed_out && !sup.cancel_requested) {
      spdlog::warn("immediate task {} timed out after {:g}s: stopping it (SIGKILL after {}s)",
                   s.task.id, sup.timeout_seconds, options_.cancel_grace);
      sup.timed_out = true;
      s.AskToStop();
      sup.kill_at = now + SecondsToDuration(options_.cancel_grace);
    }
    if (abort_now && !sup.aborted && !sup.cancel_requested) {
      spdlog::warn("aborting task {} for shutdown", s.task.id);
      sup.aborted = true;
      s.AskToStop();
      sup.kill_at = now + (stop_ == StopMode::kAbortNow
                               ? Clock::duration::zero()
                               : SecondsToDuration(std::min(options_.cancel_grace, 5.0)));
    }
    // Aborting now: a child is killed at once; a thread gets a second to
    // return before it is called stubborn.
    if (stop_ == StopMode::kAbortNow && sup.kill_at) {
      sup.kill_at = s.child ? now : std::min(*sup.kill_at, now + std::chrono::seconds(1));
    }
    if (sup.kill_at && now >= *sup.kill_at) {
      if (s.child) {
        spdlog::warn("task {} did not stop after SIGUSR1: SIGKILL", s.task.id);
        s.child->Signal(SIGKILL);
      } else if (!sup.stubborn_logged) {
        spdlog::error(
            "task {} ignores its cancel; it runs on a thread, which cannot be killed: it keeps "
            "its slot and its resources until it returns",
            s.task.id);
        sup.stubborn_logged = true;
      }
      sup.kill_at.reset();
    }
    // Shutting down by abort: where a child gets SIGKILL, a thread is left
    // behind, and the process then exits without deregistering.
    if (s.thread && abort_now) {
      auto grace = stop_ == StopMode::kAbortNow
                       ? Clock::duration(std::chrono::seconds(1))
                       : SecondsToDuration(std::min(options_.cancel_grace, 5.0));
      sup.abandon_at = sup.abandon_at ? std::min(*sup.abandon_at, now + grace) : now + grace;
    }
  }
}

void Worker::Impl::CollectFinished() {
  for (size_t i = 0; i < slots_.size();) {
    Slot& s = *slots_[i];
    if (!s.done()) {
      ++i;
      continue;
    }
    s.CollectProgress();
    ++tasks_run_;
    if (!s.sup.fenced) {
      worker::Outcome out;
      if (s.sup.self_fenced) {
        out.state = TaskState::kFailed;
        out.error = {{"reason", "Stopped: the worker lost the database for longer than its TTL."}};
      } else if (s.sup.aborted) {
        out.state = TaskState::kFailed;
        out.error = {{"reason", "Aborted during worker shutdown."}};
      } else if (s.sup.cancel_requested) {
        out.state = TaskState::kCanceled;
      } else if (s.sup.timed_out) {
        out = worker::TimedOut(s.task, s.sup.timeout_seconds);
      } else {
        out = s.child ? s.child->outcome() : s.thread->outcome();
      }
      PendingOutcome p;
      p.outcome = {s.task.id, out.state, std::move(out.result), std::move(out.error)};
      p.task_name = s.task.name;
      p.progress = std::move(s.progress);
      AddPending(std::move(p));
    }
    slots_.erase(slots_.begin() + static_cast<std::ptrdiff_t>(i));
  }
}

void Worker::Impl::AddPending(PendingOutcome outcome) {
  if (pending_.empty()) first_pending_at_ = Clock::now();
  pending_.push_back(std::move(outcome));
}

void Worker::Impl::FlushProgress() {
  if (Clock::now() < next_progress_flush_) return;
  next_progress_flush_ = Clock::now() + kProgressInterval;
  for (auto& s : slots_) {
    s->CollectProgress();
    if (s->sup.fenced) s->progress.clear();
    for (const auto& [code, report] : s->progress) {
      store::ReportProgress(conn_, s->task.id, app_id_, report, DeadlineIn(kQueryTimeout));
    }
    s->progress.clear();
  }
}

// --- claiming and recording ---------------------------------------------------

void Worker::Impl::Start(Task task) {
  auto slot = std::make_unique<Slot>();
  slot->task = std::move(task);
  slot->started = Clock::now();
  const Task& t = slot->task;
  spdlog::debug("task {} ({}) started", t.id, t.name);
  if (t.immediate) {
    slot->sup.timeout_seconds = options_.immediate_timeout;
    slot->sup.time_limit = DeadlineIn(SecondsToDuration(options_.immediate_timeout));
  }
  // On a thread only what may run there: a function not declared inline_ok
  // could crash or stop this worker, and every task it runs, with it.
  auto fn_options = registry_.OptionsOf(t.name);
  bool on_thread = options_.in_process || (t.immediate && fn_options && fn_options->inline_ok);
  try {
    if (on_thread) {
      // In-process slots share a pool of threads; an immediate task of a
      // child-process worker gets a thread of its own.
      slot->thread = pool_ ? std::make_unique<worker::ThreadRun>(registry_, t, *pool_)
                           : std::make_unique<worker::ThreadRun>(registry_, t);
    } else {
      slot->child = std::make_unique<worker::ChildRun>(registry_, t);
    }
  } catch (const std::system_error& e) {
    spdlog::error("cannot start task {} ({}): {}", t.id, t.name, e.what());
    PendingOutcome p;
    p.outcome = {
        t.id,
        TaskState::kFailed,
        nullptr,
        {{"description", fmt::format("The worker could not start the task: {}.", e.what())}}};
    p.task_name = t.name;
    AddPending(std::move(p));
    return;
  }
  slots_.push_back(std::move(slot));
}

void Worker::Impl::WriteAndClaim() {
  if (burst_done_) return;
  bool may_claim = !stopping() && free_slots() > 0;
  bool poll_due = wakeup_pending_ || Clock::now() >= next_poll_;
  if (pending_.empty() && !(may_claim && poll_due)) return;
  if (!pending_.empty() && !OutcomesDue()) return;

  // A busy worker keeps its slots full: every write also claims for every
  // free slot (the finished tasks' slots among them).
  int claim = may_claim ? free_slots() : 0;
  bool with_outcomes = !pending_.empty();
  for (const auto& p : pending_) {
    for (const auto& [code, report] : p.progress) {
      store::ReportProgress(conn_, p.outcome.task_id, app_id_, report, DeadlineIn(kQueryTimeout));
    }
  }
  std::vector<store::TaskOutcome> outcomes;
  outcomes.reserve(pending_.size());
  for (const auto& p : pending_) outcomes.push_back(p.outcome);
  auto written = store::FinishAndClaimMany(conn_, app_id_, outcomes, claim,
                                           /*idle=*/!options_.burst, DeadlineIn(kQueryTimeout));
  if (!written.ok()) {
    if (written.error().code == ErrorCode::kFenced) {
      Fenced(fmt::format("claim refused: {}", written.error().message));
      return;
    }
    // Only a bug of ours can make the store refuse our own outcomes.
    throw DriverError(fmt::format("recording outcomes failed: {}", written.error().message));
  }
  for (size_t i = 0; i < pending_.size(); ++i) {
    const auto& p = pending_[i];
    const auto& state = written->finished[i];
    if (!state) {
      if (p.retried) {
        spdlog::debug("task {} was recorded before the database went away", p.outcome.task_id);
      } else {
        spdlog::warn(
            "task {} is no longer ours (this worker was declared dead); its outcome was not "
            "recorded",
            p.outcome.task_id);
      }
    } else {
      spdlog::log(*state == TaskState::kCompleted ? spdlog::level::debug : spdlog::level::info,
                  "task {} ({}) {}", p.outcome.task_id, p.task_name, TaskStateName(*state));
    }
  }
  pending_.clear();
  int claimed = static_cast<int>(written->claimed.size());
  for (auto& task : written->claimed) Start(std::move(task));
  if (claimed < claim || claim == 0) {
    // The ready set is empty for now. The releases of what we just finished
    // are examined by the next transaction, not this one: look once more at
    // once if there were any, otherwise at the next poll or wakeup.
    wakeup_pending_ = with_outcomes && !stopping();
    next_poll_ = Clock::now() + PollDelay();
    if (options_.burst && !with_outcomes && claimed == 0 && slots_.empty()) burst_done_ = true;
  }
  if (with_outcomes && stopping()) {
    // Nothing of ours will claim again: let the tasks behind ours through.
    store::ProcessReleases(conn_, DeadlineIn(kQueryTimeout));
  }
}

// --- waiting ------------------------------------------------------------------

void Worker::Impl::Wait() {
  std::vector<pollfd> fds;
  fds.push_back({wake_pipe_[0], POLLIN, 0});
  if (listener_.ok()) fds.push_back({listener_.socket(), POLLIN, 0});
  if (pool_) fds.push_back({pool_->wake_fd(), POLLIN, 0});
  Deadline until = Clock::now() + std::chrono::seconds(60);
  bool prompt = false;
  for (const auto& s : slots_) {
    if (s->child) {
      if (s->child->pipe_fd() >= 0) fds.push_back({s->child->pipe_fd(), POLLIN, 0});
      if (s->child->exit_fd() >= 0) fds.push_back({s->child->exit_fd(), POLLIN, 0});
      if (s->child->needs_prompt_poll()) prompt = true;
    } else {
      if (s->thread->done()) prompt = true;
      if (!pool_) fds.push_back({s->thread->wake_fd(), POLLIN, 0});
    }
    if (s->sup.kill_at) until = std::min(until, *s->sup.kill_at);
    if (s->sup.time_limit && !s->sup.timed_out) until = std::min(until, *s->sup.time_limit);
    if (s->sup.abandon_at) until = std::min(until, *s->sup.abandon_at);
  }
  if (!slots_.empty()) until = std::min(until, Clock::now() + kSuperviseTick);
  if (db_down_) {
    until = std::min(until, next_reconnect_);
  } else {
    until = std::min(until, next_heartbeat_);
    if (options_.janitor) until = std::min(until, janitor_.next_round());
    if (!stopping() && free_slots() > 0) until = std::min(until, next_poll_);
    if (OutcomesDue()) until = Clock::now();
    if (!pending_.empty()) until = std::min(until, first_pending_at_ + kOutcomeLinger);
  }
  if (abort_at_ && stop_ == StopMode::kAbort) until = std::min(until, *abort_at_);
  int timeout = prompt ? 1 : MillisLeft(until);
  int rc = poll(fds.data(), fds.size(), timeout);
  if (rc < 0 && errno != EINTR) throw std::system_error(errno, std::generic_category(), "poll");
  // Which jobs ended is read from each slot's done(), not from the counter.
  if (pool_) pool_->ClearWake();
}

// --- the loop -------------------------------------------------------------------

int Worker::Impl::RunLoop() {
  while (true) {
    TakeStopRequests();
    if (stopping() && slots_.empty() && pending_.empty()) break;
    if (burst_done_ && slots_.empty() && pending_.empty()) break;
    // With the database away and an abort asked for, finished outcomes are
    // left to the janitor once nothing runs any more.
    if (db_down_ && slots_.empty() && (stop_ == StopMode::kAbort || stop_ == StopMode::kAbortNow)) {
      spdlog::error(
          "stopping before the outcome of {} task(s) could be written; the janitor will fail "
          "them",
          pending_.size());
      return 0;
    }
    // Threads left behind at shutdown.
    bool abandon = false;
    for (const auto& s : slots_) {
      if (s->thread && s->sup.abandon_at && Clock::now() >= *s->sup.abandon_at &&
          !s->thread->done()) {
        spdlog::critical(
            "task {} ignores its cancel and this worker is shutting down: exiting with it still "
            "running on its thread, without deregistering, so that its resources stay held "
            "until the janitor declares this process missing",
            s->task.id);
        abandon = true;
      }
    }
    if (abandon) {
      abandoned_thread_ = true;
      return 1;
    }
    try {
      if (db_down_) {
        if (Clock::now() >= next_reconnect_) TryReconnect();
      } else {
        if (Clock::now() >= next_heartbeat_) Heartbeat();
        // Busy workers do janitor work too: a fleet whose every worker runs
        // long tasks must still find its dead.
        if (options_.janitor && janitor_.RunIfDue(conn_, app_id_)) wakeup_pending_ = true;
      }
      DrainNotifications();
      Supervise();
      if (!db_down_) PollStates();
      CollectFinished();
      if (!db_down_) {
        FlushProgress();
        WriteAndClaim();
        if (!listener_.ok() && options_.listen && Clock::now() >= next_poll_) {
          try {
            ConnectListener();
          } catch (const pg::Error&) {
          }
        }
      }
    } catch (const pg::Error& e) {
      if (store::IsFenced(e)) {
        Fenced(e.what());
        continue;
      }
      if (!e.retryable()) {
        spdlog::critical("unexpected database error: {} (SQLSTATE {})", e.what(), e.sqlstate());
        return 1;
      }
      LostDatabase(e);
    } catch (const Exception& e) {
      spdlog::critical("unexpected error: {}", e.what());
      return 1;
    }
    Wait();
  }
  return 0;
}

int Worker::Impl::Run() {
  {
    std::lock_guard<std::mutex> lock(run_mutex_);
    running_ = true;
  }
  struct Finished {
    Impl* self;
    ~Finished() {
      std::lock_guard<std::mutex> lock(self->run_mutex_);
      self->running_ = false;
      self->run_cv_.notify_all();
    }
  } finished{this};

  // Start-up: a database that is not there yet is waited for, not a crash.
  worker::Backoff backoff(0.2, 5.0);
  bool logged = false;
  for (;;) {
    TakeStopRequests();
    if (stopping()) return 0;
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
      pollfd pfd{wake_pipe_[0], POLLIN, 0};
      poll(&pfd, 1,
           static_cast<int>(std::chrono::duration_cast<milliseconds>(backoff.Next(rng_)).count()));
    }
  }

  next_poll_ = Clock::now();
  int rc = RunLoop();

  spdlog::info("worker {} stopping after {} task(s)", options_.name, tasks_run_);
  if (abandoned_thread_) {
    // Children die with us (PDEATHSIG) or are killed below; a thread cannot
    // be: its ThreadRun is detached when slots_ goes.
    return 1;
  }
  slots_.clear();
  try {
    if (conn_.ok() && !db_down_)
      store::DeregisterApp(conn_, app_id_, DeadlineIn(std::chrono::seconds(5)));
  } catch (const pg::Error& e) {
    spdlog::warn("could not deregister ({}); the janitor will remove this worker", e.what());
  }
  return rc;
}

// --- the public face -------------------------------------------------------------

Worker::Worker(WorkerOptions options, const TaskRegistry& registry)
    : impl_(std::make_unique<Impl>(std::move(options), registry)) {}
Worker::~Worker() = default;
int Worker::Run() { return impl_->Run(); }
void Worker::RequestStop() { impl_->RequestStop(); }
void Worker::RequestAbort() { impl_->RequestAbort(); }
void Worker::Stop(Deadline deadline) { impl_->Stop(deadline); }

namespace {

// The one Worker that SIGTERM and SIGINT are about (see WorkerSignals).
std::atomic<Worker*> signalled_worker{nullptr};
struct sigaction previous_term, previous_int, previous_pipe;

void OnStopSignal(int signo) {
  int saved = errno;
  if (Worker* w = signalled_worker.load()) {
    if (signo == SIGTERM) w->RequestStop();
    if (signo == SIGINT) w->RequestAbort();
  }
  errno = saved;
}

}  // namespace

WorkerSignals::WorkerSignals(Worker& worker) {
  Worker* expected = nullptr;
  if (!signalled_worker.compare_exchange_strong(expected, &worker)) {
    throw std::logic_error("only one WorkerSignals may exist in a process at a time");
  }
  struct sigaction sa {};
  sa.sa_handler = OnStopSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, &previous_term);
  sigaction(SIGINT, &sa, &previous_int);
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  sigemptyset(&ignore.sa_mask);
  sigaction(SIGPIPE, &ignore, &previous_pipe);
}

WorkerSignals::~WorkerSignals() {
  sigaction(SIGTERM, &previous_term, nullptr);
  sigaction(SIGINT, &previous_int, nullptr);
  sigaction(SIGPIPE, &previous_pipe, nullptr);
  signalled_worker.store(nullptr);
}

}  // namespace taskmill
