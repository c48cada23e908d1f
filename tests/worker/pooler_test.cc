// Behind a transaction-pooling pgbouncer: workers and dispatchers keep no
// session state that correctness depends on, so a pool far smaller than the
// number of clients, handing server connections from one client to another
// between transactions, changes nothing.
#include <gtest/gtest.h>

#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <fmt/format.h>

#include "store/task_store.h"
#include "support/taskmill_fixture.h"
#include "support/test_postgres.h"

namespace taskmill {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

class PoolerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (access("/usr/sbin/pgbouncer", X_OK) != 0) GTEST_SKIP() << "pgbouncer is not installed";
    direct_ = testing::MigratedTestDatabase();
    std::string dbname = direct_.substr(direct_.rfind("dbname=") + 7);
    char tmpl[] = "/tmp/tmpgb-XXXXXX";
    dir_ = mkdtemp(tmpl);
    chmod(dir_.c_str(), 0755);
    {
      std::ofstream ini(dir_ + "/pgbouncer.ini");
      ini << "[databases]\n* = host=" << testing::TestServer().socket_dir().string()
          << " port=5432\n[pgbouncer]\nlisten_addr =\nlisten_port = 6432\nunix_socket_dir = "
          << dir_ << "\nauth_type = trust\nauth_file = " << dir_
          << "/users.txt\npool_mode = transaction\nmax_client_conn = 100\n"
             "default_pool_size = 3\nlogfile = "
          << dir_ << "/pgbouncer.log\n";
      std::ofstream users(dir_ + "/users.txt");
      users << "\"postgres\" \"\"\n";
    }
    SubprocessOptions so;
    if (geteuid() == 0) {
      passwd* pw = getpwnam("postgres");
      ASSERT_NE(pw, nullptr);
      for (const auto& f : fs::directory_iterator(dir_)) chown(f.path().c_str(), pw->pw_uid, -1);
      chown(dir_.c_str(), pw->pw_uid, -1);
      so.argv = {"/usr/sbin/runuser", "-u", "postgres", "--"};
    }
    so.argv.push_back("/usr/sbin/pgbouncer");
    so.argv.push_back(dir_ + "/pgbouncer.ini");
    so.working_dir = "/";
    so.output_file = dir_ + "/stdout.log";
    pgbouncer_ = Subprocess::Start(so);
    pooled_ = fmt::format("host={} port=6432 user=postgres dbname={}", dir_, dbname);
    ASSERT_TRUE(testing::WaitFor(
        [&] {
          try {
            testing::Connect(pooled_).Exec("SELECT 1", DeadlineIn(5s));
            return true;
          } catch (const pg::Error&) {
            return false;
          }
        },
        20s))
        << testing::ReadFile(dir_ + "/pgbouncer.log");
  }
  void TearDown() override {
    if (HasFailure()) testing::PrintLogs(logs_);
    for (auto& w : workers_) w.Stop(DeadlineIn(10s));
    pgbouncer_.Stop(DeadlineIn(10s));
    std::error_code ec;
    if (!dir_.empty()) fs::remove_all(dir_, ec);
  }

  std::string direct_, pooled_, dir_;
  Subprocess pgbouncer_;
  std::vector<Subprocess> workers_;
  std::vector<std::string> logs_;
};

TEST_F(PoolerTest, WorkersAndDispatchersThroughATransactionPooler) {
  // Three workers and a dispatcher share 3 server connections. LISTEN goes
  // straight to PostgreSQL for one worker; the others poll. The first is
  // told not to prepare statements; the others and the dispatcher find out
  // that prepared statements do not hold here and fall back on their own.
  std::vector<std::vector<std::string>> extra = {{"--listen-url", direct_},
                                                 {"--no-listen", "--poll-interval", "0.2"},
                                                 {"--no-listen", "--poll-interval", "0.2"}};
  for (size_t i = 0; i < extra.size(); ++i) {
    std::vector<std::string> args = {"--database-url", pooled_};
    if (i == 0) args.push_back("--no-prepared-statements");
    for (const char* a : {"worker", "--name"}) args.push_back(a);
    args.push_back(fmt::format("pooled-{}", i));
    args.insert(args.end(), extra[i].begin(), extra[i].end());
    std::string log;
    workers_.push_back(testing::StartTaskmill(args, &log));
    logs_.push_back(log);
  }
  auto conn = testing::Connect(pooled_);
  std::vector<std::string> ids;
  for (int i = 0; i < 90; ++i) {
    DispatchRequest req;
    req.name = "taskmill.sleep";
    req.kwargs = {{"seconds", 0.005}};
    req.exclusive_resources = {fmt::format("x{}", i % 3)};
    if (i % 4 == 0) req.shared_resources = {"s"};
    auto out = store::DispatchTask(conn, req, std::nullopt, DeadlineIn(30s));
    ASSERT_TRUE(out.ok()) << out.error().message;
    ids.push_back(out->id);
  }
  DispatchRequest long_one;
  long_one.name = "taskmill.sleep";
  long_one.kwargs = {{"seconds", 600}};
  long_one.exclusive_resources = {"x0"};
  auto cancel_me = store::DispatchTask(conn, long_one, std::nullopt, DeadlineIn(30s));
  ASSERT_TRUE(cancel_me.ok());
  auto count = [&](const std::string& where) {
    return conn.Exec("SELECT count(*) FROM taskmill.task WHERE " + where, DeadlineIn(30s))
        .GetInt(0, 0);
  };
  ASSERT_TRUE(testing::WaitFor([&] { return count("state = 'completed'") == 90; }, 120s))
      << count("state = 'completed'") << " completed";
  ASSERT_TRUE(testing::WaitFor([&] { return count("state = 'running'") == 1; }, 30s));
  auto st = store::CancelTask(conn, cancel_me->id, DeadlineIn(30s));
  ASSERT_TRUE(st.ok());
  ASSERT_TRUE(testing::WaitFor([&] { return count("state = 'canceled'") == 1; }, 30s));
  EXPECT_EQ(count("state NOT IN ('completed', 'canceled')"), 0);
  // No two conflicting tasks overlapped, and all three workers took part.
  EXPECT_EQ(
      conn.Exec("SELECT count(*) FROM taskmill.task a JOIN taskmill.task b ON a.seq < b.seq "
                "WHERE (a.exclusive_resources && (b.exclusive_resources || b.shared_resources) "
                "    OR b.exclusive_resources && (a.exclusive_resources || a.shared_resources)) "
                "AND b.started_at < a.finished_at",
                DeadlineIn(30s))
          .GetInt(0, 0),
      0);
  EXPECT_EQ(conn.Exec("SELECT count(DISTINCT worker_name) FROM taskmill.task", DeadlineIn(30s))
                .GetInt(0, 0),
            3);
}

}  // namespace
}  // namespace taskmill
