#include "support/test_functions.h"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <stdexcept>
#include <string>
#include <thread>

#include <fmt/format.h>

#include "taskmill/deadline.h"

namespace taskmill::testing {

namespace {

void Append(const nlohmann::json& kwargs, const char* key, const std::string& line) {
  if (!kwargs.contains(key)) return;
  if (!kwargs[key].is_string()) {
    throw std::invalid_argument(fmt::format("kwarg '{}' must be a path", key));
  }
  int fd = open(kwargs[key].get<std::string>().c_str(), O_WRONLY | O_APPEND | O_CREAT, 0644);
  if (fd < 0) throw std::runtime_error(fmt::format("cannot open the '{}' file", key));
  [[maybe_unused]] ssize_t n = write(fd, line.data(), line.size());
  close(fd);
}

int64_t MicrosNow() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

void RegisterTestFunctions(TaskRegistry& registry) {
  registry.Register(
      "test.sleep",
      [](const nlohmann::json&, const nlohmann::json& kwargs, TaskContext& ctx) {
        double seconds = kwargs.value("seconds", 1.0);
        Append(kwargs, "journal", fmt::format("{} {}\n", ctx.task_id(), getpid()));
        Append(kwargs, "times", fmt::format("{} start {}\n", ctx.task_id(), MicrosNow()));
        bool stubborn = kwargs.value("ignore_cancel", false);
        if (stubborn) std::signal(SIGUSR1, SIG_IGN);
        Deadline end = DeadlineIn(std::chrono::microseconds(static_cast<int64_t>(seconds * 1e6)));
        while (!Expired(end) && (stubborn || !ctx.canceled())) {
          auto left = end - Clock::now();
          std::this_thread::sleep_for(
              std::min<Clock::duration>(left, std::chrono::milliseconds(10)));
        }
        Append(kwargs, "times", fmt::format("{} end {}\n", ctx.task_id(), MicrosNow()));
        return nlohmann::json(nullptr);
      },
      {.inline_ok = true});
  registry.Register(
      "test.crash",
      [](const nlohmann::json&, const nlohmann::json& kwargs, TaskContext&) -> nlohmann::json {
        int signo = kwargs.value("signal", SIGSEGV);
        if (signo <= 0 || signo >= NSIG) throw std::invalid_argument("kwarg 'signal' out of range");
        // The default action, so that the process really dies (or stops).
        std::signal(signo, SIG_DFL);
        std::raise(signo);
        throw std::runtime_error(fmt::format("signal {} did not end the process", signo));
      });
}

}  // namespace taskmill::testing
