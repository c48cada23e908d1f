// The libpq layer against a real PostgreSQL.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <limits>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include "pg/connection.h"
#include "support/test_postgres.h"
#include "taskmill/result.h"

namespace taskmill::pg {
namespace {

constexpr auto kTimeout = std::chrono::seconds(30);

Connection Open() {
  return Connection::Open(testing::CreateTestDatabase("pg"), DeadlineIn(kTimeout));
}

int64_t Scalar(Connection& c, const std::string& sql) {
  return c.Exec(sql, DeadlineIn(kTimeout)).GetInt(0, 0);
}

int64_t PreparedCount(Connection& c, const std::string& sql, int nparams) {
  // Unnamed on purpose: counting must not add a statement of its own.
  return c
      .Exec("SELECT count(*) FROM pg_prepared_statements WHERE name = $1",
            Params().Add(PreparedStatementName(sql, nparams)), DeadlineIn(kTimeout))
      .GetInt(0, 0);
}

TEST(PreparedStatementTest, StatementsArePreparedOnceAndReused) {
  ASSERT_TRUE(PreparedStatements());
  auto c = Open();
  ASSERT_TRUE(c.prepares_statements());
  const std::string sql = "SELECT $1::int + 1";
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(c.Exec(sql, Params().Add(i), DeadlineIn(kTimeout)).GetInt(0, 0), i + 1);
  }
  EXPECT_EQ(PreparedCount(c, sql, 1), 1);
  // In a pipeline too.
  std::vector<Connection::Statement> batch;
  for (int i = 0; i < 5; ++i) batch.push_back({sql, Params().Add(10 * i)});
  auto results = c.ExecPipeline(batch, DeadlineIn(kTimeout));
  ASSERT_EQ(results.size(), 5u);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(results[i].GetInt(0, 0), 10 * i + 1);
  EXPECT_TRUE(c.prepares_statements());
}

TEST(PreparedStatementTest, AStatementMissingFromTheSessionRunsAgainUnnamed) {
  // What a transaction-pooling pgbouncer does to us: the session we land on
  // does not hold what we prepared.
  auto c = Open();
  c.ExecScript("CREATE TABLE counter (n int)", DeadlineIn(kTimeout));
  const std::string insert = "INSERT INTO counter VALUES ($1) RETURNING n";
  EXPECT_EQ(c.Exec(insert, Params().Add(1), DeadlineIn(kTimeout)).GetInt(0, 0), 1);
  c.ExecScript("DEALLOCATE ALL", DeadlineIn(kTimeout));
  EXPECT_EQ(c.Exec(insert, Params().Add(2), DeadlineIn(kTimeout)).GetInt(0, 0), 2);
  EXPECT_FALSE(c.prepares_statements());
  // Ran exactly once each.
  EXPECT_EQ(Scalar(c, "SELECT count(*) FROM counter"), 2);
  EXPECT_EQ(c.Exec(insert, Params().Add(3), DeadlineIn(kTimeout)).GetInt(0, 0), 3);
  EXPECT_EQ(PreparedCount(c, insert, 1), 0);
}

TEST(PreparedStatementTest, ANameAlreadyTakenInTheSessionFallsBack) {
  auto c = Open();
  const std::string sql = "SELECT $1::int * 2";
  c.ExecScript(fmt::format("PREPARE {}(int) AS SELECT $1 * 3", PreparedStatementName(sql, 1)),
               DeadlineIn(kTimeout));
  // Ours is refused (42P05); the unnamed statement gives our answer, not the
  // squatter's.
  EXPECT_EQ(c.Exec(sql, Params().Add(5), DeadlineIn(kTimeout)).GetInt(0, 0), 10);
  EXPECT_FALSE(c.prepares_statements());
}

TEST(PreparedStatementTest, InsideATransactionTheFailureIsTheCallers) {
  auto c = Open();
  const std::string sql = "SELECT $1::int";
  EXPECT_EQ(c.Exec(sql, Params().Add(1), DeadlineIn(kTimeout)).GetInt(0, 0), 1);
  c.Exec("BEGIN", DeadlineIn(kTimeout));
  c.ExecScript("DEALLOCATE ALL", DeadlineIn(kTimeout));
  // Not run again: the transaction is the caller's and is now aborted.
  EXPECT_THROW(c.Exec(sql, Params().Add(2), DeadlineIn(kTimeout)), QueryError);
  // An aborted transaction can still be ended (no prepare is tried in it).
  c.Exec("ROLLBACK", DeadlineIn(kTimeout));
  EXPECT_EQ(c.Exec(sql, Params().Add(3), DeadlineIn(kTimeout)).GetInt(0, 0), 3);
}

TEST(PreparedStatementTest, TurnedOffNothingIsPrepared) {
  SetPreparedStatements(false);
  auto c = Open();
  SetPreparedStatements(true);
  EXPECT_FALSE(c.prepares_statements());
  const std::string sql = "SELECT $1::int - 1";
  EXPECT_EQ(c.Exec(sql, Params().Add(5), DeadlineIn(kTimeout)).GetInt(0, 0), 4);
  EXPECT_EQ(Scalar(c, "SELECT count(*) FROM pg_prepared_statements"), 0);
}

TEST(PreparedStatementTest, NamesDependOnTextAndParameterCount) {
  EXPECT_EQ(PreparedStatementName("SELECT 1", 0), PreparedStatementName("SELECT 1", 0));
  EXPECT_NE(PreparedStatementName("SELECT 1", 0), PreparedStatementName("SELECT 2", 0));
  EXPECT_NE(PreparedStatementName("SELECT 1", 0), PreparedStatementName("SELECT 1", 1));
  EXPECT_EQ(PreparedStatementName("SELECT 1", 0).rfind("tm_", 0), 0u);
}

TEST(ConnectionTest, ParamsOfEveryTypeAndNulls) {
  auto c = Open();
  std::string owned = "owned";
  auto r = c.Exec(
      "SELECT $1::text, $2::bigint, $3::float8, $4::boolean, $5::text, $6::text, $7::text, "
      "$8::int, $9::boolean, $10::float8, $11::text, $12::bigint",
      Params()
          .Add("héllo")
          .Add(int64_t{-42})
          .Add(2.5)
          .Add(true)
          .AddNull()
          .Add(std::optional<std::string>())
          .Add(owned)
          .Add(7)
          .Add(false)
          .Add(-0.1)
          .Add(std::optional<std::string>("some"))
          .Add(std::numeric_limits<int64_t>::min()),
      DeadlineIn(kTimeout));
  ASSERT_EQ(r.rows(), 1);
  ASSERT_EQ(r.columns(), 12);
  EXPECT_EQ(r.GetString(0, 0), "héllo");
  EXPECT_EQ(r.GetInt(0, 1), -42);
  EXPECT_DOUBLE_EQ(r.GetDouble(0, 2), 2.5);
  EXPECT_TRUE(r.GetBool(0, 3));
  EXPECT_TRUE(r.IsNull(0, 4));
  EXPECT_FALSE(r.GetOptional(0, 5).has_value());
  EXPECT_EQ(r.Get(0, 6), "owned");
  EXPECT_EQ(r.GetInt(0, 7), 7);
  EXPECT_FALSE(r.GetBool(0, 8));
  EXPECT_EQ(r.GetDouble(0, 9), -0.1);  // 17 significant digits: exact
  EXPECT_EQ(r.GetOptional(0, 10), "some");
  EXPECT_EQ(r.GetInt(0, 11), std::numeric_limits<int64_t>::min());
  // Misuse is a non-retryable DriverError, not a crash.
  EXPECT_THROW(r.Get(0, 12), DriverError);
  EXPECT_THROW(r.Get(1, 0), DriverError);
  EXPECT_THROW(r.Column("nope"), DriverError);
  EXPECT_THROW(r.GetInt(0, 0), DriverError);
  EXPECT_THROW(r.GetBool(0, 0), DriverError);
  EXPECT_THROW(r.GetDouble(0, 0), DriverError);
  try {
    r.GetInt(0, 0);
  } catch (const DriverError& e) {
    EXPECT_FALSE(e.retryable());
  }
}

TEST(ConnectionTest, ColumnsByNameAndAffectedRows) {
  auto c = Open();
  c.Exec("CREATE TABLE t (x int)", DeadlineIn(kTimeout));
  auto ins = c.Exec("INSERT INTO t SELECT generate_series(1, 5)", DeadlineIn(kTimeout));
  EXPECT_EQ(ins.affected(), 5);
  auto r = c.Exec("SELECT 1 AS a, 'x' AS b", DeadlineIn(kTimeout));
  EXPECT_EQ(r.Column("b"), 1);
  EXPECT_EQ(r.GetString(0, r.Column("b")), "x");
  auto special =
      c.Exec("SELECT 'Infinity'::float8, '-Infinity'::float8, 'NaN'::float8", DeadlineIn(kTimeout));
  EXPECT_EQ(special.GetDouble(0, 0), std::numeric_limits<double>::infinity());
  EXPECT_EQ(special.GetDouble(0, 1), -std::numeric_limits<double>::infinity());
  EXPECT_TRUE(std::isnan(special.GetDouble(0, 2)));
}

TEST(ConnectionTest, TextArraysRoundTrip) {
  auto c = Open();
  std::vector<std::string> values = {"plain", "with space", "quote\"d", "back\\slash",
                                     "a,b",   "{braces}",   "NULL",     "",
                                     "ünï",   "trailing\\", "\"",       " pad "};
  auto r = c.Exec(
      "SELECT $1::text[], cardinality($1::text[]), ARRAY['x', NULL, 'NULL']::text[], "
      "'{}'::text[], NULL::text[], $2::text[], $3::text[], '[0:1]={a,\"b c\"}'::text[]",
      Params().AddTextArray(values).AddTextArray({}).AddTextArray({""}), DeadlineIn(kTimeout));
  EXPECT_EQ(r.GetTextArray(0, 0), values);
  EXPECT_EQ(r.GetInt(0, 1), static_cast<int64_t>(values.size()));
  EXPECT_EQ(r.GetTextArray(0, 2), (std::vector<std::string>{"x", "", "NULL"}));
  EXPECT_TRUE(r.GetTextArray(0, 3).empty());
  EXPECT_TRUE(r.GetTextArray(0, 4).empty());
  EXPECT_TRUE(r.GetTextArray(0, 5).empty());
  EXPECT_EQ(r.GetTextArray(0, 6), (std::vector<std::string>{""}));
  EXPECT_EQ(r.GetTextArray(0, 7), (std::vector<std::string>{"a", "b c"}));
  // The server stores what we sent, element by element.
  auto each = c.Exec("SELECT u FROM unnest($1::text[]) WITH ORDINALITY AS x(u, n) ORDER BY n",
                     Params().AddTextArray(values), DeadlineIn(kTimeout));
  ASSERT_EQ(each.rows(), static_cast<int>(values.size()));
  for (int i = 0; i < each.rows(); ++i) EXPECT_EQ(each.GetString(i, 0), values[i]);
  auto bad = c.Exec("SELECT 'abc', ARRAY[ARRAY['a'], ARRAY['b']]", DeadlineIn(kTimeout));
  EXPECT_THROW(bad.GetTextArray(0, 0), DriverError);
  EXPECT_THROW(bad.GetTextArray(0, 1), DriverError);
}

TEST(ConnectionTest, ErrorsAreTypedWithRetryableSplit) {
  auto c = Open();
  try {
    c.Exec("SELEC 1", DeadlineIn(kTimeout));
    FAIL();
  } catch (const QueryError& e) {
    EXPECT_EQ(e.sqlstate(), "42601");
    EXPECT_FALSE(e.retryable());
    EXPECT_NE(std::string(e.what()).find("syntax error"), std::string::npos) << e.what();
  }
  try {
    c.Exec(
        "DO $$ BEGIN RAISE EXCEPTION 'busy' USING ERRCODE = '40001', DETAIL = 'why', "
        "HINT = 'again'; END $$",
        DeadlineIn(kTimeout));
    FAIL();
  } catch (const QueryError& e) {
    EXPECT_EQ(e.sqlstate(), "40001");
    EXPECT_TRUE(e.retryable());
    EXPECT_STREQ(e.what(), "busy");
    EXPECT_EQ(e.detail(), "why");
    EXPECT_EQ(e.hint(), "again");
  }
  try {
    c.Exec("DO $$ BEGIN RAISE EXCEPTION 'mine' USING ERRCODE = 'TM001'; END $$",
           DeadlineIn(kTimeout));
    FAIL();
  } catch (const QueryError& e) {
    EXPECT_EQ(e.sqlstate(), "TM001");
    EXPECT_FALSE(e.retryable());
  }
  // Still usable, also after an error inside a transaction is rolled back.
  EXPECT_EQ(Scalar(c, "SELECT 7"), 7);
  c.Exec("BEGIN", DeadlineIn(kTimeout));
  EXPECT_THROW(c.Exec("SELECT 1/0", DeadlineIn(kTimeout)), QueryError);
  EXPECT_THROW(c.Exec("SELECT 1", DeadlineIn(kTimeout)), QueryError);  // 25P02
  c.Exec("ROLLBACK", DeadlineIn(kTimeout));
  EXPECT_EQ(Scalar(c, "SELECT 8"), 8);
  EXPECT_TRUE(c.ok());
}

TEST(ConnectionTest, RetryableSqlStates) {
  for (const char* s : {"40001", "40P01", "08006", "53300", "57P01", "57P03", "55P03"}) {
    EXPECT_TRUE(QueryError::IsRetryableSqlState(s)) << s;
  }
  for (const char* s : {"23505", "42601", "57014", "TM001", "22P02", "", "40"}) {
    EXPECT_FALSE(QueryError::IsRetryableSqlState(s)) << s;
  }
  EXPECT_TRUE(ConnectionError("x").retryable());
  EXPECT_TRUE(TimeoutError("x").retryable());
}

TEST(ConnectionTest, DeadlineCancelsTheStatementAndKeepsTheConnection) {
  std::string db = testing::CreateTestDatabase("pg");
  auto c = Connection::Open(db, DeadlineIn(kTimeout));
  auto watcher = Connection::Open(db, DeadlineIn(kTimeout));
  auto start = Clock::now();
  try {
    c.Exec("SELECT pg_sleep(5)", DeadlineIn(std::chrono::milliseconds(200)));
    FAIL();
  } catch (const TimeoutError& e) {
    EXPECT_TRUE(e.retryable());
  }
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(4));
  // Cancelled on the server, not merely abandoned; the session lives on.
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(Scalar(watcher, fmt::format("SELECT count(*) FROM pg_stat_activity WHERE pid = {} AND "
                                        "state = 'active'",
                                        c.backend_pid())),
            0);
  EXPECT_EQ(Scalar(c, "SELECT 1"), 1);
}

