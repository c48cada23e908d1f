// worker::ThreadRun, the one way a task function runs on a thread: what it
// may touch after its owner stopped waiting for it.
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <thread>

#include "worker/executor.h"

namespace taskmill {
namespace {

using namespace std::chrono_literals;

struct Probe {
  std::atomic<bool> returned{false};
};

// A function that notices its cancel, then keeps running a while and
// reports progress long after its owner gave up on it.
TaskRegistry LateReporter(std::shared_ptr<Probe> probe) {
  TaskRegistry r;
  r.Register("late", [probe](const nlohmann::json&, const nlohmann::json&, TaskContext& ctx) {
    while (!ctx.canceled()) std::this_thread::sleep_for(1ms);
    std::this_thread::sleep_for(100ms);
    ctx.ReportProgress("late.code", "after the timeout", 1, 1);
    probe->returned = true;
    return nlohmann::json("late result");
  });
  return r;
}

Task LateTask() {
  Task t;
  t.id = "01a23300-0000-7000-8000-000000000001";
  t.name = "late";
  return t;
}

// The progress callback of the old RunWithTimeout read the caller's sink
// after the caller had returned. Here the owner and the registry are gone
// before the function reports: the report lands in the run's own block.
// Run under valgrind or ASan to see that nothing freed is touched.
TEST(ThreadRunTest, ProgressAfterTheOwnerLeftTouchesNothingOfTheOwners) {
  auto probe = std::make_shared<Probe>();
  {
    auto registry = std::make_unique<TaskRegistry>(LateReporter(probe));
    auto run = std::make_unique<worker::ThreadRun>(*registry, LateTask());
    EXPECT_FALSE(run->Wait(DeadlineIn(50ms)));
    run->Cancel();
    EXPECT_FALSE(run->done());
    run.reset();  // the thread is detached, still running
    registry.reset();
  }
  ASSERT_TRUE([&] {
    for (int i = 0; i < 500 && !probe->returned; ++i) std::this_thread::sleep_for(10ms);
    return probe->returned.load();
  }());
  std::this_thread::sleep_for(20ms);  // let the detached thread finish its epilogue
}

TEST(ThreadRunTest, ProgressAfterTheTimeoutIsKeptForTheOwner) {
  auto probe = std::make_shared<Probe>();
  TaskRegistry registry = LateReporter(probe);
  worker::ThreadRun run(registry, LateTask());
  EXPECT_FALSE(run.Wait(DeadlineIn(50ms)));
  run.Cancel();
  ASSERT_TRUE(run.Wait(DeadlineIn(10s)));
  auto progress = run.TakeProgress();
  ASSERT_EQ(progress.count("late.code"), 1u);
  EXPECT_EQ(progress["late.code"]["message"], "after the timeout");
  EXPECT_TRUE(run.TakeProgress().empty());
  auto out = run.outcome();
  EXPECT_EQ(out.state, TaskState::kCompleted);
  EXPECT_EQ(out.result, "late result");
}

TEST(ThreadRunTest, UnknownFunctionIsDoneAtOnceAndFailed) {
  TaskRegistry registry;
  Task t = LateTask();
  t.name = "nobody.registered";
  worker::ThreadRun run(registry, t);
  ASSERT_TRUE(run.Wait(DeadlineIn(10s)));
  EXPECT_EQ(run.outcome().state, TaskState::kFailed);
  EXPECT_NE(run.outcome().error["description"].get<std::string>().find("not registered"),
            std::string::npos);
}

TEST(ThreadRunTest, TimedOutSaysWhichTaskAndHowLong) {
  auto out = worker::TimedOut(LateTask(), 0.5);
  EXPECT_EQ(out.state, TaskState::kFailed);
  EXPECT_EQ(out.error["description"],
            "Immediate task 01a23300-0000-7000-8000-000000000001 (type: late) timed out after "
            "0.5 seconds.");
}

TEST(RegistryTest, BuiltinsAreInlineSafeAndShipNoCrashOrFileWriting) {
  TaskRegistry registry;
  RegisterBuiltins(registry);
  EXPECT_EQ(registry.Names(), (std::vector<std::string>{"taskmill.echo", "taskmill.fail",
                                                        "taskmill.noop", "taskmill.sleep"}));
  for (const auto& name : registry.Names()) {
    ASSERT_TRUE(registry.OptionsOf(name).has_value()) << name;
    EXPECT_TRUE(registry.OptionsOf(name)->inline_ok) << name;
  }
  EXPECT_FALSE(registry.OptionsOf("taskmill.crash").has_value());
  registry.Register("mine", [](const nlohmann::json&, const nlohmann::json&, TaskContext&) {
    return nlohmann::json();
  });
  EXPECT_FALSE(registry.OptionsOf("mine")->inline_ok);
}

}  // namespace
}  // namespace taskmill
