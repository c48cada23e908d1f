// pg::Connection: one database connection, owned, with its statement cache.
//
// Built on ConnWrapper (the libpq protocol, deadlines, cancellation); this
// class adds what to prepare and how to fall back. It owns the connection;
// copies are deleted and moves are noexcept. Every call that waits on the
// network takes a Deadline: at the deadline the statement is cancelled on the
// server and TimeoutError is thrown. Failures are the exceptions of
// taskmill/errors.h (pg/errors.h has the pg names).
//
// Queries use the extended protocol. By default each distinct statement text
// is prepared once per connection as a named statement (see
// pg/statement_cache.h for the names) and then only bound and executed:
// parse analysis and planning of taskmill's statements cost more server time
// than running them. Correctness never depends on those statements: behind a
// transaction-pooling pgbouncer (before 1.21) a name prepared on one server
// connection is missing on another, and the connection then falls back to
// unnamed statements by itself (once a statement outside a transaction fails
// with "prepared statement does not exist" or "already exists", it is run
// again unnamed). To never prepare, set SetPreparedStatements(false) (the
// CLI's --no-prepared-statements, TASKMILL_PREPARED_STATEMENTS=off). Listen()
// is the only session state, used only on a dedicated listener connection.
//
// Not thread-safe: one thread uses a connection at a time.
#pragma once

#include <libpq-fe.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "pg/conn_wrapper.h"
#include "pg/errors.h"
#include "pg/params.h"
#include "pg/result_set.h"
#include "pg/statement_cache.h"
#include "taskmill/deadline.h"

namespace taskmill::pg {

// A statement declared once, with a name: `name` (a lower-case identifier)
// is part of the name it is prepared under, so it can be told apart in
// pg_prepared_statements and pg_stat_statements. Both point at string
// literals (or other text that outlives every use).
struct Query {
  const char* name;
  const char* text;
};

class Connection {
 public:
  // Connects, waiting at most until `deadline`. Throws ConnectionError
  // (retryable) if the server cannot be reached or refuses us.
  static Connection Open(const std::string& conninfo, Deadline deadline);

  Connection() = default;  // not connected; ok() is false
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  Connection(Connection&& other) noexcept;
  Connection& operator=(Connection&& other) noexcept;
  ~Connection() = default;

  // Runs one statement with parameters and returns its result. Throws
  // DatabaseError for an error the server reports, ConnectionError if the
  // connection breaks (the connection is then !ok()), TimeoutError at the
  // deadline (the statement is cancelled on the server first).
  ResultSet Exec(std::string_view sql, const Params& params, Deadline deadline);
  ResultSet Exec(std::string_view sql, Deadline deadline) { return Exec(sql, Params(), deadline); }
  ResultSet Exec(const Query& query, const Params& params, Deadline deadline);
  ResultSet Exec(const Query& query, Deadline deadline) { return Exec(query, Params(), deadline); }

  // Runs several statements in one round trip using libpq pipeline mode,
  // with a sync after each: each statement is its own implicit transaction
  // and commits on its own, unless the statements open a block themselves
  // (BEGIN, COMMIT and ROLLBACK always go unnamed). Returns one ResultSet per
  // statement. If any failed, the others still ran (and committed), and the
  // first error is thrown; except that a pipeline that is one block (first
  // BEGIN, last COMMIT) whose failure was a prepared statement lost to a
  // pooler is run once more, unnamed: the failure aborted the block.
  struct Statement {
    std::string sql;
    Params params;
  };
  std::vector<ResultSet> ExecPipeline(const std::vector<Statement>& statements, Deadline deadline);

  // Runs a script of several statements separated by ';' with the simple
  // query protocol (used for migrations). No parameters.
  void ExecScript(std::string_view sql, Deadline deadline);

  // LISTEN on a channel (quoted as an identifier). Session state: use only on
  // a connection dedicated to listening.
  void Listen(std::string_view channel, Deadline deadline);
  // Reads whatever the server has sent without blocking and returns the next
  // pending notification, if any. Throws ConnectionError if the connection
  // broke.
  std::optional<Notification> NextNotification() { return wire_.NextNotification(); }
  // Waits until the socket is readable or the deadline passes. Returns true
  // if readable.
  bool WaitReadable(Deadline deadline) { return wire_.WaitReadable(deadline); }

  bool ok() const { return wire_.ok(); }
  int socket() const { return wire_.socket(); }
  // The server's process id for this session, or 0.
  int backend_pid() const { return wire_.backend_pid(); }
  // True while a transaction block is open on the server (also when it is
  // aborted and waits for ROLLBACK); false when idle or not connected.
  bool in_transaction() const;
  // Statements sent on this connection since it was opened (pipeline
  // statements count one each; preparing one does not count). Used by
  // benchmarks.
  uint64_t statements_sent() const { return statements_sent_; }
  // Whether statements are prepared on this connection: the process-wide
  // default when it was opened, off after a fallback (see the top).
  bool prepares_statements() const { return prepare_; }
  // Closes the connection now (also done by the destructor).
  void Close();
  // For a forked child: forget the PGconn without closing it, so the
  // child does not send a Terminate message on the parent's socket.
  void AbandonAfterFork();

  PGconn* raw() const { return wire_.raw(); }

 private:
  explicit Connection(ConnWrapper wire) : wire_(std::move(wire)) {}
  ResultSet Run(std::string_view sql, const char* label, const Params& params, Deadline deadline);
  // The prepared statement for `sql`, preparing it first if this connection
  // has not; nullptr when it should run unnamed (preparing is off, the cache
  // is full, or the text was prepared with another parameter count:
  // unnamed, the server reports that mistake as before).
  const StatementCache::Entry* Prepared(std::string_view sql, const char* label, int nparams,
                                        Deadline deadline);
  // True if `e`, raised by a prepared statement, means the server session
  // does not hold our statements (a pooler): preparing is turned off here.
  bool GiveUpPreparing(const DatabaseError& e);

  ConnWrapper wire_;
  StatementCache cache_;
  uint64_t statements_sent_ = 0;
  bool prepare_ = true;
};

// Quotes an identifier for SQL ("a""b").
std::string QuoteIdentifier(std::string_view ident);
// Quotes a string literal for SQL ('a''b'); for ExecScript only.
std::string QuoteLiteral(std::string_view text);

}  // namespace taskmill::pg