TEST(ConnectionTest, DeadlineInAPipelineLeavesAUsableConnection) {
  auto c = Open();
  EXPECT_THROW(c.ExecPipeline({{"SELECT 1", {}}, {"SELECT pg_sleep(5)", {}}, {"SELECT 2", {}}},
                              DeadlineIn(std::chrono::milliseconds(300))),
               TimeoutError);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(PQpipelineStatus(c.raw()), PQ_PIPELINE_OFF);
  EXPECT_EQ(Scalar(c, "SELECT 3"), 3);
}

TEST(ConnectionTest, TerminatedBackendIsAConnectionError) {
  auto c = Open();
  auto killer = Connection::Open(testing::TestServer().ConnInfo(), DeadlineIn(kTimeout));
  killer.Exec("SELECT pg_terminate_backend($1)", Params().Add(c.backend_pid()),
              DeadlineIn(kTimeout));
  try {
    c.Exec("SELECT 1", DeadlineIn(kTimeout));
    FAIL();
  } catch (const ConnectionError& e) {
    EXPECT_TRUE(e.retryable());
  }
  EXPECT_FALSE(c.ok());
  EXPECT_THROW(c.Exec("SELECT 1", DeadlineIn(kTimeout)), ConnectionError);
  EXPECT_THROW(c.ExecPipeline({{"SELECT 1", {}}}, DeadlineIn(kTimeout)), ConnectionError);
  EXPECT_THROW(c.NextNotification(), ConnectionError);
  EXPECT_FALSE(c.WaitReadable(Clock::now()));
}

