#include <gtest/gtest.h>

#include "store/migrate.h"
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
  a.Exec("BEGIN", DeadlineIn(kTimeout));
  a.Exec("SELECT pg_advisory_xact_lock(1953720684, 0)", DeadlineIn(kTimeout));
  // b must wait for a's lock rather than race it.
  EXPECT_THROW(store::Migrate(b, DeadlineIn(std::chrono::milliseconds(300))), pg::TimeoutError);
  a.Exec("COMMIT", DeadlineIn(kTimeout));
  auto r = store::Migrate(b, DeadlineIn(kTimeout));
  ASSERT_TRUE(r.ok());
}

}  // namespace
}  // namespace taskmill
