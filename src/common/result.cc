#include "taskmill/result.h"

namespace taskmill {

const char* ErrorCodeName(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument:
      return "invalid_argument";
    case ErrorCode::kNotFound:
      return "not_found";
    case ErrorCode::kConflict:
      return "conflict";
    case ErrorCode::kUnavailable:
      return "unavailable";
    case ErrorCode::kSchemaMismatch:
      return "schema_mismatch";
    case ErrorCode::kFenced:
      return "fenced";
    case ErrorCode::kInternal:
      return "internal";
  }
  return "internal";
}

}  // namespace taskmill
