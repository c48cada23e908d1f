// Janitor leases (taskmill.try_lease): one holder at a time, taken over
// when it expires, and a losing attempt writes nothing.
#include <gtest/gtest.h>

#include <thread>

#include "store/task_store.h"
#include "support/taskmill_fixture.h"
#include "support/test_postgres.h"

namespace taskmill {
namespace {

constexpr auto kTimeout = std::chrono::seconds(30);

TEST(LeaseTest, OneHolderUntilItExpiresAndLosingWritesNothing) {
  const std::string conninfo = testing::MigratedTestDatabase();
  auto conn = testing::Connect(conninfo);
  const std::string a = "8d5b1a3e-0000-4000-8000-00000000000a";
  const std::string b = "8d5b1a3e-0000-4000-8000-00000000000b";
  EXPECT_TRUE(store::TryLease(conn, "janitor", a, 0.5, DeadlineIn(kTimeout)));
  EXPECT_TRUE(store::TryLease(conn, "janitor", a, 0.5, DeadlineIn(kTimeout)));  // renewed

  // A losing attempt inside a transaction: no transaction id was assigned,
  // so nothing was written or locked for update.
  conn.Exec("BEGIN", DeadlineIn(kTimeout));
  EXPECT_FALSE(store::TryLease(conn, "janitor", b, 0.5, DeadlineIn(kTimeout)));
  auto xid = conn.Exec("SELECT pg_current_xact_id_if_assigned() IS NULL", DeadlineIn(kTimeout));
  EXPECT_TRUE(xid.GetBool(0, 0)) << "a losing lease attempt took a transaction id";
  // Nor does it hold the lease row locked (INSERT ... ON CONFLICT DO UPDATE
  // locks the conflicting row even when its WHERE rejects the update): the
  // holder can take its row at once while the loser's transaction is open.
  auto holder = testing::Connect(conninfo);
  EXPECT_NO_THROW(
      holder.Exec("SELECT 1 FROM taskmill.lease WHERE name = 'janitor' FOR UPDATE NOWAIT",
                  DeadlineIn(kTimeout)));
  conn.Exec("COMMIT", DeadlineIn(kTimeout));

  std::this_thread::sleep_for(std::chrono::milliseconds(700));
  EXPECT_TRUE(store::TryLease(conn, "janitor", b, 5, DeadlineIn(kTimeout)));  // expired: taken
  EXPECT_FALSE(store::TryLease(conn, "janitor", a, 5, DeadlineIn(kTimeout)));
}

}  // namespace
}  // namespace taskmill
