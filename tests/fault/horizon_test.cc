// The janitor's warning about an old snapshot: a session of the test holds a
// REPEATABLE READ snapshot idle in transaction; the worker holding the
// janitor lease must say so once, naming it, and once more when it is gone.
#include <gtest/gtest.h>

#include <thread>

#include <fmt/format.h>

#include "store/task_store.h"
#include "support/taskmill_fixture.h"

namespace taskmill {
namespace {

using namespace std::chrono_literals;

size_t Count(const std::string& haystack, const std::string& needle) {
  size_t n = 0;
  for (size_t pos = haystack.find(needle); pos != std::string::npos;
       pos = haystack.find(needle, pos + needle.size())) {
    ++n;
  }
  return n;
}

TEST(HorizonWarningTest, JanitorWarnsOnceAboutAnOldSnapshotAndSaysWhenItIsGone) {
  std::string db = testing::MigratedTestDatabase();
  std::vector<std::string> logs;
  auto worker = testing::StartWorker(
      db, "hw", {"--heartbeat-interval", "0.2", "--ttl", "1", "--snapshot-warning", "1"}, &logs);
  auto holder = testing::Connect(db);
  holder.Exec("SET application_name = 'horizon-test'", DeadlineIn(10s));
  holder.Exec("BEGIN ISOLATION LEVEL REPEATABLE READ", DeadlineIn(10s));
  int64_t pid = holder.Exec("SELECT pg_backend_pid()", DeadlineIn(10s)).GetInt(0, 0);

  // The store's view first.
  auto conn = testing::Connect(db);
  ASSERT_TRUE(testing::WaitFor(
      [&] { return !store::HorizonHolders(conn, 1, DeadlineIn(10s)).empty(); }, 10s));
  auto holders = store::HorizonHolders(conn, 1, DeadlineIn(10s));
  ASSERT_EQ(holders.size(), 1u);
  EXPECT_EQ(holders[0].pid, pid);
  EXPECT_EQ(holders[0].name, "horizon-test");
  EXPECT_EQ(holders[0].state, "idle in transaction");
  EXPECT_GE(holders[0].age_seconds, 1.0);
  EXPECT_TRUE(store::HorizonHolders(conn, 3600, DeadlineIn(10s)).empty());

  const std::string warning = fmt::format(
      "old snapshot: session pid {} (application_name \"horizon-test\", state idle in "
      "transaction)",
      pid);
  const std::string gone = fmt::format("the old snapshot is gone: session pid {}", pid);
  ASSERT_TRUE(testing::WaitFor([&] { return Count(testing::ReadFile(logs[0]), warning) > 0; }, 20s))
      << testing::ReadFile(logs[0]);
  // Several janitor rounds later, still one warning for the episode.
  std::this_thread::sleep_for(1500ms);
  EXPECT_EQ(Count(testing::ReadFile(logs[0]), "old snapshot:"), 1u) << testing::ReadFile(logs[0]);
  EXPECT_EQ(Count(testing::ReadFile(logs[0]), gone), 0u);

  holder.Exec("COMMIT", DeadlineIn(10s));
  ASSERT_TRUE(testing::WaitFor([&] { return Count(testing::ReadFile(logs[0]), gone) == 1; }, 20s))
      << testing::ReadFile(logs[0]);
  std::this_thread::sleep_for(1s);
  std::string log = testing::ReadFile(logs[0]);
  EXPECT_EQ(Count(log, "old snapshot:"), 1u) << log;
  EXPECT_EQ(Count(log, gone), 1u) << log;
  worker.Stop(DeadlineIn(10s));
}

}  // namespace
}  // namespace taskmill
