// The fault suite: real worker processes killed, stopped and signalled for
// real, and a real PostgreSQL restarted under them. Short heartbeat settings
// keep it quick; no assertion is about speed beyond generous upper bounds on
// when something must have happened.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/stat.h>

#include <fstream>
#include <map>
#include <random>
#include <set>
#include <thread>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "embedded/local_postgres.h"
#include "store/migrate.h"
#include "store/task_store.h"
#include "support/taskmill_fixture.h"
#include "support/test_postgres.h"

namespace taskmill {
namespace {

using testing::Connect;
using testing::StartTaskmill;
using testing::WaitFor;
using namespace std::chrono_literals;

constexpr auto kTimeout = std::chrono::seconds(30);
// Test settings: declared missing after 2 s, heartbeats every 0.5 s.
const std::vector<std::string> kFastLiveness = {"--heartbeat-interval", "0.5", "--ttl", "2"};

// True if no process `pid` is alive (gone, or a zombie nobody reaped yet).
bool ProcessGone(int pid) {
  std::ifstream stat(fmt::format("/proc/{}/stat", pid));
  if (!stat) return true;
  std::string line;
  std::getline(stat, line);
  auto close_paren = line.rfind(')');
  return close_paren != std::string::npos && close_paren + 2 < line.size() &&
         line[close_paren + 2] == 'Z';
}

class FaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = testing::MigratedTestDatabase();
    conn_ = Connect(db_);
    journal_ = fmt::format("{}/journal-{}-{}", ::testing::TempDir(), getpid(), counter_++);
    std::remove(journal_.c_str());
  }
  void TearDown() override {
    if (HasFailure()) testing::PrintLogs(logs_);
    for (auto& w : workers_) w.Stop(DeadlineIn(5s), SIGKILL);
  }

  size_t StartWorker(std::vector<std::string> extra = {}) {
    workers_.push_back(
        testing::StartWorker(db_, fmt::format("w{}", workers_.size()), extra, &logs_));
    return workers_.size() - 1;
  }

  pg::Connection& Conn() {
    if (!conn_.ok()) conn_ = Connect(db_);
    return conn_;
  }

  std::string Dispatch(const std::string& name, nlohmann::json kwargs,
                       std::vector<std::string> exclusive, std::vector<std::string> shared = {},
                       std::optional<std::string> group = std::nullopt) {
    auto req = testing::Request(name, std::move(kwargs), std::move(exclusive), std::move(shared));
    req.task_group = group;
    return testing::DispatchTask(Conn(), req);
  }

  Task Get(const std::string& id) { return testing::GetTask(Conn(), id); }
  bool WaitState(const std::string& id, TaskState s, std::chrono::milliseconds limit = 30s) {
    return testing::WaitForState(Conn(), id, s, limit);
  }
  bool WaitFinal(const std::string& id, std::chrono::milliseconds limit = 30s) {
    return testing::WaitForFinal(Conn(), id, limit);
  }
  int64_t Scalar(const std::string& sql) { return testing::QueryInt(Conn(), sql); }
  bool WaitOnlineWorkers(int n) {
    return WaitFor([&] { return Scalar("SELECT count(*) FROM taskmill.app") >= n; }, kTimeout);
  }

  // task id -> pids that ran it, from the journal.
  std::map<std::string, std::vector<int>> Journal() { return testing::ReadJournal(journal_); }

  nlohmann::json Sleep(double seconds, bool ignore_cancel = false) {
    nlohmann::json k = {{"seconds", seconds}, {"journal", journal_}};
    if (ignore_cancel) k["ignore_cancel"] = true;
    return k;
  }

  void Soak(const std::vector<std::string>& worker_args);

  static inline int counter_ = 0;
  std::string db_;
  pg::Connection conn_;
  std::string journal_;
  std::vector<Subprocess> workers_;
  std::vector<std::string> logs_;
};

