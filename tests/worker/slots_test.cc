// Workers with slots (--concurrency N): real `taskmill worker` processes
// running several tasks at once, checked from the database and from the
// tasks' own journals.
#include <gtest/gtest.h>

#include <signal.h>

#include <fstream>
#include <map>
#include <random>
#include <set>

#include <fmt/format.h>

#include "store/task_store.h"
#include "support/taskmill_fixture.h"
#include "support/test_postgres.h"

namespace taskmill {
namespace {

using testing::Connect;
using testing::WaitFor;
using namespace std::chrono_literals;

constexpr auto kTimeout = std::chrono::seconds(30);

class SlotsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = testing::MigratedTestDatabase();
    conn_ = Connect(db_);
    journal_ = fmt::format("{}/slots-journal-{}-{}", ::testing::TempDir(), getpid(), counter_++);
    std::remove(journal_.c_str());
  }
  void TearDown() override {
    if (HasFailure()) testing::PrintLogs(logs_);
    for (auto& w : workers_) w.Stop(DeadlineIn(10s), SIGKILL);
  }

  size_t StartWorker(std::vector<std::string> extra) {
    workers_.push_back(
        testing::StartWorker(db_, fmt::format("s{}", workers_.size()), extra, &logs_));
    return workers_.size() - 1;
  }

  std::string Dispatch(const std::string& name, nlohmann::json kwargs,
                       std::vector<std::string> exclusive, std::vector<std::string> shared = {}) {
    return testing::DispatchTask(
        conn_, testing::Request(name, std::move(kwargs), std::move(exclusive), std::move(shared)));
  }
  nlohmann::json Sleep(double seconds) { return {{"seconds", seconds}, {"journal", journal_}}; }
  int64_t Scalar(const std::string& sql) { return testing::QueryInt(conn_, sql); }
  Task Get(const std::string& id) { return testing::GetTask(conn_, id); }
  bool WaitState(const std::string& id, TaskState s, std::chrono::milliseconds limit = 30s) {
    return testing::WaitForState(conn_, id, s, limit);
  }
  bool WaitRunning(int n) {
    return WaitFor(
        [&] { return Scalar("SELECT count(*) FROM taskmill.task WHERE state = 'running'") == n; },
        kTimeout);
  }
  std::map<std::string, std::vector<int>> Journal() { return testing::ReadJournal(journal_); }

  static inline int counter_ = 0;
  std::string db_;
  pg::Connection conn_;
  std::string journal_;
  std::vector<Subprocess> workers_;
  std::vector<std::string> logs_;
};

TEST_F(SlotsTest, OneProcessRunsSeveralTasksWithOneRowAndTwoConnections) {
  auto w = StartWorker({"--concurrency", "4"});
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i)
    ids.push_back(Dispatch("test.sleep", Sleep(3), {fmt::format("r{}", i)}));
  auto fifth = Dispatch("test.sleep", Sleep(0), {"r5"});
  ASSERT_TRUE(WaitRunning(4));
  // Four at once, each in a child process of its own; the fifth waits for a slot.
  EXPECT_EQ(Get(fifth).state, TaskState::kWaiting);
  ASSERT_TRUE(WaitFor([&] { return Journal().size() == 4; }, kTimeout));
  std::set<int> pids;
  for (const auto& [id, p] : Journal()) pids.insert(p.begin(), p.end());
  EXPECT_EQ(pids.size(), 4u);
  EXPECT_FALSE(pids.count(workers_[w].pid()));

  EXPECT_EQ(Scalar("SELECT count(*) FROM taskmill.app WHERE app_type = 'worker'"), 1);
  EXPECT_EQ(Scalar("SELECT slots FROM taskmill.app"), 4);
  // One connection for claims and outcomes, one for LISTEN.
  EXPECT_EQ(Scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                   "AND pid <> pg_backend_pid()"),
            2);

  // `workers list` and its JSON show the slots and every task.
  auto listed = testing::RunTaskmill({"--database-url", db_, "workers", "list", "--json"});
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  auto arr = nlohmann::json::parse(listed.out);
  ASSERT_EQ(arr.size(), 1u);
  EXPECT_EQ(arr[0]["slots"]["total"], 4);
  EXPECT_EQ(arr[0]["slots"]["busy"], 4);
  ASSERT_EQ(arr[0]["current_tasks"].size(), 4u);
  for (const auto& id : ids) {
    EXPECT_NE(arr[0]["current_tasks"].dump().find(id), std::string::npos) << id;
  }
  auto table = testing::RunTaskmill({"--database-url", db_, "workers", "list"});
  EXPECT_NE(table.out.find("4/4"), std::string::npos) << table.out;

  ASSERT_TRUE(WaitState(fifth, TaskState::kCompleted));
  for (const auto& id : ids) EXPECT_EQ(Get(id).state, TaskState::kCompleted);
}

