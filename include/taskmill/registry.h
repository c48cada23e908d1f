// TaskRegistry: the functions a process can run, by name.
//
// A task names a function; a worker runs it only if the name is in its
// registry. A function receives the task's args (a JSON array), kwargs (a JSON
// object) and a TaskContext, and returns a JSON result. It fails by throwing:
// the exception's what() becomes error.description. The registry is built at
// start-up and read-only afterwards; it is owned by the program (see
// examples/custom_worker for a user's own worker program).
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace taskmill {

// What a running function may ask of its surroundings. Owned by the worker;
// valid for the duration of the call.
class TaskContext {
 public:
  virtual ~TaskContext() = default;
  virtual const std::string& task_id() const = 0;
  // True once the task was canceled (or the worker is aborting it). A
  // function that runs for long should poll this and return (or throw)
  // promptly; in a child process it is also followed by SIGUSR1 handling and,
  // after the grace period, SIGKILL.
  virtual bool canceled() const = 0;
  // Records progress, visible in the task's progress_reports. A report with
  // the same code replaces the previous one. Cheap to call often: writes are
  // rate-limited.
  virtual void ReportProgress(const std::string& code, const std::string& message, int64_t done,
                              std::optional<int64_t> total = std::nullopt) = 0;
};

using TaskFunction = std::function<nlohmann::json(const nlohmann::json& args,
                                                  const nlohmann::json& kwargs, TaskContext& ctx)>;

// How a function may be run, declared when it is registered.
struct FunctionOptions {
  // The function may run on a thread of a long-lived process that serves
  // others: the API server (immediate tasks) and a worker (immediate tasks
  // without a child process). Declare it only for a function that cannot
  // crash, stop or otherwise damage its process, and that returns soon after
  // TaskContext::canceled() turns true (a thread cannot be killed: past its
  // timeout, its task keeps its resources until it returns). A function
  // without it always runs in a worker's child process (with --in-process, on
  // a worker's thread, as the operator asked), even when dispatched
  // immediate.
  bool inline_ok = false;
};

class TaskRegistry {
 public:
  // Registers `fn` under `name` (replacing an earlier one and its options).
  void Register(const std::string& name, TaskFunction fn, FunctionOptions options = {});
  // The function registered under `name`, or nullptr. The pointer stays
  // valid while the registry lives and is not changed.
  const TaskFunction* Find(const std::string& name) const;
  // The options `name` was registered with; nullopt if it is not registered.
  std::optional<FunctionOptions> OptionsOf(const std::string& name) const;
  std::vector<std::string> Names() const;

 private:
  struct Entry {
    TaskFunction fn;
    FunctionOptions options;
  };
  std::map<std::string, Entry> functions_;
};

// The stock functions, used by demos and benchmarks; all four are declared
// inline_ok:
//   taskmill.noop   does nothing, returns null
//   taskmill.sleep  kwarg `seconds` (number, 0 to 604800); polls for
//                   cancellation every 10 ms
//   taskmill.echo   returns {"args": args, "kwargs": kwargs}
//   taskmill.fail   kwarg `message`: fails with that description
void RegisterBuiltins(TaskRegistry& registry);

}  // namespace taskmill
