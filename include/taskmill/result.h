// Result<T>: the return type of every operation whose failure is expected.
//
// taskmill's error policy (docs/architecture.md, "Errors"):
//   * Expected failures -- bad input, an unknown task, a cancel of a finished
//     task, a resource that is busy -- are values: Result<T> holding an Error
//     with a stable ErrorCode and a human-readable message.
//   * Unexpected failures of the database or the operating system are
//     exceptions: taskmill::Exception and its subclasses (taskmill/errors.h),
//     each saying whether retrying the operation may succeed.
// g++ 12 has no std::expected, hence this small type.
#pragma once

#include <cassert>
#include <cstddef>
#include <iterator>
#include <string>
#include <utility>
#include <variant>

namespace taskmill {

enum class ErrorCode {
  kInvalidArgument,  // the caller's input is malformed or out of range
  kNotFound,         // the named object does not exist
  kConflict,         // the object exists but is in a state that forbids this
  kUnavailable,      // a resource or the database is busy or away; may succeed later
  kSchemaMismatch,   // the database schema is not the one this program speaks
  // The calling process was declared dead (its app row is gone, SQLSTATE
  // TM410): it owns no task any more, and nothing was written. It must
  // register again, under a new id, before it claims, finishes or runs any.
  kFenced,
  kInternal,  // a bug or an unexpected state; logged with detail (keep last)
};

// Every ErrorCode, in declaration order: for tables that must cover them all.
inline constexpr ErrorCode kAllErrorCodes[] = {
    ErrorCode::kInvalidArgument, ErrorCode::kNotFound,       ErrorCode::kConflict,
    ErrorCode::kUnavailable,     ErrorCode::kSchemaMismatch, ErrorCode::kFenced,
    ErrorCode::kInternal,
};
static_assert(std::size(kAllErrorCodes) == static_cast<size_t>(ErrorCode::kInternal) + 1,
              "kAllErrorCodes must list every ErrorCode");

// A stable lower-case name: "invalid_argument", "not_found", "conflict",
// "unavailable", "schema_mismatch", "fenced", "internal".
const char* ErrorCodeName(ErrorCode code);

struct Error {
  ErrorCode code;
  std::string message;
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}      // NOLINT: implicit by design
  Result(Error error) : v_(std::move(error)) {}  // NOLINT

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & {
    assert(ok());
    return std::get<0>(v_);
  }
  const T& value() const& {
    assert(ok());
    return std::get<0>(v_);
  }
  T&& value() && {
    assert(ok());
    return std::get<0>(std::move(v_));
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  const Error& error() const {
    assert(!ok());
    return std::get<1>(v_);
  }

 private:
  std::variant<T, Error> v_;
};

// Result<void>.
class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT
  static Status Ok() { return Status(); }
  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const {
    assert(!ok_);
    return error_;
  }

 private:
  Error error_{ErrorCode::kInternal, ""};
  bool ok_ = true;
};

inline Error MakeError(ErrorCode code, std::string message) {
  return Error{code, std::move(message)};
}

}  // namespace taskmill
