// The taskmill command line for a user's own program.
//
// A program that carries its own task functions builds a TaskRegistry and
// hands it here; it then has every subcommand of the stock `taskmill`
// (worker, dispatch, tasks, migrate, api, ...), and its workers run its
// functions. See examples/custom_worker.
#pragma once

#include "taskmill/registry.h"

namespace taskmill {

// Parses argv, runs the subcommand, returns the exit code for main().
int RunMain(int argc, char** argv, TaskRegistry& registry);

}  // namespace taskmill
