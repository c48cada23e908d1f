// The claim reads the ready queue from where its session last claimed
// (migrations/0003_old_snapshot.sql). A task that becomes ready behind that
// point must still be found: unblocked by a release, dispatched by a
// transaction that committed late, put back in line.
#include <gtest/gtest.h>

#include "store/task_store.h"
#include "support/taskmill_fixture.h"

namespace taskmill {
namespace {

using testing::Connect;
constexpr auto kTimeout = std::chrono::seconds(30);

class ClaimFloorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = testing::MigratedTestDatabase();
    worker_ = Connect(db_);
    other_ = Connect(db_);
    store::AppRegistration reg;
    reg.app_type = "worker";
    reg.name = "floor";
    reg.functions = {"taskmill.noop"};
    app_ = store::RegisterApp(worker_, reg, DeadlineIn(kTimeout)).id;
  }

  std::string Dispatch(pg::Connection& conn, std::vector<std::string> exclusive) {
    DispatchRequest req;
    req.name = "taskmill.noop";
    req.exclusive_resources = std::move(exclusive);
    auto out = store::DispatchTask(conn, req, std::nullopt, DeadlineIn(kTimeout));
    EXPECT_TRUE(out.ok()) << (out.ok() ? "" : out.error().message);
    return out.ok() ? out->id : "";
  }

  // The worker's claim, as a worker makes it (going idle if nothing).
  std::string Claim() {
    auto c = store::Claim(worker_, app_, true, DeadlineIn(kTimeout));
    EXPECT_TRUE(c.ok());
    return c.ok() && c->has_value() ? (*c)->id : "";
  }

  std::string db_;
  pg::Connection worker_, other_;
  std::string app_;
};

TEST_F(ClaimFloorTest, TaskUnblockedBehindTheFloorIsClaimedNext) {
  auto a = Dispatch(other_, {"R"});
  auto b = Dispatch(other_, {"R"});  // blocked behind a
  auto c = Dispatch(other_, {"S"});
  EXPECT_EQ(Claim(), a);
  EXPECT_EQ(Claim(), c);  // the floor is now past b
  // Another session finishes a: b becomes ready behind the floor.
  ASSERT_TRUE(store::FinishTask(other_, a, app_, TaskState::kCompleted, nullptr, nullptr,
                                DeadlineIn(kTimeout)));
  auto d = Dispatch(other_, {"T"});  // ready, ahead of the floor
  // The next claim unblocks b and takes it, the oldest ready task, over d.
  EXPECT_EQ(Claim(), b);
  EXPECT_EQ(Claim(), d);
  EXPECT_EQ(Claim(), "");
}

TEST_F(ClaimFloorTest, TaskDispatchedBehindTheFloorByALateCommitIsClaimedAfterIdling) {
  auto late = testing::Connect(db_);
  late.Exec("BEGIN", DeadlineIn(kTimeout));
  auto first = Dispatch(late, {"L"});  // takes its seq now, commits later
  auto second = Dispatch(other_, {"M"});
  EXPECT_EQ(Claim(), second);  // the floor is now past `first`
  late.Exec("COMMIT", DeadlineIn(kTimeout));
  // Found at the latest by the claim of the worker woken from idle: it reads
  // the whole queue when nothing is ready from its floor.
  std::string got = Claim();
  if (got.empty()) got = Claim();
  EXPECT_EQ(got, first);
  EXPECT_EQ(Claim(), "");
}

TEST_F(ClaimFloorTest, TaskPutBackInLineBehindTheFloorIsClaimedAgain) {
  auto a = Dispatch(other_, {"A"});
  auto b = Dispatch(other_, {"B"});
  EXPECT_EQ(Claim(), a);
  EXPECT_EQ(Claim(), b);
  // a's claim "was lost": put back in line (RequeueLost), behind the floor.
  EXPECT_EQ(store::RequeueLost(worker_, app_, b, DeadlineIn(kTimeout)), 1);
  std::string got = Claim();
  if (got.empty()) got = Claim();
  EXPECT_EQ(got, a);
}

}  // namespace
}  // namespace taskmill
