// Failover to a synchronous standby under load. The test runs a primary and
// a synchronous streaming standby of its own (initdb, pg_basebackup -R), and
// workers and an API server whose database URL names both Unix sockets with
// target_session_attrs=read-write. Tasks with exclusive and shared resources
// are dispatched through the CLI, the API and the store; the primary is
// stopped with `pg_ctl stop -m immediate` mid-run, the standby promoted, and
// dispatching goes on. Then, on the new primary: every acknowledged task
// exists and ended exactly once, no task ran twice, no two conflicting tasks
// overlapped or ran out of creation order, and every queue drained.
//
// What taskmill promises here (docs/operations.md, "Failover"): a dispatch
// that was acknowledged was committed on the standby too (synchronous
// replication), so it survives; a task runs at most once; a task that was
// running while its worker had no database completes normally if the worker
// reaches the new primary within its TTL (the outcome is kept and written
// there), else it ends failed, either by its worker ("Stopped: the worker
// lost the database for longer than its TTL.") or by the janitor ("Worker
// has gone missing."); a task claimed by a statement whose answer was lost
// is put back in line, never run by the claimer.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include <fmt/format.h>

#include "embedded/local_postgres.h"
#include "store/migrate.h"
#include "store/task_store.h"
#include "support/taskmill_fixture.h"
#include "taskmill/registry.h"

namespace taskmill {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

using testing::FreePort;

// One task to dispatch: a short sleep on one or two of four resources.
struct Shape {
  std::vector<std::string> exclusive, shared;
  double seconds;
};

Shape RandomShape(std::mt19937& rng) {
  std::uniform_int_distribution<int> res(0, 3), coin(0, 9);
  Shape s;
  std::string first = fmt::format("R{}", res(rng));
  (coin(rng) < 5 ? s.exclusive : s.shared).push_back(first);
  if (coin(rng) < 3) {
    std::string second = fmt::format("R{}", res(rng));
    if (second != first) s.shared.push_back(second);
  }
  s.seconds = 0.01 * (1 + coin(rng));
  return s;
}

class FailoverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/tmfo-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    chmod(dir_.c_str(), 0755);
    journal_ = dir_ + "/journal";
    // The journal is appended to by task processes (root here, or the test's
    // user): a file of ours, writable by us.
    std::ofstream(journal_).flush();
  }
  void TearDown() override {
    if (HasFailure()) {
      testing::PrintLogs(logs_);
      std::cerr << "---- primary log\n" << testing::ReadFile(dir_ + "/p/postgres.log");
      std::cerr << "---- standby log\n" << testing::ReadFile(dir_ + "/s/postgres.log");
    }
    for (auto& p : processes_) p.Stop(DeadlineIn(5s), SIGKILL);
    processes_.clear();
    standby_.reset();
    primary_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  std::string dir_;
  std::string journal_;
  std::optional<LocalPostgres> primary_, standby_;
  std::vector<Subprocess> processes_;
  std::vector<std::string> logs_;
};

