// pg::ConnWrapper: the thin layer over one libpq connection.
//
// It owns the PGconn and knows libpq's protocol: connecting without
// blocking, sending a statement (with parameters, by a prepared name, or as
// a script), flushing, waiting on the socket until a deadline, collecting
// results, cancelling on the server, pipeline mode, notifications. It turns
// libpq's failures into exceptions (pg/errors.h). It decides nothing about
// which statements to prepare or how to fall back: that is pg::Connection,
// on top of it.
//
// Every call that waits takes a Deadline; at the deadline the running
// statement is cancelled on the server (or the connection dropped) and
// TimeoutError is thrown. Any call that finds the connection broken closes
// it (ok() is then false) and throws ConnectionError.
//
// Not thread-safe: one thread uses it at a time.
#pragma once

#include <libpq-fe.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "pg/errors.h"
#include "pg/result_set.h"
#include "taskmill/deadline.h"

namespace taskmill::pg {

struct Notification {
  std::string channel;
  std::string payload;
  int backend_pid = 0;
};

class ConnWrapper {
 public:
  // Connects, waiting at most until `deadline`. Throws ConnectionError.
  static ConnWrapper Open(const std::string& conninfo, Deadline deadline);

  ConnWrapper() = default;  // not connected
  ConnWrapper(const ConnWrapper&) = delete;
  ConnWrapper& operator=(const ConnWrapper&) = delete;
  ConnWrapper(ConnWrapper&& other) noexcept : conn_(std::exchange(other.conn_, nullptr)) {}
  ConnWrapper& operator=(ConnWrapper&& other) noexcept;
  ~ConnWrapper() { Close(); }

  bool ok() const { return conn_ != nullptr && PQstatus(conn_) == CONNECTION_OK; }
  int socket() const { return conn_ ? PQsocket(conn_) : -1; }
  int backend_pid() const { return conn_ ? PQbackendPID(conn_) : 0; }
  // PQTRANS_UNKNOWN when not connected.
  PGTransactionStatusType transaction_status() const {
    return conn_ ? PQtransactionStatus(conn_) : PQTRANS_UNKNOWN;
  }
  PGconn* raw() const { return conn_; }
  void Close();
  // Forgets the PGconn without closing it (for a forked child).
  void Abandon() { conn_ = nullptr; }

  // Queue a request (PQsendQueryParams, PQsendQueryPrepared, PQsendPrepare,
  // PQsendQuery). Text must be NUL-terminated. Throws ConnectionError.
  void SendParams(const char* sql, int nparams, const char* const* values);
  void SendPrepared(const char* name, int nparams, const char* const* values);
  void SendPrepare(const char* name, const char* sql, int nparams);
  void SendScript(const char* sql);

  // Sends what libpq has buffered.
  void Flush(Deadline deadline);
  // Collects the results of the current request until libpq has no more:
  // returns the last one, or throws for the first error (DatabaseError,
  // ConnectionError when the session is over).
  ResultSet Collect(Deadline deadline);

  // Pipeline mode. In it, each SendParams/SendPrepared is followed by
  // PipelineSync(); CollectPipeline(n) then returns the result of each of the
  // n statements and leaves pipeline mode. If any failed, *first_error holds
  // its result (the caller throws it with ThrowFor).
  void EnterPipeline();
  void PipelineSync();
  std::vector<ResultSet> CollectPipeline(size_t n, Deadline deadline, ResultSet* first_error);

  // Throws the exception for a failed result.
  [[noreturn]] void ThrowFor(const PGresult* res);
  // Closes the connection and throws ConnectionError.
  [[noreturn]] void ThrowBroken(const std::string& message);

  // Reads what the server has sent, without blocking, and returns the next
  // notification, if any.
  std::optional<Notification> NextNotification();
  // Waits until the socket is readable or the deadline passes; true if
  // readable. False at once if not connected.
  bool WaitReadable(Deadline deadline);

 private:
  explicit ConnWrapper(PGconn* conn) : conn_(conn) {}
  void WaitSocket(bool for_write, Deadline deadline);
  // Cancels the running statement on the server and drains the connection,
  // or closes it if that fails or takes long.
  void CancelRunning();
  std::string Message() const;

  PGconn* conn_ = nullptr;
};

}  // namespace taskmill::pg
