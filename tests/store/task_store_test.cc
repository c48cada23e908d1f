// What the store returns: one timestamp format through every door, and task
// states it does not know reported as such.
#include <gtest/gtest.h>

#include <regex>

#include "pg/transaction.h"
#include "store/locks.h"
#include "store/task_store.h"
#include "support/taskmill_fixture.h"
#include "support/test_postgres.h"

namespace taskmill {
namespace {

using testing::Connect;
using testing::MigratedTestDatabase;

constexpr auto kTimeout = std::chrono::seconds(30);

class TaskStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    conn_ = Connect(MigratedTestDatabase());
    // Not UTC, so that a timestamp rendered in the session's zone would show.
    conn_.Exec("SET TimeZone = 'America/New_York'", DeadlineIn(kTimeout));
    store::AppRegistration reg;
    reg.app_type = "worker";
    reg.name = "test-worker";
    reg.functions = {"taskmill.noop"};
    app_ = store::RegisterApp(conn_, reg, DeadlineIn(kTimeout)).id;
  }

  std::string Dispatch(const std::string& resource) {
    return testing::DispatchTask(
        conn_, testing::Request("taskmill.noop", nlohmann::json::object(), {resource}));
  }

  pg::Connection conn_;
  std::string app_;
};

bool IsIso(const std::string& s) {
  static const std::regex iso(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z)");
  return std::regex_match(s, iso);
}

void ExpectIsoTimes(const Task& t, const char* door) {
  EXPECT_TRUE(IsIso(t.created_at)) << door << ": created_at " << t.created_at;
  ASSERT_TRUE(t.unblocked_at.has_value()) << door;
  EXPECT_TRUE(IsIso(*t.unblocked_at)) << door << ": unblocked_at " << *t.unblocked_at;
  ASSERT_TRUE(t.started_at.has_value()) << door;
  EXPECT_TRUE(IsIso(*t.started_at)) << door << ": started_at " << *t.started_at;
}

TEST_F(TaskStoreTest, ClaimPathsReturnIsoTimestampsLikeEveryOtherDoor) {
  std::string first = Dispatch("a");
  std::string second = Dispatch("b");

  auto claimed = store::Claim(conn_, app_, false, DeadlineIn(kTimeout));
  ASSERT_TRUE(claimed.ok());
  ASSERT_TRUE(claimed->has_value());
  const Task& a = **claimed;
  ASSERT_EQ(a.id, first);
  ExpectIsoTimes(a, "Claim");
  // The same text as a read of the task.
  auto read = store::GetTask(conn_, first, DeadlineIn(kTimeout));
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(a.created_at, read->created_at);
  EXPECT_EQ(a.unblocked_at, read->unblocked_at);
  EXPECT_EQ(a.started_at, read->started_at);

  auto busy = store::FinishAndClaim(conn_, first, app_, TaskState::kCompleted, nullptr, nullptr,
                                    DeadlineIn(kTimeout));
  EXPECT_EQ(busy.finished, TaskState::kCompleted);
  ASSERT_TRUE(busy.next.has_value());
  ASSERT_EQ(busy.next->id, second);
  ExpectIsoTimes(*busy.next, "FinishAndClaim");
  auto read2 = store::GetTask(conn_, second, DeadlineIn(kTimeout));
  ASSERT_TRUE(read2.ok());
  EXPECT_EQ(busy.next->created_at, read2->created_at);
  EXPECT_EQ(busy.next->started_at, read2->started_at);
}

TEST_F(TaskStoreTest, AnUnknownTaskStateIsAnErrorNotADefault) {
  std::string id = Dispatch("a");
  // What a newer schema (or a hand edit) could leave behind.
  conn_.Exec("ALTER TABLE taskmill.task DROP CONSTRAINT task_state_check", DeadlineIn(kTimeout));
  conn_.Exec("UPDATE taskmill.task SET state = 'paused' WHERE id = $1::uuid", pg::Params().Add(id),
             DeadlineIn(kTimeout));

  auto expect_driver_error = [](const auto& call, const char* what) {
    try {
      call();
      ADD_FAILURE() << what << ": no exception";
    } catch (const DriverError& e) {
      EXPECT_NE(std::string(e.what()).find("\"paused\""), std::string::npos) << e.what();
      EXPECT_FALSE(e.retryable());
    }
  };
  expect_driver_error([&] { (void)store::GetTask(conn_, id, DeadlineIn(kTimeout)); }, "GetTask");
  expect_driver_error([&] { store::ListTasks(conn_, {}, DeadlineIn(kTimeout)); }, "ListTasks");
  expect_driver_error([&] { store::TaskStateOf(conn_, id, DeadlineIn(kTimeout)); }, "TaskStateOf");
  EXPECT_THROW(store::TaskStateFromDb("paused"), DriverError);
  EXPECT_EQ(store::TaskStateFromDb("canceling"), TaskState::kCanceling);
}

TEST_F(TaskStoreTest, ResourceLocksUseTheResourceClass) {
  // The class in the SQL functions is the one store/locks.h names.
  pg::Transaction tx(conn_, DeadlineIn(kTimeout));
  Dispatch("locked-resource");
  auto held = conn_.Exec(
      "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() "
      "AND classid::bigint = $1 AND objid::bigint = (hashtext($2)::bigint & 4294967295) "
      "AND objsubid = 2",
      pg::Params().Add(static_cast<int64_t>(store::kResourceLockClass)).Add("locked-resource"),
      DeadlineIn(kTimeout));
  EXPECT_EQ(held.GetInt(0, 0), 1);
  EXPECT_NE(store::kResourceLockClass, store::kMigrationLockClass);
}

}  // namespace
}  // namespace taskmill