TEST_F(FailoverTest, AcknowledgedTasksSurvivePromotionOfTheSynchronousStandby) {
  LocalPostgresOptions po;
  po.data_dir = dir_ + "/p/data";
  po.socket_dir = dir_ + "/p/sock";
  po.ephemeral = true;
  po.fsync = false;
  // Every commit waits until the standby has flushed it.
  po.settings = {"wal_level=replica", "synchronous_standby_names=*", "synchronous_commit=on"};
  primary_.emplace(LocalPostgres::Start(po, DeadlineIn(2min)));
  LocalPostgresOptions so;
  so.data_dir = dir_ + "/s/data";
  so.socket_dir = dir_ + "/s/sock";
  so.ephemeral = true;
  so.fsync = false;
  so.standby_of = po.socket_dir;
  standby_.emplace(LocalPostgres::Start(so, DeadlineIn(2min)));
  {
    auto c = testing::Connect(primary_->ConnInfo());
    ASSERT_TRUE(testing::WaitFor(
        [&] {
          return c.Exec("SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'",
                        DeadlineIn(10s))
                     .GetInt(0, 0) == 1;
        },
        30s));
  }
  primary_->CreateDatabase("fo", DeadlineIn(1min));
  {
    auto c = testing::Connect(primary_->ConnInfo("fo"));
    auto applied = store::Migrate(c, DeadlineIn(1min));
    ASSERT_TRUE(applied.ok()) << applied.error().message;
    TaskRegistry registry;
    RegisterBuiltins(registry);
    store::RegisterFunctions(c, registry.Names(), DeadlineIn(10s));
  }

  // libpq's multi-host form: each host a socket directory, tried in order;
  // target_session_attrs=read-write skips a server that is a standby.
  const std::string url = fmt::format(
      "postgresql:///fo?host={},{}&port=5432,5432&user=postgres&target_session_attrs=read-write"
      "&connect_timeout=2",
      po.socket_dir.string(), so.socket_dir.string());

  const std::vector<std::string> liveness = {"--heartbeat-interval", "1", "--ttl", "10"};
  for (int i = 0; i < 2; ++i) {
    std::vector<std::string> extra = liveness;
    processes_.push_back(testing::StartWorker(url, fmt::format("fo{}", i), extra, &logs_));
  }
  int port = FreePort();
  {
    std::vector<std::string> args = {
        "--database-url", url, "api", "--listen", fmt::format("127.0.0.1:{}", port),
        "--threads",      "4"};
    args.insert(args.end(), liveness.begin(), liveness.end());
    std::string log;
    processes_.push_back(testing::StartTaskmill(args, &log));
    logs_.push_back(log);
  }
  httplib::Client http("127.0.0.1", port);
  http.set_connection_timeout(2, 0);
  http.set_read_timeout(20, 0);
  ASSERT_TRUE(testing::WaitFor(
      [&] {
        auto r = http.Get("/pulp/api/v3/status/");
        return r && r->status == 200;
      },
      30s));
  {
    auto c = testing::Connect(primary_->ConnInfo("fo"));
    ASSERT_TRUE(testing::WaitFor(
        [&] {
          return c.Exec("SELECT count(*) FROM taskmill.app", DeadlineIn(10s)).GetInt(0, 0) == 3;
        },
        30s));
  }

  // --- the dispatchers: only acknowledged dispatches are counted ----------
  std::mutex mu;
  std::map<std::string, std::string> acked;  // task id -> how it was dispatched
  std::map<std::string, int> acked_after_promotion;
  std::atomic<bool> promoted{false}, stop{false};
  auto ack = [&](const std::string& id, const std::string& via) {
    std::lock_guard<std::mutex> lock(mu);
    acked[id] = via;
    if (promoted) ++acked_after_promotion[via];
  };
  auto kwargs = [&](const Shape& s) {
    return nlohmann::json{{"seconds", s.seconds}, {"journal", journal_}};
  };
  std::vector<std::thread> dispatchers;
  dispatchers.emplace_back([&] {  // the store, on a connection it reopens
    std::mt19937 rng(1);
    pg::Connection conn;
    while (!stop) {
      Shape s = RandomShape(rng);
      try {
        if (!conn.ok()) conn = pg::Connection::Open(url, DeadlineIn(3s));
        DispatchRequest req;
        req.name = "test.sleep";
        req.kwargs = kwargs(s);
        req.exclusive_resources = s.exclusive;
        req.shared_resources = s.shared;
        auto out = store::DispatchTask(conn, req, std::nullopt, DeadlineIn(10s));
        if (out.ok()) ack(out->id, "store");
      } catch (const pg::Error&) {
        conn = pg::Connection();
        std::this_thread::sleep_for(100ms);
      }
      std::this_thread::sleep_for(40ms);
    }
  });
  dispatchers.emplace_back([&] {  // the API
    std::mt19937 rng(2);
    httplib::Client c("127.0.0.1", port);
    c.set_connection_timeout(2, 0);
    c.set_read_timeout(20, 0);
    while (!stop) {
      Shape s = RandomShape(rng);
      nlohmann::json body = {{"name", "test.sleep"},
                             {"kwargs", kwargs(s)},
                             {"exclusive_resources", s.exclusive},
                             {"shared_resources", s.shared}};
      auto r = c.Post("/pulp/api/v3/tasks/", body.dump(), "application/json");
      if (r && r->status == 202) {
        auto j = nlohmann::json::parse(r->body, nullptr, false);
        if (!j.is_discarded() && j.contains("task")) {
          std::string href = j["task"];
          href.pop_back();  // the trailing slash
          ack(href.substr(href.rfind('/') + 1), "api");
        }
      } else {
        std::this_thread::sleep_for(100ms);
      }
      std::this_thread::sleep_for(40ms);
    }
  });
  dispatchers.emplace_back([&] {  // the CLI
    std::mt19937 rng(3);
    while (!stop) {
      Shape s = RandomShape(rng);
      std::vector<std::string> args = {"--database-url", url,        "dispatch",
                                       "test.sleep",     "--kwargs", kwargs(s).dump()};
      for (const auto& r : s.exclusive) args.insert(args.end(), {"--exclusive", r});
      for (const auto& r : s.shared) args.insert(args.end(), {"--shared", r});
      auto out = testing::RunTaskmill(args);
      std::string id = out.out.substr(0, out.out.find_first_of(" \n"));
      if (out.exit_code == 0 && id.size() == 36) ack(id, "cli");
      if (out.exit_code != 0) std::this_thread::sleep_for(100ms);
    }
  });

  std::this_thread::sleep_for(5s);
  size_t acked_before = [&] {
    std::lock_guard<std::mutex> lock(mu);
    return acked.size();
  }();
  primary_->StopImmediately(DeadlineIn(30s));
  std::this_thread::sleep_for(1s);
  standby_->Promote(DeadlineIn(60s));
  promoted = true;
  const double promoted_at =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  std::this_thread::sleep_for(8s);
  stop = true;
  for (auto& t : dispatchers) t.join();

  // --- checks, on the new primary ------------------------------------------
  auto conn = testing::Connect(standby_->ConnInfo("fo"));
  auto scalar = [&](const std::string& sql) {
    return conn.Exec(sql, DeadlineIn(30s)).GetInt(0, 0);
  };
  ASSERT_TRUE(testing::WaitFor(
      [&] {
        return scalar(
                   "SELECT count(*) FROM taskmill.task WHERE state IN "
                   "('waiting', 'running', 'canceling')") == 0;
      },
      60s))
      << scalar("SELECT count(*) FROM taskmill.task WHERE state IN ('waiting', 'running')")
      << " tasks unfinished";

  std::map<std::string, int> runs;
  {
    std::ifstream in(journal_);
    std::string id;
    int pid;
    while (in >> id >> pid) ++runs[id];
  }

  struct Row {
    std::string id, state, reason, worker;
    int64_t seq;
    double started, finished;
    std::vector<std::string> exclusive, shared;
  };
  std::map<std::string, Row> rows;
  auto res = conn.Exec(
      "SELECT id::text, seq, state, coalesce(error->>'reason', error->>'description', ''), "
      "coalesce(extract(epoch FROM started_at), -1)::float8, "
      "extract(epoch FROM finished_at)::float8, array_to_json(exclusive_resources)::text, "
      "array_to_json(shared_resources)::text, coalesce(worker_name, '') FROM taskmill.task",
      DeadlineIn(30s));
  for (int i = 0; i < res.rows(); ++i) {
    Row r;
    r.id = res.GetString(i, 0);
    r.seq = res.GetInt(i, 1);
    r.state = res.GetString(i, 2);
    r.reason = res.GetString(i, 3);
    r.started = res.GetDouble(i, 4);
    r.finished = res.GetDouble(i, 5);
    r.exclusive = nlohmann::json::parse(res.GetString(i, 6)).get<std::vector<std::string>>();
    r.shared = nlohmann::json::parse(res.GetString(i, 7)).get<std::vector<std::string>>();
    r.worker = res.GetString(i, 8);
    rows[r.id] = r;
  }

  // Enough happened on both sides of the failover, through every door.
  std::map<std::string, int> by_via;
  for (const auto& [id, via] : acked) ++by_via[via];
  EXPECT_GT(acked_before, 20u);
  for (const char* via : {"store", "api", "cli"}) {
    EXPECT_GT(by_via[via], 0) << via;
    EXPECT_GT(acked_after_promotion[via], 0)
        << via << " dispatched nothing through the new primary";
  }

  // Every acknowledged task exists and ended exactly once; none ran twice.
  const std::set<std::string> allowed_failures = {
      "Worker has gone missing.", "Stopped: the worker lost the database for longer than its TTL."};
  int completed = 0, failed = 0;
  for (const auto& [id, via] : acked) {
    auto it = rows.find(id);
    ASSERT_NE(it, rows.end()) << "acknowledged task " << id << " (" << via << ") was lost";
  }
  for (const auto& [id, r] : rows) {
    EXPECT_LE(runs[id], 1) << "task " << id << " ran " << runs[id] << " times";
    if (r.state == "completed") {
      ++completed;
      EXPECT_EQ(runs[id], 1) << "completed task " << id << " never ran";
    } else {
      ++failed;
      EXPECT_EQ(r.state, "failed") << id;
      EXPECT_TRUE(allowed_failures.count(r.reason)) << id << ": " << r.reason;
    }
  }
  EXPECT_GT(completed, 0);
  std::cerr << fmt::format(
      "failover: {} tasks acknowledged ({} before the stop; store {}, api {}, cli {}), {} "
      "in the table, {} completed, {} failed as promised\n",
      acked.size(), acked_before, by_via["store"], by_via["api"], by_via["cli"], rows.size(),
      completed, failed);

  // No overlap of conflicting tasks, and conflicting tasks started in
  // creation order.
  std::map<std::string, std::vector<std::pair<const Row*, bool>>> by_resource;
  for (const auto& [id, r] : rows) {
    if (r.started < 0) continue;  // never started (none should be: all drained)
    for (const auto& x : r.exclusive) by_resource[x].push_back({&r, true});
    for (const auto& x : r.shared) by_resource[x].push_back({&r, false});
  }
  for (auto& [resource, uses] : by_resource) {
    std::sort(uses.begin(), uses.end(),
              [](const auto& a, const auto& b) { return a.first->seq < b.first->seq; });
    for (size_t i = 0; i < uses.size(); ++i) {
      for (size_t j = i + 1; j < uses.size(); ++j) {
        if (!uses[i].second && !uses[j].second) continue;  // both shared
        const Row& a = *uses[i].first;
        const Row& b = *uses[j].first;
        EXPECT_LE(a.finished, b.started)
            << resource << ": task " << b.id << " (seq " << b.seq << ") started before " << a.id
            << " (seq " << a.seq << ") finished";
      }
    }
  }

  // Nothing stays locked: every queue drained, no release left pending.
  EXPECT_EQ(scalar("SELECT count(*) FROM taskmill.task_resource"), 0);
  // A release is examined by the next claim of any worker, not by the
  // transaction that made it; idle workers poll, so none stays pending.
  EXPECT_TRUE(testing::WaitFor(
      [&] { return scalar("SELECT count(*) FROM taskmill.task WHERE release_pending") == 0; },
      std::chrono::seconds(15)))
      << scalar("SELECT count(*) FROM taskmill.task WHERE release_pending")
      << " release(s) still pending";

  // The processes reconnected by themselves: both workers ran tasks on the
  // new primary, and the API heartbeats there.
  std::map<std::string, int> ran_after;
  for (const auto& [id, r] : rows) {
    if (r.state == "completed" && r.started > promoted_at + 1) ++ran_after[r.worker];
  }
  EXPECT_GT(ran_after["fo0"], 0);
  EXPECT_GT(ran_after["fo1"], 0);
  EXPECT_EQ(scalar("SELECT count(*) FROM taskmill.app WHERE app_type = 'api' AND "
                   "last_heartbeat > clock_timestamp() - interval '5 seconds'"),
            1);
  auto status = http.Get("/pulp/api/v3/status/");
  ASSERT_TRUE(status);
  EXPECT_EQ(status->status, 200);
}

}  // namespace
}  // namespace taskmill
