// Immediate tasks in the API process against functions that misbehave on
// purpose (the test program's `api`, which has test.sleep and test.crash):
// past its timeout a task keeps its resources until its function returns,
// overdue runs are bounded, and a crashing function never runs in the API.
#include <gtest/gtest.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>
#include <fstream>
#include <map>
#include <thread>

#include <fmt/format.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "support/taskmill_fixture.h"
#include "support/test_postgres.h"

namespace taskmill {
namespace {

using nlohmann::json;
using testing::WaitFor;
using namespace std::chrono_literals;

using testing::FreePort;

// The "Threads:" line of /proc/<pid>/status.
int ThreadCount(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/status", pid));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("Threads:", 0) == 0) return std::stoi(line.substr(8));
  }
  return -1;
}

class ImmediateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = testing::MigratedTestDatabase();
    conn_ = testing::Connect(db_);
    static int counter = 0;
    times_ = fmt::format("{}/immediate-times-{}-{}", ::testing::TempDir(), getpid(), counter++);
    std::remove(times_.c_str());
  }
  void TearDown() override {
    if (HasFailure()) testing::PrintLogs(logs_);
    for (auto& w : workers_) w.Stop(DeadlineIn(10s), SIGKILL);
    api_.Stop(DeadlineIn(10s), SIGKILL);
  }

  // The API server of the test program (stock = false) or of `taskmill`.
  void StartApi(std::vector<std::string> extra, bool stock = false) {
    port_ = FreePort();
    std::vector<std::string> args = {
        "--database-url", db_, "api", "--listen", fmt::format("127.0.0.1:{}", port_),
        "--threads",      "4"};
    args.insert(args.end(), extra.begin(), extra.end());
    std::string log;
    api_ = stock ? testing::StartTaskmill(args, &log) : testing::StartTestProgram(args, &log);
    logs_.push_back(log);
    client_ = std::make_unique<httplib::Client>("127.0.0.1", port_);
    client_->set_read_timeout(60, 0);
    ASSERT_TRUE(WaitFor([&] { return Answers(); }, 30s)) << testing::ReadFile(log);
  }
  bool Answers() {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(5, 0);
    c.set_connection_timeout(5, 0);
    auto r = c.Get("/pulp/api/v3/status/");
    return r && r->status == 200;
  }
  void StartWorker(std::vector<std::string> extra = {}) {
    workers_.push_back(
        testing::StartWorker(db_, fmt::format("w{}", workers_.size()), extra, &logs_));
  }

  httplib::Result Post(const json& body) {
    return client_->Post("/pulp/api/v3/tasks/", body.dump(), "application/json");
  }
  // Dispatches and returns the task id.
  std::string Dispatch(const json& body) {
    auto r = Post(body);
    EXPECT_TRUE(r);
    if (!r) return "";
    EXPECT_EQ(r->status, 202) << r->body;
    std::string href = json::parse(r->body).value("task", "");
    href.pop_back();
    return href.substr(href.rfind('/') + 1);
  }
  std::string State(const std::string& id) {
    return conn_
        .Exec("SELECT state FROM taskmill.task WHERE id = $1::uuid", pg::Params().Add(id),
              DeadlineIn(30s))
        .GetString(0, 0);
  }
  json Error(const std::string& id) {
    auto r = conn_.Exec("SELECT error FROM taskmill.task WHERE id = $1::uuid", pg::Params().Add(id),
                        DeadlineIn(30s));
    return r.IsNull(0, 0) ? json() : json::parse(r.GetString(0, 0));
  }
  bool WaitState(const std::string& id, const std::string& state,
                 std::chrono::milliseconds t = 30s) {
    return WaitFor([&] { return State(id) == state; }, t);
  }
  int64_t Micros(const std::string& id, const std::string& column) {
    return conn_
        .Exec(fmt::format("SELECT (extract(epoch FROM {}) * 1000000)::bigint FROM taskmill.task "
                          "WHERE id = $1::uuid",
                          column),
              pg::Params().Add(id), DeadlineIn(30s))
        .GetInt(0, 0);
  }
  int64_t Count(const std::string& where) {
    return conn_.Exec("SELECT count(*) FROM taskmill.task WHERE " + where, DeadlineIn(30s))
        .GetInt(0, 0);
  }
  std::map<std::string, int64_t> Times() {
    std::map<std::string, int64_t> out;
    std::ifstream in(times_);
    std::string id, what;
    int64_t us;
    while (in >> id >> what >> us) out[id + " " + what] = us;
    return out;
  }

  std::string db_;
  pg::Connection conn_;
  std::string times_;
  int port_ = 0;
  Subprocess api_;
  std::vector<Subprocess> workers_;
  std::vector<std::string> logs_;
  std::unique_ptr<httplib::Client> client_;
};

