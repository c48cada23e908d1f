#include "pg/connection.h"

#include <poll.h>

#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>

#include <fmt/format.h>

namespace taskmill::pg {

// --- Params -------------------------------------------------------------------

Params& Params::Add(std::string_view text) {
  values_.emplace_back(std::string(text));
  return *this;
}
Params& Params::Add(int64_t value) {
  values_.emplace_back(std::to_string(value));
  return *this;
}
Params& Params::Add(double value) {
  values_.emplace_back(fmt::format("{:.17g}", value));
  return *this;
}
Params& Params::Add(bool value) {
  values_.emplace_back(value ? "t" : "f");
  return *this;
}
Params& Params::AddNull() {
  values_.emplace_back(std::nullopt);
  return *this;
}
Params& Params::Add(const std::optional<std::string>& text) {
  values_.push_back(text);
  return *this;
}
Params& Params::AddTextArray(const std::vector<std::string>& values) {
  std::string out = "{";
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out += ',';
    out += '"';
    for (char c : values[i]) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
  }
  out += '}';
  values_.emplace_back(std::move(out));
  return *this;
}
std::vector<const char*> Params::Pointers() const {
  std::vector<const char*> p;
  p.reserve(values_.size());
  for (const auto& v : values_) p.push_back(v ? v->c_str() : nullptr);
  return p;
}

// --- Result -------------------------------------------------------------------

Result& Result::operator=(Result&& other) noexcept {
  if (this != &other) {
    if (res_ != nullptr) PQclear(res_);
    res_ = std::exchange(other.res_, nullptr);
  }
  return *this;
}
Result::~Result() {
  if (res_ != nullptr) PQclear(res_);
}
int Result::rows() const { return res_ ? PQntuples(res_) : 0; }
int Result::columns() const { return res_ ? PQnfields(res_) : 0; }
int64_t Result::affected() const {
  if (res_ == nullptr) return 0;
  const char* n = PQcmdTuples(res_);
  return (n == nullptr || *n == '\0') ? 0 : std::strtoll(n, nullptr, 10);
}
int Result::Column(const char* name) const {
  int c = res_ ? PQfnumber(res_, name) : -1;
  if (c < 0) throw QueryError(fmt::format("result has no column \"{}\"", name), "XX000", "", "");
  return c;
}
namespace {
void CheckCell(PGresult* res, int row, int col) {
  if (res == nullptr || row < 0 || row >= PQntuples(res) || col < 0 || col >= PQnfields(res)) {
    throw QueryError(fmt::format("no cell ({}, {}) in the result", row, col), "XX000", "", "");
  }
}
}  // namespace
bool Result::IsNull(int row, int col) const {
  CheckCell(res_, row, col);
  return PQgetisnull(res_, row, col) != 0;
}
std::string_view Result::Get(int row, int col) const {
  CheckCell(res_, row, col);
  return std::string_view(PQgetvalue(res_, row, col), PQgetlength(res_, row, col));
}
std::optional<std::string> Result::GetOptional(int row, int col) const {
  if (IsNull(row, col)) return std::nullopt;
  return std::string(Get(row, col));
}
int64_t Result::GetInt(int row, int col) const {
  auto s = Get(row, col);
  int64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) {
    throw QueryError(fmt::format("not an integer: \"{}\"", s), "XX000", "", "");
  }
  return v;
}
double Result::GetDouble(int row, int col) const {
  std::string s(Get(row, col));
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (s.empty() || end != s.c_str() + s.size()) {
    throw QueryError(fmt::format("not a number: \"{}\"", s), "XX000", "", "");
  }
  return v;
}
bool Result::GetBool(int row, int col) const {
  auto s = Get(row, col);
  if (s == "t") return true;
  if (s == "f") return false;
  throw QueryError(fmt::format("not a boolean: \"{}\"", s), "XX000", "", "");
}
std::vector<std::string> Result::GetTextArray(int row, int col) const {
  std::vector<std::string> out;
  if (IsNull(row, col)) return out;
  auto s = Get(row, col);
  if (s.size() < 2 || s.front() != '{' || s.back() != '}') {
    throw QueryError(fmt::format("not an array: \"{}\"", s), "XX000", "", "");
  }
  size_t i = 1, end = s.size() - 1;
  if (i == end) return out;
  while (i <= end) {
    std::string item;
    bool quoted = false;
    if (s[i] == '"') {
      quoted = true;
      ++i;
      while (i < end && s[i] != '"') {
        if (s[i] == '\\' && i + 1 < end) ++i;
        item += s[i++];
      }
      ++i;  // closing quote
    } else {
      while (i < end && s[i] != ',') item += s[i++];
    }
    if (!quoted && item == "NULL") item.clear();
    out.push_back(std::move(item));
    ++i;  // the comma (or past the end)
  }
  return out;
}

