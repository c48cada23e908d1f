// build/taskmill-test-worker: every subcommand of `taskmill` (through the
// public taskmill/server_main.h, as a user's own program would), running the
// built-ins and the test-only functions of support/test_functions.h.
#include "support/test_functions.h"
#include "taskmill/registry.h"
#include "taskmill/server_main.h"

int main(int argc, char** argv) {
  taskmill::TaskRegistry registry;
  taskmill::RegisterBuiltins(registry);
  taskmill::testing::RegisterTestFunctions(registry);
  return taskmill::RunServerMain(argc, argv, registry);
}
