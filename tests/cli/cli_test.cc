// The `taskmill` command line, run as a real process.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "support/taskmill_fixture.h"
#include "support/test_postgres.h"

namespace taskmill {
namespace {

using nlohmann::json;
using testing::RunTaskmill;

TEST(CliTest, MigrateDispatchListShowCancel) {
  std::string db = testing::CreateTestDatabase("cli");
  auto m1 = RunTaskmill({"--database-url", db, "migrate"});
  ASSERT_EQ(m1.exit_code, 0) << m1.err;
  auto m2 = RunTaskmill({"--database-url", db, "migrate"});
  ASSERT_EQ(m2.exit_code, 0) << m2.err;
  EXPECT_NE(m2.out.find("0 migration(s) applied"), std::string::npos) << m2.out;

  auto d = RunTaskmill({"--database-url", db, "dispatch", "taskmill.echo", "--args", "[1, \"two\"]",
                        "--kwargs", "{\"k\": 3}", "--exclusive", "repo", "--shared", "remote",
                        "--shared", "other"});
  ASSERT_EQ(d.exit_code, 0) << d.err;
  std::string id = d.out.substr(0, d.out.find('\n'));
  EXPECT_EQ(id.size(), 36u) << d.out;

  // The URL may also come from the environment.
  auto d2 = RunTaskmill({"dispatch", "taskmill.noop"}, {"TASKMILL_DATABASE_URL=" + db});
  ASSERT_EQ(d2.exit_code, 0) << d2.err;

  auto list = RunTaskmill({"--database-url", db, "tasks", "list", "--json"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  auto arr = json::parse(list.out);
  ASSERT_EQ(arr.size(), 2u);
  EXPECT_EQ(arr[1]["pulp_href"], "/pulp/api/v3/tasks/" + id + "/");  // newest first
  EXPECT_EQ(arr[1]["reserved_resources_record"], json({"repo", "shared:other", "shared:remote"}));
  for (const char* k : {"pulp_href", "pulp_created", "state", "name", "logging_cid", "unblocked_at",
                        "started_at", "finished_at", "error", "worker", "parent_task", "task_group",
                        "reserved_resources_record", "result"}) {
    EXPECT_TRUE(arr[1].contains(k)) << k;
  }
  auto filtered = RunTaskmill({"--database-url", db, "tasks", "list", "--json", "--name",
                               "taskmill.noop", "--state", "waiting", "--limit", "5"});
  EXPECT_EQ(json::parse(filtered.out).size(), 1u);

  auto show = RunTaskmill({"--database-url", db, "tasks", "show", id, "--json"});
  ASSERT_EQ(show.exit_code, 0);
  EXPECT_EQ(json::parse(show.out)["name"], "taskmill.echo");
  auto table = RunTaskmill({"--database-url", db, "tasks", "list"});
  EXPECT_NE(table.out.find(id), std::string::npos);

  auto cancel = RunTaskmill({"--database-url", db, "tasks", "cancel", id});
  EXPECT_EQ(cancel.exit_code, 0) << cancel.err;
  EXPECT_EQ(cancel.out, "canceled\n");
  auto again = RunTaskmill({"--database-url", db, "tasks", "cancel", id});
  EXPECT_EQ(again.exit_code, 4);
  EXPECT_NE(again.err.find("already canceled"), std::string::npos) << again.err;
  auto unknown =
      RunTaskmill({"--database-url", db, "tasks", "show", "6f1d1a52-0000-4000-8000-000000000000"});
  EXPECT_EQ(unknown.exit_code, 3);

  auto workers = RunTaskmill({"--database-url", db, "workers", "list", "--json"});
  ASSERT_EQ(workers.exit_code, 0);
  EXPECT_EQ(json::parse(workers.out).size(), 0u);
}

TEST(CliTest, BadInputGetsAClearMessageAndNonZeroExit) {
  std::string db = testing::MigratedTestDatabase();
  struct Case {
    std::vector<std::string> args;
    int code;
    std::string message;
  };
  std::vector<Case> cases = {
      {{"dispatch", "taskmill.noop", "--args", "[1,"}, 2, "not valid JSON"},
      {{"dispatch", "taskmill.noop", "--args", "{}"}, 2, "must be a JSON array"},
      {{"dispatch", "taskmill.noop", "--kwargs", "[]"}, 2, "must be a JSON object"},
      {{"dispatch", "no.such.function"}, 2, "unknown task function"},
      {{"dispatch", "taskmill.noop", "--exclusive", ""}, 2, "empty resource"},
      {{"dispatch", "taskmill.noop", "--shared", std::string(600, 'r')}, 2, "too long"},
      {{"tasks", "list", "--state", "sleeping"}, 2, "unknown state"},
      {{"tasks", "show", "not-a-uuid"}, 2, "invalid input syntax"},
      {{"worker", "--ttl", "1", "--heartbeat-interval", "2"}, 2, "must be longer"},
      {{"frobnicate"}, 2, ""},
  };
  for (const auto& c : cases) {
    std::vector<std::string> args = {"--database-url", db};
    args.insert(args.end(), c.args.begin(), c.args.end());
    auto r = RunTaskmill(args);
    EXPECT_EQ(r.exit_code, c.code) << c.args[0] << ": " << r.err;
    if (!c.message.empty()) {
      EXPECT_NE(r.err.find(c.message), std::string::npos) << r.err;
    }
  }
  auto conn = testing::Connect(db);
  EXPECT_EQ(conn.Exec("SELECT count(*) FROM taskmill.task", DeadlineIn(std::chrono::seconds(10)))
                .GetInt(0, 0),
            0);
}

TEST(CliTest, UnreachableOrUnmigratedDatabase) {
  auto r = RunTaskmill(
      {"--database-url", "host=/nonexistent port=5432 user=postgres", "dispatch", "taskmill.noop"});
  EXPECT_EQ(r.exit_code, 5);
  EXPECT_NE(r.err.find("cannot use the database"), std::string::npos) << r.err;
  auto fresh = testing::CreateTestDatabase("empty");
  auto r2 = RunTaskmill({"--database-url", fresh, "tasks", "list"});
  EXPECT_EQ(r2.exit_code, 5);
  EXPECT_NE(r2.err.find("taskmill migrate"), std::string::npos) << r2.err;
  auto w = RunTaskmill({"--database-url", fresh, "worker"});
  EXPECT_EQ(w.exit_code, 2);
  EXPECT_NE(w.err.find("taskmill migrate"), std::string::npos) << w.err;
  auto none =
      RunTaskmill({"tasks", "list"}, {"TASKMILL_DATABASE_URL=", "TASKMILL_HOME=/nonexistent"});
  EXPECT_EQ(none.exit_code, 2);
  EXPECT_NE(none.err.find("no database given"), std::string::npos) << none.err;
}

}  // namespace
}  // namespace taskmill
