// `taskmill dispatch --file`: a file of tasks, one JSON object per line,
// dispatched all or nothing in file order.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include <nlohmann/json.hpp>

#include "support/taskmill_fixture.h"
#include "support/test_postgres.h"

namespace taskmill {
namespace {

using nlohmann::json;
using testing::RunTaskmill;

std::string WriteFile(const std::string& name, const std::string& text) {
  std::string path = ::testing::TempDir() + "/" + name + "-" + std::to_string(getpid());
  std::ofstream(path) << text;
  return path;
}

TEST(CliDispatchFileTest, DispatchesEveryLineInOrderAndPrintsTheIds) {
  std::string db = testing::MigratedTestDatabase();
  std::string text;
  for (int i = 0; i < 2500; ++i) {
    text +=
        json({{"name", "taskmill.echo"}, {"args", {i}}, {"exclusive_resources", {"repo"}}}).dump() +
        "\n";
    if (i == 10) text += "\n";  // blank lines are skipped
  }
  auto path = WriteFile("tasks.jsonl", text);
  auto d = RunTaskmill({"--database-url", db, "dispatch", "--file", path});
  ASSERT_EQ(d.exit_code, 0) << d.err;
  std::vector<std::string> ids;
  for (size_t at = 0, nl; (nl = d.out.find('\n', at)) != std::string::npos; at = nl + 1) {
    ids.push_back(d.out.substr(at, nl - at));
  }
  ASSERT_EQ(ids.size(), 2500u);
  // File order is creation order: the args count up along seq.
  auto conn = testing::Connect(db);
  auto res = conn.Exec("SELECT id::text, args->>0 FROM taskmill.task ORDER BY seq",
                       DeadlineIn(std::chrono::seconds(30)));
  ASSERT_EQ(res.rows(), 2500);
  for (int i = 0; i < res.rows(); ++i) {
    EXPECT_EQ(res.GetString(i, 0), ids[i]);
    EXPECT_EQ(res.GetString(i, 1), std::to_string(i));
  }

  // From standard input too.
  auto input = WriteFile("stdin.jsonl", R"({"name": "taskmill.noop"})"
                                        "\n");
  auto output = input + ".out";
  std::string command = std::string(TASKMILL_BINARY) + " --database-url '" + db +
                        "' dispatch --file - < " + input + " > " + output;
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  EXPECT_EQ(testing::ReadFile(output).size(), 37u);  // one id and a newline
}

TEST(CliDispatchFileTest, ABadLineIsNamedAndNothingIsDispatched) {
  std::string db = testing::MigratedTestDatabase();
  auto conn = testing::Connect(db);
  auto count = [&] {
    return conn.Exec("SELECT count(*) FROM taskmill.task", DeadlineIn(std::chrono::seconds(30)))
        .GetInt(0, 0);
  };
  std::string good = R"({"name": "taskmill.noop", "exclusive_resources": ["a"]})"
                     "\n";
  struct Case {
    std::string bad_line;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"{not json", ":3: not valid JSON"},
      {"[1, 2]", ":3: a task must be a JSON object"},
      {R"({"name": "taskmill.noop", "args": {}})", ":3: args must be a JSON array"},
      {R"({"name": "no.such"})", ":3: unknown task function \"no.such\""},
  };
  for (const auto& c : cases) {
    auto path = WriteFile("bad.jsonl", good + good + c.bad_line + "\n" + good);
    auto d = RunTaskmill({"--database-url", db, "dispatch", "--file", path});
    EXPECT_EQ(d.exit_code, 2) << c.bad_line << ": " << d.err;
    EXPECT_NE(d.err.find(path + c.message), std::string::npos) << d.err;
    EXPECT_EQ(count(), 0) << c.bad_line;
  }
  // A line beyond the first 10,000 (a second statement of the same
  // transaction): still nothing dispatched.
  std::string many;
  for (int i = 0; i < 10005; ++i) many += good;
  many += R"({"name": "taskmill.noop", "shared_resources": [""]})"
          "\n";
  auto path = WriteFile("many.jsonl", many);
  auto d = RunTaskmill({"--database-url", db, "dispatch", "--file", path});
  EXPECT_EQ(d.exit_code, 2) << d.err;
  EXPECT_NE(d.err.find(path + ":10006: empty resource name"), std::string::npos) << d.err;
  EXPECT_EQ(count(), 0);

  auto missing = RunTaskmill({"--database-url", db, "dispatch", "--file", "/nonexistent/x"});
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_NE(missing.err.find("cannot read /nonexistent/x"), std::string::npos) << missing.err;
  auto empty = RunTaskmill({"--database-url", db, "dispatch", "--file", WriteFile("e", "\n")});
  EXPECT_EQ(empty.exit_code, 2);
  auto both = RunTaskmill({"--database-url", db, "dispatch", "taskmill.noop", "--file", path});
  EXPECT_EQ(both.exit_code, 2);
  auto neither = RunTaskmill({"--database-url", db, "dispatch"});
  EXPECT_EQ(neither.exit_code, 2);
  EXPECT_NE(neither.err.find("NAME or --file"), std::string::npos) << neither.err;
}

}  // namespace
}  // namespace taskmill