TEST_F(FaultTest, KillDashNineOfWorkerFailsItsTaskAndFreesTheResource) {
  auto a = StartWorker(kFastLiveness);
  ASSERT_TRUE(WaitOnlineWorkers(1));
  auto long_task = Dispatch("test.sleep", Sleep(600), {"R"});
  ASSERT_TRUE(WaitState(long_task, TaskState::kRunning));
  auto next = Dispatch("test.sleep", Sleep(0), {"R"});
  StartWorker(kFastLiveness);  // the survivor, who does the janitor work
  ASSERT_TRUE(WaitOnlineWorkers(2));
  ASSERT_TRUE(WaitFor([&] { return Journal().count(long_task) == 1; }, kTimeout));
  int child = Journal()[long_task][0];
  ASSERT_FALSE(ProcessGone(child));

  workers_[a].Signal(SIGKILL);
  // TTL 2 s plus one 0.5 s interval; allow generous slack for a loaded machine.
  ASSERT_TRUE(WaitFinal(long_task, 20s));
  auto t = Get(long_task);
  EXPECT_EQ(t.state, TaskState::kFailed);
  EXPECT_EQ(t.error["reason"], "Worker has gone missing.");
  ASSERT_TRUE(WaitState(next, TaskState::kCompleted, 20s));
  // The dead worker's child died with it.
  EXPECT_TRUE(WaitFor([&] { return ProcessGone(child); }, 5s)) << "child " << child;
  EXPECT_EQ(Journal()[long_task].size(), 1u);
}

// The janitor lease passes on when its holder dies: the survivor takes it and
// cleans up after the dead holder itself.
TEST_F(FaultTest, JanitorLeaseIsTakenOverWhenTheHolderDies) {
  StartWorker(kFastLiveness);
  StartWorker(kFastLiveness);
  ASSERT_TRUE(WaitOnlineWorkers(2));
  // Both busy, each on its own resource.
  auto t1 = Dispatch("test.sleep", Sleep(600), {"L1"});
  auto t2 = Dispatch("test.sleep", Sleep(600), {"L2"});
  ASSERT_TRUE(WaitState(t1, TaskState::kRunning));
  ASSERT_TRUE(WaitState(t2, TaskState::kRunning));
  std::string holder;
  ASSERT_TRUE(WaitFor(
      [&] {
        auto r = Conn().Exec(
            "SELECT holder::text FROM taskmill.lease WHERE name = 'janitor' "
            "AND expires_at > clock_timestamp()",
            DeadlineIn(kTimeout));
        if (r.rows() == 0) return false;
        holder = r.GetString(0, 0);
        return true;
      },
      20s));
  int pid = static_cast<int>(Conn()
                                 .Exec("SELECT pid FROM taskmill.app WHERE id = $1::uuid",
                                       pg::Params().Add(holder), DeadlineIn(kTimeout))
                                 .GetInt(0, 0));
  size_t victim = workers_[0].pid() == pid ? 0 : 1;
  ASSERT_EQ(workers_[victim].pid(), pid);
  std::string victims_task =
      Conn()
          .Exec("SELECT id::text FROM taskmill.task WHERE app_lock = $1::uuid",
                pg::Params().Add(holder), DeadlineIn(kTimeout))
          .GetString(0, 0);
  workers_[victim].Signal(SIGKILL);
  ASSERT_TRUE(WaitFinal(victims_task, 20s));
  EXPECT_EQ(Get(victims_task).error["reason"], "Worker has gone missing.");
  auto now = Conn().Exec("SELECT holder::text FROM taskmill.lease WHERE name = 'janitor'",
                         DeadlineIn(kTimeout));
  EXPECT_NE(now.GetString(0, 0), holder);
  // The survivor's own task is untouched.
  std::string other = victims_task == t1 ? t2 : t1;
  EXPECT_EQ(Get(other).state, TaskState::kRunning);
}

