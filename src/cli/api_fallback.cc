// TEMPORARY until src/api lands: a weak AddApiCommands.
#include "cli/commands.h"
namespace taskmill::cli {
__attribute__((weak)) void AddApiCommands(CLI::App&, GlobalOptions&) {}
}  // namespace taskmill::cli
