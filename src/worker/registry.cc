#include <fcntl.h>
#include <unistd.h>

#include <csignal>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>

#include "taskmill/deadline.h"
#include "taskmill/registry.h"

namespace taskmill {

void TaskRegistry::Register(const std::string& name, TaskFunction fn) {
  functions_[name] = std::move(fn);
}

const TaskFunction* TaskRegistry::Find(const std::string& name) const {
  auto it = functions_.find(name);
  return it == functions_.end() ? nullptr : &it->second;
}

std::vector<std::string> TaskRegistry::Names() const {
  std::vector<std::string> names;
  for (const auto& [name, fn] : functions_) names.push_back(name);
  return names;
}

namespace {

double NumberKwarg(const nlohmann::json& kwargs, const char* key, double fallback) {
  if (!kwargs.contains(key)) return fallback;
  const auto& v = kwargs.at(key);
  if (!v.is_number()) throw std::invalid_argument(fmt::format("kwarg '{}' must be a number", key));
  return v.get<double>();
}

}  // namespace

void RegisterBuiltins(TaskRegistry& registry) {
  registry.Register("taskmill.noop", [](const nlohmann::json&, const nlohmann::json&,
                                        TaskContext&) { return nlohmann::json(nullptr); });
  registry.Register("taskmill.sleep", [](const nlohmann::json&, const nlohmann::json& kwargs,
                                         TaskContext& ctx) {
    double seconds = NumberKwarg(kwargs, "seconds", 1.0);
    if (seconds < 0 || seconds > 7 * 24 * 3600) {
      throw std::invalid_argument("kwarg 'seconds' must be between 0 and 604800");
    }
    // For fault tests: `journal` names a file that gets "<task id> <pid>",
    // one line per run, so a test can prove no task ran twice and find the
    // process that ran it.
    if (kwargs.contains("journal")) {
      if (!kwargs["journal"].is_string())
        throw std::invalid_argument("kwarg 'journal' must be a path");
      std::string line = fmt::format("{} {}\n", ctx.task_id(), getpid());
      int fd =
          open(kwargs["journal"].get<std::string>().c_str(), O_WRONLY | O_APPEND | O_CREAT, 0644);
      if (fd < 0) throw std::runtime_error("cannot open the journal file");
      [[maybe_unused]] ssize_t n = write(fd, line.data(), line.size());
      close(fd);
    }
    // `ignore_cancel`: a task that pays no attention to cancellation or
    // SIGUSR1, as badly written ones do.
    bool stubborn = kwargs.value("ignore_cancel", false);
    if (stubborn) std::signal(SIGUSR1, SIG_IGN);
    Deadline end = DeadlineIn(std::chrono::microseconds(static_cast<int64_t>(seconds * 1e6)));
    // Short naps so that a cancel is noticed within ~10 ms.
    while (!Expired(end) && (stubborn || !ctx.canceled())) {
      auto left = end - Clock::now();
      std::this_thread::sleep_for(std::min<Clock::duration>(left, std::chrono::milliseconds(10)));
    }
    return nlohmann::json(nullptr);
  });
  registry.Register("taskmill.echo",
                    [](const nlohmann::json& args, const nlohmann::json& kwargs, TaskContext&) {
                      return nlohmann::json{{"args", args}, {"kwargs", kwargs}};
                    });
  registry.Register(
      "taskmill.fail",
      [](const nlohmann::json&, const nlohmann::json& kwargs, TaskContext&) -> nlohmann::json {
        std::string message = "taskmill.fail was asked to fail";
        if (kwargs.contains("message")) {
          const auto& m = kwargs.at("message");
          message = m.is_string() ? m.get<std::string>() : m.dump();
        }
        throw std::runtime_error(message);
      });
  registry.Register(
      "taskmill.crash",
      [](const nlohmann::json&, const nlohmann::json& kwargs, TaskContext&) -> nlohmann::json {
        int signo = static_cast<int>(NumberKwarg(kwargs, "signal", SIGSEGV));
        if (signo <= 0 || signo >= NSIG) throw std::invalid_argument("kwarg 'signal' out of range");
        // Default action, so the process really dies of it.
        std::signal(signo, SIG_DFL);
        std::raise(signo);
        // Signals whose default is to be ignored end up here.
        throw std::runtime_error(fmt::format("signal {} did not kill the process", signo));
      });
}

}  // namespace taskmill
