// The `taskmill` command line, shared by the stock program and by users' own
// programs that carry more task functions.
#pragma once

#include <span>

#include "cli/commands.h"
#include "taskmill/registry.h"

namespace taskmill::cli {

// Adds subcommands to the app (AddCoreCommands, AddApiCommands, ...).
using AddCommandsFn = void (*)(CLI::App& app, GlobalOptions& options);

// Parses argv, runs the subcommand and returns the process exit code. The
// app has the global flags and the worker-side subcommands
// (AddCoreCommands), then those that each of `more` adds, in order.
int RunCli(int argc, char** argv, TaskRegistry& registry, std::span<const AddCommandsFn> more = {});

}  // namespace taskmill::cli