TEST_F(FaultTest, StoppedWorkerDoesNotOverwriteTheJanitorsVerdict) {
  auto a = StartWorker(kFastLiveness);
  ASSERT_TRUE(WaitOnlineWorkers(1));
  auto task = Dispatch("test.sleep", Sleep(3), {"S"});
  ASSERT_TRUE(WaitState(task, TaskState::kRunning));
  StartWorker(kFastLiveness);
  ASSERT_TRUE(WaitOnlineWorkers(2));
  workers_[a].Signal(SIGSTOP);
  ASSERT_TRUE(WaitFinal(task, 20s));
  auto verdict = Get(task);
  EXPECT_EQ(verdict.state, TaskState::kFailed);
  EXPECT_EQ(verdict.error["reason"], "Worker has gone missing.");
  // Let the child finish its sleep while the worker is frozen, then wake it.
  std::this_thread::sleep_for(3s);
  workers_[a].Signal(SIGCONT);
  // It notices, writes nothing, and comes back as a new worker.
  ASSERT_TRUE(WaitFor(
      [&] {
        return testing::ReadFile(logs_[a]).find("no longer ours") != std::string::npos ||
               testing::ReadFile(logs_[a]).find("declared dead") != std::string::npos;
      },
      20s))
      << testing::ReadFile(logs_[a]);
  std::this_thread::sleep_for(1s);
  auto after = Get(task);
  EXPECT_EQ(after.state, TaskState::kFailed);
  EXPECT_EQ(after.error, verdict.error);
  EXPECT_EQ(after.finished_at, verdict.finished_at);
  EXPECT_TRUE(after.result.is_null());
  EXPECT_TRUE(workers_[a].running());
  // The resumed worker still works.
  auto more = Dispatch("taskmill.noop", nlohmann::json::object(), {"S"});
  EXPECT_TRUE(WaitState(more, TaskState::kCompleted, 20s));
}

TEST_F(FaultTest, CancelWaitingRunningFinishedUnknownStubbornAndGroup) {
  StartWorker({"--cancel-grace", "1"});
  ASSERT_TRUE(WaitOnlineWorkers(1));
  auto running = Dispatch("test.sleep", Sleep(600), {"C"});
  auto waiting = Dispatch("test.sleep", Sleep(600), {"C"});
  auto behind = Dispatch("test.sleep", Sleep(0), {"C"});
  ASSERT_TRUE(WaitState(running, TaskState::kRunning));

  auto w = store::CancelTask(Conn(), waiting, DeadlineIn(kTimeout));
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(*w, TaskState::kCanceled);
  auto wt = Get(waiting);
  EXPECT_FALSE(wt.started_at.has_value());
  EXPECT_TRUE(wt.finished_at.has_value());

  auto r = store::CancelTask(Conn(), running, DeadlineIn(kTimeout));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, TaskState::kCanceling);
  ASSERT_TRUE(WaitState(running, TaskState::kCanceled, 15s));
  auto rt = Get(running);
  EXPECT_TRUE(rt.started_at && rt.finished_at);
  // The resource passed on.
  ASSERT_TRUE(WaitState(behind, TaskState::kCompleted, 15s));

  auto finished = store::CancelTask(Conn(), behind, DeadlineIn(kTimeout));
  ASSERT_FALSE(finished.ok());
  EXPECT_EQ(finished.error().code, ErrorCode::kConflict);
  EXPECT_EQ(Get(behind).state, TaskState::kCompleted);

  auto unknown =
      store::CancelTask(Conn(), "6f1d1a52-0000-4000-8000-000000000000", DeadlineIn(kTimeout));
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().code, ErrorCode::kNotFound);

  // A task that ignores SIGUSR1 and the flag is killed after the grace.
  auto stubborn = Dispatch("test.sleep", Sleep(600, true), {"D"});
  ASSERT_TRUE(WaitState(stubborn, TaskState::kRunning));
  ASSERT_TRUE(WaitFor([&] { return Journal().count(stubborn) == 1; }, kTimeout));
  ASSERT_TRUE(store::CancelTask(Conn(), stubborn, DeadlineIn(kTimeout)).ok());
  ASSERT_TRUE(WaitState(stubborn, TaskState::kCanceled, 20s));
  EXPECT_TRUE(WaitFor([&] { return ProcessGone(Journal()[stubborn][0]); }, 5s));

  // A group: one running, two waiting.
  auto group = store::CreateTaskGroup(Conn(), "fault group", DeadlineIn(kTimeout));
  ASSERT_TRUE(group.ok());
  std::vector<std::string> members;
  for (int i = 0; i < 3; ++i)
    members.push_back(Dispatch("test.sleep", Sleep(600), {"G"}, {}, *group));
  ASSERT_TRUE(WaitState(members[0], TaskState::kRunning));
  auto n = store::CancelTaskGroup(Conn(), *group, DeadlineIn(kTimeout));
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 3);
  for (const auto& m : members) EXPECT_TRUE(WaitState(m, TaskState::kCanceled, 15s)) << m;
}

