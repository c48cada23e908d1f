// The C++ Worker as a library user drives it: Run() on a thread of the
// user's program, stopped with RequestStop(), RequestAbort() or
// Stop(deadline); no signal handlers of taskmill's unless asked for.
#include <gtest/gtest.h>

#include <signal.h>

#include <atomic>
#include <future>
#include <thread>

#include "store/task_store.h"
#include "support/taskmill_fixture.h"
#include "taskmill/registry.h"
#include "taskmill/worker.h"

namespace taskmill {
namespace {

using testing::Connect;
using testing::WaitFor;
using namespace std::chrono_literals;

constexpr auto kTimeout = std::chrono::seconds(30);

class WorkerApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = testing::MigratedTestDatabase();
    conn_ = Connect(db_);
    RegisterBuiltins(registry_);
    registry_.Register(
        "api.wait", [this](const nlohmann::json&, const nlohmann::json& kwargs, TaskContext& ctx) {
          ++started_;
          Deadline end = DeadlineIn(std::chrono::milliseconds(kwargs.value("ms", 100)));
          while (!Expired(end) && !ctx.canceled()) std::this_thread::sleep_for(5ms);
          if (ctx.canceled()) throw std::runtime_error("stopped");
          return nlohmann::json("done");
        });
    store::RegisterFunctions(conn_, {"api.wait"}, DeadlineIn(kTimeout));
  }

  WorkerOptions Options(int concurrency) {
    WorkerOptions o;
    o.database_url = db_;
    o.in_process = true;
    o.concurrency = concurrency;
    o.name = "api-worker";
    return o;
  }
  std::string Dispatch(int ms, const std::string& resource) {
    DispatchRequest req;
    req.name = "api.wait";
    req.kwargs = {{"ms", ms}};
    req.exclusive_resources = {resource};
    auto out = store::DispatchTask(conn_, req, std::nullopt, DeadlineIn(kTimeout));
    EXPECT_TRUE(out.ok());
    return out.ok() ? out->id : "";
  }
  TaskState State(const std::string& id) {
    return store::GetTask(conn_, id, DeadlineIn(kTimeout))->state;
  }
  int64_t Scalar(const std::string& sql) {
    return conn_.Exec(sql, DeadlineIn(kTimeout)).GetInt(0, 0);
  }

  std::string db_;
  pg::Connection conn_;
  TaskRegistry registry_;
  std::atomic<int> started_{0};
};

TEST_F(WorkerApiTest, ConcurrencyOutsideItsRangeIsRefused) {
  EXPECT_THROW(Worker(Options(0), registry_), std::invalid_argument);
  EXPECT_THROW(Worker(Options(1001), registry_), std::invalid_argument);
}

TEST_F(WorkerApiTest, RequestStopBeforeRunReturnsAtOnce) {
  Worker w(Options(2), registry_);
  w.RequestStop();
  EXPECT_EQ(w.Run(), 0);
  EXPECT_EQ(Scalar("SELECT count(*) FROM taskmill.app"), 0);
}

TEST_F(WorkerApiTest, StopWithADeadlineLetsShortTasksFinish) {
  Worker w(Options(3), registry_);
  auto rc = std::async(std::launch::async, [&] { return w.Run(); });
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(Dispatch(800, "s" + std::to_string(i)));
  ASSERT_TRUE(WaitFor([&] { return started_.load() == 3; }, kTimeout));
  w.Stop(DeadlineIn(20s));
  ASSERT_EQ(rc.wait_for(5s), std::future_status::ready);
  EXPECT_EQ(rc.get(), 0);
  for (const auto& id : ids) EXPECT_EQ(State(id), TaskState::kCompleted);
  EXPECT_EQ(Scalar("SELECT count(*) FROM taskmill.app"), 0);
}

TEST_F(WorkerApiTest, StopPastItsDeadlineAbortsTheRunningTasks) {
  Worker w(Options(2), registry_);
  auto rc = std::async(std::launch::async, [&] { return w.Run(); });
  auto a = Dispatch(60000, "a");
  auto b = Dispatch(60000, "b");
  ASSERT_TRUE(WaitFor([&] { return started_.load() == 2; }, kTimeout));
  w.Stop(DeadlineIn(300ms));
  ASSERT_EQ(rc.wait_for(5s), std::future_status::ready);
  EXPECT_EQ(rc.get(), 0);
  for (const auto& id : {a, b}) {
    auto t = store::GetTask(conn_, id, DeadlineIn(kTimeout));
    EXPECT_EQ(t->state, TaskState::kFailed);
    EXPECT_EQ(t->error["reason"], "Aborted during worker shutdown.");
  }
}

// Without a WorkerSignals, the library leaves SIGTERM to the program.
TEST_F(WorkerApiTest, RunInstallsNoSignalHandlersWorkerSignalsDoesAndRestores) {
  Worker w(Options(1), registry_);
  struct sigaction before {};
  sigaction(SIGTERM, nullptr, &before);
  auto rc = std::async(std::launch::async, [&] { return w.Run(); });
  ASSERT_TRUE(WaitFor([&] { return Scalar("SELECT count(*) FROM taskmill.app") == 1; }, kTimeout));
  struct sigaction during {};
  sigaction(SIGTERM, nullptr, &during);
  EXPECT_EQ(during.sa_handler, before.sa_handler);
  {
    WorkerSignals signals(w);
    EXPECT_THROW(WorkerSignals second(w), std::logic_error);
    sigaction(SIGTERM, nullptr, &during);
    EXPECT_NE(during.sa_handler, before.sa_handler);
    // SIGTERM to ourselves: a stop request for the worker.
    kill(getpid(), SIGTERM);
    ASSERT_EQ(rc.wait_for(20s), std::future_status::ready);
    EXPECT_EQ(rc.get(), 0);
  }
  struct sigaction after {};
  sigaction(SIGTERM, nullptr, &after);
  EXPECT_EQ(after.sa_handler, before.sa_handler);
}

}  // namespace
}  // namespace taskmill
