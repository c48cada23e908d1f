#include "api/immediate.h"

#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <system_error>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace taskmill::api {

namespace {

using Seconds = std::chrono::duration<double>;

// How often overdue runs are looked at, and a failed record retried.
constexpr auto kReapInterval = std::chrono::milliseconds(20);
constexpr auto kRecordRetry = std::chrono::seconds(1);

Clock::duration ToDuration(double seconds) {
  return std::chrono::duration_cast<Clock::duration>(Seconds(seconds));
}

}  // namespace

ImmediateRunner::ImmediateRunner(const TaskRegistry& registry, double timeout_seconds,
                                 size_t max_overdue, Recorder record)
    : registry_(registry),
      timeout_seconds_(timeout_seconds),
      max_overdue_(max_overdue),
      record_(std::move(record)) {
  // The process's signals are for the thread that waits for them: this one
  // is started with every signal blocked, whoever constructs it and when.
  sigset_t all, before;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &before);
  reaper_ = std::thread([this] { Reap(); });
  pthread_sigmask(SIG_SETMASK, &before, nullptr);
}

ImmediateRunner::~ImmediateRunner() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  reaper_.join();
}

bool ImmediateRunner::MayRunInline(const std::string& name) const {
  auto options = registry_.OptionsOf(name);
  if (!options || !options->inline_ok) return false;
  std::lock_guard<std::mutex> lock(mu_);
  return overdue_.size() < max_overdue_;
}

std::optional<worker::Outcome> ImmediateRunner::Run(const Task& task) {
  std::unique_ptr<worker::ThreadRun> run;
  try {
    run = std::make_unique<worker::ThreadRun>(registry_, task);
  } catch (const std::system_error& e) {
    worker::Outcome out;
    out.error = {{"description", fmt::format("Could not start the immediate task: {}", e.what())}};
    return out;
  }
  if (run->Wait(DeadlineIn(ToDuration(timeout_seconds_)))) return run->outcome();
  // Told to stop; a function that honours it returns within the grace, and
  // its task is recorded by the request as usual.
  run->Cancel();
  auto grace = std::min(ToDuration(timeout_seconds_), ToDuration(1.0));
  if (run->Wait(DeadlineIn(grace))) return worker::TimedOut(task, timeout_seconds_);
  spdlog::warn(
      "immediate task {} ({}) ignores its cancel after its timeout of {:g}s: it keeps its "
      "resources until its function returns",
      task.id, task.name, timeout_seconds_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    overdue_.push_back(std::move(run));
  }
  cv_.notify_all();
  return std::nullopt;
}

bool ImmediateRunner::Owns(const std::string& task_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  return std::any_of(overdue_.begin(), overdue_.end(),
                     [&](const auto& r) { return r->task().id == task_id; });
}

size_t ImmediateRunner::overdue() const {
  std::lock_guard<std::mutex> lock(mu_);
  return overdue_.size();
}

size_t ImmediateRunner::Drain(Deadline until) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!overdue_.empty()) {
    spdlog::info("waiting for {} overdue immediate task(s) to return", overdue_.size());
  }
  cv_.wait_until(lock, until, [&] { return overdue_.empty(); });
  return overdue_.size();
}

void ImmediateRunner::Reap() {
  std::unique_lock<std::mutex> lock(mu_);
  std::optional<Deadline> retry_at;
  while (!stop_) {
    if (overdue_.empty()) {
      cv_.wait(lock, [&] { return stop_ || !overdue_.empty(); });
      continue;
    }
    cv_.wait_for(lock, kReapInterval, [&] { return stop_; });
    if (stop_ || (retry_at && Clock::now() < *retry_at)) continue;
    retry_at.reset();
    // Recorded outside the lock (a database round trip); the run stays in
    // the list, owned, until its record is written.
    worker::ThreadRun* finished = nullptr;
    for (const auto& r : overdue_) {
      if (r->done()) {
        finished = r.get();
        break;
      }
    }
    if (finished == nullptr) continue;
    lock.unlock();
    bool recorded = false;
    try {
      record_(finished->task(), worker::TimedOut(finished->task(), timeout_seconds_));
      recorded = true;
    } catch (const std::exception& e) {
      spdlog::warn("recording overdue immediate task {}: {}; retrying", finished->task().id,
                   e.what());
    }
    lock.lock();
    if (!recorded) {
      retry_at = Clock::now() + kRecordRetry;
      continue;
    }
    overdue_.erase(std::find_if(overdue_.begin(), overdue_.end(),
                                [&](const auto& r) { return r.get() == finished; }));
    cv_.notify_all();  // Drain()
  }
}

}  // namespace taskmill::api