TEST_F(FaultTest, SigtermFinishesSigintAbortsAfterGraceSecondSigintAtOnce) {
  // SIGTERM: the running task completes; cancels still work while stopping.
  auto a = StartWorker();
  ASSERT_TRUE(WaitOnlineWorkers(1));
  auto t1 = Dispatch("test.sleep", Sleep(1.5), {"T"});
  ASSERT_TRUE(WaitState(t1, TaskState::kRunning));
  workers_[a].Signal(SIGTERM);
  auto status = workers_[a].Wait(DeadlineIn(20s));
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(ExitCodeOf(*status), 0);
  EXPECT_EQ(Get(t1).state, TaskState::kCompleted);

  auto b = StartWorker({"--cancel-grace", "1"});
  ASSERT_TRUE(WaitOnlineWorkers(1));
  auto t2 = Dispatch("test.sleep", Sleep(600), {"T"});
  ASSERT_TRUE(WaitState(t2, TaskState::kRunning));
  workers_[b].Signal(SIGTERM);
  std::this_thread::sleep_for(300ms);
  ASSERT_TRUE(store::CancelTask(Conn(), t2, DeadlineIn(kTimeout)).ok());
  ASSERT_TRUE(WaitState(t2, TaskState::kCanceled, 15s));
  status = workers_[b].Wait(DeadlineIn(20s));
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(ExitCodeOf(*status), 0);

  // SIGINT: aborted after --grace.
  auto c = StartWorker({"--grace", "1"});
  ASSERT_TRUE(WaitOnlineWorkers(1));
  auto t3 = Dispatch("test.sleep", Sleep(600), {"T"});
  ASSERT_TRUE(WaitState(t3, TaskState::kRunning));
  workers_[c].Signal(SIGINT);
  ASSERT_TRUE(WaitFinal(t3, 20s));
  EXPECT_EQ(Get(t3).state, TaskState::kFailed);
  EXPECT_EQ(Get(t3).error["reason"], "Aborted during worker shutdown.");
  status = workers_[c].Wait(DeadlineIn(20s));
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(ExitCodeOf(*status), 0);

  // A second SIGINT does not wait for the (long) grace.
  auto d = StartWorker({"--grace", "600"});
  ASSERT_TRUE(WaitOnlineWorkers(1));
  auto t4 = Dispatch("test.sleep", Sleep(600), {"T"});
  ASSERT_TRUE(WaitState(t4, TaskState::kRunning));
  workers_[d].Signal(SIGINT);
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(Get(t4).state, TaskState::kRunning);
  workers_[d].Signal(SIGINT);
  ASSERT_TRUE(WaitFinal(t4, 20s));
  EXPECT_EQ(Get(t4).error["reason"], "Aborted during worker shutdown.");
  status = workers_[d].Wait(DeadlineIn(20s));
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(ExitCodeOf(*status), 0);
  EXPECT_EQ(Scalar("SELECT count(*) FROM taskmill.app"), 0);
}