// The mixed ordering run of worker_e2e_test with multi-slot workers, child
// and in-process, claims and outcomes in batches: no two conflicting tasks
// overlap, none overtakes an earlier conflicting one, each runs once.
TEST_F(SlotsTest, MixedRunWithSlotsKeepsOrderExclusionAndRunsEachOnce) {
  StartWorker({"--concurrency", "8"});
  StartWorker({"--concurrency", "8"});
  StartWorker({"--concurrency", "6", "--in-process"});
  std::mt19937 rng(11);
  const std::vector<std::string> resources = {"a", "b", "c", "d", "e", "f"};
  const int kTasks = 400;
  std::vector<DispatchRequest> batch;
  for (int i = 0; i < kTasks; ++i) {
    std::set<std::string> x, s;
    int n = static_cast<int>(rng() % 3);  // 0, 1 or 2 resources
    for (int k = 0; k < n; ++k) ((rng() % 3) ? s : x).insert(resources[rng() % resources.size()]);
    for (const auto& r : x) s.erase(r);
    double seconds = (rng() % 4 == 0) ? 0.02 : 0.0;
    DispatchRequest req;
    req.name = "test.sleep";
    req.kwargs = Sleep(seconds);
    req.exclusive_resources = {x.begin(), x.end()};
    req.shared_resources = {s.begin(), s.end()};
    // Half one by one, half in batches: both doors, one order.
    if (i % 2 == 0) {
      auto out = store::DispatchTask(conn_, req, std::nullopt, DeadlineIn(kTimeout));
      ASSERT_TRUE(out.ok());
    } else {
      batch.push_back(req);
      if (batch.size() == 25 || i == kTasks - 1) {
        // Flush the singles' order first: a batch goes in as one block.
        auto out = store::DispatchMany(conn_, batch, DeadlineIn(kTimeout));
        ASSERT_TRUE(out.ok()) << out.error().message;
        batch.clear();
      }
    }
  }
  ASSERT_TRUE(WaitFor(
      [&] { return Scalar("SELECT count(*) FROM taskmill.task WHERE state <> 'completed'") == 0; },
      std::chrono::minutes(3)))
      << Scalar("SELECT count(*) FROM taskmill.task WHERE state <> 'completed'")
      << " not completed";
  const std::string conflict =
      "(a.exclusive_resources && (b.exclusive_resources || b.shared_resources) "
      " OR b.exclusive_resources && (a.exclusive_resources || a.shared_resources))";
  EXPECT_EQ(Scalar("SELECT count(*) FROM taskmill.task a JOIN taskmill.task b ON a.seq < b.seq "
                   "WHERE " +
                   conflict + " AND b.started_at < a.finished_at"),
            0);
  EXPECT_EQ(Scalar("SELECT count(*) FROM taskmill.task a JOIN taskmill.task b ON a.seq < b.seq "
                   "WHERE " +
                   conflict + " AND b.started_at < a.started_at"),
            0);
  EXPECT_EQ(Scalar("SELECT count(*) FROM taskmill.task"), kTasks);
  auto runs = Journal();
  EXPECT_EQ(runs.size(), static_cast<size_t>(kTasks));
  for (const auto& [id, pids] : runs) EXPECT_EQ(pids.size(), 1u) << id << " ran more than once";
  // The slots were really used: tasks of one worker overlapped in time.
  EXPECT_GT(Scalar("SELECT count(*) FROM taskmill.task a JOIN taskmill.task b ON a.seq < b.seq "
                   "AND a.app_lock = b.app_lock "
                   "WHERE b.started_at < a.finished_at AND a.started_at < b.finished_at"),
            0);
}

