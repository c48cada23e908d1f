// RunServerMain (taskmill/server_main.h): the worker-side command line of
// RunMain plus the server's subcommands.
#include "taskmill/server_main.h"

#include "cli/commands.h"
#include "cli/run_cli.h"

namespace taskmill {

int RunServerMain(int argc, char** argv, TaskRegistry& registry) {
  static constexpr cli::AddCommandsFn kServerCommands[] = {cli::AddUp, cli::AddApiCommands};
  return cli::RunCli(argc, argv, registry, kServerCommands);
}

}  // namespace taskmill
