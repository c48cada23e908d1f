// pg::Transaction: commit, rollback, the destructor, a broken connection.
#include <gtest/gtest.h>

#include <stdexcept>

#include "pg/transaction.h"
#include "support/test_postgres.h"

namespace taskmill::pg {
namespace {

constexpr auto kTimeout = std::chrono::seconds(30);

struct Db {
  std::string conninfo = testing::CreateTestDatabase("tx");
  Connection Open() const { return Connection::Open(conninfo, DeadlineIn(kTimeout)); }
};

int64_t Count(Connection& c) {
  return c.Exec("SELECT count(*) FROM t", DeadlineIn(kTimeout)).GetInt(0, 0);
}

void MakeTable(Connection& c) { c.Exec("CREATE TABLE t (x int)", DeadlineIn(kTimeout)); }

void Insert(Connection& c) { c.Exec("INSERT INTO t VALUES (1)", DeadlineIn(kTimeout)); }

TEST(TransactionTest, CommitMakesTheWritesVisible) {
  Db db;
  auto c = db.Open();
  auto other = db.Open();
  MakeTable(c);
  {
    Transaction tx(c, DeadlineIn(kTimeout));
    EXPECT_TRUE(c.in_transaction());
    EXPECT_TRUE(tx.active());
    Insert(c);
    EXPECT_EQ(Count(other), 0);  // not yet
    tx.Commit(DeadlineIn(kTimeout));
    EXPECT_FALSE(tx.active());
    EXPECT_FALSE(c.in_transaction());
  }
  EXPECT_EQ(Count(other), 1);
  EXPECT_FALSE(c.in_transaction());
}

TEST(TransactionTest, TheDestructorRollsBackWhatWasNotCommitted) {
  Db db;
  auto c = db.Open();
  MakeTable(c);
  {
    Transaction tx(c, DeadlineIn(kTimeout));
    Insert(c);
  }
  EXPECT_FALSE(c.in_transaction());
  EXPECT_EQ(Count(c), 0);
  // Also when an exception leaves the scope.
  try {
    Transaction tx(c, DeadlineIn(kTimeout));
    Insert(c);
    throw std::runtime_error("caller gives up");
  } catch (const std::runtime_error&) {
  }
  EXPECT_FALSE(c.in_transaction());
  EXPECT_EQ(Count(c), 0);
  // And after a statement of the transaction failed (an aborted block).
  {
    Transaction tx(c, DeadlineIn(kTimeout));
    Insert(c);
    EXPECT_THROW(c.Exec("SELECT 1/0", DeadlineIn(kTimeout)), DatabaseError);
  }
  EXPECT_FALSE(c.in_transaction());
  EXPECT_EQ(Count(c), 0);
  EXPECT_TRUE(c.ok());
}

TEST(TransactionTest, ExplicitRollback) {
  Db db;
  auto c = db.Open();
  MakeTable(c);
  Transaction tx(c, DeadlineIn(kTimeout));
  Insert(c);
  tx.Rollback(DeadlineIn(kTimeout));
  EXPECT_FALSE(tx.active());
  EXPECT_FALSE(c.in_transaction());
  EXPECT_EQ(Count(c), 0);
}

TEST(TransactionTest, CommitOfAnAbortedTransactionIsAnError) {
  // The server answers such a COMMIT with ROLLBACK and no error; silence
  // would let a caller believe its writes were kept.
  Db db;
  auto c = db.Open();
  MakeTable(c);
  Transaction tx(c, DeadlineIn(kTimeout));
  Insert(c);
  EXPECT_THROW(c.Exec("SELECT 1/0", DeadlineIn(kTimeout)), DatabaseError);
  try {
    tx.Commit(DeadlineIn(kTimeout));
    FAIL() << "no exception";
  } catch (const DatabaseError& e) {
    EXPECT_EQ(e.sqlstate(), "25P02");
    EXPECT_FALSE(e.retryable());
  }
  EXPECT_FALSE(tx.active());
  EXPECT_FALSE(c.in_transaction());
  EXPECT_EQ(Count(c), 0);
}

TEST(TransactionTest, ABrokenConnectionIsSafeToLeave) {
  Db db;
  auto c = db.Open();
  auto admin = db.Open();
  MakeTable(c);
  {
    Transaction tx(c, DeadlineIn(kTimeout));
    Insert(c);
    admin.Exec("SELECT pg_terminate_backend($1::integer)", Params().Add(c.backend_pid()),
               DeadlineIn(kTimeout));
    EXPECT_THROW(c.Exec("SELECT 1", DeadlineIn(kTimeout)), ConnectionError);
    EXPECT_FALSE(c.ok());
    // Commit on the broken connection throws, and leaves nothing to do.
    EXPECT_THROW(tx.Commit(DeadlineIn(kTimeout)), ConnectionError);
  }  // the destructor neither throws nor hangs
  EXPECT_FALSE(c.ok());
  EXPECT_EQ(Count(admin), 0);
  // Broken before the destructor, without a Commit.
  auto d = db.Open();
  {
    Transaction tx(d, DeadlineIn(kTimeout));
    Insert(d);
    admin.Exec("SELECT pg_terminate_backend($1::integer)", Params().Add(d.backend_pid()),
               DeadlineIn(kTimeout));
  }
  EXPECT_EQ(Count(admin), 0);
}

TEST(TransactionTest, ATimeoutInsideIsRolledBack) {
  Db db;
  auto c = db.Open();
  MakeTable(c);
  {
    Transaction tx(c, DeadlineIn(kTimeout));
    Insert(c);
    EXPECT_THROW(c.Exec("SELECT pg_sleep(30)", DeadlineIn(std::chrono::milliseconds(200))),
                 TimeoutError);
  }
  // Either the cancel left the connection usable and the destructor rolled
  // back, or the connection was dropped (and the server rolled back).
  if (c.ok()) {
    EXPECT_FALSE(c.in_transaction());
    EXPECT_EQ(Count(c), 0);
  }
  auto other = db.Open();
  EXPECT_EQ(Count(other), 0);
}

}  // namespace
}  // namespace taskmill::pg