TEST_F(SlotsTest, CancelOfOneTaskLeavesTheOthersRunning) {
  StartWorker({"--concurrency", "3", "--cancel-grace", "2"});
  auto a = Dispatch("test.sleep", Sleep(4), {"a"});
  auto b = Dispatch("test.sleep", Sleep(60), {"b"});
  auto c = Dispatch("test.sleep", Sleep(4), {"c"});
  ASSERT_TRUE(WaitRunning(3));
  ASSERT_TRUE(store::CancelTask(conn_, b, DeadlineIn(kTimeout)).ok());
  ASSERT_TRUE(WaitState(b, TaskState::kCanceled, 15s));
  EXPECT_EQ(Get(a).state, TaskState::kRunning);
  EXPECT_EQ(Get(c).state, TaskState::kRunning);
  ASSERT_TRUE(WaitState(a, TaskState::kCompleted));
  ASSERT_TRUE(WaitState(c, TaskState::kCompleted));
  // The freed slot takes the next task on b's resource.
  auto next = Dispatch("test.sleep", Sleep(0), {"b"});
  ASSERT_TRUE(WaitState(next, TaskState::kCompleted));
}

TEST_F(SlotsTest, SigtermDrainsEverySlot) {
  auto w = StartWorker({"--concurrency", "3"});
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i)
    ids.push_back(Dispatch("test.sleep", Sleep(1.5), {fmt::format("t{}", i)}));
  ASSERT_TRUE(WaitRunning(3));
  auto queued = Dispatch("test.sleep", Sleep(0), {"t0"});
  workers_[w].Signal(SIGTERM);
  auto status = workers_[w].Wait(DeadlineIn(20s));
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(ExitCodeOf(*status), 0);
  for (const auto& id : ids) EXPECT_EQ(Get(id).state, TaskState::kCompleted) << id;
  // Nothing new was claimed while stopping; the row is gone.
  EXPECT_EQ(Get(queued).state, TaskState::kWaiting);
  EXPECT_TRUE(Get(queued).unblocked_at.has_value());
  EXPECT_EQ(Scalar("SELECT count(*) FROM taskmill.app"), 0);
}

TEST_F(SlotsTest, SigintAbortsEverySlotAfterTheGrace) {
  auto w = StartWorker({"--concurrency", "3", "--grace", "1"});
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i)
    ids.push_back(Dispatch("test.sleep", Sleep(60), {fmt::format("i{}", i)}));
  ASSERT_TRUE(WaitRunning(3));
  workers_[w].Signal(SIGINT);
  auto status = workers_[w].Wait(DeadlineIn(20s));
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(ExitCodeOf(*status), 0);
  for (const auto& id : ids) {
    auto t = Get(id);
    EXPECT_EQ(t.state, TaskState::kFailed) << id;
    EXPECT_EQ(t.error["reason"], "Aborted during worker shutdown.") << t.error.dump();
  }
  EXPECT_EQ(Scalar("SELECT count(*) FROM taskmill.task_resource"), 0);
}

TEST_F(SlotsTest, ImmediateTasksTakeSlotsFirst) {
  auto w = StartWorker({"--concurrency", "2", "--no-listen", "--poll-interval", "0.2"});
  ASSERT_TRUE(WaitFor([&] { return Scalar("SELECT count(*) FROM taskmill.app") == 1; }, kTimeout));
  workers_[w].Signal(SIGSTOP);
  for (int i = 0; i < 4; ++i) Dispatch("test.sleep", Sleep(0.5), {fmt::format("d{}", i)});
  DispatchRequest req;
  req.name = "test.sleep";
  req.kwargs = Sleep(0.5);
  req.immediate = true;
  req.deferred = true;
  req.exclusive_resources = {"imm"};
  auto imm = store::DispatchTask(conn_, req, std::nullopt, DeadlineIn(kTimeout));
  ASSERT_TRUE(imm.ok());
  workers_[w].Signal(SIGCONT);
  ASSERT_TRUE(WaitFor(
      [&] { return Scalar("SELECT count(*) FROM taskmill.task WHERE state <> 'completed'") == 0; },
      kTimeout));
  // The immediate task, dispatched last, was in the first claim.
  EXPECT_EQ(Scalar(fmt::format("SELECT count(*) FROM taskmill.task WHERE started_at < "
                               "(SELECT started_at FROM taskmill.task WHERE id = '{}') - "
                               "interval '1 millisecond'",
                               imm->id)),
            0);
}

}  // namespace
}  // namespace taskmill
