// The one table that turns an ErrorCode into the HTTP status of the API's
// answer (docs/api.md). Every handler that answers a Result error answers
// with HttpStatusFor(error.code) and {"detail": message}.
#pragma once

#include <array>
#include <utility>

#include "taskmill/result.h"

namespace taskmill::api {

// ErrorCode -> HTTP status; every ErrorCode appears exactly once
// (tests/api/error_tables_test.cc checks it).
inline constexpr std::array<std::pair<ErrorCode, int>, 7> kHttpStatusTable = {{
    {ErrorCode::kInvalidArgument, 400},
    {ErrorCode::kNotFound, 404},
    {ErrorCode::kConflict, 409},
    {ErrorCode::kUnavailable, 503},
    {ErrorCode::kSchemaMismatch, 503},
    // The API process itself was declared dead and could not register again
    // in time: answered as the conflict it was before it had its own code.
    {ErrorCode::kFenced, 409},
    {ErrorCode::kInternal, 500},
}};

// The status for `code` from kHttpStatusTable (500 if it were missing,
// which the test rules out).
constexpr int HttpStatusFor(ErrorCode code) {
  for (const auto& [c, status] : kHttpStatusTable) {
    if (c == code) return status;
  }
  return 500;
}

}  // namespace taskmill::api