TEST(ConnectionTest, AFatalErrorEndsTheSession) {
  auto c = Open();
  c.Exec("SET idle_in_transaction_session_timeout = '100ms'", DeadlineIn(kTimeout));
  c.Exec("BEGIN", DeadlineIn(kTimeout));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_THROW(c.Exec("SELECT 1", DeadlineIn(kTimeout)), ConnectionError);
  EXPECT_FALSE(c.ok());
}

TEST(ConnectionTest, UnreachableServerFailsFast) {
  auto start = Clock::now();
  EXPECT_THROW(Connection::Open("host=/nonexistent/dir port=5432 user=postgres",
                                DeadlineIn(std::chrono::seconds(5))),
               ConnectionError);
  EXPECT_THROW(Connection::Open("this is not a conninfo", DeadlineIn(std::chrono::seconds(5))),
               ConnectionError);
  EXPECT_THROW(Connection::Open(testing::TestServer().ConnInfo("no_such_database"),
                                DeadlineIn(std::chrono::seconds(5))),
               ConnectionError);
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(5));
}

TEST(ConnectionTest, OpensKeyValueAndUrlForms) {
  auto& server = testing::TestServer();
  server.CreateDatabase("url form", DeadlineIn(kTimeout));
  for (const auto& conninfo : {server.ConnInfo("url form"), server.Url("url form")}) {
    auto c = Connection::Open(conninfo, DeadlineIn(kTimeout));
    EXPECT_EQ(c.Exec("SELECT current_database()", DeadlineIn(kTimeout)).GetString(0, 0), "url form")
        << conninfo;
    EXPECT_GT(c.backend_pid(), 0);
    EXPECT_GE(c.socket(), 0);
  }
}

