#include <gtest/gtest.h>

#include "pg/transaction.h"
#include "store/locks.h"
#include "store/migrate.h"
#include "store/migrations_data.h"
#include "store/task_store.h"
#include "support/taskmill_fixture.h"
#include "support/test_postgres.h"

namespace taskmill {
namespace {

constexpr auto kTimeout = std::chrono::seconds(60);

TEST(MigrateTest, AppliesOnceAndIsIdempotent) {
  auto conn = testing::Connect(testing::CreateTestDatabase());
  EXPECT_EQ(store::SchemaVersion(conn, DeadlineIn(kTimeout)), 0);
  auto check = store::CheckSchema(conn, DeadlineIn(kTimeout));
  ASSERT_FALSE(check.ok());
  EXPECT_NE(check.error().message.find("taskmill migrate"), std::string::npos);

  auto first = store::Migrate(conn, DeadlineIn(kTimeout));
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(*first, store::LatestSchemaVersion());
  auto second = store::Migrate(conn, DeadlineIn(kTimeout));
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(*second, 0);
  EXPECT_EQ(store::SchemaVersion(conn, DeadlineIn(kTimeout)), store::LatestSchemaVersion());
  EXPECT_TRUE(store::CheckSchema(conn, DeadlineIn(kTimeout)).ok());
}

TEST(MigrateTest, RefusesADatabaseNewerThanTheProgram) {
  auto conn = testing::Connect(testing::CreateTestDatabase());
  ASSERT_TRUE(store::Migrate(conn, DeadlineIn(kTimeout)).ok());
  conn.Exec("INSERT INTO taskmill.schema_migrations (version, name) VALUES (9999, 'future')",
            DeadlineIn(kTimeout));
  auto r = store::Migrate(conn, DeadlineIn(kTimeout));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kSchemaMismatch);
  EXPECT_NE(r.error().message.find("newer"), std::string::npos);
  auto check = store::CheckSchema(conn, DeadlineIn(kTimeout));
  ASSERT_FALSE(check.ok());
  EXPECT_NE(check.error().message.find("upgrade taskmill"), std::string::npos);
}

TEST(MigrateTest, ConcurrentMigratorsDoNotCollide) {
  std::string db = testing::CreateTestDatabase();
  auto a = testing::Connect(db);
  auto b = testing::Connect(db);
  {
    pg::Transaction holder(a, DeadlineIn(kTimeout));
    a.Exec("SELECT pg_advisory_xact_lock($1::integer, 0)",
           pg::Params().Add(store::kMigrationLockClass), DeadlineIn(kTimeout));
    // b must wait for a's lock rather than race it.
    EXPECT_THROW(store::Migrate(b, DeadlineIn(std::chrono::milliseconds(300))), TimeoutError);
    holder.Commit(DeadlineIn(kTimeout));
  }
  auto r = store::Migrate(b, DeadlineIn(kTimeout));
  ASSERT_TRUE(r.ok());
}

TEST(MigrateTest, AResourceLockDoesNotHoldUpAMigration) {
  // What a dispatch of a resource whose hashtext() is 0 holds until its
  // transaction ends.
  std::string db = testing::CreateTestDatabase();
  auto a = testing::Connect(db);
  auto b = testing::Connect(db);
  pg::Transaction dispatcher(a, DeadlineIn(kTimeout));
  a.Exec("SELECT pg_advisory_xact_lock($1::integer, 0)",
         pg::Params().Add(store::kResourceLockClass), DeadlineIn(kTimeout));
  auto r = store::Migrate(b, DeadlineIn(std::chrono::seconds(5)));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, store::LatestSchemaVersion());
}

TEST(MigrateTest, AFailedMigrationLeavesNoTransactionOpen) {
  // The migrator's transaction ends on every way out, here a version newer
  // than the program.
  auto conn = testing::Connect(testing::CreateTestDatabase());
  ASSERT_TRUE(store::Migrate(conn, DeadlineIn(kTimeout)).ok());
  conn.Exec("INSERT INTO taskmill.schema_migrations (version, name) VALUES (9999, 'future')",
            DeadlineIn(kTimeout));
  ASSERT_FALSE(store::Migrate(conn, DeadlineIn(kTimeout)).ok());
  EXPECT_FALSE(conn.in_transaction());
}

