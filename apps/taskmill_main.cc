// The stock taskmill program: every subcommand, with the built-in functions.
#include "cli/run_cli.h"
#include "taskmill/registry.h"

int main(int argc, char** argv) {
  taskmill::TaskRegistry registry;
  taskmill::RegisterBuiltins(registry);
  return taskmill::cli::RunCli(argc, argv, registry);
}