TEST(ConnectionTest, PipelineRunsEachStatementInItsOwnTransaction) {
  auto c = Open();
  c.Exec("CREATE TABLE t (x int PRIMARY KEY)", DeadlineIn(kTimeout));
  uint64_t sent = c.statements_sent();
  auto results = c.ExecPipeline({{"INSERT INTO t VALUES (1) RETURNING x", {}},
                                 {"SELECT $1::int * 2", Params().Add(21)},
                                 {"INSERT INTO t VALUES (2)", {}}},
                                DeadlineIn(kTimeout));
  ASSERT_EQ(results.size(), 3u);
  EXPECT_EQ(results[0].GetInt(0, 0), 1);
  EXPECT_EQ(results[1].GetInt(0, 0), 42);
  EXPECT_EQ(results[2].affected(), 1);
  EXPECT_EQ(c.statements_sent(), sent + 3);
  // A failure in the middle is thrown (the first one); the others ran and
  // committed.
  try {
    c.ExecPipeline({{"INSERT INTO t VALUES (3)", {}},
                    {"INSERT INTO t VALUES (1)", {}},
                    {"SELECT 1/0", {}},
                    {"INSERT INTO t VALUES (4)", {}}},
                   DeadlineIn(kTimeout));
    FAIL();
  } catch (const QueryError& e) {
    EXPECT_EQ(e.sqlstate(), "23505");
  }
  EXPECT_TRUE(c.ok());
  EXPECT_EQ(PQpipelineStatus(c.raw()), PQ_PIPELINE_OFF);
  EXPECT_EQ(Scalar(c, "SELECT count(*) FROM t"), 4);
  // So does a statement that cannot even be prepared.
  try {
    c.ExecPipeline({{"INSERT INTO t VALUES (5)", {}},
                    {"SELECT no_such_function()", {}},
                    {"INSERT INTO t VALUES (6)", {}}},
                   DeadlineIn(kTimeout));
    FAIL();
  } catch (const QueryError& e) {
    EXPECT_EQ(e.sqlstate(), "42883");
  }
  EXPECT_EQ(Scalar(c, "SELECT count(*) FROM t"), 6);
  EXPECT_TRUE(c.prepares_statements());
  EXPECT_TRUE(c.ExecPipeline({}, DeadlineIn(kTimeout)).empty());
}

