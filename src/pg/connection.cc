#include "pg/connection.h"

#include <poll.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <future>
#include <memory>
#include <system_error>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

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
  // from_chars, unlike strtod, ignores the C locale; it also reads the
  // server's "Infinity" and "NaN".
  auto s = Get(row, col);
  double v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) {
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
  const std::string_view whole = Get(row, col);
  auto malformed = [&] {
    return QueryError(fmt::format("not a one-dimensional text array: \"{}\"", whole), "XX000", "",
                      "");
  };
  std::string_view s = whole;
  // An array whose lower bound is not 1 is printed with its bounds first:
  // "[0:1]={a,b}".
  if (!s.empty() && s.front() == '[') {
    size_t eq = s.find('=');
    if (eq == std::string_view::npos) throw malformed();
    s.remove_prefix(eq + 1);
  }
  if (s.size() < 2 || s.front() != '{' || s.back() != '}') throw malformed();
  s = s.substr(1, s.size() - 2);
  if (s.empty()) return out;
  size_t i = 0;
  for (;;) {
    std::string item;
    if (i < s.size() && s[i] == '"') {
      ++i;
      for (;;) {
        if (i >= s.size()) throw malformed();
        char c = s[i++];
        if (c == '"') break;
        if (c == '\\') {
          if (i >= s.size()) throw malformed();
          c = s[i++];
        }
        item += c;
      }
    } else {
      size_t start = i;
      while (i < s.size() && s[i] != ',') {
        char c = s[i++];
        // A brace or quote here means a nested (multi-dimensional) array.
        if (c == '{' || c == '}' || c == '"') throw malformed();
        if (c == '\\') {
          if (i >= s.size()) throw malformed();
          c = s[i++];
        }
        item += c;
      }
      // The server quotes a "NULL" string, so an unquoted NULL is a null.
      if (s.substr(start, i - start) == "NULL") item.clear();
    }
    out.push_back(std::move(item));
    if (i == s.size()) break;
    if (s[i] != ',') throw malformed();
    ++i;
  }
  return out;
}

// --- Connection ---------------------------------------------------------------

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

int CheckParamCount(const Params& params) {
  // The protocol's limit; libpq would refuse it with an error that looks
  // like a broken connection.
  if (params.size() > 65535) {
    throw QueryError(fmt::format("{} parameters; at most 65535 are allowed", params.size()),
                     "54023", "", "");
  }
  return params.size();
}

}  // namespace

namespace {

// -1: not decided yet (read the environment on first use).
std::atomic<int> prepared_default{-1};

}  // namespace

void SetPreparedStatements(bool on) { prepared_default = on ? 1 : 0; }

bool PreparedStatements() {
  int v = prepared_default.load();
  if (v < 0) {
    const char* env = std::getenv("TASKMILL_PREPARED_STATEMENTS");
    std::string_view e = env ? env : "";
    v = (e == "off" || e == "0" || e == "false" || e == "no") ? 0 : 1;
    int expected = -1;
    prepared_default.compare_exchange_strong(expected, v);
    v = prepared_default.load();
  }
  return v == 1;
}

std::string PreparedStatementName(std::string_view sql, int nparams) {
  uint64_t h = 14695981039346656037ull;
  auto mix = [&h](unsigned char c) {
    h ^= c;
    h *= 1099511628211ull;
  };
  for (char c : std::to_string(nparams)) mix(static_cast<unsigned char>(c));
  mix(0);
  for (char c : sql) mix(static_cast<unsigned char>(c));
  return fmt::format("tm_{:016x}", h);
}

Connection Connection::Open(const std::string& conninfo, Deadline deadline) {
  PGconn* conn = PQconnectStart(conninfo.c_str());
  if (conn == nullptr) throw ConnectionError("out of memory starting a database connection");
  Connection c(conn);  // owns it from here: PQfinish on every throw below
  c.prepare_ = PreparedStatements();
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

Connection::Connection(Connection&& other) noexcept
    : conn_(std::exchange(other.conn_, nullptr)),
      statements_sent_(std::exchange(other.statements_sent_, 0)),
      prepare_(other.prepare_),
      prepared_(std::move(other.prepared_)) {
  other.prepared_.clear();
}

Connection& Connection::operator=(Connection&& other) noexcept {
  if (this != &other) {
    Close();
    conn_ = std::exchange(other.conn_, nullptr);
    statements_sent_ = std::exchange(other.statements_sent_, 0);
    prepare_ = other.prepare_;
    prepared_ = std::move(other.prepared_);
    other.prepared_.clear();
  }
  return *this;
}

Connection::~Connection() { Close(); }

void Connection::Close() {
  if (conn_ != nullptr) {
    PQfinish(conn_);
    conn_ = nullptr;
  }
  prepared_.clear();
}

void Connection::AbandonAfterFork() { conn_ = nullptr; }

bool Connection::ok() const { return conn_ != nullptr && PQstatus(conn_) == CONNECTION_OK; }
int Connection::socket() const { return conn_ ? PQsocket(conn_) : -1; }
int Connection::backend_pid() const { return conn_ ? PQbackendPID(conn_) : 0; }

void Connection::ThrowBroken(const std::string& message) {
  Close();
  throw ConnectionError(message);
}

void Connection::ThrowFor(const PGresult* res) {
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
    ThrowBroken(primary.empty() ? ConnMessage(conn_) : primary);
  }
  throw QueryError(primary.empty() ? "query failed" : primary, sqlstate,
                   field(PG_DIAG_MESSAGE_DETAIL), field(PG_DIAG_MESSAGE_HINT));
}

