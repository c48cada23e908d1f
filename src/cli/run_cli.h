// The `taskmill` command line, shared by the stock program and by users' own
// programs that carry more task functions.
#pragma once

#include "taskmill/registry.h"

namespace taskmill::cli {

// Parses argv, runs the subcommand and returns the process exit code.
int RunCli(int argc, char** argv, TaskRegistry& registry);

}  // namespace taskmill::cli