// --- Connection ---------------------------------------------------------------

namespace {

std::string ConnMessage(PGconn* conn) {
  std::string m = conn ? PQerrorMessage(conn) : "out of memory";
  while (!m.empty() && (m.back() == '\n' || m.back() == ' ')) m.pop_back();
  return m;
}

// The exception for a failed result: a broken connection or server shutdown
// (no SQLSTATE, class 08, 57P01-57P03) is a ConnectionError, anything else a
// QueryError.
[[noreturn]] void ThrowFor(PGconn* conn, PGresult* res) {
  const char* state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr;
  const char* primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : nullptr;
  std::string sqlstate = state ? state : "";
  if (sqlstate.empty() || sqlstate.rfind("08", 0) == 0 || sqlstate.rfind("57P0", 0) == 0 ||
      PQstatus(conn) != CONNECTION_OK) {
    std::string m = primary ? primary : ConnMessage(conn);
    throw ConnectionError(m.empty() ? "connection to the database lost" : m);
  }
  const char* detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
  const char* hint = PQresultErrorField(res, PG_DIAG_MESSAGE_HINT);
  throw QueryError(primary ? primary : "query failed", sqlstate, detail ? detail : "",
                   hint ? hint : "");
}

}  // namespace

Connection Connection::Open(const std::string& conninfo, Deadline deadline) {
  PGconn* conn = PQconnectStart(conninfo.c_str());
  if (conn == nullptr) throw ConnectionError("out of memory starting a connection");
  Connection c(conn);  // owns it from here
  if (PQstatus(conn) == CONNECTION_BAD) {
    throw ConnectionError(fmt::format("cannot connect: {}", ConnMessage(conn)));
  }
  PostgresPollingStatusType st = PGRES_POLLING_WRITING;
  while (st != PGRES_POLLING_OK) {
    if (st == PGRES_POLLING_FAILED) {
      throw ConnectionError(fmt::format("cannot connect: {}", ConnMessage(conn)));
    }
    pollfd p{PQsocket(conn), static_cast<short>(st == PGRES_POLLING_READING ? POLLIN : POLLOUT), 0};
    int left = MillisLeft(deadline);
    if (left <= 0) throw ConnectionError("cannot connect: timed out");
    int rc = poll(&p, 1, left);
    if (rc < 0 && errno != EINTR) throw ConnectionError("cannot connect: poll failed");
    if (rc == 0) throw ConnectionError("cannot connect: timed out");
    st = PQconnectPoll(conn);
  }
  if (PQsetnonblocking(conn, 1) != 0)
    throw ConnectionError("cannot make the connection non-blocking");
  return c;
}

Connection::Connection(Connection&& other) noexcept
    : conn_(std::exchange(other.conn_, nullptr)),
      statements_sent_(std::exchange(other.statements_sent_, 0)) {}

Connection& Connection::operator=(Connection&& other) noexcept {
  if (this != &other) {
    Close();
    conn_ = std::exchange(other.conn_, nullptr);
    statements_sent_ = std::exchange(other.statements_sent_, 0);
  }
  return *this;
}

