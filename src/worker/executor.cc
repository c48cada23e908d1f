#include "worker/executor.h"

#include <cxxabi.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <system_error>
#include <thread>
#include <typeinfo>
#include <utility>

#include <fmt/format.h>

namespace taskmill::worker {

namespace {

class FunctionContext : public TaskContext {
 public:
  FunctionContext(const std::string& task_id, const std::atomic<bool>& cancel,
                  const ProgressSink& progress)
      : task_id_(task_id), cancel_(cancel), progress_(progress) {}

  const std::string& task_id() const override { return task_id_; }
  bool canceled() const override { return cancel_.load(std::memory_order_relaxed); }
  void ReportProgress(const std::string& code, const std::string& message, int64_t done,
                      std::optional<int64_t> total) override {
    if (!progress_) return;
    nlohmann::json report{{"message", message},
                          {"code", code},
                          {"state", "running"},
                          {"done", done},
                          {"suffix", nullptr}};
    report["total"] = total ? nlohmann::json(*total) : nlohmann::json(nullptr);
    progress_(report);
  }

 private:
  const std::string& task_id_;
  const std::atomic<bool>& cancel_;
  const ProgressSink& progress_;
};

std::string CurrentExceptionType() {
  std::type_info* type = abi::__cxa_current_exception_type();
  if (type == nullptr) return "unknown";
  int status = 0;
  char* name = abi::__cxa_demangle(type->name(), nullptr, nullptr, &status);
  std::string out = status == 0 && name != nullptr ? name : type->name();
  std::free(name);
  return out;
}

// The function itself, found or not; shared by both ways of calling it.
Outcome CallFunction(const TaskFunction* fn, const Task& task, const std::atomic<bool>& cancel,
                     const ProgressSink& progress) {
  Outcome out;
  if (fn == nullptr) {
    out.state = TaskState::kFailed;
    out.error = {
        {"description",
         fmt::format("task function \"{}\" is not registered in this process", task.name)}};
    return out;
  }
  FunctionContext ctx(task.id, cancel, progress);
  try {
    out.result = (*fn)(task.args, task.kwargs, ctx);
    out.state = TaskState::kCompleted;
  } catch (const std::exception& e) {
    out.state = TaskState::kFailed;
    out.error = {{"description", e.what()},
                 {"traceback", fmt::format("{} thrown by {}", CurrentExceptionType(), task.name)}};
  } catch (...) {
    out.state = TaskState::kFailed;
    out.error = {{"description", "the task function threw a non-standard exception"},
                 {"traceback", fmt::format("{} thrown by {}", CurrentExceptionType(), task.name)}};
  }
  return out;
}

}  // namespace

Outcome RunFunction(const TaskRegistry& registry, const Task& task, const std::atomic<bool>& cancel,
                    const ProgressSink& progress) {
  return CallFunction(registry.Find(task.name), task, cancel, progress);
}

Outcome TimedOut(const Task& task, double seconds) {
  Outcome out;
  out.state = TaskState::kFailed;
  out.error = {
      {"description", fmt::format("Immediate task {} (type: {}) timed out after {:g} seconds.",
                                  task.id, task.name, seconds)}};
  return out;
}

struct ThreadPool::State {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::function<void()>> jobs;  // under mu
  int running = 0;                         // under mu
  bool stop = false;                       // under mu
  int event_fd = -1;
  ~State() {
    if (event_fd >= 0) close(event_fd);
  }
};

ThreadPool::ThreadPool(int threads) : state_(std::make_shared<State>()) {
  state_->event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (state_->event_fd < 0) throw std::system_error(errno, std::generic_category(), "eventfd");
  for (int i = 0; i < threads; ++i) {
    threads_.emplace_back([st = state_] {
      std::unique_lock<std::mutex> lock(st->mu);
      for (;;) {
        st->cv.wait(lock, [&] { return st->stop || !st->jobs.empty(); });
        if (st->jobs.empty()) return;  // stopping
        auto job = std::move(st->jobs.front());
        st->jobs.pop_front();
        ++st->running;
        lock.unlock();
        job();
        job = nullptr;
        uint64_t one = 1;
        [[maybe_unused]] ssize_t n = write(st->event_fd, &one, sizeof(one));
        lock.lock();
        --st->running;
      }
    });
  }
}

ThreadPool::~ThreadPool() {
  bool busy;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->stop = true;
    busy = state_->running > 0 || !state_->jobs.empty();
  }
  state_->cv.notify_all();
  for (auto& t : threads_) {
    if (busy) {
      t.detach();
    } else {
      t.join();
    }
  }
}

