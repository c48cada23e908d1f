// The claim reads the ready queue from where its session last claimed
// (migrations/0003_old_snapshot.sql). A task that becomes ready behind that
// point must still be found: unblocked by a release, dispatched by a
// transaction that committed late, put back in line.
#include <gtest/gtest.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

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
    return testing::DispatchTask(
        conn, testing::Request("taskmill.noop", nlohmann::json::object(), std::move(exclusive)));
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
  EXPECT_EQ(store::RequeueLost(worker_, app_, {b}, DeadlineIn(kTimeout)), 1);
  std::string got = Claim();
  if (got.empty()) got = Claim();
  EXPECT_EQ(got, a);
}

// Shared buffers one statement read (its nested statements included).
int64_t BuffersOf(pg::Connection& conn, const std::string& sql) {
  auto res = conn.Exec("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, DeadlineIn(kTimeout));
  auto plan = nlohmann::json::parse(res.GetString(0, 0))[0]["Plan"];
  return plan.value("Shared Hit Blocks", 0) + plan.value("Shared Read Blocks", 0);
}

// The work of the hot paths while a snapshot holds back vacuum: counted in
// buffers, not time. Schema 2 read several hundred buffers per cycle after
// 600 cycles (the claim's scan from the oldest end of task_ready_idx, the
// unique check of idle_worker(app_id), the probe of task_release_idx), and
// more with every cycle; schema 3 reads a few dozen.
TEST_F(ClaimFloorTest, HotPathsStayOffTheDeadRowsOfAnOldSnapshot) {
  auto holder = testing::Connect(db_);
  holder.Exec("BEGIN ISOLATION LEVEL REPEATABLE READ", DeadlineIn(kTimeout));
  holder.Exec("SELECT 1", DeadlineIn(kTimeout));
  for (int i = 0; i < 600; ++i) {
    Dispatch(other_, {fmt::format("fresh-{}", i)});
    std::string id = Claim();
    ASSERT_FALSE(id.empty());
    ASSERT_TRUE(store::FinishTask(worker_, id, app_, TaskState::kCompleted, nullptr, nullptr,
                                  DeadlineIn(kTimeout)));
    ASSERT_EQ(Claim(), "");
  }
  const std::string claim = fmt::format("SELECT * FROM taskmill.claim('{}', true)", app_);
  int64_t dispatch = BuffersOf(
      other_, "SELECT taskmill.dispatch('taskmill.noop', '[]', '{}', ARRAY['fresh-last'])");
  int64_t busy = BuffersOf(worker_, claim);
  auto running = worker_.Exec("SELECT id::text FROM taskmill.task WHERE state = 'running'",
                              DeadlineIn(kTimeout));
  ASSERT_EQ(running.rows(), 1);
  ASSERT_TRUE(store::FinishTask(worker_, running.GetString(0, 0), app_, TaskState::kCompleted,
                                nullptr, nullptr, DeadlineIn(kTimeout)));
  int64_t idle = BuffersOf(worker_, claim);
  std::cerr << fmt::format(
      "after 600 cycles under the snapshot: dispatch {}, claim {}, idle claim "
      "{} buffers\n",
      dispatch, busy, idle);
  // A full read of the ready queue (one every 0.25 s per session) costs
  // about 100 of them here; the bound leaves room for one.
  EXPECT_LT(dispatch + busy + idle, 300);
  holder.Exec("COMMIT", DeadlineIn(kTimeout));
}

}  // namespace
}  // namespace taskmill