TEST(MigrateTest, UpgradesAVersion1DatabaseWithTasksInFlight) {
  // A database made by the first release: version 1 only, with a running
  // task, a task queued behind it and a ready one.
  auto conn = testing::Connect(testing::CreateTestDatabase());
  const auto& all = store::EmbeddedMigrations();
  ASSERT_GE(all.size(), 2u);
  ASSERT_EQ(all[0].version, 1);
  conn.ExecScript(
      "CREATE SCHEMA taskmill; CREATE TABLE taskmill.schema_migrations (version integer "
      "PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
      DeadlineIn(kTimeout));
  conn.ExecScript(all[0].sql, DeadlineIn(kTimeout));
  conn.Exec("INSERT INTO taskmill.schema_migrations (version, name) VALUES (1, '0001_init')",
            DeadlineIn(kTimeout));
  store::RegisterFunctions(conn, {"taskmill.noop"}, DeadlineIn(kTimeout));
  // Registered as that release's worker did (register_app has gained
  // parameters since).
  struct {
    std::string id;
  } app{conn.Exec("SELECT id FROM taskmill.register_app('worker', 'w', 'h', 1, '0.1.0', 30, "
                  "'{}'::text[])",
                  DeadlineIn(kTimeout))
            .GetString(0, 0)};
  auto dispatch = [&](const char* resource) {
    return conn
        .Exec("SELECT taskmill.dispatch('taskmill.noop', '[]', '{}', ARRAY[$1])",
              pg::Params().Add(resource), DeadlineIn(kTimeout))
        .GetString(0, 0);
  };
  std::string first = dispatch("r"), behind = dispatch("r"), other = dispatch("s");
  auto claimed = store::Claim(conn, app.id, false, DeadlineIn(kTimeout));
  ASSERT_TRUE(claimed.ok() && claimed->has_value());
  EXPECT_EQ((*claimed)->id, first);

  auto r = store::Migrate(conn, DeadlineIn(kTimeout));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(*r, store::LatestSchemaVersion() - 1);

  // The new functions carry on where the old ones left off.
  auto fc = store::FinishAndClaim(conn, first, app.id, TaskState::kCompleted, nullptr, nullptr,
                                  DeadlineIn(kTimeout));
  EXPECT_EQ(fc.finished, TaskState::kCompleted);
  ASSERT_TRUE(fc.next.has_value());
  EXPECT_EQ(fc.next->id, other);
  fc = store::FinishAndClaim(conn, other, app.id, TaskState::kCompleted, nullptr, nullptr,
                             DeadlineIn(kTimeout));
  ASSERT_TRUE(fc.next.has_value());
  EXPECT_EQ(fc.next->id, behind);
  EXPECT_EQ(store::FinishTask(conn, behind, app.id, TaskState::kCompleted, nullptr, nullptr,
                              DeadlineIn(kTimeout)),
            TaskState::kCompleted);
  EXPECT_EQ(conn.Exec("SELECT count(*) FROM taskmill.task WHERE state = 'completed'",
                      DeadlineIn(kTimeout))
                .GetInt(0, 0),
            3);
  EXPECT_EQ(
      conn.Exec("SELECT count(*) FROM taskmill.task_resource", DeadlineIn(kTimeout)).GetInt(0, 0),
      0);
}

TEST(MigrateTest, TheClaimCanOnlyReadTheReadyIndexInOrder) {
  // Statistics of an empty table and a table that is not, the worst case
  // for a plan made once per session: the claim's query must still read
  // task_ready_idx in order and never sort the backlog, because no other
  // index can answer it.
  auto conn = testing::Connect(testing::CreateTestDatabase());
  ASSERT_TRUE(store::Migrate(conn, DeadlineIn(kTimeout)).ok());
  conn.ExecScript("VACUUM ANALYZE taskmill.task", DeadlineIn(kTimeout));
  // Then a burst that autoanalyze has not seen yet: every task ready.
  store::RegisterFunctions(conn, {"taskmill.noop"}, DeadlineIn(kTimeout));
  conn.Exec(
      "SELECT count(taskmill.dispatch('taskmill.noop', '[]', '{}', '{}', ARRAY['s' || i % 10])) "
      "FROM generate_series(1, 5000) i",
      DeadlineIn(kTimeout));
  conn.ExecScript(
      "SET plan_cache_mode = force_generic_plan; SET enable_seqscan = off; "
      "PREPARE claim_shape AS SELECT c.id FROM taskmill.task c WHERE c.state = 'waiting' "
      "AND c.unblocked_at IS NOT NULL AND c.app_lock IS NULL ORDER BY c.immediate DESC, c.seq "
      "LIMIT 1 FOR UPDATE SKIP LOCKED",
      DeadlineIn(kTimeout));
  auto plan = conn.Exec("EXPLAIN EXECUTE claim_shape", DeadlineIn(kTimeout));
  std::string text;
  for (int i = 0; i < plan.rows(); ++i) text += plan.GetString(i, 0) + "\n";
  EXPECT_NE(text.find("task_ready_idx"), std::string::npos) << text;
  EXPECT_EQ(text.find("Sort"), std::string::npos) << text;
}

TEST(MigrateTest, EveryEntryPointThatFinalisesSetsThePlannerOptions) {
  // _finalize's UPDATE must go by primary key; with custom plans it went by
  // owner through thousands of dead index entries.
  auto conn = testing::Connect(testing::CreateTestDatabase());
  ASSERT_TRUE(store::Migrate(conn, DeadlineIn(kTimeout)).ok());
  auto res = conn.Exec(
      "SELECT p.oid::regprocedure::text FROM pg_proc p "
      "WHERE p.pronamespace = 'taskmill'::regnamespace AND p.proname NOT LIKE '\\_%' "
      "AND p.prosrc LIKE '%taskmill._finalize(%' "
      "AND NOT coalesce('plan_cache_mode=force_generic_plan' = ANY (p.proconfig), false)",
      DeadlineIn(kTimeout));
  std::string missing;
  for (int i = 0; i < res.rows(); ++i) missing += res.GetString(i, 0) + " ";
  EXPECT_EQ(res.rows(), 0) << missing;
  // And the check itself finds the callers.
  EXPECT_GE(conn.Exec("SELECT count(*) FROM pg_proc p WHERE p.pronamespace = "
                      "'taskmill'::regnamespace AND p.prosrc LIKE '%taskmill._finalize(%'",
                      DeadlineIn(kTimeout))
                .GetInt(0, 0),
            4);
}

}  // namespace
}  // namespace taskmill
