// worker::ThreadRun, the one way a task function runs on a thread: what it
// may touch after its owner stopped waiting for it.
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

#include <poll.h>

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

// In-process slots run on a pool: as many threads as slots, each task on
// one of them at the same time as the others, and one descriptor that wakes
// the owner when any has returned.
TEST(ThreadPoolTest, RunsTasksTogetherAndWakesTheOwner) {
  TaskRegistry registry;
  std::atomic<int> inside{0};
  std::atomic<int> most{0};
  std::set<std::thread::id> threads;
  std::mutex mu;
  registry.Register("pool.meet", [&](const nlohmann::json&, const nlohmann::json&, TaskContext&) {
    int now = ++inside;
    for (int seen = most.load(); now > seen && !most.compare_exchange_weak(seen, now);) {
    }
    {
      std::lock_guard<std::mutex> lock(mu);
      threads.insert(std::this_thread::get_id());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    --inside;
    return nlohmann::json(1);
  });
  worker::ThreadPool pool(3);
  pollfd idle{pool.wake_fd(), POLLIN, 0};
  EXPECT_EQ(poll(&idle, 1, 0), 0);
  std::vector<std::unique_ptr<worker::ThreadRun>> runs;
  for (int i = 0; i < 3; ++i) {
    Task t;
    t.id = "pool-" + std::to_string(i);
    t.name = "pool.meet";
    runs.push_back(std::make_unique<worker::ThreadRun>(registry, t, pool));
    EXPECT_EQ(runs.back()->wake_fd(), pool.wake_fd());
  }
  for (auto& r : runs) ASSERT_TRUE(r->Wait(DeadlineIn(std::chrono::seconds(10))));
  pollfd woke{pool.wake_fd(), POLLIN, 0};
  EXPECT_EQ(poll(&woke, 1, 1000), 1);
  pool.ClearWake();
  EXPECT_EQ(poll(&woke, 1, 0), 0);
  EXPECT_EQ(most.load(), 3);
  EXPECT_EQ(threads.size(), 3u);
  for (auto& r : runs) EXPECT_EQ(r->outcome().state, TaskState::kCompleted);
  // Threads are reused, not created per task.
  Task again;
  again.id = "pool-again";
  again.name = "pool.meet";
  worker::ThreadRun more(registry, again, pool);
  ASSERT_TRUE(more.Wait(DeadlineIn(std::chrono::seconds(10))));
  EXPECT_EQ(threads.size(), 3u);
}

// A pool whose task will not stop does not hang its owner's exit.
TEST(ThreadPoolTest, DestroyingAPoolWithAStubbornTaskDoesNotWaitForIt) {
  auto registry = std::make_unique<TaskRegistry>();
  auto release = std::make_shared<std::atomic<bool>>(false);
  registry->Register("pool.stuck",
                     [release](const nlohmann::json&, const nlohmann::json&, TaskContext&) {
                       while (!release->load())
                         std::this_thread::sleep_for(std::chrono::milliseconds(5));
                       return nlohmann::json(nullptr);
                     });
  Task t;
  t.id = "stuck";
  t.name = "pool.stuck";
  auto start = Clock::now();
  {
    auto pool = std::make_unique<worker::ThreadPool>(1);
    auto run = std::make_unique<worker::ThreadRun>(*registry, t, *pool);
    run.reset();
    pool.reset();
  }
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(5));
  release->store(true);
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
