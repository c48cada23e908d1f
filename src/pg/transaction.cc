#include "pg/transaction.h"

#include <spdlog/spdlog.h>

namespace taskmill::pg {

Transaction::Transaction(Connection& conn, Deadline deadline, std::string_view begin)
    : conn_(conn) {
  conn_.Exec(begin, deadline);
}

Transaction::~Transaction() {
  // Nothing to end: committed or rolled back already, or the session is
  // gone and with it the transaction.
  if (finished_ || !conn_.ok() || !conn_.in_transaction()) return;
  try {
    conn_.Exec("ROLLBACK", DeadlineIn(kRollbackTimeout));
  } catch (const ConnectionError& e) {
    // The session is over, and its transaction with it.
    spdlog::debug("database: no rollback needed, the connection is gone ({})", e.what());
  } catch (const std::exception& e) {
    spdlog::warn("database: rollback failed ({}); closing the connection", e.what());
    conn_.Close();
  }
}

void Transaction::Commit(Deadline deadline) {
  ResultSet res;
  try {
    res = conn_.Exec("COMMIT", deadline);
  } catch (...) {
    // The transaction ended unless the COMMIT never arrived.
    finished_ = !conn_.in_transaction();
    throw;
  }
  finished_ = true;
  // The server answers COMMIT of an aborted transaction with a ROLLBACK,
  // and no error.
  if (res.raw() != nullptr && std::string_view(PQcmdStatus(res.raw())) == "ROLLBACK") {
    throw DatabaseError("COMMIT of a transaction aborted by an earlier error: it was rolled back",
                        "25P02");
  }
}

void Transaction::Rollback(Deadline deadline) {
  conn_.Exec("ROLLBACK", deadline);
  finished_ = true;
}

}  // namespace taskmill::pg
