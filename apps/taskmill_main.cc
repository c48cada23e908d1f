// The stock taskmill program: every subcommand, with the built-in functions.
#include "taskmill/registry.h"
#include "taskmill/server_main.h"

int main(int argc, char** argv) {
  taskmill::TaskRegistry registry;
  taskmill::RegisterBuiltins(registry);
  return taskmill::RunServerMain(argc, argv, registry);
}
