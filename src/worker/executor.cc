#include "worker/executor.h"

#include <cxxabi.h>

#include <condition_variable>
#include <mutex>
#include <thread>
#include <typeinfo>

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

}  // namespace

Outcome RunFunction(const TaskRegistry& registry, const Task& task, const std::atomic<bool>& cancel,
                    const ProgressSink& progress) {
  Outcome out;
  const TaskFunction* fn = registry.Find(task.name);
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

Outcome RunWithTimeout(const TaskRegistry& registry, const Task& task,
                       std::chrono::milliseconds timeout, const ProgressSink& progress) {
  // Shared with the helper thread, which may outlive this call on time out.
  struct State {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    Outcome outcome;
    bool abandoned = false;  // under mu: the caller has returned
    std::atomic<bool> cancel{false};
    Task task;
    ProgressSink progress;
  };
  auto state = std::make_shared<State>();
  state->task = task;
  // Progress goes to the caller's sink only while the caller still waits.
  state->progress = [state_weak = std::weak_ptr<State>(state), &progress](const nlohmann::json& r) {
    auto s = state_weak.lock();
    if (!s || !progress) return;
    std::lock_guard<std::mutex> lock(s->mu);
    if (!s->abandoned) progress(r);
  };
  std::thread([state, &registry] {
    Outcome o = RunFunction(registry, state->task, state->cancel, state->progress);
    std::lock_guard<std::mutex> lock(state->mu);
    state->outcome = std::move(o);
    state->done = true;
    state->cv.notify_all();
  }).detach();
  std::unique_lock<std::mutex> lock(state->mu);
  if (state->cv.wait_for(lock, timeout, [&] { return state->done; })) {
    return state->outcome;
  }
  state->cancel = true;
  state->abandoned = true;  // under mu, held since the wait
  Outcome out;
  out.state = TaskState::kFailed;
  double seconds = std::chrono::duration<double>(timeout).count();
  out.error = {
      {"description", fmt::format("Immediate task {} (type: {}) timed out after {:g} seconds.",
                                  task.id, task.name, seconds)}};
  return out;
}

}  // namespace taskmill::worker
