// LocalPostgres: a server this process runs, for real.
#include "embedded/local_postgres.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "pg/connection.h"
#include "support/test_postgres.h"

namespace taskmill {
namespace {

namespace fs = std::filesystem;
constexpr auto kTimeout = std::chrono::seconds(30);

int64_t Scalar(const std::string& conninfo, const std::string& sql) {
  auto c = pg::Connection::Open(conninfo, DeadlineIn(kTimeout));
  return c.Exec(sql, DeadlineIn(kTimeout)).GetInt(0, 0);
}

// A fresh directory under /tmp that the postgres user can enter.
std::string TempDir() {
  char tmpl[] = "/tmp/tmlp-XXXXXX";
  std::string dir = mkdtemp(tmpl);
  chmod(dir.c_str(), 0755);
  return dir;
}

TEST(LocalPostgresTest, RestartBreaksOldConnectionsAndNewOnesWork) {
  auto& server = testing::TestServer();
  ASSERT_TRUE(server.running());
  std::string db = testing::CreateTestDatabase("lp");
  auto before = pg::Connection::Open(db, DeadlineIn(kTimeout));
  before.ExecScript("CREATE TABLE kept (x int); INSERT INTO kept VALUES (1)", DeadlineIn(kTimeout));
  server.Restart(DeadlineIn(std::chrono::minutes(2)));
  EXPECT_TRUE(server.running());
  EXPECT_THROW(before.Exec("SELECT 1", DeadlineIn(kTimeout)), pg::ConnectionError);
  EXPECT_FALSE(before.ok());
  // A crash-restart keeps committed data.
  EXPECT_EQ(Scalar(db, "SELECT count(*) FROM kept"), 1);
}

TEST(LocalPostgresTest, ConnInfoUrlAndDatabases) {
  auto& server = testing::TestServer();
  EXPECT_NE(server.Url("x").find("postgresql://postgres@%2Ftmp%2F"), std::string::npos)
      << server.Url("x");
  EXPECT_NE(server.ConnInfo().find("dbname=postgres"), std::string::npos);
  server.CreateDatabase("twice", DeadlineIn(kTimeout));
  server.CreateDatabase("twice", DeadlineIn(kTimeout));  // no error
  EXPECT_EQ(Scalar(server.Url("twice"), "SELECT 1"), 1);
  EXPECT_EQ(Scalar(server.ConnInfo(), "SHOW max_connections"), 300);
  // Only the server's user (and root) may use the trust-authenticated socket.
  struct stat st;
  ASSERT_EQ(stat(fs::path(server.data_dir()).parent_path().append("sock").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
}

TEST(LocalPostgresTest, SettingsStopReuseAndCleanup) {
  std::string dir = TempDir();
  LocalPostgresOptions o;
  o.data_dir = dir + "/data";
  o.socket_dir = dir + "/s ock";  // a space: quoting in conninfo, the shell and the setting
  o.fsync = false;
  o.settings = {"application_name=it's a test", "work_mem=8MB"};
  {
    auto server = LocalPostgres::Start(o, DeadlineIn(std::chrono::minutes(2)));
    ASSERT_TRUE(server.running());
    auto c = pg::Connection::Open(server.ConnInfo(), DeadlineIn(kTimeout));
    EXPECT_EQ(c.Exec("SHOW application_name", DeadlineIn(kTimeout)).GetString(0, 0), "it's a test");
    EXPECT_EQ(c.Exec("SHOW work_mem", DeadlineIn(kTimeout)).GetString(0, 0), "8MB");
    EXPECT_EQ(c.Exec("SHOW fsync", DeadlineIn(kTimeout)).GetString(0, 0), "off");
    EXPECT_EQ(Scalar(server.Url(), "SELECT 1"), 1);

    // A second Start on a running cluster reuses the server.
    auto again = LocalPostgres::Start(o, DeadlineIn(std::chrono::minutes(2)));
    EXPECT_TRUE(again.running());
    EXPECT_EQ(Scalar(again.ConnInfo(), "SELECT 2"), 2);
    again.Stop(DeadlineIn(std::chrono::minutes(1)));
    EXPECT_FALSE(again.running());
    EXPECT_THROW(pg::Connection::Open(server.ConnInfo(), DeadlineIn(kTimeout)),
                 pg::ConnectionError);
    // Stopping a server that is already gone is not an error.
    server.Stop(DeadlineIn(std::chrono::minutes(1)));
    EXPECT_FALSE(server.running());
  }
  // Not ephemeral: the cluster stays, and starts again with its data.
  EXPECT_TRUE(fs::exists(dir + "/data/PG_VERSION"));
  {
    auto server = LocalPostgres::Start(o, DeadlineIn(std::chrono::minutes(2)));
    EXPECT_EQ(Scalar(server.ConnInfo(), "SELECT 3"), 3);
  }  // the destructor stops it
  EXPECT_FALSE(fs::exists(dir + "/data/postmaster.pid"));

  // Ephemeral: gone after Stop, even when the server was killed first.
  o.ephemeral = true;
  {
    auto server = LocalPostgres::Start(o, DeadlineIn(std::chrono::minutes(2)));
    std::ifstream pidfile(dir + "/data/postmaster.pid");
    pid_t pid = 0;
    ASSERT_TRUE(pidfile >> pid);
    kill(pid, SIGKILL);
    server.Stop(DeadlineIn(std::chrono::minutes(1)));
  }
  EXPECT_FALSE(fs::exists(dir + "/data"));
  EXPECT_FALSE(fs::exists(dir + "/s ock"));
  fs::remove_all(dir);
}

TEST(LocalPostgresTest, ASharedSocketDirectoryIsLeftAlone) {
  std::string dir = TempDir();
  std::string shared = dir + "/shared";
  fs::create_directory(shared);
  chmod(shared.c_str(), 01777);  // like /tmp
  std::ofstream(shared + "/someone-elses-file") << "x";
  LocalPostgresOptions o;
  o.data_dir = dir + "/data";
  o.socket_dir = shared;
  o.ephemeral = true;
  o.fsync = false;
  {
    auto server = LocalPostgres::Start(o, DeadlineIn(std::chrono::minutes(2)));
    EXPECT_EQ(Scalar(server.ConnInfo(), "SELECT 1"), 1);
  }
  struct stat st;
  ASSERT_EQ(stat(shared.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 01777u);
  EXPECT_EQ(st.st_uid, geteuid());
  EXPECT_TRUE(fs::exists(shared + "/someone-elses-file"));
  EXPECT_FALSE(fs::exists(shared + "/.s.PGSQL.5432"));
  EXPECT_FALSE(fs::exists(dir + "/data"));
  fs::remove_all(dir);
}

TEST(LocalPostgresTest, BadOptionsFailWithAReason) {
  LocalPostgresOptions o;
  o.data_dir = "/tmp/tmlp-unused/data";
  o.socket_dir = "/tmp/" + std::string(120, 's');
  try {
    LocalPostgres::Start(o, DeadlineIn(kTimeout));
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("too long"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists("/tmp/tmlp-unused"));

  // A setting the server rejects: the exception carries the server's words.
  std::string dir = TempDir();
  o.data_dir = dir + "/data";
  o.socket_dir = dir + "/sock";
  o.ephemeral = true;
  o.fsync = false;
  o.settings = {"no_such_setting_at_all=1"};
  try {
    LocalPostgres::Start(o, DeadlineIn(std::chrono::minutes(2)));
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("no_such_setting_at_all"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(dir + "/data"));  // ephemeral: cleaned up on failure too

  // As root, a data directory the postgres user cannot reach is refused
  // before initdb runs.
  if (geteuid() == 0) {
    fs::create_directory(dir + "/private");
    chmod((dir + "/private").c_str(), 0700);
    o.data_dir = dir + "/private/pg/data";
    o.settings.clear();
    try {
      LocalPostgres::Start(o, DeadlineIn(std::chrono::minutes(2)));
      FAIL();
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find("cannot reach"), std::string::npos) << e.what();
    }
  }
  fs::remove_all(dir);
}

TEST(LocalPostgresTest, FindsTheServerBinaries) {
  auto bindir = FindPostgresBinDir();
  EXPECT_TRUE(fs::exists(bindir / "pg_ctl")) << bindir;
  EXPECT_TRUE(fs::exists(bindir / "initdb")) << bindir;
}

}  // namespace
}  // namespace taskmill