// Finding 1: a second task on the resource of a timed-out immediate task ran
// while the first one's function was still running.
// Liveness is short here and the worker is a janitor: the API must go on
// heartbeating while it holds the overdue task, or the janitor would fail it
// ("gone missing") and release its resource early.
TEST_F(ImmediateTest, ATimedOutTaskKeepsItsResourceUntilItsFunctionReturns) {
  const std::vector<std::string> liveness = {"--heartbeat-interval", "0.2", "--ttl", "1"};
  std::vector<std::string> api_flags = {"--immediate-timeout", "0.3"};
  api_flags.insert(api_flags.end(), liveness.begin(), liveness.end());
  StartApi(api_flags);
  StartWorker(liveness);
  auto first = Dispatch({{"name", "test.sleep"},
                         {"kwargs", {{"seconds", 3}, {"ignore_cancel", true}, {"times", times_}}},
                         {"immediate", true},
                         {"deferred", false},
                         {"exclusive_resources", {"R"}}});
  // Answered at the timeout, with the function still running: still owned.
  EXPECT_EQ(State(first), "running");
  auto second = Dispatch({{"name", "test.sleep"},
                          {"kwargs", {{"seconds", 0}, {"times", times_}}},
                          {"exclusive_resources", {"R"}}});
  ASSERT_TRUE(WaitState(first, "failed"));
  ASSERT_TRUE(WaitState(second, "completed"));
  EXPECT_NE(Error(first)["description"].get<std::string>().find("timed out after 0.3 seconds"),
            std::string::npos)
      << Error(first);
  auto times = Times();
  ASSERT_EQ(times.count(first + " end"), 1u);
  ASSERT_EQ(times.count(second + " start"), 1u);
  EXPECT_LE(times[first + " end"], times[second + " start"]);
  EXPECT_LE(times[first + " end"], Micros(first, "finished_at"));
  EXPECT_LE(Micros(first, "finished_at"), Micros(second, "started_at"));
}

