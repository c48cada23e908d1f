#include <stdexcept>
#include <thread>

#include <fmt/format.h>

#include "taskmill/deadline.h"
#include "taskmill/registry.h"

namespace taskmill {

void TaskRegistry::Register(const std::string& name, TaskFunction fn, FunctionOptions options) {
  functions_[name] = Entry{std::move(fn), options};
}

const TaskFunction* TaskRegistry::Find(const std::string& name) const {
  auto it = functions_.find(name);
  return it == functions_.end() ? nullptr : &it->second.fn;
}

std::optional<FunctionOptions> TaskRegistry::OptionsOf(const std::string& name) const {
  auto it = functions_.find(name);
  if (it == functions_.end()) return std::nullopt;
  return it->second.options;
}

std::vector<std::string> TaskRegistry::Names() const {
  std::vector<std::string> names;
  for (const auto& [name, entry] : functions_) names.push_back(name);
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
  // None of them can crash or stop the process, and sleep honours a cancel
  // within 10 ms: safe to run on a thread of the API server or a worker.
  const FunctionOptions inline_ok{.inline_ok = true};
  registry.Register(
      "taskmill.noop",
      [](const nlohmann::json&, const nlohmann::json&, TaskContext&) {
        return nlohmann::json(nullptr);
      },
      inline_ok);
  registry.Register(
      "taskmill.sleep",
      [](const nlohmann::json&, const nlohmann::json& kwargs, TaskContext& ctx) {
        double seconds = NumberKwarg(kwargs, "seconds", 1.0);
        if (seconds < 0 || seconds > 7 * 24 * 3600) {
          throw std::invalid_argument("kwarg 'seconds' must be between 0 and 604800");
        }
        Deadline end = DeadlineIn(std::chrono::microseconds(static_cast<int64_t>(seconds * 1e6)));
        // Short naps so that a cancel is noticed within ~10 ms.
        while (!Expired(end) && !ctx.canceled()) {
          auto left = end - Clock::now();
          std::this_thread::sleep_for(
              std::min<Clock::duration>(left, std::chrono::milliseconds(10)));
        }
        return nlohmann::json(nullptr);
      },
      inline_ok);
  registry.Register(
      "taskmill.echo",
      [](const nlohmann::json& args, const nlohmann::json& kwargs, TaskContext&) {
        return nlohmann::json{{"args", args}, {"kwargs", kwargs}};
      },
      inline_ok);
  registry.Register(
      "taskmill.fail",
      [](const nlohmann::json&, const nlohmann::json& kwargs, TaskContext&) -> nlohmann::json {
        std::string message = "taskmill.fail was asked to fail";
        if (kwargs.contains("message")) {
          const auto& m = kwargs.at("message");
          message = m.is_string() ? m.get<std::string>() : m.dump();
        }
        throw std::runtime_error(message);
      },
      inline_ok);
}

}  // namespace taskmill
