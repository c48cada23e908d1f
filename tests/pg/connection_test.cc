// The libpq layer against a real PostgreSQL.
#include <gtest/gtest.h>

#include "pg/connection.h"
#include "support/test_postgres.h"

namespace taskmill::pg {
namespace {

constexpr auto kTimeout = std::chrono::seconds(30);

Connection Open() {
  return Connection::Open(testing::CreateTestDatabase("pg"), DeadlineIn(kTimeout));
}

TEST(ConnectionTest, ParamsOfEveryTypeAndNulls) {
  auto c = Open();
  auto r = c.Exec("SELECT $1::text, $2::bigint, $3::float8, $4::boolean, $5::text, $6::text",
                  Params()
                      .Add("héllo")
                      .Add(int64_t{-42})
                      .Add(2.5)
                      .Add(true)
                      .AddNull()
                      .Add(std::optional<std::string>()),
                  DeadlineIn(kTimeout));
  ASSERT_EQ(r.rows(), 1);
  EXPECT_EQ(r.GetString(0, 0), "héllo");
  EXPECT_EQ(r.GetInt(0, 1), -42);
  EXPECT_DOUBLE_EQ(r.GetDouble(0, 2), 2.5);
  EXPECT_TRUE(r.GetBool(0, 3));
  EXPECT_TRUE(r.IsNull(0, 4));
  EXPECT_FALSE(r.GetOptional(0, 5).has_value());
  EXPECT_THROW(r.Get(0, 9), QueryError);
  EXPECT_THROW(r.Column("nope"), QueryError);
  EXPECT_THROW(r.GetInt(0, 0), QueryError);
}

TEST(ConnectionTest, TextArraysRoundTrip) {
  auto c = Open();
  std::vector<std::string> values = {"plain", "with space", "quote\"d", "back\\slash",
                                     "a,b",   "{braces}",   "NULL",     ""};
  auto r = c.Exec(
      "SELECT $1::text[], cardinality($1::text[]), ARRAY['x', NULL]::text[], "
      "'{}'::text[], NULL::text[]",
      Params().AddTextArray(values), DeadlineIn(kTimeout));
  EXPECT_EQ(r.GetTextArray(0, 0), values);
  EXPECT_EQ(r.GetInt(0, 1), static_cast<int64_t>(values.size()));
  EXPECT_EQ(r.GetTextArray(0, 2), (std::vector<std::string>{"x", ""}));
  EXPECT_TRUE(r.GetTextArray(0, 3).empty());
  EXPECT_TRUE(r.GetTextArray(0, 4).empty());
}

TEST(ConnectionTest, ErrorsAreTypedWithRetryableSplit) {
  auto c = Open();
  try {
    c.Exec("SELEC 1", DeadlineIn(kTimeout));
    FAIL();
  } catch (const QueryError& e) {
    EXPECT_EQ(e.sqlstate(), "42601");
    EXPECT_FALSE(e.retryable());
  }
  try {
    c.Exec("DO $$ BEGIN RAISE EXCEPTION 'busy' USING ERRCODE = '40001', HINT = 'again'; END $$",
           DeadlineIn(kTimeout));
    FAIL();
  } catch (const QueryError& e) {
    EXPECT_EQ(e.sqlstate(), "40001");
    EXPECT_TRUE(e.retryable());
    EXPECT_EQ(e.hint(), "again");
  }
  // Still usable.
  EXPECT_EQ(c.Exec("SELECT 7", DeadlineIn(kTimeout)).GetInt(0, 0), 7);
}

TEST(ConnectionTest, DeadlineCancelsTheStatementAndKeepsTheConnection) {
  auto c = Open();
  auto start = Clock::now();
  EXPECT_THROW(c.Exec("SELECT pg_sleep(5)", DeadlineIn(std::chrono::milliseconds(200))),
               TimeoutError);
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(4));
  if (c.ok()) {
    EXPECT_EQ(c.Exec("SELECT 1", DeadlineIn(kTimeout)).GetInt(0, 0), 1);
  }
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
}

TEST(ConnectionTest, UnreachableServerFailsFast) {
  auto start = Clock::now();
  EXPECT_THROW(Connection::Open("host=/nonexistent/dir port=5432 user=postgres",
                                DeadlineIn(std::chrono::seconds(5))),
               ConnectionError);
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(5));
}

TEST(ConnectionTest, PipelineRunsEachStatementInItsOwnTransaction) {
  auto c = Open();
  c.Exec("CREATE TABLE t (x int PRIMARY KEY)", DeadlineIn(kTimeout));
  auto results = c.ExecPipeline({{"INSERT INTO t VALUES (1) RETURNING x", {}},
                                 {"SELECT $1::int * 2", Params().Add(21)},
                                 {"INSERT INTO t VALUES (2) RETURNING x", {}}},
                                DeadlineIn(kTimeout));
  ASSERT_EQ(results.size(), 3u);
  EXPECT_EQ(results[1].GetInt(0, 0), 42);
  // A failure in the middle is thrown; the others ran and committed.
  EXPECT_THROW(c.ExecPipeline({{"INSERT INTO t VALUES (3)", {}},
                               {"INSERT INTO t VALUES (1)", {}},
                               {"INSERT INTO t VALUES (4)", {}}},
                              DeadlineIn(kTimeout)),
               QueryError);
  EXPECT_EQ(c.Exec("SELECT count(*) FROM t", DeadlineIn(kTimeout)).GetInt(0, 0), 4);
  EXPECT_GE(c.statements_sent(), 8u);
}

TEST(ConnectionTest, ListenAndNotify) {
  std::string db = testing::CreateTestDatabase("pg");
  auto listener = Connection::Open(db, DeadlineIn(kTimeout));
  auto sender = Connection::Open(db, DeadlineIn(kTimeout));
  listener.Listen("Chan \"1\"", DeadlineIn(kTimeout));
  EXPECT_FALSE(listener.NextNotification().has_value());
  sender.Exec("SELECT pg_notify('Chan \"1\"', 'hello')", DeadlineIn(kTimeout));
  ASSERT_TRUE(listener.WaitReadable(DeadlineIn(std::chrono::seconds(5))));
  auto n = listener.NextNotification();
  ASSERT_TRUE(n.has_value());
  EXPECT_EQ(n->channel, "Chan \"1\"");
  EXPECT_EQ(n->payload, "hello");
  EXPECT_EQ(n->backend_pid, sender.backend_pid());
}

TEST(ConnectionTest, MovesTransferOwnership) {
  auto a = Open();
  Connection b = std::move(a);
  EXPECT_FALSE(a.ok());  // NOLINT: moved-from is defined as not connected
  EXPECT_TRUE(b.ok());
  EXPECT_EQ(QuoteIdentifier("a\"b"), "\"a\"\"b\"");
  EXPECT_EQ(QuoteLiteral("it's"), "'it''s'");
}

}  // namespace
}  // namespace taskmill::pg