void ThreadPool::Submit(std::function<void()> job) {
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->jobs.push_back(std::move(job));
  }
  state_->cv.notify_one();
}

int ThreadPool::wake_fd() const { return state_->event_fd; }

void ThreadPool::ClearWake() {
  uint64_t v;
  [[maybe_unused]] ssize_t n = read(state_->event_fd, &v, sizeof(v));
}

struct ThreadRun::Shared {
  // With `own_pipe`, a pipe of its own tells that the function returned
  // (else the pool's eventfd does).
  Shared(const TaskFunction* found, Task t, bool own_pipe) : task(std::move(t)) {
    if (found != nullptr) fn = *found;
    if (own_pipe && pipe2(wake, O_CLOEXEC | O_NONBLOCK) != 0) {
      throw std::system_error(errno, std::generic_category(), "pipe");
    }
  }
  ~Shared() {
    if (wake[0] >= 0) close(wake[0]);
    if (wake[1] >= 0) close(wake[1]);
  }
  // Runs the function and publishes its outcome; on whichever thread.
  static void Run(const std::shared_ptr<Shared>& s) {
    ProgressSink sink = [raw = s.get()](const nlohmann::json& report) {
      std::lock_guard<std::mutex> lock(raw->mu);
      raw->progress[report.value("code", "")] = report;
    };
    Outcome o = CallFunction(s->fn ? &*s->fn : nullptr, s->task, s->cancel, sink);
    {
      std::lock_guard<std::mutex> lock(s->mu);
      s->outcome = std::move(o);
      s->done = true;
    }
    s->cv.notify_all();
    if (s->wake[1] >= 0) {
      char b = 1;
      [[maybe_unused]] ssize_t n = write(s->wake[1], &b, 1);
    }
  }
  std::optional<TaskFunction> fn;  // a copy: the registry may go first
  const Task task;
  std::atomic<bool> cancel{false};
  mutable std::mutex mu;
  std::condition_variable cv;
  bool done = false;                               // under mu
  Outcome outcome;                                 // under mu, final once done
  std::map<std::string, nlohmann::json> progress;  // under mu
  int wake[2] = {-1, -1};
  int pool_fd = -1;  // with a pool: its eventfd
};

ThreadRun::ThreadRun(const TaskRegistry& registry, Task task)
    : shared_(std::make_shared<Shared>(registry.Find(task.name), std::move(task), true)) {
  // The thread holds its own reference: it touches only the block.
  thread_ = std::thread([s = shared_] { Shared::Run(s); });
}

ThreadRun::ThreadRun(const TaskRegistry& registry, Task task, ThreadPool& pool)
    : shared_(std::make_shared<Shared>(registry.Find(task.name), std::move(task), false)) {
  shared_->pool_fd = pool.wake_fd();
  pool.Submit([s = shared_] { Shared::Run(s); });
}

ThreadRun::~ThreadRun() {
  if (!thread_.joinable()) return;
  if (done()) {
    thread_.join();
  } else {
    thread_.detach();
  }
}

const Task& ThreadRun::task() const { return shared_->task; }

void ThreadRun::Cancel() { shared_->cancel.store(true); }

bool ThreadRun::done() const {
  std::lock_guard<std::mutex> lock(shared_->mu);
  return shared_->done;
}

bool ThreadRun::Wait(Deadline until) {
  std::unique_lock<std::mutex> lock(shared_->mu);
  return shared_->cv.wait_until(lock, until, [&] { return shared_->done; });
}

int ThreadRun::wake_fd() const {
  return shared_->pool_fd >= 0 ? shared_->pool_fd : shared_->wake[0];
}

std::map<std::string, nlohmann::json> ThreadRun::TakeProgress() {
  std::lock_guard<std::mutex> lock(shared_->mu);
  return std::exchange(shared_->progress, {});
}

Outcome ThreadRun::outcome() const {
  std::lock_guard<std::mutex> lock(shared_->mu);
  return shared_->outcome;
}

}  // namespace taskmill::worker
