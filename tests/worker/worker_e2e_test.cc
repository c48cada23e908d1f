// End to end: real `taskmill worker` processes against a real PostgreSQL,
// checked afterwards from the database.
#include <gtest/gtest.h>

#include <signal.h>

#include <map>
#include <random>

#include <fmt/format.h>

#include "store/task_store.h"
#include "support/taskmill_fixture.h"
#include "support/test_postgres.h"

namespace taskmill {
namespace {

using testing::Connect;
using testing::StartTaskmill;
using testing::WaitFor;

constexpr auto kTimeout = std::chrono::seconds(30);

class WorkerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = testing::MigratedTestDatabase();
    conn_ = Connect(db_);
  }
  void TearDown() override {
    if (HasFailure()) testing::PrintLogs(logs_);
    for (auto& w : workers_) w.Stop(DeadlineIn(std::chrono::seconds(10)));
  }

  void StartWorkers(int n, std::vector<std::string> extra = {}) {
    for (int i = 0; i < n; ++i) {
      workers_.push_back(
          testing::StartWorker(db_, fmt::format("w{}", workers_.size()), extra, &logs_));
    }
  }

  std::string Dispatch(const std::string& name, nlohmann::json kwargs,
                       std::vector<std::string> exclusive, std::vector<std::string> shared = {}) {
    return testing::DispatchTask(
        conn_, testing::Request(name, std::move(kwargs), std::move(exclusive), std::move(shared)));
  }

  int64_t Count(const std::string& where) {
    return testing::QueryInt(conn_, "SELECT count(*) FROM taskmill.task WHERE " + where);
  }

  Task Get(const std::string& id) { return testing::GetTask(conn_, id); }

  bool WaitFinal(const std::string& id,
                 std::chrono::milliseconds limit = std::chrono::seconds(30)) {
    return testing::WaitForFinal(conn_, id, limit);
  }

  std::string db_;
  pg::Connection conn_;
  std::vector<Subprocess> workers_;
  std::vector<std::string> logs_;
};

TEST_F(WorkerTest, BuiltinsRecordResultsAndErrors) {
  StartWorkers(1);
  auto echo = Dispatch("taskmill.echo", {{"k", "v"}}, {"e"});
  auto fail = Dispatch("taskmill.fail", {{"message", "boom 42"}}, {"f"});
  auto crash = Dispatch("test.crash", nlohmann::json::object(), {"c"});
  auto after = Dispatch("taskmill.noop", nlohmann::json::object(), {"c"});
  for (const auto& id : {echo, fail, crash, after}) ASSERT_TRUE(WaitFinal(id)) << id;

  auto e = Get(echo);
  EXPECT_EQ(e.state, TaskState::kCompleted);
  EXPECT_EQ(e.result["kwargs"]["k"], "v");
  EXPECT_TRUE(e.started_at && e.finished_at && e.unblocked_at);

  auto f = Get(fail);
  EXPECT_EQ(f.state, TaskState::kFailed);
  EXPECT_EQ(f.error["description"], "boom 42");

  auto c = Get(crash);
  EXPECT_EQ(c.state, TaskState::kFailed);
  EXPECT_NE(c.error["description"].get<std::string>().find("SIGSEGV"), std::string::npos)
      << c.error.dump();
  // The worker lived on and ran the next task on the same resource.
  EXPECT_EQ(Get(after).state, TaskState::kCompleted);
  EXPECT_TRUE(workers_[0].running());
}

// Pulp's cases with real workers: how many tasks run at the same time.
TEST_F(WorkerTest, OneResourceRunsOneAtATimeSharedRunTogether) {
  StartWorkers(3);
  nlohmann::json slow = {{"seconds", 1.5}};
  Dispatch("taskmill.sleep", slow, {"R"});
  for (int i = 0; i < 2; ++i) Dispatch("taskmill.sleep", slow, {"R"});
  for (int i = 0; i < 2; ++i) Dispatch("taskmill.sleep", slow, {}, {"R"});
  ASSERT_TRUE(WaitFor([&] { return Count("state = 'running'") == 1; }, kTimeout));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_EQ(Count("state = 'running'"), 1);
  // The two shared holders at the tail run together once the exclusive ones are done.
  ASSERT_TRUE(WaitFor([&] { return Count("state = 'running'") == 2; }, std::chrono::seconds(20)));
  ASSERT_TRUE(WaitFor([&] { return Count("state <> 'completed'") == 0; }, kTimeout));
}

