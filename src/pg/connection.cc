#include "pg/connection.h"

#include <algorithm>
#include <atomic>
#include <cstring>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace taskmill::pg {

namespace {

int CheckParamCount(const Params& params) {
  // The protocol's limit; libpq would refuse it with an error that looks
  // like a broken connection.
  if (params.size() > 65535) {
    throw DatabaseError(fmt::format("{} parameters; at most 65535 are allowed", params.size()),
                        "54023");
  }
  return params.size();
}

}  // namespace

Connection Connection::Open(const std::string& conninfo, Deadline deadline) {
  Connection c(ConnWrapper::Open(conninfo, deadline));
  c.prepare_ = PreparedStatements();
  return c;
}

Connection::Connection(Connection&& other) noexcept
    : wire_(std::move(other.wire_)),
      cache_(std::move(other.cache_)),
      statements_sent_(std::exchange(other.statements_sent_, 0)),
      prepare_(other.prepare_) {}

Connection& Connection::operator=(Connection&& other) noexcept {
  if (this != &other) {
    wire_ = std::move(other.wire_);
    cache_ = std::move(other.cache_);
    statements_sent_ = std::exchange(other.statements_sent_, 0);
    prepare_ = other.prepare_;
  }
  return *this;
}

void Connection::Close() {
  wire_.Close();
  cache_.Clear();
}

void Connection::AbandonAfterFork() { wire_.Abandon(); }

bool Connection::in_transaction() const {
  auto ts = wire_.transaction_status();
  return ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR || ts == PQTRANS_ACTIVE;
}

const StatementCache::Entry* Connection::Prepared(std::string_view sql, const char* label,
                                                  int nparams, Deadline deadline) {
  // Looked up by the caller's text, without copying it.
  if (const auto* e = cache_.Find(sql); e != nullptr) return e->nparams == nparams ? e : nullptr;
  // An aborted transaction refuses to prepare anything, even the ROLLBACK
  // that would end it.
  PGTransactionStatusType ts = wire_.transaction_status();
  if (cache_.full() || ts == PQTRANS_INERROR) return nullptr;
  bool idle = ts == PQTRANS_IDLE;
  std::string name = PreparedStatementName(sql, nparams, label != nullptr ? label : "");
  // The one copy of the text: the cache keeps it.
  std::string text(sql);
  wire_.SendPrepare(name.c_str(), text.c_str(), nparams);
  wire_.Flush(deadline);
  try {
    wire_.Collect(deadline);
  } catch (const DatabaseError& e) {
    // "Already exists" can only mean a session we share with other clients.
    if (!GiveUpPreparing(e) || !idle) throw;
    return nullptr;
  }
  return &cache_.Add(std::move(text), nparams, std::move(name));
}