Connection::~Connection() { Close(); }

void Connection::Close() {
  if (conn_ != nullptr) {
    PQfinish(conn_);
    conn_ = nullptr;
  }
}

void Connection::AbandonAfterFork() { conn_ = nullptr; }

bool Connection::ok() const { return conn_ != nullptr && PQstatus(conn_) == CONNECTION_OK; }
int Connection::socket() const { return conn_ ? PQsocket(conn_) : -1; }
int Connection::backend_pid() const { return conn_ ? PQbackendPID(conn_) : 0; }

void Connection::WaitSocket(bool for_write, Deadline deadline) {
  pollfd p{PQsocket(conn_), static_cast<short>(for_write ? POLLOUT : POLLIN), 0};
  for (;;) {
    int left = MillisLeft(deadline);
    if (left <= 0) {
      CancelRunning();
      throw TimeoutError("the database did not answer before the deadline");
    }
    int rc = poll(&p, 1, left);
    if (rc > 0) return;
    if (rc < 0 && errno != EINTR) throw ConnectionError("poll on the database socket failed");
  }
}

void Connection::CancelRunning() {
  // Ask the server to stop the statement, then drain what it sends so the
  // connection can be used again. If even that takes long, drop it.
  if (PGcancel* c = PQgetCancel(conn_)) {
    char err[256];
    PQcancel(c, err, sizeof(err));
    PQfreeCancel(c);
  }
  Deadline drain = DeadlineIn(std::chrono::seconds(5));
  for (;;) {
    if (PQconsumeInput(conn_) == 0) break;
    while (!PQisBusy(conn_)) {
      PGresult* r = PQgetResult(conn_);
      if (r == nullptr) {
        if (PQpipelineStatus(conn_) != PQ_PIPELINE_OFF) {
          // In a pipeline, results continue after a null until the sync.
          PGresult* next = PQgetResult(conn_);
          if (next == nullptr) return;
          bool sync = PQresultStatus(next) == PGRES_PIPELINE_SYNC;
          PQclear(next);
          if (sync) {
            PQexitPipelineMode(conn_);
            return;
          }
          continue;
        }
        return;
      }
      PQclear(r);
    }
    pollfd p{PQsocket(conn_), POLLIN, 0};
    if (poll(&p, 1, MillisLeft(drain)) <= 0) break;
  }
  Close();
}

Result Connection::Collect(Deadline deadline) {
  Result last;
  PGresult* error = nullptr;
  for (;;) {
    while (PQisBusy(conn_)) {
      WaitSocket(false, deadline);
      if (PQconsumeInput(conn_) == 0) throw ConnectionError(ConnMessage(conn_));
    }
    PGresult* r = PQgetResult(conn_);
    if (r == nullptr) break;
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_FATAL_ERROR) {
      if (error == nullptr) {
        error = r;
      } else {
        PQclear(r);
      }
    } else if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT) {
      PQclear(r);
      throw QueryError("COPY is not supported on this connection", "0A000", "", "");
    } else {
      last = Result(r);
    }
  }
  if (error != nullptr) {
    Result holder(error);
    ThrowFor(conn_, error);
  }
  if (PQstatus(conn_) != CONNECTION_OK) throw ConnectionError(ConnMessage(conn_));
  return last;
}

namespace {
void Flush(PGconn* conn, Connection* self, Deadline deadline,
           void (Connection::*wait)(bool, Deadline)) {
  for (;;) {
    int rc = PQflush(conn);
    if (rc == 0) return;
    if (rc < 0) throw ConnectionError(ConnMessage(conn));
    (self->*wait)(true, deadline);
    if (PQconsumeInput(conn) == 0) throw ConnectionError(ConnMessage(conn));
  }
}
}  // namespace

