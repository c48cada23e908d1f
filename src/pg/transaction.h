// pg::Transaction: a transaction block on one connection, ended exactly once.
//
// The constructor sends BEGIN. Commit() ends it; if it was not committed
// (an early return, an exception), the destructor rolls it back. The
// destructor never throws: when the ROLLBACK cannot be sent or fails, it
// closes the connection instead (the server then rolls back the session's
// transaction itself), and when the connection is already broken there is
// nothing to do.
//
// The connection must outlive the Transaction; it is not owned. Statements of
// the transaction are run on the connection itself (Exec and friends).
#pragma once

#include <chrono>
#include <string_view>

#include "pg/connection.h"

namespace taskmill::pg {

class Transaction {
 public:
  // How long the destructor waits for its ROLLBACK.
  static constexpr std::chrono::seconds kRollbackTimeout{5};

  // Sends `begin` ("BEGIN", or e.g. "BEGIN ISOLATION LEVEL REPEATABLE
  // READ"). Throws as Connection::Exec does; then nothing was begun.
  Transaction(Connection& conn, Deadline deadline, std::string_view begin = "BEGIN");
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  // Rolls back unless Commit() or Rollback() succeeded.
  ~Transaction();

  // Sends COMMIT. Throws as Exec does; a server error at commit (e.g. a
  // serialization failure) means the transaction was rolled back, and so
  // does DatabaseError 25P02 for a transaction that an earlier statement's
  // error had aborted (the server rolls it back without a word). If the
  // COMMIT never took effect (a timeout before it reached the server), the
  // destructor still rolls back.
  void Commit(Deadline deadline);
  // Sends ROLLBACK now (throws as Exec does).
  void Rollback(Deadline deadline);

  // False once Commit() or Rollback() succeeded.
  bool active() const { return !finished_; }
  Connection& connection() const { return conn_; }

 private:
  Connection& conn_;
  bool finished_ = false;
};

}  // namespace taskmill::pg
