// The exit codes of the `taskmill` program (README.md, "Exit codes"), and
// the one table that turns an ErrorCode into one. Every command that fails
// on a Result error exits with ExitCodeFor(error.code).
#pragma once

#include <array>
#include <utility>

#include "taskmill/result.h"

namespace taskmill::cli {

constexpr int kExitOk = 0;
constexpr int kExitError = 1;        // unexpected error (a bug, a lost process)
constexpr int kExitBadInput = 2;     // usage, JSON, unknown function, bad resource names
constexpr int kExitNotFound = 3;     // no such task or group
constexpr int kExitConflict = 4;     // e.g. canceling a finished task
constexpr int kExitUnavailable = 5;  // database unavailable or of the wrong schema version

// ErrorCode -> exit code; every ErrorCode appears exactly once
// (tests/api/error_tables_test.cc checks it).
inline constexpr std::array<std::pair<ErrorCode, int>, 7> kExitCodeTable = {{
    {ErrorCode::kInvalidArgument, kExitBadInput},
    {ErrorCode::kNotFound, kExitNotFound},
    {ErrorCode::kConflict, kExitConflict},
    {ErrorCode::kUnavailable, kExitUnavailable},
    {ErrorCode::kSchemaMismatch, kExitUnavailable},
    // A CLI command is never a registered process; a kFenced here answers
    // like the conflict it was before it had its own code.
    {ErrorCode::kFenced, kExitConflict},
    {ErrorCode::kInternal, kExitError},
}};

// The exit code for `code` from kExitCodeTable (kExitError if it were
// missing, which the test rules out).
constexpr int ExitCodeFor(ErrorCode code) {
  for (const auto& [c, exit_code] : kExitCodeTable) {
    if (c == code) return exit_code;
  }
  return kExitError;
}

}  // namespace taskmill::cli
