// The whole taskmill command line for a user's own program.
//
// Like RunMain (taskmill/main.h), plus the server's subcommands: `api` (the
// REST API server, which runs the registry's functions for immediate tasks)
// and `up` (everything on one machine; it starts this same program's
// `worker` and `api`). Part of taskmill::server, which links the HTTP server
// and OpenSSL; the stock `taskmill` program is this call with the built-ins.
#pragma once

#include "taskmill/registry.h"

namespace taskmill {

// Parses argv, runs the subcommand, returns the exit code for main(). The
// registry must outlive the call.
int RunServerMain(int argc, char** argv, TaskRegistry& registry);

}  // namespace taskmill