TEST_F(WorkerTest, TwoLanesAndIndirectConflict) {
  StartWorkers(3);
  nlohmann::json slow = {{"seconds", 1.0}};
  auto t1 = Dispatch("taskmill.sleep", slow, {"A", "B"});
  auto t2 = Dispatch("taskmill.sleep", slow, {"B", "C"});
  auto t3 = Dispatch("taskmill.sleep", slow, {"C"});
  auto other = Dispatch("taskmill.sleep", slow, {"Z"});
  for (const auto& id : {t1, t2, t3, other}) ASSERT_TRUE(WaitFinal(id));
  auto a = Get(t1), b = Get(t2), c = Get(t3), z = Get(other);
  // t3 started only after t2 finished, although nothing else held C.
  EXPECT_GE(*c.started_at, *b.finished_at);
  EXPECT_GE(*b.started_at, *a.finished_at);
  // The unrelated lane ran alongside t1.
  EXPECT_LT(*z.started_at, *a.finished_at);
}

// 300+ mixed tasks on a few resources with 3 workers: all complete, no two
// conflicting tasks overlap, conflicting tasks start in creation order.
TEST_F(WorkerTest, MixedRunKeepsOrderAndExclusion) {
  StartWorkers(3);
  std::mt19937 rng(7);
  const std::vector<std::string> resources = {"a", "b", "c", "d"};
  for (int i = 0; i < 320; ++i) {
    std::set<std::string> x, s;
    int n = 1 + static_cast<int>(rng() % 2);
    for (int k = 0; k < n; ++k) ((rng() % 3) ? s : x).insert(resources[rng() % resources.size()]);
    for (const auto& r : x) s.erase(r);
    nlohmann::json kwargs = {{"seconds", (rng() % 4 == 0) ? 0.01 : 0.0}};
    Dispatch("taskmill.sleep", kwargs, {x.begin(), x.end()}, {s.begin(), s.end()});
  }
  ASSERT_TRUE(WaitFor([&] { return Count("state <> 'completed'") == 0; }, std::chrono::minutes(3)))
      << Count("state <> 'completed'") << " not completed";
  // Pairs of conflicting tasks whose [started_at, finished_at] overlap.
  auto overlap = conn_.Exec(
      "SELECT count(*) FROM taskmill.task a JOIN taskmill.task b ON a.seq < b.seq "
      "WHERE (a.exclusive_resources && (b.exclusive_resources || b.shared_resources) "
      "    OR b.exclusive_resources && (a.exclusive_resources || a.shared_resources)) "
      "AND b.started_at < a.finished_at",
      DeadlineIn(kTimeout));
  EXPECT_EQ(overlap.GetInt(0, 0), 0);
  // A conflicting later task never started before an earlier one.
  auto order = conn_.Exec(
      "SELECT count(*) FROM taskmill.task a JOIN taskmill.task b ON a.seq < b.seq "
      "WHERE (a.exclusive_resources && (b.exclusive_resources || b.shared_resources) "
      "    OR b.exclusive_resources && (a.exclusive_resources || a.shared_resources)) "
      "AND b.started_at < a.started_at",
      DeadlineIn(kTimeout));
  EXPECT_EQ(order.GetInt(0, 0), 0);
  EXPECT_EQ(Count("true"), 320);
  // Shared holders did run concurrently at some point (the check above is not vacuous).
  auto concurrent = conn_.Exec(
      "SELECT count(*) FROM taskmill.task a JOIN taskmill.task b ON a.seq < b.seq "
      "WHERE b.started_at < a.finished_at AND a.started_at < b.finished_at",
      DeadlineIn(kTimeout));
  EXPECT_GT(concurrent.GetInt(0, 0), 0);
}

TEST_F(WorkerTest, InProcessModeRunsTasks) {
  StartWorkers(1, {"--in-process"});
  auto id = Dispatch("taskmill.echo", {{"x", 1}}, {"r"});
  ASSERT_TRUE(WaitFinal(id));
  EXPECT_EQ(Get(id).state, TaskState::kCompleted);
  auto f = Dispatch("taskmill.fail", {{"message", "in-process failure"}}, {"r"});
  ASSERT_TRUE(WaitFinal(f));
  EXPECT_EQ(Get(f).error["description"], "in-process failure");
}