TEST_F(FaultTest, WorkerWaitsForADatabaseThatIsNotThereYet) {
  char tmpl[] = "/tmp/tmfault-XXXXXX";
  std::string dir = mkdtemp(tmpl);
  chmod(dir.c_str(), 0755);
  LocalPostgresOptions lo;
  lo.data_dir = dir + "/data";
  lo.socket_dir = dir + "/sock";
  lo.fsync = false;
  auto server = LocalPostgres::Start(lo, DeadlineIn(120s));
  {
    auto c = Connect(server.ConnInfo());
    ASSERT_TRUE(store::Migrate(c, DeadlineIn(kTimeout)).ok());
  }
  server.Stop(DeadlineIn(60s));
  std::string log;
  auto w = StartTaskmill({"--database-url", server.ConnInfo(), "worker"}, &log);
  std::this_thread::sleep_for(2s);
  EXPECT_TRUE(w.running()) << testing::ReadFile(log);
  auto text = testing::ReadFile(log);
  EXPECT_NE(text.find("not reachable yet"), std::string::npos) << text;
  server = LocalPostgres::Start(lo, DeadlineIn(120s));
  auto c = Connect(server.ConnInfo());
  EXPECT_TRUE(WaitFor(
      [&] {
        return c.Exec("SELECT count(*) FROM taskmill.app", DeadlineIn(kTimeout)).GetInt(0, 0) == 1;
      },
      30s))
      << testing::ReadFile(log);
  w.Stop(DeadlineIn(10s));
  server.Stop(DeadlineIn(60s));
  std::filesystem::remove_all(dir);
}