void Connection::WaitSocket(bool for_write, Deadline deadline) {
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

void Connection::CancelRunning() {
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

void Connection::Flush(Deadline deadline) {
  for (;;) {
    int rc = PQflush(conn_);
    if (rc == 0) return;
    if (rc < 0) ThrowBroken(ConnMessage(conn_));
    WaitSocket(true, deadline);
    if (PQconsumeInput(conn_) == 0) ThrowBroken(ConnMessage(conn_));
  }
}

Result Connection::Collect(Deadline deadline) {
  Result last;
  Result error;  // the first one; a script stops at it anyway
  for (;;) {
    while (PQisBusy(conn_)) {
      WaitSocket(false, deadline);
      if (PQconsumeInput(conn_) == 0) ThrowBroken(ConnMessage(conn_));
    }
    PGresult* r = PQgetResult(conn_);
    if (r == nullptr) break;
    switch (PQresultStatus(r)) {
      case PGRES_FATAL_ERROR:
      case PGRES_BAD_RESPONSE:
        if (error.raw() == nullptr) {
          error = Result(r);
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
        throw QueryError("COPY is not supported on this connection", "0A000", "", "");
      default:
        last = Result(r);
    }
  }
  if (error.raw() != nullptr) ThrowFor(error.raw());
  if (PQstatus(conn_) != CONNECTION_OK) ThrowBroken(ConnMessage(conn_));
  return last;
}

const std::string* Connection::PreparedName(const std::string& sql, int nparams,
                                            Deadline deadline) {
  // Looked up by the caller's own string: nothing is copied on this path
  // but the first time.
  if (auto it = prepared_.find(sql); it != prepared_.end()) {
    return it->second.nparams == nparams ? &it->second.name : nullptr;
  }
  // An aborted transaction refuses to prepare anything, even the ROLLBACK
  // that would end it.
  PGTransactionStatusType ts = PQtransactionStatus(conn_);
  if (prepared_.size() >= kMaxPreparedStatements || ts == PQTRANS_INERROR) return nullptr;
  bool idle = ts == PQTRANS_IDLE;
  std::string name = PreparedStatementName(sql, nparams);
  if (PQsendPrepare(conn_, name.c_str(), sql.c_str(), nparams, nullptr) == 0) {
    ThrowBroken(ConnMessage(conn_));
  }
  Flush(deadline);
  try {
    Collect(deadline);
  } catch (const QueryError& e) {
    // "Already exists" can only mean a session we share with other clients.
    if (!GiveUpPreparing(e) || !idle) throw;
    return nullptr;
  }
  return &prepared_.emplace(sql, Prepared{nparams, std::move(name)}).first->second.name;
}

bool Connection::GiveUpPreparing(const Error& e) {
  const std::string& st = e.sqlstate();
  // 26000: our statement is not in this session; 42P05: a statement of that
  // name already is; 0A000 "cached plan must not change result type": a
  // migration changed a function under a long-lived statement. Each happens
  // before anything ran.
  bool give_up = st == "26000" || st == "42P05" ||
                 (st == "0A000" && std::strstr(e.what(), "cached plan") != nullptr);
  if (!give_up) return false;
  prepare_ = false;
  prepared_.clear();
  static std::atomic<bool> warned{false};
  if (!warned.exchange(true)) {
    spdlog::warn(
        "database: prepared statements do not hold on this connection ({}; a transaction-pooling "
        "pgbouncer?): it runs unnamed statements from now on; --no-prepared-statements or "
        "TASKMILL_PREPARED_STATEMENTS=off avoids the failed attempt",
        e.what());
  }
  return true;
}

Result Connection::Exec(std::string_view sql, const Params& params, Deadline deadline) {
  if (!ok()) throw ConnectionError("not connected to the database");
  int n = CheckParamCount(params);
  std::string text(sql);
  auto values = params.Pointers();
  if (prepare_) {
    bool idle = PQtransactionStatus(conn_) == PQTRANS_IDLE;
    if (const std::string* name = PreparedName(text, n, deadline); name != nullptr) {
      if (PQsendQueryPrepared(conn_, name->c_str(), n, values.data(), nullptr, nullptr, 0) == 0) {
        ThrowBroken(ConnMessage(conn_));
      }
      ++statements_sent_;
      Flush(deadline);
      try {
        return Collect(deadline);
      } catch (const QueryError& e) {
        // Outside a transaction block the failed statement did nothing: run
        // it again unnamed. Inside one, the caller's transaction is aborted.
        if (!GiveUpPreparing(e) || !idle) throw;
      }
    }
  }
  if (PQsendQueryParams(conn_, text.c_str(), n, nullptr, values.data(), nullptr, nullptr, 0) == 0) {
    ThrowBroken(ConnMessage(conn_));
  }
  ++statements_sent_;
  Flush(deadline);
  return Collect(deadline);
}

std::vector<Result> Connection::ExecPipeline(const std::vector<Statement>& statements,
                                             Deadline deadline) {
  if (!ok()) throw ConnectionError("not connected to the database");
  std::vector<Result> results;
  if (statements.empty()) return results;
  for (const auto& s : statements) CheckParamCount(s.params);
  // Prepared before the pipeline starts: a failed prepare inside it would
  // abort statements that have nothing to do with it.
  std::vector<const std::string*> names(statements.size(), nullptr);
  for (size_t i = 0; i < statements.size() && prepare_; ++i) {
    try {
      names[i] = PreparedName(statements[i].sql, statements[i].params.size(), deadline);
    } catch (const QueryError&) {
      // A statement the server cannot prepare (a syntax error, an unknown
      // function) goes unnamed: the pipeline reports its error in its place
      // and runs the others, as it always did.
      if (PQtransactionStatus(conn_) != PQTRANS_IDLE) throw;
    }
  }
  if (!prepare_) std::fill(names.begin(), names.end(), nullptr);
  if (PQenterPipelineMode(conn_) == 0) ThrowBroken(ConnMessage(conn_));
  // A sync after each statement: each is its own implicit transaction, and
  // an error aborts only its own statement.
  for (size_t i = 0; i < statements.size(); ++i) {
    const auto& s = statements[i];
    auto values = s.params.Pointers();
    int sent = names[i] != nullptr ? PQsendQueryPrepared(conn_, names[i]->c_str(), s.params.size(),
                                                         values.data(), nullptr, nullptr, 0)
                                   : PQsendQueryParams(conn_, s.sql.c_str(), s.params.size(),
                                                       nullptr, values.data(), nullptr, nullptr, 0);
    if (sent == 0 || PQpipelineSync(conn_) == 0) ThrowBroken(ConnMessage(conn_));
    ++statements_sent_;
  }
  Flush(deadline);
  results.reserve(statements.size());
  Result first_error;
  Result current;  // of the statement whose sync comes next
  while (results.size() < statements.size()) {
    while (PQisBusy(conn_)) {
      WaitSocket(false, deadline);
      if (PQconsumeInput(conn_) == 0) ThrowBroken(ConnMessage(conn_));
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
        if (first_error.raw() == nullptr) {
          first_error = Result(r);
        } else {
          PQclear(r);
        }
        break;
      case PGRES_PIPELINE_ABORTED:
        PQclear(r);
        break;
      default:
        current = Result(r);
    }
  }
  if (PQexitPipelineMode(conn_) == 0) ThrowBroken(ConnMessage(conn_));
  if (first_error.raw() != nullptr) {
    try {
      ThrowFor(first_error.raw());
    } catch (const QueryError& e) {
      // The other statements ran: nothing can be run again here, but the
      // next call runs unnamed.
      GiveUpPreparing(e);
      throw;
    }
  }
  return results;
}

void Connection::ExecScript(std::string_view sql, Deadline deadline) {
  if (!ok()) throw ConnectionError("not connected to the database");
  std::string text(sql);
  if (PQsendQuery(conn_, text.c_str()) == 0) ThrowBroken(ConnMessage(conn_));
  ++statements_sent_;
  Flush(deadline);
  Collect(deadline);
}

void Connection::Listen(std::string_view channel, Deadline deadline) {
  Exec("LISTEN " + QuoteIdentifier(channel), deadline);
}

std::optional<Notification> Connection::NextNotification() {
  if (!ok()) throw ConnectionError("not connected to the database");
  if (PQconsumeInput(conn_) == 0) ThrowBroken(ConnMessage(conn_));
  PGnotify* n = PQnotifies(conn_);
  if (n == nullptr) return std::nullopt;
  Notification out{n->relname, n->extra ? n->extra : "", n->be_pid};
  PQfreemem(n);
  return out;
}

bool Connection::WaitReadable(Deadline deadline) {
  if (!ok()) return false;
  pollfd p{PQsocket(conn_), POLLIN, 0};
  for (;;) {
    int rc = poll(&p, 1, MillisLeft(deadline));
    if (rc > 0) return true;
    if (rc == 0 || errno != EINTR) return false;
  }
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
  // With standard_conforming_strings on (the default since 9.1) a backslash
  // is an ordinary character; only the quote is doubled.
  std::string out = "'";
  for (char c : text) {
    if (c == '\'') out += '\'';
    out += c;
  }
  out += '\'';
  return out;
}

}  // namespace taskmill::pg