TEST(ConnectionTest, ScriptsRunSeveralStatements) {
  auto c = Open();
  c.ExecScript(
      "CREATE TABLE s (x int); INSERT INTO s VALUES (1); INSERT INTO s VALUES (2);"
      "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1; $$;",
      DeadlineIn(kTimeout));
  EXPECT_EQ(Scalar(c, "SELECT sum(x) + f() FROM s"), 4);
  // A script is one implicit transaction: an error undoes all of it.
  try {
    c.ExecScript("INSERT INTO s VALUES (3); SELECT nope; INSERT INTO s VALUES (4);",
                 DeadlineIn(kTimeout));
    FAIL();
  } catch (const QueryError& e) {
    EXPECT_EQ(e.sqlstate(), "42703");
  }
  EXPECT_EQ(Scalar(c, "SELECT count(*) FROM s"), 2);
  EXPECT_THROW(c.ExecScript("SELECT pg_sleep(5)", DeadlineIn(std::chrono::milliseconds(200))),
               TimeoutError);
  EXPECT_EQ(Scalar(c, "SELECT 5"), 5);
}

TEST(ConnectionTest, ListenAndNotify) {
  std::string db = testing::CreateTestDatabase("pg");
  auto listener = Connection::Open(db, DeadlineIn(kTimeout));
  auto sender = Connection::Open(db, DeadlineIn(kTimeout));
  listener.Listen("Chan \"1\"", DeadlineIn(kTimeout));
  EXPECT_FALSE(listener.NextNotification().has_value());
  EXPECT_FALSE(listener.WaitReadable(DeadlineIn(std::chrono::milliseconds(50))));
  sender.Exec("SELECT pg_notify('Chan \"1\"', 'hello')", DeadlineIn(kTimeout));
  sender.Exec("NOTIFY \"Chan \"\"1\"\"\", 'world'", DeadlineIn(kTimeout));
  std::vector<Notification> got;
  Deadline until = DeadlineIn(std::chrono::seconds(10));
  while (got.size() < 2 && listener.WaitReadable(until)) {
    while (auto n = listener.NextNotification()) got.push_back(*n);
  }
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].channel, "Chan \"1\"");
  EXPECT_EQ(got[0].payload, "hello");
  EXPECT_EQ(got[0].backend_pid, sender.backend_pid());
  EXPECT_EQ(got[1].payload, "world");
  EXPECT_FALSE(listener.NextNotification().has_value());
}