// 500 tasks on a few contended resources, 4 workers, a random worker killed
// and restarted every second, PostgreSQL restarted once. Afterwards: every
// task final, none ran twice, no conflicting tasks overlapped.
// The soak: 500 short tasks on five resources, a worker killed with -9
// every second and restarted, the database restarted once; then nothing
// lost, nothing run twice, no overlap, no resource left locked.
void FaultTest::Soak(const std::vector<std::string>& worker_args) {
  std::vector<std::string> liveness = kFastLiveness;
  liveness.insert(liveness.end(), worker_args.begin(), worker_args.end());
  for (int i = 0; i < 4; ++i) StartWorker(liveness);
  ASSERT_TRUE(WaitOnlineWorkers(4));
  std::mt19937 rng(99);
  const std::vector<std::string> resources = {"a", "b", "c", "d", "e"};
  std::vector<std::string> ids;
  for (int i = 0; i < 500; ++i) {
    std::set<std::string> x, s;
    x.insert(resources[rng() % resources.size()]);
    if (rng() % 2) s.insert(resources[rng() % resources.size()]);
    for (const auto& r : x) s.erase(r);
    ids.push_back(Dispatch("test.sleep", Sleep((rng() % 5) * 0.01), {x.begin(), x.end()},
                           {s.begin(), s.end()}));
  }
  bool restarted = false;
  Deadline end = DeadlineIn(std::chrono::minutes(4));
  int kills = 0;
  auto unfinished = [&] {
    try {
      return Scalar(
          "SELECT count(*) FROM taskmill.task WHERE state NOT IN "
          "('completed', 'failed', 'canceled')");
    } catch (const pg::Error&) {
      return int64_t{1};
    }
  };
  while (!Expired(end) && unfinished() > 0) {
    std::this_thread::sleep_for(1s);
    size_t victim = rng() % 4;
    workers_[victim].Signal(SIGKILL);
    workers_[victim].Wait(DeadlineIn(5s));
    ++kills;
    std::vector<std::string> args = {"--database-url", db_, "worker", "--name",
                                     fmt::format("w{}-{}", victim, kills)};
    args.insert(args.end(), liveness.begin(), liveness.end());
    workers_[victim] = testing::StartTestProgram(args, &logs_[victim]);
    if (!restarted && kills == 3) {
      testing::TestServer().Restart(DeadlineIn(120s));
      conn_ = pg::Connection();
      restarted = true;
    }
  }
  ASSERT_TRUE(restarted);
  ASSERT_EQ(unfinished(), 0) << "tasks left unfinished after the soak";
  EXPECT_EQ(Scalar("SELECT count(*) FROM taskmill.task"), 500);
  // Nothing ran twice.
  auto journal = Journal();
  int ran_twice = 0;
  for (const auto& [id, pids] : journal) {
    EXPECT_EQ(pids.size(), 1u) << "task " << id << " ran twice";
    if (pids.size() > 1) ++ran_twice;
  }
  // Completed tasks ran (exactly once, above).
  auto res =
      Conn().Exec("SELECT id FROM taskmill.task WHERE state = 'completed'", DeadlineIn(kTimeout));
  for (int i = 0; i < res.rows(); ++i) EXPECT_EQ(journal.count(res.GetString(i, 0)), 1u);
  EXPECT_GT(res.rows(), 250);
  // No two conflicting tasks were ever running at the same time.
  EXPECT_EQ(Scalar("SELECT count(*) FROM taskmill.task a JOIN taskmill.task b ON a.seq < b.seq "
                   "WHERE (a.exclusive_resources && (b.exclusive_resources || b.shared_resources) "
                   "    OR b.exclusive_resources && (a.exclusive_resources || a.shared_resources)) "
                   "AND a.started_at IS NOT NULL AND b.started_at IS NOT NULL "
                   "AND b.started_at < a.finished_at AND a.started_at < b.finished_at"),
            0);
  EXPECT_EQ(Scalar("SELECT count(*) FROM taskmill.task_resource"), 0);
  RecordProperty("kills", kills);
  int64_t final_tasks = Scalar(
      "SELECT count(*) FROM taskmill.task WHERE state IN ('completed', 'failed', 'canceled')");
  std::cout << "soak (" << fmt::format("{}", fmt::join(worker_args, " ")) << "): " << kills
            << " kills, " << Scalar("SELECT count(*) FROM taskmill.task WHERE state = 'completed'")
            << " completed, " << Scalar("SELECT count(*) FROM taskmill.task WHERE state = 'failed'")
            << " failed (worker killed), " << 500 - final_tasks << " lost, " << ran_twice
            << " run twice\n";
}

TEST_F(FaultTest, SoakWithKillsAndADatabaseRestart) { Soak({}); }

TEST_F(FaultTest, SoakWithMultiSlotWorkers) { Soak({"--concurrency", "4"}); }

// A worker killed with -9 while running several tasks: every one of them is
// failed by the janitor, their children die, the tasks behind them run.
TEST_F(FaultTest, KillDashNineOfAMultiSlotWorkerFailsEveryTaskItRan) {
  std::vector<std::string> args = kFastLiveness;
  args.insert(args.end(), {"--concurrency", "3"});
  auto a = StartWorker(args);
  ASSERT_TRUE(WaitOnlineWorkers(1));
  std::vector<std::string> running, behind;
  for (int i = 0; i < 3; ++i)
    running.push_back(Dispatch("test.sleep", Sleep(600), {fmt::format("K{}", i)}));
  for (const auto& id : running) ASSERT_TRUE(WaitState(id, TaskState::kRunning));
  for (int i = 0; i < 3; ++i)
    behind.push_back(Dispatch("test.sleep", Sleep(0), {fmt::format("K{}", i)}));
  StartWorker(kFastLiveness);
  ASSERT_TRUE(WaitOnlineWorkers(2));
  ASSERT_TRUE(WaitFor([&] { return Journal().size() == 3; }, kTimeout));
  std::vector<int> children;
  for (const auto& id : running) children.push_back(Journal()[id][0]);

  workers_[a].Signal(SIGKILL);
  for (const auto& id : running) {
    ASSERT_TRUE(WaitFinal(id, 20s)) << id;
    auto t = Get(id);
    EXPECT_EQ(t.state, TaskState::kFailed);
    EXPECT_EQ(t.error["reason"], "Worker has gone missing.");
  }
  for (const auto& id : behind) EXPECT_TRUE(WaitState(id, TaskState::kCompleted, 20s)) << id;
  for (int pid : children) EXPECT_TRUE(WaitFor([&] { return ProcessGone(pid); }, 5s)) << pid;
  for (const auto& id : running) EXPECT_EQ(Journal()[id].size(), 1u);
}

