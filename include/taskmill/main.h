// The taskmill command line for a user's own worker program.
//
// A program that carries its own task functions builds a TaskRegistry and
// hands it here; it then has the worker-side subcommands of the stock
// `taskmill` (migrate, worker, dispatch, tasks, workers, with the global
// flags), and its workers run its functions. See examples/custom_worker.
// Part of taskmill::client: the program links no HTTP server. For the `api`
// and `up` subcommands too (an API server that runs the program's own
// immediate tasks), see taskmill/server_main.h.
#pragma once

#include "taskmill/registry.h"

namespace taskmill {

// Parses argv, runs the subcommand, returns the exit code for main(). The
// registry must outlive the call.
int RunMain(int argc, char** argv, TaskRegistry& registry);

}  // namespace taskmill
