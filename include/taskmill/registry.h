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

class TaskRegistry {
 public:
  // Registers `fn` under `name` (replacing an earlier one).
  void Register(const std::string& name, TaskFunction fn);
  const TaskFunction* Find(const std::string& name) const;
  std::vector<std::string> Names() const;

 private:
  std::map<std::string, TaskFunction> functions_;
};

// The stock functions, used by tests, demos and benchmarks:
//   taskmill.noop   does nothing, returns null
//   taskmill.sleep  kwarg `seconds` (number); polls for cancellation
//   taskmill.echo   returns {"args": args, "kwargs": kwargs}
//   taskmill.fail   kwarg `message`: fails with that description
//   taskmill.crash  kills its own process with a signal (kwarg `signal`,
//                   default SIGSEGV); in a child process the worker lives on
void RegisterBuiltins(TaskRegistry& registry);

}  // namespace taskmill
