#include "cli/run_cli.h"

#include <cstdlib>
#include <iostream>

#include <spdlog/spdlog.h>

#include "cli/exit_codes.h"
#include "pg/connection.h"
#include "taskmill/main.h"

namespace taskmill::cli {

int RunCli(int argc, char** argv, TaskRegistry& registry, std::span<const AddCommandsFn> more) {
  CLI::App app{"taskmill: a distributed task system on PostgreSQL", "taskmill"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("taskmill ") + TASKMILL_VERSION);
  GlobalOptions options;
  options.registry = &registry;
  app.add_option("--database-url", options.database_url,
                 "PostgreSQL URL or conninfo (default: $TASKMILL_DATABASE_URL, else the embedded "
                 "database of `taskmill up`)");
  app.add_option("--log-level", options.log_level, "trace, debug, info, warn, error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}))
      ->capture_default_str();
  app.add_flag_callback(
         "--no-prepared-statements",
         [] {
           // The environment carries it to the processes `taskmill up` starts.
           setenv("TASKMILL_PREPARED_STATEMENTS", "off", 1);
           pg::SetPreparedStatements(false);
         },
         "Run every statement unnamed (for a transaction-pooling pgbouncer before 1.21; "
         "default: $TASKMILL_PREPARED_STATEMENTS, else on)")
      ->trigger_on_parse();
  app.fallthrough();
  AddCoreCommands(app, options);
  for (AddCommandsFn add : more) add(app, options);
  try {
    app.parse(argc, argv);
  } catch (const CLI::RuntimeError& e) {
    return e.get_exit_code();
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    // CLI11 uses 0 for --help and --version, 106/109 etc. for usage errors:
    // one code for all bad usage.
    return rc == 0 ? kExitOk : kExitBadInput;
  } catch (const std::exception& e) {
    std::cerr << "taskmill: " << e.what() << "\n";
    return kExitError;
  }
  return kExitOk;
}

}  // namespace taskmill::cli

namespace taskmill {
int RunMain(int argc, char** argv, TaskRegistry& registry) {
  return cli::RunCli(argc, argv, registry);
}
}  // namespace taskmill
