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
  auto conn = testing::Connect(testing::MigratedTestDatabase());
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
  conn.Exec("COMMIT", DeadlineIn(kTimeout));

  std::this_thread::sleep_for(std::chrono::milliseconds(700));
  EXPECT_TRUE(store::TryLease(conn, "janitor", b, 5, DeadlineIn(kTimeout)));  // expired: taken
  EXPECT_FALSE(store::TryLease(conn, "janitor", a, 5, DeadlineIn(kTimeout)));
}

}  // namespace
}  // namespace taskmill
