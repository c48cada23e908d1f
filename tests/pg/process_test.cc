// Subprocess and LocalPostgres: owned processes, for real.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>

#include <fstream>
#include <sstream>

#include "common/subprocess.h"
#include "pg/connection.h"
#include "support/test_postgres.h"

namespace taskmill {
namespace {

SubprocessOptions Argv(std::vector<std::string> argv) {
  SubprocessOptions o;
  o.argv = std::move(argv);
  return o;
}

TEST(SubprocessTest, ExitCodesSignalsAndDeadlines) {
  auto ok = Subprocess::Start(Argv({"/bin/sh", "-c", "exit 3"}));
  auto st = ok.Wait(DeadlineIn(std::chrono::seconds(10)));
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(ExitCodeOf(*st), 3);

  auto sleeper = Subprocess::Start(Argv({"/bin/sleep", "10"}));
  EXPECT_TRUE(sleeper.running());
  EXPECT_FALSE(sleeper.Wait(DeadlineIn(std::chrono::milliseconds(100))).has_value());
  EXPECT_TRUE(sleeper.Signal(SIGTERM));
  auto killed = sleeper.Wait(DeadlineIn(std::chrono::seconds(10)));
  ASSERT_TRUE(killed.has_value());
  EXPECT_TRUE(WIFSIGNALED(*killed));
  EXPECT_EQ(ExitCodeOf(*killed), 128 + SIGTERM);
  EXPECT_FALSE(sleeper.Signal(SIGTERM));  // gone
}

TEST(SubprocessTest, StopEscalatesToSigkill) {
  auto stubborn = Subprocess::Start(Argv({"/bin/sh", "-c", "trap '' TERM; exec sleep 30"}));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  int st = stubborn.Stop(DeadlineIn(std::chrono::milliseconds(300)));
  EXPECT_TRUE(WIFSIGNALED(st));
  EXPECT_EQ(WTERMSIG(st), SIGKILL);
}

TEST(SubprocessTest, ExecFailureIsAnException) {
  EXPECT_THROW(Subprocess::Start(Argv({"/no/such/program"})), std::system_error);
}

TEST(SubprocessTest, OutputFileEnvironmentAndDestructorKill) {
  std::string out = ::testing::TempDir() + "/subprocess-out.txt";
  std::remove(out.c_str());
  SubprocessOptions o;
  o.argv = {"/bin/sh", "-c", "echo \"value=$TASKMILL_TEST_VAR\"; echo oops >&2"};
  o.env = {"TASKMILL_TEST_VAR=42"};
  o.output_file = out;
  auto p = Subprocess::Start(o);
  ASSERT_TRUE(p.Wait(DeadlineIn(std::chrono::seconds(10))).has_value());
  std::ifstream in(out);
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_NE(ss.str().find("value=42"), std::string::npos);
  EXPECT_NE(ss.str().find("oops"), std::string::npos);

  pid_t pid;
  {
    auto sleeper = Subprocess::Start(Argv({"/bin/sleep", "30"}));
    pid = sleeper.pid();
  }
  // Reaped by the destructor: no such process any more.
  EXPECT_NE(kill(pid, 0), 0);
}

TEST(LocalPostgresTest, RestartBreaksOldConnectionsAndNewOnesWork) {
  auto& server = testing::TestServer();
  std::string db = testing::CreateTestDatabase("lp");
  auto before = pg::Connection::Open(db, DeadlineIn(std::chrono::seconds(10)));
  server.Restart(DeadlineIn(std::chrono::minutes(2)));
  EXPECT_THROW(before.Exec("SELECT 1", DeadlineIn(std::chrono::seconds(10))), pg::ConnectionError);
  auto after = pg::Connection::Open(db, DeadlineIn(std::chrono::seconds(10)));
  EXPECT_EQ(after.Exec("SELECT 1", DeadlineIn(std::chrono::seconds(10))).GetInt(0, 0), 1);
  EXPECT_NE(server.Url("x").find("postgresql://postgres@"), std::string::npos);
}

}  // namespace
}  // namespace taskmill
