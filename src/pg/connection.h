// pg::Connection: one libpq connection, owned.
//
// A thin RAII layer over libpq. It owns the PGconn; copies are deleted and
// moves are noexcept. Every call that waits on the network takes a Deadline:
// queries are sent with the asynchronous libpq API and the socket is polled
// until the deadline, after which the query is cancelled on the server and
// TimeoutError is thrown. Failures are exceptions from src/pg/errors.h.
//
// Queries use the extended protocol. By default each distinct statement text
// is prepared once per connection as a named statement (named after a hash of
// its text and parameter count, so one name always means one text) and then
// only bound and executed: parse analysis and planning of taskmill's
// statements cost more server time than running them. Correctness never
// depends on those statements: behind a transaction-pooling pgbouncer (before
// 1.21) a name prepared on one server connection is missing on another, and
// the connection then falls back to unnamed statements by itself (once a
// statement outside a transaction fails with "prepared statement does not
// exist" or "already exists", it is run again unnamed). To never prepare, set
// SetPreparedStatements(false) (the CLI's --no-prepared-statements,
// TASKMILL_PREPARED_STATEMENTS=off). Listen() is the only session state, used
// only on a dedicated listener connection.
//
// Not thread-safe: one thread uses a connection at a time.
#pragma once

#include <libpq-fe.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "pg/errors.h"
#include "taskmill/deadline.h"

namespace taskmill::pg {

// Parameters of one query, all sent in text format.
class Params {
 public:
  Params() = default;
  Params& Add(std::string_view text);
  Params& Add(const char* text) { return Add(std::string_view(text)); }
  Params& Add(const std::string& text) { return Add(std::string_view(text)); }
  Params& Add(int64_t value);
  Params& Add(int value) { return Add(static_cast<int64_t>(value)); }
  Params& Add(double value);
  Params& Add(bool value);
  Params& AddNull();
  Params& Add(const std::optional<std::string>& text);
  // A text[] parameter, encoded as an array literal with every element quoted.
  Params& AddTextArray(const std::vector<std::string>& values);

  int size() const { return static_cast<int>(values_.size()); }
  // Pointers valid while this object lives and is not modified.
  std::vector<const char*> Pointers() const;

 private:
  std::vector<std::optional<std::string>> values_;
};

// One query result, owned. Accessors check bounds and throw QueryError
// (not retryable) on a missing column or a type they cannot parse.
class Result {
 public:
  Result() = default;
  explicit Result(PGresult* res) : res_(res) {}
  Result(const Result&) = delete;
  Result& operator=(const Result&) = delete;
  Result(Result&& other) noexcept : res_(std::exchange(other.res_, nullptr)) {}
  Result& operator=(Result&& other) noexcept;
  ~Result();

  int rows() const;
  int columns() const;
  // Rows changed by INSERT/UPDATE/DELETE.
  int64_t affected() const;
  // Index of the named column; throws if absent.
  int Column(const char* name) const;

  bool IsNull(int row, int col) const;
  std::string_view Get(int row, int col) const;
  std::string GetString(int row, int col) const { return std::string(Get(row, col)); }
  std::optional<std::string> GetOptional(int row, int col) const;
  int64_t GetInt(int row, int col) const;
  double GetDouble(int row, int col) const;
  bool GetBool(int row, int col) const;
  // Parses a one-dimensional text[] value ("{a,\"b c\",NULL}"); NULL
  // elements are returned as empty strings. A NULL array is empty.
  std::vector<std::string> GetTextArray(int row, int col) const;

  PGresult* raw() const { return res_; }

 private:
  PGresult* res_ = nullptr;
};

struct Notification {
  std::string channel;
  std::string payload;
  int backend_pid = 0;
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
  ~Connection();

  // Runs one statement with parameters and returns its result. Throws
  // QueryError for an error the server reports, ConnectionError if the
  // connection breaks (the connection is then !ok()), TimeoutError at the
  // deadline (the statement is cancelled on the server first).
  Result Exec(std::string_view sql, const Params& params, Deadline deadline);
  Result Exec(std::string_view sql, Deadline deadline) { return Exec(sql, Params(), deadline); }

  // Runs several statements in one round trip using libpq pipeline mode,
  // with a sync after each: each statement is its own implicit transaction
  // and commits on its own. Returns one Result per statement. If any failed,
  // the others still ran (and committed), and the first error is thrown.
  struct Statement {
    std::string sql;
    Params params;
  };
  std::vector<Result> ExecPipeline(const std::vector<Statement>& statements, Deadline deadline);

  // Runs a script of several statements separated by ';' with the simple
  // query protocol (used for migrations). No parameters.
  void ExecScript(std::string_view sql, Deadline deadline);

  // LISTEN on a channel (quoted as an identifier). Session state: use only on
  // a connection dedicated to listening.
  void Listen(std::string_view channel, Deadline deadline);
  // Reads whatever the server has sent without blocking and returns the next
  // pending notification, if any. Throws ConnectionError if the connection
  // broke.
  std::optional<Notification> NextNotification();
  // Waits until the socket is readable or the deadline passes. Returns true
  // if readable.
  bool WaitReadable(Deadline deadline);

  bool ok() const;
  int socket() const;
  // The server's process id for this session, or 0.
  int backend_pid() const;
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

  PGconn* raw() const { return conn_; }

 private:
  explicit Connection(PGconn* conn) : conn_(conn) {}
  // Waits for the socket to become readable/writable until the deadline.
  void WaitSocket(bool for_write, Deadline deadline);
  void CancelRunning();
  // Collects results of the current query until PQgetResult returns null.
  Result Collect(Deadline deadline);
  // Sends what libpq has buffered, until the deadline.
  void Flush(Deadline deadline);
  // The connection is unusable: closes it (so ok() is false) and throws
  // ConnectionError.
  [[noreturn]] void ThrowBroken(const std::string& message);
  // Throws the exception for a failed result (owned by the caller).
  [[noreturn]] void ThrowFor(const PGresult* res);

  // The name of the prepared statement for `sql`, preparing it first if
  // this connection has not; nullptr when it should run unnamed (preparing
  // is off, the cache is full, or the text was prepared with another
  // parameter count: unnamed, the server reports that mistake as before).
  const std::string* PreparedName(const std::string& sql, int nparams, Deadline deadline);
  // True if `e`, raised by a prepared statement, means the server session
  // does not hold our statements (a pooler): preparing is turned off here.
  bool GiveUpPreparing(const Error& e);

  PGconn* conn_ = nullptr;
  uint64_t statements_sent_ = 0;
  bool prepare_ = true;
  // Statements prepared on this session, by text.
  struct Prepared {
    int nparams;
    std::string name;
  };
  std::unordered_map<std::string, Prepared> prepared_;
};

// The process-wide default for new connections (initially on, or off if the
// environment has TASKMILL_PREPARED_STATEMENTS=off|0|false).
void SetPreparedStatements(bool on);
bool PreparedStatements();
// The name a statement is prepared under: "tm_" and a 64-bit FNV-1a hash of
// its parameter count and text. Exposed for tests.
std::string PreparedStatementName(std::string_view sql, int nparams);
// At most this many statements are prepared per connection; more distinct
// texts (dynamic list queries) run unnamed.
inline constexpr size_t kMaxPreparedStatements = 200;

// Quotes an identifier for SQL ("a""b").
std::string QuoteIdentifier(std::string_view ident);
// Quotes a string literal for SQL ('a''b'); for ExecScript only.
std::string QuoteLiteral(std::string_view text);

}  // namespace taskmill::pg