Result Connection::Exec(std::string_view sql, const Params& params, Deadline deadline) {
  if (!ok()) throw ConnectionError("not connected to the database");
  std::string text(sql);
  auto values = params.Pointers();
  if (PQsendQueryParams(conn_, text.c_str(), params.size(), nullptr, values.data(), nullptr,
                        nullptr, 0) == 0) {
    throw ConnectionError(ConnMessage(conn_));
  }
  ++statements_sent_;
  Flush(conn_, this, deadline, &Connection::WaitSocket);
  return Collect(deadline);
}

std::vector<Result> Connection::ExecPipeline(const std::vector<Statement>& statements,
                                             Deadline deadline) {
  if (!ok()) throw ConnectionError("not connected to the database");
  std::vector<Result> results;
  if (statements.empty()) return results;
  if (PQenterPipelineMode(conn_) == 0) throw ConnectionError(ConnMessage(conn_));
  // A sync after each statement: each is its own implicit transaction, and
  // an error skips only its own statement's remaining work.
  for (const auto& s : statements) {
    auto values = s.params.Pointers();
    if (PQsendQueryParams(conn_, s.sql.c_str(), s.params.size(), nullptr, values.data(), nullptr,
                          nullptr, 0) == 0 ||
        PQpipelineSync(conn_) == 0) {
      throw ConnectionError(ConnMessage(conn_));
    }
    ++statements_sent_;
  }
  Flush(conn_, this, deadline, &Connection::WaitSocket);
  PGresult* first_error = nullptr;
  size_t syncs = 0;
  Result current;  // the last result of the statement being read
  while (syncs < statements.size()) {
    while (PQisBusy(conn_)) {
      WaitSocket(false, deadline);
      if (PQconsumeInput(conn_) == 0) throw ConnectionError(ConnMessage(conn_));
    }
    PGresult* r = PQgetResult(conn_);
    if (r == nullptr) {
      // End of one statement's results.
      continue;
    }
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_PIPELINE_SYNC) {
      PQclear(r);
      results.push_back(std::move(current));
      current = Result();
      ++syncs;
    } else if (st == PGRES_FATAL_ERROR || st == PGRES_PIPELINE_ABORTED) {
      if (first_error == nullptr && st == PGRES_FATAL_ERROR) {
        first_error = r;
      } else {
        PQclear(r);
      }
    } else {
      current = Result(r);
    }
  }
  PQexitPipelineMode(conn_);
  if (first_error != nullptr) {
    Result holder(first_error);
    ThrowFor(conn_, first_error);
  }
  return results;
}

void Connection::ExecScript(std::string_view sql, Deadline deadline) {
  if (!ok()) throw ConnectionError("not connected to the database");
  std::string text(sql);
  if (PQsendQuery(conn_, text.c_str()) == 0) throw ConnectionError(ConnMessage(conn_));
  ++statements_sent_;
  Flush(conn_, this, deadline, &Connection::WaitSocket);
  Collect(deadline);
}

void Connection::Listen(std::string_view channel, Deadline deadline) {
  Exec("LISTEN " + QuoteIdentifier(channel), deadline);
}

std::optional<Notification> Connection::NextNotification() {
  if (!ok()) throw ConnectionError("not connected to the database");
  if (PQconsumeInput(conn_) == 0) throw ConnectionError(ConnMessage(conn_));
  PGnotify* n = PQnotifies(conn_);
  if (n == nullptr) return std::nullopt;
  Notification out{n->relname, n->extra ? n->extra : "", n->be_pid};
  PQfreemem(n);
  return out;
}

bool Connection::WaitReadable(Deadline deadline) {
  if (!ok()) return false;
  pollfd p{PQsocket(conn_), POLLIN, 0};
  int rc = poll(&p, 1, MillisLeft(deadline));
  return rc > 0;
}

std::string QuoteIdentifier(std::string_view ident) {
  std::string out = "\"";
  for (char c : ident) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
  return out;
}

std::string QuoteLiteral(std::string_view text) {
  std::string out = "'";
  for (char c : text) {
    if (c == '\'') out += '\'';
    out += c;
  }
  out += '\'';
  return out;
}

}  // namespace taskmill::pg