bool Connection::GiveUpPreparing(const DatabaseError& e) {
  const std::string& st = e.sqlstate();
  // 26000: our statement is not in this session; 42P05: a statement of that
  // name already is; 0A000 "cached plan must not change result type": a
  // migration changed a function under a long-lived statement. Each happens
  // before anything ran. (Never a ConnectionError or TimeoutError: their
  // SQLSTATEs are 08000 and 57014.)
  bool give_up = st == "26000" || st == "42P05" ||
                 (st == "0A000" && std::strstr(e.what(), "cached plan") != nullptr);
  if (!give_up) return false;
  prepare_ = false;
  cache_.Clear();
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

ResultSet Connection::Exec(std::string_view sql, const Params& params, Deadline deadline) {
  return Run(sql, nullptr, params, deadline);
}

ResultSet Connection::Exec(const Query& query, const Params& params, Deadline deadline) {
  return Run(query.text, query.name, params, deadline);
}

ResultSet Connection::Run(std::string_view sql, const char* label, const Params& params,
                          Deadline deadline) {
  if (!ok()) {
    cache_.Clear();  // the session that held them is gone
    throw ConnectionError("not connected to the database");
  }
  int n = CheckParamCount(params);
  auto values = params.Pointers();
  if (prepare_) {
    bool idle = wire_.transaction_status() == PQTRANS_IDLE;
    // Once prepared, nothing of the text is copied or sent again.
    if (const auto* prepared = Prepared(sql, label, n, deadline); prepared != nullptr) {
      wire_.SendPrepared(prepared->name.c_str(), n, values.data());
      ++statements_sent_;
      wire_.Flush(deadline);
      try {
        return wire_.Collect(deadline);
      } catch (const DatabaseError& e) {
        // Outside a transaction block the failed statement did nothing: run
        // it again unnamed. Inside one, the caller's transaction is aborted.
        if (!GiveUpPreparing(e) || !idle) throw;
      }
    }
  }
  // Unnamed, the text goes with every call, NUL-terminated as libpq wants
  // it: a Query's text already is; any other view is copied.
  std::string copy;
  const char* text = label != nullptr ? sql.data() : (copy = std::string(sql)).c_str();
  wire_.SendParams(text, n, values.data());
  ++statements_sent_;
  wire_.Flush(deadline);
  return wire_.Collect(deadline);
}

namespace {
bool IsTransactionControl(std::string_view sql) {
  return sql == "BEGIN" || sql == "COMMIT" || sql == "ROLLBACK";
}
}  // namespace

std::vector<ResultSet> Connection::ExecPipeline(const std::vector<Statement>& statements,
                                                Deadline deadline) {
  if (!ok()) {
    cache_.Clear();  // the session that held them is gone
    throw ConnectionError("not connected to the database");
  }
  if (statements.empty()) return {};
  for (const auto& s : statements) CheckParamCount(s.params);
  // Prepared before the pipeline starts: a failed prepare inside it would
  // abort statements that have nothing to do with it.
  std::vector<const StatementCache::Entry*> prepared(statements.size(), nullptr);
  for (size_t i = 0; i < statements.size() && prepare_; ++i) {
    // Transaction control goes unnamed: a BEGIN that failed as a prepared
    // statement (26000 behind a transaction pooler) would leave the
    // statements after it to commit one by one.
    if (IsTransactionControl(statements[i].sql)) continue;
    try {
      prepared[i] = Prepared(statements[i].sql, nullptr, statements[i].params.size(), deadline);
    } catch (const ConnectionError&) {
      throw;
    } catch (const TimeoutError&) {
      throw;
    } catch (const DatabaseError&) {
      // A statement the server cannot prepare (a syntax error, an unknown
      // function) goes unnamed: the pipeline reports its error in its place
      // and runs the others.
      if (wire_.transaction_status() != PQTRANS_IDLE) throw;
    }
  }
  // A fallback above cleared the cache the earlier entries point into.
  if (!prepare_) std::fill(prepared.begin(), prepared.end(), nullptr);
  wire_.EnterPipeline();
  // A sync after each statement: each is its own implicit transaction, and
  // an error aborts only its own statement.
  for (size_t i = 0; i < statements.size(); ++i) {
    const auto& s = statements[i];
    auto values = s.params.Pointers();
    if (prepared[i] != nullptr) {
      wire_.SendPrepared(prepared[i]->name.c_str(), s.params.size(), values.data());
    } else {
      wire_.SendParams(s.sql.c_str(), s.params.size(), values.data());
    }
    wire_.PipelineSync();
    ++statements_sent_;
  }
  wire_.Flush(deadline);
  ResultSet first_error;
  auto results = wire_.CollectPipeline(statements.size(), deadline, &first_error);
  if (first_error.raw() != nullptr) {
    try {
      wire_.ThrowFor(first_error.raw());
    } catch (const DatabaseError& e) {
      // The next call runs unnamed. The other statements ran, so nothing
      // can be run again here, unless the pipeline was one transaction
      // block (BEGIN ... COMMIT, both unnamed): a lost prepared statement
      // inside it aborted the whole block, which therefore wrote nothing.
      bool one_block = statements.size() >= 2 && statements.front().sql == "BEGIN" &&
                       statements.back().sql == "COMMIT";
      if (GiveUpPreparing(e) && one_block) return ExecPipeline(statements, deadline);
      throw;
    }
  }
  return results;
}

void Connection::ExecScript(std::string_view sql, Deadline deadline) {
  if (!ok()) throw ConnectionError("not connected to the database");
  std::string text(sql);
  wire_.SendScript(text.c_str());
  ++statements_sent_;
  wire_.Flush(deadline);
  wire_.Collect(deadline);
}

void Connection::Listen(std::string_view channel, Deadline deadline) {
  Exec("LISTEN " + QuoteIdentifier(channel), deadline);
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
