#include "pg/conn_wrapper.h"

#include <poll.h>

#include <cerrno>
#include <cstring>
#include <future>
#include <memory>
#include <system_error>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace taskmill::pg {

namespace {

// How long a timed-out statement may take to acknowledge its cancellation
// before the connection is dropped instead.
constexpr auto kCancelGrace = std::chrono::seconds(2);

std::string ConnMessage(PGconn* conn) {
  std::string m = conn ? PQerrorMessage(conn) : "out of memory";
  while (!m.empty() && (m.back() == '\n' || m.back() == ' ')) m.pop_back();
  return m.empty() ? "connection to the database lost" : m;
}

bool StartsWith(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

// Sends a cancel request for the connection's running statement. PQcancel
// blocks on a connect of its own with no timeout (an unreachable host would
// hold us for minutes), so it runs on a detached thread that we stop waiting
// for at `by`. Returns true if the server got the request.
bool SendCancel(PGconn* conn, Deadline by) {
  PGcancel* cancel = PQgetCancel(conn);
  if (cancel == nullptr) return false;
  auto done = std::make_shared<std::promise<bool>>();
  std::future<bool> delivered = done->get_future();
  try {
    std::thread([cancel, done] {
      char err[256];
      bool ok = PQcancel(cancel, err, sizeof(err)) == 1;
      PQfreeCancel(cancel);
      done->set_value(ok);
    }).detach();
  } catch (const std::system_error&) {
    PQfreeCancel(cancel);
    return false;
  }
  return delivered.wait_until(by) == std::future_status::ready && delivered.get();
}

// Server notices and warnings go to our log rather than libpq's default,
// straight to stderr (e.g. "terminating connection due to immediate
// shutdown" before a ConnectionError that says as much).
void LogNotice(void*, const PGresult* res) {
  const char* severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
  std::string message = PQresultErrorMessage(res);
  while (!message.empty() && message.back() == '\n') message.pop_back();
  if (severity != nullptr && std::strcmp(severity, "WARNING") == 0) {
    spdlog::warn("database: {}", message);
  } else {
    spdlog::debug("database: {}", message);
  }
}

}  // namespace

ConnWrapper ConnWrapper::Open(const std::string& conninfo, Deadline deadline) {
  PGconn* conn = PQconnectStart(conninfo.c_str());
  if (conn == nullptr) throw ConnectionError("out of memory starting a database connection");
  ConnWrapper c(conn);  // owns it from here: PQfinish on every throw below
  PQsetNoticeReceiver(conn, LogNotice, nullptr);
  if (PQstatus(conn) == CONNECTION_BAD) {
    throw ConnectionError(fmt::format("cannot connect to the database: {}", ConnMessage(conn)));
  }
  // libpq's protocol: behave as if the last poll said "writing".
  PostgresPollingStatusType st = PGRES_POLLING_WRITING;
  while (st != PGRES_POLLING_OK) {
    if (st == PGRES_POLLING_FAILED) {
      throw ConnectionError(fmt::format("cannot connect to the database: {}", ConnMessage(conn)));
    }
    // Re-read each time: libpq opens a new socket for each host it tries.
    pollfd p{PQsocket(conn), static_cast<short>(st == PGRES_POLLING_READING ? POLLIN : POLLOUT), 0};
    if (p.fd < 0) {
      throw ConnectionError(fmt::format("cannot connect to the database: {}", ConnMessage(conn)));
    }
    int left = MillisLeft(deadline);
    if (left <= 0) throw ConnectionError("cannot connect to the database: timed out");
    int rc = poll(&p, 1, left);
    if (rc == 0 || (rc < 0 && errno == EINTR)) continue;
    if (rc < 0) {
      throw ConnectionError(
          fmt::format("cannot connect to the database: poll: {}", std::strerror(errno)));
    }
    st = PQconnectPoll(conn);
  }
  // Sends then never block, so a dead peer cannot hold us past a deadline.
  if (PQsetnonblocking(conn, 1) != 0) {
    throw ConnectionError(
        fmt::format("cannot make the database connection non-blocking: {}", ConnMessage(conn)));
  }
  return c;
}

ConnWrapper& ConnWrapper::operator=(ConnWrapper&& other) noexcept {
  if (this != &other) {
    Close();
    conn_ = std::exchange(other.conn_, nullptr);
  }
  return *this;
}

void ConnWrapper::Close() {
  if (conn_ != nullptr) {
    PQfinish(conn_);
    conn_ = nullptr;
  }
}

std::string ConnWrapper::Message() const { return ConnMessage(conn_); }

void ConnWrapper::ThrowBroken(const std::string& message) {
  Close();
  throw ConnectionError(message);
}

void ConnWrapper::ThrowFor(const PGresult* res) {
  auto field = [res](int code) {
    const char* v = PQresultErrorField(res, code);
    return std::string(v ? v : "");
  };
  std::string sqlstate = field(PG_DIAG_SQLSTATE);
  std::string severity = field(PG_DIAG_SEVERITY_NONLOCALIZED);
  std::string primary = field(PG_DIAG_MESSAGE_PRIMARY);
  // The session is over when libpq made the error up (no SQLSTATE), on a
  // connection error (class 08), when the server ends the session (57P01-03
  // shutdown, 57P04 database dropped, 57P05 idle session timeout), or on any
  // FATAL (e.g. idle_in_transaction_session_timeout).
  if (sqlstate.empty() || StartsWith(sqlstate, "08") || StartsWith(sqlstate, "57P0") ||
      severity == "FATAL" || severity == "PANIC" || PQstatus(conn_) != CONNECTION_OK) {
    ThrowBroken(primary.empty() ? Message() : primary);
  }
  throw DatabaseError(primary.empty() ? "query failed" : primary, sqlstate,
                      field(PG_DIAG_MESSAGE_DETAIL), field(PG_DIAG_MESSAGE_HINT));
}

void ConnWrapper::SendParams(const char* sql, int nparams, const char* const* values) {
  if (PQsendQueryParams(conn_, sql, nparams, nullptr, values, nullptr, nullptr, 0) == 0) {
    ThrowBroken(Message());
  }
}
void ConnWrapper::SendPrepared(const char* name, int nparams, const char* const* values) {
  if (PQsendQueryPrepared(conn_, name, nparams, values, nullptr, nullptr, 0) == 0) {
    ThrowBroken(Message());
  }
}
void ConnWrapper::SendPrepare(const char* name, const char* sql, int nparams) {
  if (PQsendPrepare(conn_, name, sql, nparams, nullptr) == 0) ThrowBroken(Message());
}
void ConnWrapper::SendScript(const char* sql) {
  if (PQsendQuery(conn_, sql) == 0) ThrowBroken(Message());
}

void ConnWrapper::WaitSocket(bool for_write, Deadline deadline) {
  // While sending, readable counts too: the server may be blocked sending us
  // results, and only reading them (PQconsumeInput) lets it read on.
  short events = for_write ? (POLLOUT | POLLIN) : POLLIN;
  for (;;) {
    int left = MillisLeft(deadline);
    if (left <= 0) {
      CancelRunning();
      throw TimeoutError("the database did not answer before the deadline");
    }
    pollfd p{PQsocket(conn_), events, 0};
    int rc = poll(&p, 1, left);
    if (rc > 0) return;  // including POLLHUP/POLLERR: the next read reports it
    if (rc < 0 && errno != EINTR) {
      ThrowBroken(fmt::format("poll on the database socket: {}", std::strerror(errno)));
    }
  }
}

void ConnWrapper::CancelRunning() {
  if (conn_ == nullptr) return;
  // Ask the server to stop the statement, then drain what it sends so the
  // connection can be used again. If any of that fails or takes long, drop
  // the connection: closing it is always safe, only slower for the caller.
  Deadline by = DeadlineIn(kCancelGrace);
  // Unsent output means the server has not got the whole request and would
  // wait for the rest forever.
  if (!SendCancel(conn_, by) || PQflush(conn_) != 0) {
    Close();
    return;
  }
  int idle_nulls = 0;
  for (;;) {
    if (PQconsumeInput(conn_) == 0) break;
    while (!PQisBusy(conn_)) {
      PGresult* r = PQgetResult(conn_);
      if (r != nullptr) {
        PQclear(r);
        idle_nulls = 0;
        continue;
      }
      // In a pipeline a null only ends one statement's results; the
      // connection is idle once pipeline mode can be left.
      if (PQpipelineStatus(conn_) == PQ_PIPELINE_OFF || PQexitPipelineMode(conn_) == 1) return;
      if (++idle_nulls > 1) break;  // not expected; wait for input rather than spin
    }
    pollfd p{PQsocket(conn_), POLLIN, 0};
    int left = MillisLeft(by);
    if (left <= 0) break;
    int rc = poll(&p, 1, left);
    if (rc < 0 && errno != EINTR) break;
  }
  Close();
}

void ConnWrapper::Flush(Deadline deadline) {
  for (;;) {
    int rc = PQflush(conn_);
    if (rc == 0) return;
    if (rc < 0) ThrowBroken(Message());
    WaitSocket(true, deadline);
    if (PQconsumeInput(conn_) == 0) ThrowBroken(Message());
  }
}

ResultSet ConnWrapper::Collect(Deadline deadline) {
  ResultSet last;
  ResultSet error;  // the first one; a script stops at it anyway
  for (;;) {
    while (PQisBusy(conn_)) {
      WaitSocket(false, deadline);
      if (PQconsumeInput(conn_) == 0) ThrowBroken(Message());
    }
    PGresult* r = PQgetResult(conn_);
    if (r == nullptr) break;
    switch (PQresultStatus(r)) {
      case PGRES_FATAL_ERROR:
      case PGRES_BAD_RESPONSE:
        if (error.raw() == nullptr) {
          error = ResultSet(r);
        } else {
          PQclear(r);
        }
        break;
      case PGRES_COPY_IN:
      case PGRES_COPY_OUT:
      case PGRES_COPY_BOTH:
        // Leaving COPY needs a protocol dance nobody here wants; the session
        // is not reusable after this.
        PQclear(r);
        Close();
        throw DriverError("COPY is not supported on this connection");
      default:
        last = ResultSet(r);
    }
  }
  if (error.raw() != nullptr) ThrowFor(error.raw());
  if (PQstatus(conn_) != CONNECTION_OK) ThrowBroken(Message());
  return last;
}

void ConnWrapper::EnterPipeline() {
  if (PQenterPipelineMode(conn_) == 0) ThrowBroken(Message());
}

void ConnWrapper::PipelineSync() {
  if (PQpipelineSync(conn_) == 0) ThrowBroken(Message());
}

std::vector<ResultSet> ConnWrapper::CollectPipeline(size_t n, Deadline deadline,
                                                    ResultSet* first_error) {
  std::vector<ResultSet> results;
  results.reserve(n);
  ResultSet current;  // of the statement whose sync comes next
  while (results.size() < n) {
    while (PQisBusy(conn_)) {
      WaitSocket(false, deadline);
      if (PQconsumeInput(conn_) == 0) ThrowBroken(Message());
    }
    PGresult* r = PQgetResult(conn_);
    if (r == nullptr) continue;  // the end of one statement's results; its sync follows
    switch (PQresultStatus(r)) {
      case PGRES_PIPELINE_SYNC:
        PQclear(r);
        results.push_back(std::move(current));  // leaves `current` empty
        break;
      case PGRES_FATAL_ERROR:
      case PGRES_BAD_RESPONSE:
        if (first_error->raw() == nullptr) {
          *first_error = ResultSet(r);
        } else {
          PQclear(r);
        }
        break;
      case PGRES_PIPELINE_ABORTED:
        PQclear(r);
        break;
      default:
        current = ResultSet(r);
    }
  }
  if (PQexitPipelineMode(conn_) == 0) ThrowBroken(Message());
  return results;
}

std::optional<Notification> ConnWrapper::NextNotification() {
  if (!ok()) throw ConnectionError("not connected to the database");
  if (PQconsumeInput(conn_) == 0) ThrowBroken(Message());
  PGnotify* n = PQnotifies(conn_);
  if (n == nullptr) return std::nullopt;
  Notification out{n->relname, n->extra ? n->extra : "", n->be_pid};
  PQfreemem(n);
  return out;
}

bool ConnWrapper::WaitReadable(Deadline deadline) {
  if (!ok()) return false;
  pollfd p{PQsocket(conn_), POLLIN, 0};
  for (;;) {
    int rc = poll(&p, 1, MillisLeft(deadline));
    if (rc > 0) return true;
    if (rc == 0 || errno != EINTR) return false;
  }
}

}  // namespace taskmill::pg
