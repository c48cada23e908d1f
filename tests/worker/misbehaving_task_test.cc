// Workers against task functions that misbehave on purpose (the test
// program's test.crash and test.sleep): a child that stops itself, a crash
// dispatched immediate, an immediate task that ignores its timeout on the
// worker's thread; and the stock program, which has none of that.
#include <gtest/gtest.h>

#include <signal.h>

#include <cstdio>
#include <fstream>
#include <map>

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

class MisbehavingTaskTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = testing::MigratedTestDatabase();
    conn_ = Connect(db_);
    static int counter = 0;
    times_ = fmt::format("{}/times-{}-{}", ::testing::TempDir(), getpid(), counter++);
    std::remove(times_.c_str());
  }
  void TearDown() override {
    if (HasFailure()) testing::PrintLogs(logs_);
    for (auto& w : workers_) w.Stop(DeadlineIn(10s), SIGKILL);
  }

  // A worker of the test program (it has the test functions).
  Subprocess& StartWorker(std::vector<std::string> extra = {}) {
    workers_.push_back(
        testing::StartWorker(db_, fmt::format("w{}", workers_.size()), extra, &logs_));
    return workers_.back();
  }

  std::string Dispatch(const std::string& name, nlohmann::json kwargs,
                       std::vector<std::string> exclusive, bool immediate = false) {
    auto req = testing::Request(name, std::move(kwargs), std::move(exclusive));
    req.immediate = immediate;
    return testing::DispatchTask(conn_, req);
  }
  Task Get(const std::string& id) { return testing::GetTask(conn_, id); }
  bool WaitFinal(const std::string& id, std::chrono::milliseconds limit = kTimeout) {
    return testing::WaitForFinal(conn_, id, limit);
  }
  // Microseconds since the epoch of a task timestamp, from the database.
  int64_t Micros(const std::string& id, const std::string& column) {
    return conn_
        .Exec(fmt::format("SELECT (extract(epoch FROM {}) * 1000000)::bigint FROM taskmill.task "
                          "WHERE id = $1::uuid",
                          column),
              pg::Params().Add(id), DeadlineIn(kTimeout))
        .GetInt(0, 0);
  }
  // "<id> start|end <µs>" lines written by test.sleep's `times` kwarg.
  std::map<std::string, int64_t> Times() {
    std::map<std::string, int64_t> out;
    std::ifstream in(times_);
    std::string id, what;
    int64_t us;
    while (in >> id >> what >> us) out[id + " " + what] = us;
    return out;
  }
  std::string Description(const std::string& id) {
    auto e = Get(id).error;
    return e.is_object() && e.contains("description") ? e["description"].get<std::string>()
                                                      : e.dump();
  }

  std::string db_;
  pg::Connection conn_;
  std::string times_;
  std::vector<Subprocess> workers_;
  std::vector<std::string> logs_;
};

// A child that stops itself (SIGSTOP) used to hold its task, its resources
// and its worker forever, unnoticed. It is killed at once and the task says
// why; the worker goes on with the next task on the same resource.
TEST_F(MisbehavingTaskTest, AChildThatStopsItselfIsKilledAndTheWorkerGoesOn) {
  auto& w = StartWorker();
  auto stopped = Dispatch("test.crash", {{"signal", SIGSTOP}}, {"R"});
  auto next = Dispatch("taskmill.noop", nlohmann::json::object(), {"R"});
  ASSERT_TRUE(WaitFinal(stopped, 15s)) << TaskStateName(Get(stopped).state);
  EXPECT_EQ(Get(stopped).state, TaskState::kFailed);
  EXPECT_NE(Description(stopped).find("SIGSTOP"), std::string::npos) << Description(stopped);
  ASSERT_TRUE(WaitFinal(next));
  EXPECT_EQ(Get(next).state, TaskState::kCompleted);
  EXPECT_TRUE(w.running());
  // A cancel of a task whose child stops itself ends too (the cancel may
  // find it running or already failed: either way it is final soon).
  auto again = Dispatch("test.crash", {{"signal", SIGTSTP}}, {"R"});
  ASSERT_TRUE(WaitFor([&] { return Get(again).state != TaskState::kWaiting; }, kTimeout));
  ASSERT_TRUE(store::CancelTask(conn_, again, DeadlineIn(kTimeout)).ok() ||
              IsFinal(Get(again).state));
  ASSERT_TRUE(WaitFinal(again, 15s));
  EXPECT_TRUE(w.running());
}

// test.crash is not declared inline_ok: dispatched immediate, it still runs
// in a child process, and the worker lives on.
TEST_F(MisbehavingTaskTest, AnImmediateCrashRunsInAChildNotOnTheWorkersThread) {
  auto& w = StartWorker();
  auto crash = Dispatch("test.crash", {{"signal", SIGSEGV}}, {"C"}, /*immediate=*/true);
  auto next = Dispatch("taskmill.noop", nlohmann::json::object(), {"C"}, /*immediate=*/true);
  ASSERT_TRUE(WaitFinal(crash));
  EXPECT_EQ(Get(crash).state, TaskState::kFailed);
  EXPECT_NE(Description(crash).find("SIGSEGV"), std::string::npos) << Description(crash);
  ASSERT_TRUE(WaitFinal(next));
  EXPECT_EQ(Get(next).state, TaskState::kCompleted);
  EXPECT_TRUE(w.running());
}