// With notifications off, polling alone finds the work.
TEST_F(WorkerTest, FindsWorkWithoutNotifications) {
  StartWorkers(1, {"--no-listen", "--poll-interval", "0.5"});
  ASSERT_TRUE(WaitFor(
      [&] {
        return conn_.Exec("SELECT count(*) FROM taskmill.app", DeadlineIn(kTimeout)).GetInt(0, 0) ==
               1;
      },
      kTimeout));
  auto id = Dispatch("taskmill.noop", nlohmann::json::object(), {"p"});
  ASSERT_TRUE(WaitFinal(id, std::chrono::seconds(10)));
  EXPECT_EQ(Get(id).state, TaskState::kCompleted);
}

TEST_F(WorkerTest, ProgressAndCancelOfRunningTask) {
  StartWorkers(1, {"--cancel-grace", "2"});
  auto id = Dispatch("taskmill.sleep", {{"seconds", 60}}, {"long"});
  ASSERT_TRUE(WaitFor([&] { return Get(id).state == TaskState::kRunning; }, kTimeout));
  auto st = store::CancelTask(conn_, id, DeadlineIn(kTimeout));
  ASSERT_TRUE(st.ok());
  ASSERT_TRUE(WaitFinal(id, std::chrono::seconds(15)));
  auto t = Get(id);
  EXPECT_EQ(t.state, TaskState::kCanceled);
  EXPECT_TRUE(t.started_at && t.finished_at);
  // The next task on the resource runs.
  auto next = Dispatch("taskmill.noop", nlohmann::json::object(), {"long"});
  ASSERT_TRUE(WaitFinal(next));
  EXPECT_EQ(Get(next).state, TaskState::kCompleted);
}

TEST_F(WorkerTest, SigtermLetsTheRunningTaskFinish) {
  StartWorkers(1);
  auto id = Dispatch("taskmill.sleep", {{"seconds", 1.0}}, {"s"});
  ASSERT_TRUE(WaitFor([&] { return Get(id).state == TaskState::kRunning; }, kTimeout));
  workers_[0].Signal(SIGTERM);
  auto status = workers_[0].Wait(DeadlineIn(std::chrono::seconds(20)));
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(ExitCodeOf(*status), 0);
  EXPECT_EQ(Get(id).state, TaskState::kCompleted);
  EXPECT_EQ(conn_.Exec("SELECT count(*) FROM taskmill.app", DeadlineIn(kTimeout)).GetInt(0, 0), 0);
}

// examples/custom_worker: a user's own program with its own functions.
TEST_F(WorkerTest, CustomWorkerProgramRunsItsOwnFunctions) {
  SubprocessOptions so;
  so.argv = {TASKMILL_EXAMPLE_BINARY, "--database-url", db_, "worker"};
  so.output_file = ::testing::TempDir() + "/custom-worker.log";
  logs_.push_back(*so.output_file);
  workers_.push_back(Subprocess::Start(so));
  // The worker registers its function names; dispatch accepts them then.
  ASSERT_TRUE(WaitFor(
      [&] {
        return conn_
                   .Exec("SELECT count(*) FROM taskmill.task_function WHERE name = 'shop.add'",
                         DeadlineIn(kTimeout))
                   .GetInt(0, 0) == 1;
      },
      kTimeout));
  DispatchRequest req;
  req.name = "shop.add";
  req.args = {2, 3.5};
  auto out = store::DispatchTask(conn_, req, std::nullopt, DeadlineIn(kTimeout));
  ASSERT_TRUE(out.ok());
  ASSERT_TRUE(WaitFinal(out->id));
  EXPECT_EQ(Get(out->id).result, 5.5);
  auto counted = Dispatch("shop.count_to", {{"n", 3}}, {});
  ASSERT_TRUE(WaitFinal(counted));
  auto t = Get(counted);
  EXPECT_EQ(t.result, 3);
  ASSERT_EQ(t.progress_reports.size(), 1u) << t.progress_reports.dump();
  EXPECT_EQ(t.progress_reports[0]["done"], 3);
  EXPECT_EQ(t.progress_reports[0]["state"], "completed");
}

}  // namespace
}  // namespace taskmill
