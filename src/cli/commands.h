// The subcommands of the `taskmill` program.
//
// Each part adds its own subcommands to the CLI11 app; a subcommand's
// callback reports failure by throwing CLI::RuntimeError(exit_code) after
// printing a clear message to stderr.
#pragma once

#include <string>

#include <CLI/CLI.hpp>

#include "taskmill/registry.h"
#include "taskmill/result.h"

namespace taskmill::cli {

struct GlobalOptions {
  std::string database_url;  // --database-url or TASKMILL_DATABASE_URL
  std::string log_level = "info";
  TaskRegistry* registry = nullptr;  // the functions this program carries
};

// The database to use: the flag, else $TASKMILL_DATABASE_URL, else the
// embedded cluster of `taskmill up` if it is running. An error says how to
// give one.
Result<std::string> ResolveDatabaseUrl(const GlobalOptions& options);

// migrate, worker, dispatch, tasks, workers: every program's (RunMain).
void AddCoreCommands(CLI::App& app, GlobalOptions& options);
// up: starts this program's `worker` and `api`, so only a program with the
// api subcommand has it (RunServerMain).
void AddUp(CLI::App& app, GlobalOptions& options);
// api, bench ingest (api_commands.cc; RunServerMain).
void AddApiCommands(CLI::App& app, GlobalOptions& options);

// Sets up spdlog: level from the string, a pattern with time and process.
void SetupLogging(const std::string& level, const std::string& process_name);

}  // namespace taskmill::cli
