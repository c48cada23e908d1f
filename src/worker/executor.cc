#include "worker/executor.h"

#include <cxxabi.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
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

struct ThreadRun::Shared {
  Shared(const TaskFunction* found, Task t) : task(std::move(t)) {
    if (found != nullptr) fn = *found;
    if (pipe2(wake, O_CLOEXEC | O_NONBLOCK) != 0) {
      throw std::system_error(errno, std::generic_category(), "pipe");
    }
  }
  ~Shared() {
    close(wake[0]);
    close(wake[1]);
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
};

ThreadRun::ThreadRun(const TaskRegistry& registry, Task task)
    : shared_(std::make_shared<Shared>(registry.Find(task.name), std::move(task))) {
  // The thread holds its own reference: it touches only the block.
  thread_ = std::thread([s = shared_] {
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
    char b = 1;
    [[maybe_unused]] ssize_t n = write(s->wake[1], &b, 1);
  });
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

int ThreadRun::wake_fd() const { return shared_->wake[0]; }

std::map<std::string, nlohmann::json> ThreadRun::TakeProgress() {
  std::lock_guard<std::mutex> lock(shared_->mu);
  return std::exchange(shared_->progress, {});
}

Outcome ThreadRun::outcome() const {
  std::lock_guard<std::mutex> lock(shared_->mu);
  return shared_->outcome;
}

}  // namespace taskmill::worker