// 64 timed-out requests whose functions ignore their cancel: overdue runs
// are bounded (the rest go to workers), and once the functions return the
// API has as many threads as before.
TEST_F(ImmediateTest, OverdueRunsAreBoundedAndTheirThreadsEnd) {
  constexpr int kOverdue = 4;
  StartApi({"--immediate-timeout", "0.1", "--max-overdue-immediate", std::to_string(kOverdue)});
  Dispatch({{"name", "taskmill.noop"}, {"immediate", true}});  // warm up
  int baseline = ThreadCount(api_.pid());
  ASSERT_GT(baseline, 0);
  std::vector<std::string> ids;
  for (int i = 0; i < 64; ++i) {
    ids.push_back(Dispatch({{"name", "test.sleep"},
                            {"kwargs", {{"seconds", 6}, {"ignore_cancel", true}}},
                            {"immediate", true},
                            {"deferred", false},
                            {"exclusive_resources", {fmt::format("r{}", i)}}}));
  }
  int peak = ThreadCount(api_.pid());
  EXPECT_LE(peak, baseline + kOverdue) << "baseline " << baseline;
  // Overdue ones stay running here; the others wait for a worker.
  EXPECT_EQ(Count("name = 'test.sleep' AND state = 'running'"), kOverdue);
  EXPECT_EQ(Count("name = 'test.sleep' AND state = 'waiting' AND app_lock IS NULL"), 64 - kOverdue);
  ASSERT_TRUE(
      WaitFor([&] { return Count("name = 'test.sleep' AND state = 'failed'") == kOverdue; }, 30s));
  EXPECT_TRUE(WaitFor([&] { return ThreadCount(api_.pid()) == baseline; }, 10s))
      << ThreadCount(api_.pid()) << " threads, baseline " << baseline;
  EXPECT_TRUE(Answers());
  // With the overdue runs over, immediate tasks run here again.
  auto again = Dispatch({{"name", "taskmill.echo"}, {"immediate", true}, {"deferred", false}});
  EXPECT_EQ(State(again), "completed");
}

// SIGTERM with an overdue task: the API waits for its function, records it,
// deregisters and exits 0; nothing on its resource started before.
TEST_F(ImmediateTest, SigtermWaitsForAnOverdueTaskAndRecordsIt) {
  StartApi({"--immediate-timeout", "0.2"});
  auto overdue = Dispatch({{"name", "test.sleep"},
                           {"kwargs", {{"seconds", 2}, {"ignore_cancel", true}, {"times", times_}}},
                           {"immediate", true},
                           {"exclusive_resources", {"Z"}}});
  EXPECT_EQ(State(overdue), "running");
  ASSERT_TRUE(api_.Signal(SIGTERM));
  auto status = api_.Wait(DeadlineIn(30s));
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(ExitCodeOf(*status), 0);
  EXPECT_EQ(State(overdue), "failed");
  EXPECT_LE(Times()[overdue + " end"], Micros(overdue, "finished_at"));
  EXPECT_EQ(conn_.Exec("SELECT count(*) FROM taskmill.app", DeadlineIn(30s)).GetInt(0, 0), 0);
}

// Finding 3: an immediate crash killed (SIGSEGV) or froze (SIGSTOP) the API.
// test.crash is not inline_ok: it goes to a worker, which runs it in a child.
TEST_F(ImmediateTest, AnImmediateCrashNeverRunsInTheApiProcess) {
  StartApi({});
  StartWorker();
  std::vector<std::string> ids;
  for (int signo : {SIGSEGV, SIGSTOP, SIGKILL}) {
    ids.push_back(Dispatch({{"name", "test.crash"},
                            {"kwargs", {{"signal", signo}}},
                            {"immediate", true},
                            {"deferred", false}}));
    EXPECT_TRUE(Answers());
    EXPECT_TRUE(api_.running());
  }
  for (const auto& id : ids) {
    ASSERT_TRUE(WaitState(id, "failed")) << id << " " << State(id);
    EXPECT_TRUE(Answers());
  }
  EXPECT_TRUE(api_.running());
}

// The stock `taskmill api` has no taskmill.crash, and taskmill.sleep run
// inline writes no file whatever its kwargs say.
TEST_F(ImmediateTest, TheStockApiCannotCrashOrWriteFiles) {
  StartApi({}, /*stock=*/true);
  auto r = Post({{"name", "taskmill.crash"}, {"immediate", true}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400) << r->body;
  EXPECT_TRUE(Answers());
  std::string path = times_ + ".journal";
  auto id = Dispatch({{"name", "taskmill.sleep"},
                      {"kwargs", {{"seconds", 0}, {"journal", path}}},
                      {"immediate", true},
                      {"deferred", false}});
  EXPECT_EQ(State(id), "completed");
  EXPECT_FALSE(std::ifstream(path).good()) << path;
}

}  // namespace
}  // namespace taskmill
