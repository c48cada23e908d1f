// A user's own worker program: the worker-side taskmill command line
// (taskmill/main.h: migrate, worker, dispatch, tasks, workers) with two
// functions of its own besides the built-ins. It links taskmill::client
// only, not the HTTP server; a program whose API server should run its own
// immediate tasks calls taskmill::RunServerMain (taskmill/server_main.h).
//
//   build/examples/custom_worker/my-taskmill migrate
//   build/examples/custom_worker/my-taskmill worker
//   build/examples/custom_worker/my-taskmill dispatch shop.add --args '[2, 3]'
#include <stdexcept>

#include "taskmill/main.h"
#include "taskmill/registry.h"

int main(int argc, char** argv) {
  taskmill::TaskRegistry registry;
  taskmill::RegisterBuiltins(registry);
  registry.Register("shop.add",
                    [](const nlohmann::json& args, const nlohmann::json&, taskmill::TaskContext&) {
                      double sum = 0;
                      for (const auto& a : args) {
                        if (!a.is_number())
                          throw std::invalid_argument("shop.add adds numbers only");
                        sum += a.get<double>();
                      }
                      return nlohmann::json(sum);
                    });
  registry.Register("shop.count_to", [](const nlohmann::json&, const nlohmann::json& kwargs,
                                        taskmill::TaskContext& ctx) {
    int64_t n = kwargs.value("n", 10);
    for (int64_t i = 1; i <= n && !ctx.canceled(); ++i) {
      ctx.ReportProgress("shop.count", "Counting", i, n);
    }
    return nlohmann::json(n);
  });
  return taskmill::RunMain(argc, argv, registry);
}
