// PostgreSQL errors as typed exceptions.
//
// Every failure of the database layer is a pg::Error. The split that matters
// to callers is retryable(): true when the same operation may succeed if
// tried again later (the connection broke, the server is restarting, a
// deadlock or serialization failure, our own deadline passed), false when
// retrying cannot help (a syntax error, a constraint violation, a check in one
// of our SQL functions).
//
// Errors raised on purpose by taskmill's SQL functions carry SQLSTATEs in the
// class 'TM' (see migrations/0001_init.sql); the store layer turns those into
// Result errors rather than letting them escape as exceptions.
#pragma once

#include <stdexcept>
#include <string>

namespace taskmill::pg {

class Error : public std::runtime_error {
 public:
  Error(const std::string& message, std::string sqlstate, bool retryable)
      : std::runtime_error(message), sqlstate_(std::move(sqlstate)), retryable_(retryable) {}
  const std::string& sqlstate() const { return sqlstate_; }
  bool retryable() const { return retryable_; }

 private:
  std::string sqlstate_;
  bool retryable_;
};

// The connection could not be made or broke. Always retryable.
class ConnectionError : public Error {
 public:
  explicit ConnectionError(const std::string& message) : Error(message, "08000", true) {}
};

// Our deadline passed before the server answered. Always retryable.
class TimeoutError : public Error {
 public:
  explicit TimeoutError(const std::string& message) : Error(message, "57014", true) {}
};

// The server reported an error for a statement.
class QueryError : public Error {
 public:
  QueryError(const std::string& message, const std::string& sqlstate, std::string detail,
             std::string hint)
      : Error(message, sqlstate, IsRetryableSqlState(sqlstate)),
        detail_(std::move(detail)),
        hint_(std::move(hint)) {}
  const std::string& detail() const { return detail_; }
  const std::string& hint() const { return hint_; }

  // Class 08 (connection), 40 (serialization failure, deadlock), 53
  // (insufficient resources), 57P01-57P03 (shutdown, cannot connect now),
  // 55P03 (lock not available).
  static bool IsRetryableSqlState(const std::string& sqlstate);

 private:
  std::string detail_;
  std::string hint_;
};

}  // namespace taskmill::pg
