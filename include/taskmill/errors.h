// The exceptions taskmill throws: one family, rooted at taskmill::Exception.
//
// Expected outcomes (bad input, an unknown task, a cancel of a finished task)
// are never exceptions: they are Result/Status values (taskmill/result.h).
// What is thrown is a failure the caller did not ask for: the database broke
// or refused a statement, the operating system refused a call, or a bug (the
// database answered something this program does not understand). Every one
// says through retryable() whether the same operation may succeed if tried
// again later; nothing else about it needs inspecting to decide that.
//
//   Exception                 std::runtime_error; what() is for people
//   +-- DatabaseError         the server reported an error (sqlstate())
//   |   +-- ConnectionError   no connection, or it broke; always retryable
//   |   +-- TimeoutError      our deadline passed first; always retryable
//   +-- DriverError           the answer is not what the program expects (a
//   |                         missing column, an unparsable value, a task
//   |                         state it does not know); never retryable
//   +-- SystemError           an operating-system call failed (code())
//
// Errors that taskmill's SQL functions raise on purpose (SQLSTATE class TM)
// reach callers as Result errors, not as these.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>

namespace taskmill {

class Exception : public std::runtime_error {
 public:
  Exception(const std::string& message, bool retryable)
      : std::runtime_error(message), retryable_(retryable) {}
  // True when the same operation may succeed if tried again later (after a
  // reconnect, for a ConnectionError); false when retrying cannot help.
  bool retryable() const noexcept { return retryable_; }

 private:
  bool retryable_;
};

// An error the database server reported for a statement, or (subclasses)
// the failure to reach it at all.
class DatabaseError : public Exception {
 public:
  // Retryable as IsRetryableSqlState(sqlstate) says.
  DatabaseError(const std::string& message, const std::string& sqlstate, std::string detail = "",
                std::string hint = "")
      : DatabaseError(message, sqlstate, IsRetryableSqlState(sqlstate), std::move(detail),
                      std::move(hint)) {}

  // The five-character SQLSTATE ("23505", "TM404", ...).
  const std::string& sqlstate() const noexcept { return sqlstate_; }
  // The server's DETAIL and HINT lines; empty if it sent none.
  const std::string& detail() const noexcept { return detail_; }
  const std::string& hint() const noexcept { return hint_; }

  // True for class 08 (connection exception), 40 (serialization failure,
  // deadlock), 53 (insufficient resources), 57P01-57P03 (admin or crash
  // shutdown, cannot connect now) and 55P03 (lock not available).
  static bool IsRetryableSqlState(std::string_view sqlstate);

 protected:
  DatabaseError(const std::string& message, std::string sqlstate, bool retryable,
                std::string detail, std::string hint)
      : Exception(message, retryable),
        sqlstate_(std::move(sqlstate)),
        detail_(std::move(detail)),
        hint_(std::move(hint)) {}

 private:
  std::string sqlstate_;
  std::string detail_;
  std::string hint_;
};

// The connection could not be made, or broke (the connection it happened on
// is closed). sqlstate() is "08000".
class ConnectionError : public DatabaseError {
 public:
  explicit ConnectionError(const std::string& message)
      : DatabaseError(message, "08000", true, "", "") {}
};

// The caller's deadline passed before the database answered (the statement
// was cancelled on the server first). sqlstate() is "57014".
class TimeoutError : public DatabaseError {
 public:
  explicit TimeoutError(const std::string& message)
      : DatabaseError(message, "57014", true, "", "") {}
};

// The database's answer is not what this program expects: a result without
// a column it reads, a value it cannot parse, a task state it does not know
// (a schema newer than the program). A bug or a version skew, never
// retryable.
class DriverError : public Exception {
 public:
  explicit DriverError(const std::string& message) : Exception(message, false) {}
};

// An operating-system call failed. what() names the call and the reason;
// code() is the errno value. Retryable when the system was only short of
// something for the moment (EAGAIN, EINTR, ENOMEM, EMFILE, ENFILE).
class SystemError : public Exception {
 public:
  SystemError(const std::string& what_failed, int errno_value);
  const std::error_code& code() const noexcept { return code_; }

 private:
  std::error_code code_;
};

}  // namespace taskmill
