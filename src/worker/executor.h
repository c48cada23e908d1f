// Executing one task function and turning what happened into an outcome.
//
// Shared by the worker (child process or in-process) and by the API server
// (immediate tasks in the request thread). The caller owns the claim on the
// task; this code only runs the function and reports.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "taskmill/registry.h"
#include "taskmill/task.h"

namespace taskmill::worker {

struct Outcome {
  TaskState state = TaskState::kFailed;  // kCompleted, kFailed or kCanceled
  nlohmann::json result;                 // the function's return value if completed
  nlohmann::json error;                  // {"description", "traceback"} or {"reason"}
};

// Receives progress reports (already JSON objects of Pulp's progress shape:
// message, code, state, total, done, suffix).
using ProgressSink = std::function<void(const nlohmann::json& report)>;

// Runs the registered function of `task` on the calling thread and catches
// everything it throws. Unknown names fail with a clear description.
Outcome RunFunction(const TaskRegistry& registry, const Task& task, const std::atomic<bool>& cancel,
                    const ProgressSink& progress);

// Runs the function on a helper thread and waits at most `timeout`. On time
// out the cancel flag is raised and the outcome is failed with "Task <id>
// (<name>) timed out after N seconds."; the thread is left to finish on its
// own (a function that ignores cancellation keeps its thread until it
// returns). Used for immediate tasks.
Outcome RunWithTimeout(const TaskRegistry& registry, const Task& task,
                       std::chrono::milliseconds timeout, const ProgressSink& progress);

}  // namespace taskmill::worker