// SIGSTOP past the ttl, then SIGCONT, of a worker running several tasks: the
// janitor's verdict stands for every one, the worker kills their children,
// records nothing, and works on under a new identity.
TEST_F(FaultTest, StoppedMultiSlotWorkerStopsEveryTaskAndRecordsNothing) {
  std::vector<std::string> args = kFastLiveness;
  args.insert(args.end(), {"--concurrency", "3"});
  auto a = StartWorker(args);
  ASSERT_TRUE(WaitOnlineWorkers(1));
  std::vector<std::string> tasks;
  for (int i = 0; i < 3; ++i)
    tasks.push_back(Dispatch("test.sleep", Sleep(i == 0 ? 3 : 600), {fmt::format("P{}", i)}));
  for (const auto& id : tasks) ASSERT_TRUE(WaitState(id, TaskState::kRunning));
  ASSERT_TRUE(WaitFor([&] { return Journal().size() == 3; }, kTimeout));
  StartWorker(kFastLiveness);
  ASSERT_TRUE(WaitOnlineWorkers(2));
  std::string old_id =
      Conn()
          .Exec("SELECT id FROM taskmill.app WHERE name = 'w0'", DeadlineIn(kTimeout))
          .GetString(0, 0);
  workers_[a].Signal(SIGSTOP);
  std::map<std::string, Task> verdicts;
  for (const auto& id : tasks) {
    ASSERT_TRUE(WaitFinal(id, 20s)) << id;
    verdicts[id] = Get(id);
    EXPECT_EQ(verdicts[id].error["reason"], "Worker has gone missing.");
  }
  // The first task's child finishes its sleep while the worker is frozen.
  std::this_thread::sleep_for(3s);
  workers_[a].Signal(SIGCONT);
  ASSERT_TRUE(WaitFor(
      [&] {
        return Scalar(fmt::format(
                   "SELECT count(*) FROM taskmill.app WHERE name = 'w0' AND id <> '{}'", old_id)) ==
               1;
      },
      20s))
      << testing::ReadFile(logs_[a]);
  for (const auto& run : Journal()) {
    int pid = run.second[0];
    EXPECT_TRUE(WaitFor([pid] { return ProcessGone(pid); }, 5s)) << pid;
  }
  std::this_thread::sleep_for(1s);
  for (const auto& id : tasks) {
    auto after = Get(id);
    EXPECT_EQ(after.state, TaskState::kFailed);
    EXPECT_EQ(after.error, verdicts[id].error);
    EXPECT_EQ(after.finished_at, verdicts[id].finished_at);
    EXPECT_TRUE(after.result.is_null());
  }
  EXPECT_TRUE(workers_[a].running());
  // The resumed worker still works, with all its slots.
  std::vector<std::string> more;
  for (int i = 0; i < 3; ++i)
    more.push_back(Dispatch("test.sleep", Sleep(1), {fmt::format("P{}", i)}));
  for (const auto& id : more) EXPECT_TRUE(WaitState(id, TaskState::kCompleted, 20s)) << id;
}

}  // namespace
}  // namespace taskmill