TEST(ConnectionTest, MovesTransferOwnership) {
  auto a = Open();
  int pid = a.backend_pid();
  Connection b = std::move(a);
  EXPECT_FALSE(a.ok());  // NOLINT: moved-from is defined as not connected
  EXPECT_EQ(a.backend_pid(), 0);
  EXPECT_TRUE(b.ok());
  EXPECT_EQ(b.backend_pid(), pid);
  Connection c;
  EXPECT_FALSE(c.ok());
  EXPECT_THROW(c.Exec("SELECT 1", DeadlineIn(kTimeout)), ConnectionError);
  c = std::move(b);
  EXPECT_EQ(Scalar(c, "SELECT 1"), 1);
  c.Close();
  EXPECT_FALSE(c.ok());
  EXPECT_EQ(QuoteIdentifier("a\"b"), "\"a\"\"b\"");
  EXPECT_EQ(QuoteLiteral("it's"), "'it''s'");
}

TEST(ConnectionTest, AForkedChildAbandonsTheParentsConnection) {
  auto c = Open();
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // Without this, the destructor would send Terminate on the shared socket
    // and end the parent's session.
    c.AbandonAfterFork();
    bool forgotten = !c.ok() && c.raw() == nullptr;
    { Connection gone = std::move(c); }  // runs the destructor
    _exit(forgotten ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_EQ(Scalar(c, "SELECT 1"), 1);
}

TEST(ConnectionTest, ServerNoticesGoToTheLog) {
  auto c = Open();
  std::ostringstream captured;
  auto previous = spdlog::default_logger();
  auto logger = std::make_shared<spdlog::logger>(
      "capture", std::make_shared<spdlog::sinks::ostream_sink_mt>(captured));
  logger->set_level(spdlog::level::debug);
  spdlog::set_default_logger(logger);
  c.Exec("DO $$ BEGIN RAISE WARNING 'careful'; RAISE NOTICE 'fyi'; END $$", DeadlineIn(kTimeout));
  spdlog::set_default_logger(previous);
  EXPECT_NE(captured.str().find("[warning] database: WARNING:  careful"), std::string::npos)
      << captured.str();
  EXPECT_NE(captured.str().find("[debug] database: NOTICE:  fyi"), std::string::npos)
      << captured.str();
}

TEST(ErrorCodeTest, Names) {
  EXPECT_STREQ(ErrorCodeName(ErrorCode::kInvalidArgument), "invalid_argument");
  EXPECT_STREQ(ErrorCodeName(ErrorCode::kNotFound), "not_found");
  EXPECT_STREQ(ErrorCodeName(ErrorCode::kConflict), "conflict");
  EXPECT_STREQ(ErrorCodeName(ErrorCode::kUnavailable), "unavailable");
  EXPECT_STREQ(ErrorCodeName(ErrorCode::kSchemaMismatch), "schema_mismatch");
  EXPECT_STREQ(ErrorCodeName(ErrorCode::kFenced), "fenced");
  EXPECT_STREQ(ErrorCodeName(ErrorCode::kInternal), "internal");
}

}  // namespace
}  // namespace taskmill::pg