// An immediate task that ignores its timeout on the worker's thread keeps
// its resource until its function has returned: the next task on it starts
// only after that, and the worker neither exits nor records it early.
TEST_F(MisbehavingTaskTest, AStubbornImmediateTaskOnTheThreadKeepsItsResourceUntilItReturns) {
  auto& w = StartWorker({"--immediate-timeout", "0.3", "--cancel-grace", "0.3"});
  auto stubborn = Dispatch(
      "test.sleep", {{"seconds", 2.5}, {"ignore_cancel", true}, {"times", times_}}, {"T"}, true);
  auto next = Dispatch("test.sleep", {{"seconds", 0}, {"times", times_}}, {"T"});
  ASSERT_TRUE(WaitFinal(stubborn));
  ASSERT_TRUE(WaitFinal(next));
  EXPECT_EQ(Get(stubborn).state, TaskState::kFailed);
  EXPECT_NE(Description(stubborn).find("timed out after 0.3 seconds"), std::string::npos)
      << Description(stubborn);
  EXPECT_EQ(Get(next).state, TaskState::kCompleted);
  auto times = Times();
  ASSERT_EQ(times.count(stubborn + " end"), 1u);
  ASSERT_EQ(times.count(next + " start"), 1u);
  EXPECT_LE(times[stubborn + " end"], times[next + " start"]);
  EXPECT_LE(times[stubborn + " end"], Micros(stubborn, "finished_at"));
  EXPECT_LE(Micros(stubborn, "finished_at"), Micros(next, "started_at"));
  EXPECT_TRUE(w.running());
}

// A stubborn task on a worker's thread (--in-process) at a SIGINT shutdown:
// the worker neither hangs nor _exits from library code; it gives up on the
// thread after its grace and exits 1 without deregistering, so the task
// keeps its resource until the janitor finds the process gone.
TEST_F(MisbehavingTaskTest, SigintLeavesAStubbornThreadToTheJanitor) {
  const std::vector<std::string> liveness = {"--heartbeat-interval", "0.2", "--ttl", "1"};
  std::vector<std::string> flags = {"--in-process", "--grace", "0.2", "--cancel-grace", "0.2"};
  flags.insert(flags.end(), liveness.begin(), liveness.end());
  auto& w = StartWorker(flags);
  auto stubborn =
      Dispatch("test.sleep", {{"seconds", 600}, {"ignore_cancel", true}, {"times", times_}}, {"S"});
  auto next = Dispatch("taskmill.noop", nlohmann::json::object(), {"S"});
  ASSERT_TRUE(WaitFor([&] { return Times().count(stubborn + " start") == 1; }, kTimeout));
  ASSERT_TRUE(w.Signal(SIGINT));
  auto status = w.Wait(DeadlineIn(20s));
  ASSERT_TRUE(status.has_value()) << "the worker hangs on its stubborn thread";
  EXPECT_EQ(ExitCodeOf(*status), 1);
  // Not deregistered, nothing recorded: the task still holds its resource.
  EXPECT_EQ(Get(stubborn).state, TaskState::kRunning);
  EXPECT_EQ(Get(next).state, TaskState::kWaiting);
  StartWorker(liveness);  // the janitor
  ASSERT_TRUE(WaitFinal(stubborn));
  EXPECT_EQ(Get(stubborn).state, TaskState::kFailed);
  ASSERT_TRUE(WaitFinal(next));
  EXPECT_EQ(Get(next).state, TaskState::kCompleted);
}

// The stock program: no taskmill.crash, and taskmill.sleep writes no file
// whatever its kwargs say.
TEST_F(MisbehavingTaskTest, TheStockProgramCannotCrashOrWriteFiles) {
  auto crash = testing::RunTaskmill({"--database-url", db_, "dispatch", "taskmill.crash"});
  EXPECT_EQ(crash.exit_code, 2) << crash.out << crash.err;
  std::string log;
  auto stock = testing::StartTaskmill({"--database-url", db_, "worker", "--name", "stock"}, &log);
  logs_.push_back(log);
  std::string path = times_ + ".journal";
  auto sleep = Dispatch("taskmill.sleep",
                        {{"seconds", 0}, {"journal", path}, {"ignore_cancel", true}}, {"J"});
  ASSERT_TRUE(WaitFinal(sleep));
  EXPECT_EQ(Get(sleep).state, TaskState::kCompleted);
  EXPECT_FALSE(std::ifstream(path).good()) << path;
  stock.Stop(DeadlineIn(10s));
}

}  // namespace
}  // namespace taskmill
