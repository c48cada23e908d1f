// taskmill-bench: the benchmark program. Figures go to docs/benchmarks.md
// with the command that produced them; no test asserts a time.
//
//   taskmill-bench dispatch [--connections N] [--seconds S] [--pipeline D] [--batch B]
//   taskmill-bench e2e      [--workers N] [--in-process] [--tasks N]
//   taskmill-bench latency  [--tasks N] [--interval-ms MS]
//   taskmill-bench backlog  [--waiting N]
//   taskmill-bench idle     [--workers N] [--tasks N] [--interval-ms MS] [--worker-arg ARG]...
//   taskmill-bench recovery [--heartbeat-interval S] [--ttl S]
//   taskmill-bench burndown [--workers N] [--in-process] [--tasks N]
//                           [--resources fresh|none] [--insert-pipeline D]
//                           [--insert-connections N]
//                           [--worker-arg ARG]...
//   taskmill-bench compare OLD.jsonl NEW.jsonl
//   taskmill-bench old-snapshot [--rate N] [--before S] [--hold S] [--after S]
//
// Each scenario runs --runs times (default 3) and prints every run and the
// median; with --json-out FILE it also appends them to FILE as JSON lines
// (apps/bench_results.h). Without --database-url it starts its own PostgreSQL
// (fsync on, the server's defaults otherwise) in a temporary directory.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <thread>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include "bench_results.h"
#include "common/subprocess.h"
#include "embedded/local_postgres.h"
#include "pg/connection.h"
#include "service/task_service.h"
#include "store/migrate.h"
#include "store/task_store.h"
#include "taskmill/registry.h"

namespace taskmill::bench {
namespace {

namespace fs = std::filesystem;
constexpr auto kTimeout = std::chrono::seconds(60);

struct Options {
  std::string database_url;
  int runs = 3;
  int connections = 1;
  double seconds = 5;
  int pipeline = 1;
  int batch = 1;
  int workers = 2;
  bool in_process = false;
  int tasks = 5000;
  int interval_ms = 20;
  int waiting = 100000;
  double heartbeat_interval = 5;
  double ttl = 30;
  std::string json_out;
  std::string commit;
  std::string resources = "fresh";
  int insert_pipeline = 64;
  int insert_connections = 8;
  std::vector<std::string> worker_args;
  std::string compare_old, compare_new;
  // old-snapshot
  double rate = 110;
  double before = 30;
  double hold = 120;
  double after = 60;
};

ResultLog Log(const Options& o) { return ResultLog(o.json_out, o.commit); }

std::string TaskmillBinary() {
  std::error_code ec;
  auto self = fs::read_symlink("/proc/self/exe", ec);
  return (self.parent_path() / "taskmill").string();
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p * (v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

// A fresh database for one run.
class Database {
 public:
  explicit Database(const Options& o) {
    if (o.database_url.empty()) {
      static std::optional<LocalPostgres> server;
      if (!server) {
        char tmpl[] = "/tmp/tmbench-XXXXXX";
        fs::path dir = mkdtemp(tmpl);
        fs::permissions(dir, fs::perms::all ^ (fs::perms::group_write | fs::perms::others_write));
        LocalPostgresOptions lo;
        lo.data_dir = dir / "data";
        lo.socket_dir = dir / "sock";
        lo.ephemeral = true;
        lo.fsync = true;
        lo.settings = {"max_connections=300"};
        server.emplace(LocalPostgres::Start(lo, DeadlineIn(std::chrono::minutes(2))));
      }
      static int n = 0;
      std::string name = fmt::format("bench{}_{}", getpid(), n++);
      server->CreateDatabase(name, DeadlineIn(kTimeout));
      url_ = server->ConnInfo(name);
    } else {
      url_ = o.database_url;
    }
    auto conn = Connect();
    auto m = store::Migrate(conn, DeadlineIn(std::chrono::minutes(2)));
    if (!m.ok()) throw std::runtime_error(m.error().message);
    // A fresh slate when reusing a given database.
    conn.Exec(
        "TRUNCATE taskmill.task, taskmill.task_resource, taskmill.idle_worker, "
        "taskmill.app, taskmill.lease CASCADE",
        DeadlineIn(kTimeout));
    TaskRegistry registry;
    RegisterBuiltins(registry);
    store::RegisterFunctions(conn, registry.Names(), DeadlineIn(kTimeout));
    conn.Exec("VACUUM ANALYZE", DeadlineIn(std::chrono::minutes(5)));
    // Each run starts with the WAL of the runs before it written out: a
    // checkpoint that they triggered would otherwise run (with its full-page
    // writes after it) in the middle of this one. Needs superuser; a
    // database given by URL may not allow it, which only costs that.
    try {
      conn.Exec("CHECKPOINT", DeadlineIn(std::chrono::minutes(5)));
    } catch (const pg::QueryError& e) {
      spdlog::warn("no checkpoint before the run: {}", e.what());
    }
  }
  pg::Connection Connect() const {
    return pg::Connection::Open(url_, DeadlineIn(std::chrono::seconds(10)));
  }
  const std::string& url() const { return url_; }

 private:
  std::string url_;
};

std::vector<Subprocess> StartWorkers(const Database& db, int n, bool in_process,
                                     std::vector<std::string> extra = {}) {
  std::vector<Subprocess> out;
  for (int i = 0; i < n; ++i) {
    SubprocessOptions so;
    so.argv = {TaskmillBinary(), "--database-url", db.url(), "--log-level",
               "warn",           "worker",         "--name", fmt::format("bench-{}", i)};
    if (in_process) so.argv.push_back("--in-process");
    so.argv.insert(so.argv.end(), extra.begin(), extra.end());
    so.output_file = fmt::format("/tmp/taskmill-bench-worker-{}.log", i);
    out.push_back(Subprocess::Start(so));
  }
  return out;
}

void WaitForWorkers(pg::Connection& conn, int n, bool idle) {
  Deadline deadline = DeadlineIn(std::chrono::minutes(2));
  const char* sql = idle ? "SELECT count(*) FROM taskmill.idle_worker"
                         : "SELECT count(*) FROM taskmill.app WHERE app_type = 'worker'";
  while (conn.Exec(sql, DeadlineIn(kTimeout)).GetInt(0, 0) < n) {
    if (Expired(deadline)) throw std::runtime_error("workers did not come up");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

void WaitAllFinished(pg::Connection& conn) {
  Deadline deadline = DeadlineIn(std::chrono::minutes(10));
  // EXISTS stops at the first unfinished task, and a look every 100 ms is
  // plenty: a count(*) over the whole table every 20 ms took a quarter of a
  // core from the workers being measured.
  while (conn.Exec("SELECT EXISTS (SELECT 1 FROM taskmill.task WHERE state IN ('waiting', "
                   "'running') AND NOT 'busy' = ANY (exclusive_resources))",
                   DeadlineIn(kTimeout))
             .GetBool(0, 0)) {
    if (Expired(deadline)) throw std::runtime_error("tasks did not finish");
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

constexpr const char* kDispatchSql =
    "SELECT taskmill.dispatch('taskmill.noop', '[]', '{}', ARRAY[gen_random_uuid()::text])";

// A taskmill.dispatch_many batch of `size` no-op tasks, each with a fresh
// exclusive resource (named from `prefix` and a counter).
nlohmann::json FreshBatch(int size, const std::string& prefix, int64_t& counter) {
  nlohmann::json batch = nlohmann::json::array();
  for (int i = 0; i < size; ++i) {
    batch.push_back({{"name", "taskmill.noop"},
                     {"exclusive_resources",
                      nlohmann::json::array({fmt::format("{}-{}", prefix, counter++)})}});
  }
  return batch;
}

// Dispatches of no-op tasks, each with a fresh resource, from `connections`
// threads for `seconds`: one per statement, `pipeline` statements per round
// trip, or `batch` per taskmill.dispatch_many call. Returns tasks per second.
double DispatchRate(const Database& db, int connections, double seconds, int pipeline,
                    int batch_size) {
  std::atomic<int64_t> total{0};
  std::atomic<bool> go{false}, stop{false};
  std::vector<std::thread> threads;
  for (int i = 0; i < connections; ++i) {
    threads.emplace_back([&] {
      auto conn = db.Connect();
      std::vector<pg::Connection::Statement> batch(pipeline, {kDispatchSql, {}});
      std::string prefix =
          conn.Exec("SELECT gen_random_uuid()::text", DeadlineIn(kTimeout)).GetString(0, 0);
      int64_t counter = 0;
      while (!go) std::this_thread::yield();
      int64_t n = 0;
      while (!stop) {
        if (batch_size > 1) {
          auto tasks = FreshBatch(batch_size, prefix, counter);
          auto ids = service::DispatchManyJson(conn, tasks, DeadlineIn(kTimeout));
          if (!ids.ok()) throw std::runtime_error(ids.error().message);
          n += static_cast<int64_t>(ids->size());
        } else if (pipeline <= 1) {
          conn.Exec(kDispatchSql, DeadlineIn(kTimeout));
          ++n;
        } else {
          n += static_cast<int64_t>(conn.ExecPipeline(batch, DeadlineIn(kTimeout)).size());
        }
      }
      total += n;
    });
  }
  auto start = Clock::now();
  go = true;
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& t : threads) t.join();
  double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  return static_cast<double>(total) / elapsed;
}

// Pickup latencies (started_at - unblocked_at, ms) of tasks dispatched one at
// a time every interval_ms to idle workers, skipping tasks on 'busy'.
std::vector<double> PickupLatencies(pg::Connection& conn, int tasks, int interval_ms) {
  for (int i = 0; i < tasks; ++i) {
    conn.Exec(kDispatchSql, DeadlineIn(kTimeout));
    std::this_thread::sleep_for(std::chrono::milliseconds(interval_ms));
  }
  WaitAllFinished(conn);
  auto res = conn.Exec(
      "SELECT extract(epoch FROM started_at - unblocked_at) * 1000 FROM taskmill.task "
      "WHERE state = 'completed' AND NOT 'busy' = ANY (exclusive_resources) "
      "ORDER BY seq DESC LIMIT $1",
      pg::Params().Add(tasks), DeadlineIn(kTimeout));
  std::vector<double> ms;
  for (int i = 0; i < res.rows(); ++i) ms.push_back(res.GetDouble(i, 0));
  return ms;
}

int Dispatch(const Options& o) {
  fmt::print(
      "dispatch: {} connection(s), pipeline depth {}, batches of {}, {} s per run, no-op tasks "
      "each with a fresh exclusive resource\n",
      o.connections, o.pipeline, o.batch, o.seconds);
  auto log = Log(o);
  auto rec = log.Begin("dispatch", {{"connections", o.connections},
                                    {"seconds", o.seconds},
                                    {"pipeline", o.pipeline},
                                    {"batch", o.batch}});
  std::vector<double> rates;
  for (int r = 0; r < o.runs; ++r) {
    Database db(o);
    rates.push_back(DispatchRate(db, o.connections, o.seconds, o.pipeline, o.batch));
    fmt::print("  run {}: {:.0f} dispatches/s\n", r + 1, rates.back());
    rec.Run({{"dispatches_per_s", rates.back()}});
  }
  fmt::print("median: {:.0f} dispatches/s\n", Median(rates));
  rec.Median({{"dispatches_per_s", Median(rates)}});
  return 0;
}

int EndToEnd(const Options& o) {
  fmt::print("e2e: {} worker(s), {}, {} no-op tasks dispatched first, then the workers start\n",
             o.workers, o.in_process ? "in-process" : "a child process per task", o.tasks);
  auto log = Log(o);
  auto rec =
      log.Begin("e2e", {{"workers", o.workers}, {"in_process", o.in_process}, {"tasks", o.tasks}});
  std::vector<double> rates;
  for (int r = 0; r < o.runs; ++r) {
    Database db(o);
    auto conn = db.Connect();
    std::vector<pg::Connection::Statement> batch(64, {kDispatchSql, {}});
    for (int i = 0; i < o.tasks; i += 64) conn.ExecPipeline(batch, DeadlineIn(kTimeout));
    auto workers = StartWorkers(db, o.workers, o.in_process);
    WaitAllFinished(conn);
    auto res = conn.Exec(
        "SELECT count(*), extract(epoch FROM max(finished_at) - min(started_at)) "
        "FROM taskmill.task WHERE state = 'completed'",
        DeadlineIn(kTimeout));
    double n = res.GetDouble(0, 0), secs = res.GetDouble(0, 1);
    rates.push_back(n / secs);
    fmt::print("  run {}: {:.0f} tasks in {:.2f} s = {:.0f} tasks/s\n", r + 1, n, secs,
               rates.back());
    rec.Run({{"tasks_per_s", rates.back()}, {"completed", n}, {"drain_s", secs}});
    for (auto& w : workers) w.Stop(DeadlineIn(std::chrono::seconds(10)));
  }
  fmt::print("median: {:.0f} tasks/s\n", Median(rates));
  rec.Median({{"tasks_per_s", Median(rates)}});
  return 0;
}

int Latency(const Options& o) {
  fmt::print(
      "latency: {} worker(s) idle, one no-op task every {} ms, {} tasks; "
      "pickup = started_at - unblocked_at\n",
      o.workers, o.interval_ms, o.tasks);
  auto log = Log(o);
  auto rec = log.Begin(
      "latency", {{"workers", o.workers}, {"tasks", o.tasks}, {"interval_ms", o.interval_ms}});
  std::vector<double> p50s;
  for (int r = 0; r < o.runs; ++r) {
    Database db(o);
    auto conn = db.Connect();
    auto workers = StartWorkers(db, o.workers, false);
    WaitForWorkers(conn, o.workers, true);
    auto ms = PickupLatencies(conn, o.tasks, o.interval_ms);
    p50s.push_back(Percentile(ms, 0.5));
    fmt::print("  run {}: p50 {:.2f} ms, p95 {:.2f} ms, p99 {:.2f} ms, max {:.2f} ms\n", r + 1,
               p50s.back(), Percentile(ms, 0.95), Percentile(ms, 0.99), Percentile(ms, 1.0));
    rec.Run({{"pickup_p50_ms", p50s.back()},
             {"pickup_p95_ms", Percentile(ms, 0.95)},
             {"pickup_p99_ms", Percentile(ms, 0.99)},
             {"pickup_max_ms", Percentile(ms, 1.0)}});
    for (auto& w : workers) w.Stop(DeadlineIn(std::chrono::seconds(10)));
  }
  fmt::print("median p50: {:.2f} ms\n", Median(p50s));
  rec.Median({{"pickup_p50_ms", Median(p50s)}});
  return 0;
}

// Unrelated dispatch rate and pickup latency with and without a large
// backlog waiting behind one busy resource.
int Backlog(const Options& o) {
  fmt::print(
      "backlog: {} tasks waiting behind one busy resource vs an empty queue; dispatch on "
      "{} connection(s) for {} s, then latency of {} tasks every {} ms with {} workers\n",
      o.waiting, o.connections, o.seconds, o.tasks, o.interval_ms, o.workers);
  auto log = Log(o);
  auto rec = log.Begin("backlog", {{"waiting", o.waiting},
                                   {"connections", o.connections},
                                   {"seconds", o.seconds},
                                   {"tasks", o.tasks},
                                   {"interval_ms", o.interval_ms},
                                   {"workers", o.workers}});
  std::vector<double> rate_empty, rate_full, p50_empty, p50_full;
  for (int r = 0; r < o.runs; ++r) {
    for (bool full : {false, true}) {
      Database db(o);
      auto conn = db.Connect();
      if (full) {
        conn.Exec(
            "SELECT taskmill.dispatch('taskmill.sleep', '[]', '{\"seconds\": 3600}', "
            "ARRAY['busy'])",
            DeadlineIn(kTimeout));
        std::vector<pg::Connection::Statement> batch(
            100, {"SELECT taskmill.dispatch('taskmill.noop', '[]', '{}', ARRAY['busy'])", {}});
        for (int i = 0; i < o.waiting; i += 100) conn.ExecPipeline(batch, DeadlineIn(kTimeout));
        conn.Exec("VACUUM ANALYZE taskmill.task", DeadlineIn(std::chrono::minutes(5)));
      }
      double rate = DispatchRate(db, o.connections, o.seconds, 1, 1);
      // One extra worker holds the busy task for the whole measurement.
      auto workers = StartWorkers(db, o.workers + (full ? 1 : 0), false);
      WaitForWorkers(conn, o.workers, true);
      WaitAllFinished(conn);
      auto ms = PickupLatencies(conn, o.tasks, o.interval_ms);
      double p50 = Percentile(ms, 0.5);
      (full ? rate_full : rate_empty).push_back(rate);
      (full ? p50_full : p50_empty).push_back(p50);
      fmt::print("  run {} {}: {:.0f} dispatches/s, pickup p50 {:.2f} ms p95 {:.2f} ms\n", r + 1,
                 full ? "with backlog" : "empty queue ", rate, p50, Percentile(ms, 0.95));
      for (auto& w : workers) w.Stop(DeadlineIn(std::chrono::seconds(10)));
    }
    rec.Run({{"empty_dispatches_per_s", rate_empty.back()},
             {"backlog_dispatches_per_s", rate_full.back()},
             {"empty_pickup_p50_ms", p50_empty.back()},
             {"backlog_pickup_p50_ms", p50_full.back()}});
  }
  rec.Median({{"empty_dispatches_per_s", Median(rate_empty)},
              {"backlog_dispatches_per_s", Median(rate_full)},
              {"empty_pickup_p50_ms", Median(p50_empty)},
              {"backlog_pickup_p50_ms", Median(p50_full)}});
  fmt::print("median empty: {:.0f} dispatches/s, p50 {:.2f} ms\n", Median(rate_empty),
             Median(p50_empty));
  fmt::print("median with {} waiting: {:.0f} dispatches/s ({:.2f}x), p50 {:.2f} ms ({:.2f}x)\n",
             o.waiting, Median(rate_full), Median(rate_empty) / Median(rate_full), Median(p50_full),
             Median(p50_full) / std::max(Median(p50_empty), 1e-9));
  return 0;
}

int64_t Transactions(pg::Connection& conn) {
  // Statistics reach the cumulative views within about a second.
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  conn.Exec("SELECT pg_stat_clear_snapshot()", DeadlineIn(kTimeout));
  return conn
      .Exec(
          "SELECT xact_commit + xact_rollback FROM pg_stat_database "
          "WHERE datname = current_database()",
          DeadlineIn(kTimeout))
      .GetInt(0, 0);
}

// Database transactions (each of taskmill's statements is one) per dispatched
// task with a large idle fleet, and the fleet's idle cost per second.
int Idle(const Options& o) {
  std::string worker_args = fmt::format("{}", fmt::join(o.worker_args, " "));
  fmt::print(
      "idle: {} idle workers ({}); {} tasks, one every {} ms; counting server transactions\n",
      o.workers, worker_args.empty() ? "defaults" : worker_args, o.tasks, o.interval_ms);
  auto log = Log(o);
  auto rec = log.Begin("idle", {{"workers", o.workers},
                                {"tasks", o.tasks},
                                {"interval_ms", o.interval_ms},
                                {"worker_args", worker_args}});
  std::vector<double> per_task, idle_rate, xids_rate, connections, pickup;
  for (int r = 0; r < o.runs; ++r) {
    Database db(o);
    auto conn = db.Connect();
    auto workers = StartWorkers(db, o.workers, false, o.worker_args);
    WaitForWorkers(conn, o.workers, true);
    std::this_thread::sleep_for(std::chrono::seconds(2));
    // Transaction ids: the snapshot's xmax moves only when one is assigned,
    // and reading it assigns none.
    auto xmax = [&] {
      return conn.Exec("SELECT txid_snapshot_xmax(txid_current_snapshot())", DeadlineIn(kTimeout))
          .GetInt(0, 0);
    };
    int64_t x0 = xmax();
    int64_t t0 = Transactions(conn);
    std::string lsn0 =
        conn.Exec("SELECT pg_current_wal_lsn()::text", DeadlineIn(kTimeout)).GetString(0, 0);
    std::this_thread::sleep_for(std::chrono::seconds(10));
    double wal = conn.Exec("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)",
                           pg::Params().Add(lsn0), DeadlineIn(kTimeout))
                     .GetDouble(0, 0);
    int64_t t1 = Transactions(conn);
    // Our own two statistics reads are in there; negligible.
    double idle_per_s = static_cast<double>(t1 - t0) / 11.5;
    double xids_per_s = static_cast<double>(xmax() - x0) / 10.0;
    double conns = conn.Exec("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                             "current_database() AND pid <> pg_backend_pid()",
                             DeadlineIn(kTimeout))
                       .GetDouble(0, 0);
    auto start = Clock::now();
    for (int i = 0; i < o.tasks; ++i) {
      conn.Exec(kDispatchSql, DeadlineIn(kTimeout));
      std::this_thread::sleep_for(std::chrono::milliseconds(o.interval_ms));
    }
    WaitAllFinished(conn);
    double elapsed = std::chrono::duration<double>(Clock::now() - start).count() + 1.5;
    int64_t t2 = Transactions(conn);
    double total = static_cast<double>(t2 - t1);
    double background = idle_per_s * elapsed;
    per_task.push_back((total - background) / o.tasks);
    idle_rate.push_back(idle_per_s);
    xids_rate.push_back(xids_per_s);
    connections.push_back(conns);
    double p50 = conn.Exec("SELECT 1000 * extract(epoch FROM percentile_cont(0.5) WITHIN GROUP "
                           "(ORDER BY started_at - unblocked_at)) FROM taskmill.task",
                           DeadlineIn(kTimeout))
                     .GetDouble(0, 0);
    pickup.push_back(p50);
    fmt::print(
        "  run {}: idle fleet {:.1f} transactions/s, {:.2f} transaction ids/s, {:.0f} "
        "connections, {:.0f} bytes of WAL/s; {:.0f} transactions during {} tasks ({:.1f} s), "
        "{:.2f} per task beyond the idle background; pickup p50 {:.2f} ms\n",
        r + 1, idle_per_s, xids_per_s, conns, wal / 10.0, total, o.tasks, elapsed,
        per_task.back(), p50);
    rec.Run({{"transactions_per_task", per_task.back()},
             {"idle_transactions_per_s", idle_per_s},
             {"idle_xids_per_s", xids_per_s},
             {"connections", conns},
             {"pickup_p50_ms", p50},
             {"idle_wal_bytes_per_s", wal / 10.0}});
    for (auto& w : workers) w.Signal(SIGTERM);
    for (auto& w : workers) w.Stop(DeadlineIn(std::chrono::seconds(10)));
  }
  fmt::print(
      "median: {:.2f} transactions per task, idle fleet {:.1f} transactions/s, {:.2f} "
      "transaction ids/s, {:.0f} connections, pickup p50 {:.2f} ms\n",
      Median(per_task), Median(idle_rate), Median(xids_rate), Median(connections),
      Median(pickup));
  rec.Median({{"transactions_per_task", Median(per_task)},
              {"idle_transactions_per_s", Median(idle_rate)},
              {"idle_xids_per_s", Median(xids_rate)},
              {"connections", Median(connections)},
              {"pickup_p50_ms", Median(pickup)}});
  return 0;
}

// From the kill -9 of a worker in the middle of a task until the next task
// on the same resource starts.
int Recovery(const Options& o) {
  fmt::print(
      "recovery: 2 workers (heartbeat {} s, ttl {} s); kill -9 of the one running a long "
      "task; time until the next task on its resource starts\n",
      o.heartbeat_interval, o.ttl);
  auto log = Log(o);
  auto rec = log.Begin("recovery", {{"heartbeat_interval", o.heartbeat_interval}, {"ttl", o.ttl}});
  std::vector<double> secs;
  for (int r = 0; r < o.runs; ++r) {
    Database db(o);
    auto conn = db.Connect();
    std::vector<std::string> extra = {"--heartbeat-interval",
                                      fmt::format("{}", o.heartbeat_interval), "--ttl",
                                      fmt::format("{}", o.ttl)};
    auto workers = StartWorkers(db, 2, false, extra);
    WaitForWorkers(conn, 2, false);
    // Let the workers be up for a whole TTL, as a living fleet is.
    std::this_thread::sleep_for(std::chrono::duration<double>(o.ttl + o.heartbeat_interval));
    conn.Exec("SELECT taskmill.dispatch('taskmill.sleep', '[]', '{\"seconds\": 3600}', ARRAY['R'])",
              DeadlineIn(kTimeout));
    auto next = conn.Exec("SELECT taskmill.dispatch('taskmill.noop', '[]', '{}', ARRAY['R'])",
                          DeadlineIn(kTimeout))
                    .GetString(0, 0);
    int pid = 0;
    while (pid == 0) {
      auto res = conn.Exec(
          "SELECT a.pid FROM taskmill.task t JOIN taskmill.app a ON a.id = t.app_lock "
          "WHERE t.state = 'running'",
          DeadlineIn(kTimeout));
      if (res.rows() > 0) pid = static_cast<int>(res.GetInt(0, 0));
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    kill(pid, SIGKILL);
    double killed_at =
        conn.Exec("SELECT extract(epoch FROM clock_timestamp())", DeadlineIn(kTimeout))
            .GetDouble(0, 0);
    double started = 0;
    Deadline limit = DeadlineIn(
        std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.ttl * 3 + 60)));
    while (!Expired(limit)) {
      auto res = conn.Exec(
          "SELECT extract(epoch FROM started_at) FROM taskmill.task WHERE id = $1 "
          "AND started_at IS NOT NULL",
          pg::Params().Add(next), DeadlineIn(kTimeout));
      if (res.rows() > 0) {
        started = res.GetDouble(0, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (started == 0) throw std::runtime_error("the next task never started");
    secs.push_back(started - killed_at);
    fmt::print("  run {}: {:.2f} s\n", r + 1, secs.back());
    rec.Run({{"recovery_s", secs.back()}});
  }
  fmt::print("median: {:.2f} s from kill -9 to the next task's start\n", Median(secs));
  rec.Median({{"recovery_s", Median(secs)}});
  return 0;
}

// The burn-down of scripts/bench-peers.sh: N no-op tasks dispatched first (a
// phase timed on its own, not part of the drain), then W workers started.
// The drain is timed by the database clock from the first task's start to the
// last one's finish; a run in which any task did not complete, or the task
// table holds anything but those N, is an error (exit 1). `--worker-arg`
// passes options on to `taskmill worker` (e.g. --worker-arg=--concurrency=8).
int BurnDown(const Options& o) {
  if (o.resources != "fresh" && o.resources != "none")
    throw std::runtime_error("--resources must be fresh or none");
  if (o.tasks < 1 || o.workers < 1 || o.insert_pipeline < 1 || o.insert_connections < 1)
    throw std::runtime_error(
        "--tasks, --workers, --insert-pipeline and --insert-connections must be at least 1");
  const bool fresh = o.resources == "fresh";
  std::string worker_args;
  for (auto& a : o.worker_args) worker_args += " " + a;
  fmt::print(
      "burndown: {} no-op tasks ({}), dispatched first ({} connection(s), pipeline depth {}), "
      "then {} worker(s), {}{}\n",
      o.tasks, fresh ? "each with a fresh exclusive resource" : "no resources",
      o.insert_connections, o.insert_pipeline, o.workers,
      o.in_process ? "in-process" : "a child process per task", worker_args);
  auto log = Log(o);
  auto rec = log.Begin("burndown", {{"system", "taskmill"},
                                    {"tasks", o.tasks},
                                    {"workers", o.workers},
                                    {"mode", o.in_process ? "in-process" : "child"},
                                    {"resources", o.resources},
                                    {"worker_args", o.worker_args}});
  const char* sql = fresh ? kDispatchSql : "SELECT taskmill.dispatch('taskmill.noop', '[]', '{}')";
  std::vector<double> rates, inserts;
  for (int r = 0; r < o.runs; ++r) {
    Database db(o);
    auto conn = db.Connect();
    // Each dispatch its own transaction; several connections share their
    // WAL flushes, as concurrent clients would.
    std::vector<pg::Connection> inserters;
    for (int i = 0; i < o.insert_connections; ++i) inserters.push_back(db.Connect());
    auto insert_start = Clock::now();
    std::vector<std::thread> threads;
    std::atomic<bool> insert_failed{false};
    for (int i = 0; i < o.insert_connections; ++i) {
      int share = o.tasks / o.insert_connections + (i < o.tasks % o.insert_connections ? 1 : 0);
      threads.emplace_back([&, i, share] {
        try {
          for (int done = 0; done < share;) {
            int n = std::min(o.insert_pipeline, share - done);
            if (n == 1) {
              inserters[i].Exec(sql, DeadlineIn(kTimeout));
            } else {
              std::vector<pg::Connection::Statement> batch(n, {sql, {}});
              inserters[i].ExecPipeline(batch, DeadlineIn(kTimeout));
            }
            done += n;
          }
        } catch (const std::exception& e) {
          spdlog::error("burndown: insertion failed: {}", e.what());
          insert_failed = true;
        }
      });
    }
    for (auto& t : threads) t.join();
    inserters.clear();
    if (insert_failed) throw std::runtime_error("burndown: insertion failed");
    double insert_s = std::chrono::duration<double>(Clock::now() - insert_start).count();
    // The drain does not pay for the insertion's WAL.
    conn.Exec("CHECKPOINT", DeadlineIn(std::chrono::minutes(5)));
    auto start = Clock::now();
    auto workers = StartWorkers(db, o.workers, o.in_process, o.worker_args);
    WaitAllFinished(conn);
    double wall = std::chrono::duration<double>(Clock::now() - start).count();
    auto res = conn.Exec(
        "SELECT count(*), count(*) FILTER (WHERE state = 'completed'), "
        "extract(epoch FROM max(finished_at) - min(started_at)) FROM taskmill.task",
        DeadlineIn(kTimeout));
    for (auto& w : workers) w.Stop(DeadlineIn(std::chrono::seconds(10)));
    int64_t total = res.GetInt(0, 0), completed = res.GetInt(0, 1);
    if (total != o.tasks || completed != o.tasks)
      throw std::runtime_error(fmt::format("burndown: {} tasks in the table, {} completed, of {}",
                                           total, completed, o.tasks));
    double secs = res.GetDouble(0, 2);
    rates.push_back(completed / secs);
    inserts.push_back(o.tasks / insert_s);
    fmt::print(
        "  run {}: inserted in {:.2f} s ({:.0f}/s); {} tasks completed once each, drained in "
        "{:.2f} s = {:.0f} tasks/s (workers' start to the end: {:.2f} s)\n",
        r + 1, insert_s, inserts.back(), completed, secs, rates.back(), wall);
    rec.Run({{"tasks_per_s", rates.back()},
             {"drain_s", secs},
             {"wall_s", wall},
             {"insert_per_s", inserts.back()},
             {"completed", completed}});
  }
  fmt::print("median: {:.0f} tasks/s (insertion {:.0f}/s)\n", Median(rates), Median(inserts));
  rec.Median({{"tasks_per_s", Median(rates)}, {"insert_per_s", Median(inserts)}});
  return 0;
}

// ---------------------------------------------------------------------------
// old-snapshot: a steady offered load through dispatch to 2 workers, while
// one session holds a REPEATABLE READ snapshot idle in transaction for
// --hold seconds (so vacuum can remove nothing newer). Reports, per 10-s
// window, what was dispatched, what was served (finished) and the pickup
// latency (started_at - unblocked_at) of the tasks dispatched in it, and the
// recovery time: from the end of the snapshot until every later task was
// picked up within 4x the p95 before the snapshot (at least 100 ms).
// ---------------------------------------------------------------------------

double DbNow(pg::Connection& conn) {
  return conn.Exec("SELECT extract(epoch FROM clock_timestamp())", DeadlineIn(kTimeout))
      .GetDouble(0, 0);
}

int OldSnapshot(const Options& o) {
  fmt::print(
      "old-snapshot: {} worker(s), {} tasks/s offered (4 in 5 on a fresh resource, 1 in 5 "
      "on one of 4 queues); a REPEATABLE READ snapshot idle in transaction from {} s to {} s; "
      "{} s after it\n",
      o.workers, o.rate, o.before, o.before + o.hold, o.after);
  std::vector<double> recoveries;
  for (int r = 0; r < o.runs; ++r) {
    Database db(o);
    auto conn = db.Connect();
    auto workers = StartWorkers(db, o.workers, false);
    WaitForWorkers(conn, o.workers, true);
    const double total = o.before + o.hold + o.after;
    const double t0 = DbNow(conn);
    std::atomic<bool> stop{false};
    std::thread dispatcher([&] {
      auto dc = db.Connect();
      auto start = Clock::now();
      for (int64_t i = 0; !stop; ++i) {
        auto due = start + std::chrono::duration_cast<Clock::duration>(
                               std::chrono::duration<double>(static_cast<double>(i) / o.rate));
        if (due > Clock::now()) std::this_thread::sleep_until(due);
        if (std::chrono::duration<double>(Clock::now() - start).count() >= total) break;
        if (i % 5 == 4) {
          dc.Exec("SELECT taskmill.dispatch('taskmill.noop', '[]', '{}', ARRAY[$1])",
                  pg::Params().Add(fmt::format("queue-{}", (i / 5) % 4)), DeadlineIn(kTimeout));
        } else {
          dc.Exec(kDispatchSql, DeadlineIn(kTimeout));
        }
      }
    });
    std::this_thread::sleep_for(std::chrono::duration<double>(o.before));
    auto holder = db.Connect();
    holder.Exec("BEGIN ISOLATION LEVEL REPEATABLE READ", DeadlineIn(kTimeout));
    holder.Exec("SELECT 1", DeadlineIn(kTimeout));
    double held_from = DbNow(conn) - t0;
    std::this_thread::sleep_for(std::chrono::duration<double>(o.hold));
    holder.Exec("COMMIT", DeadlineIn(kTimeout));
    double held_to = DbNow(conn) - t0;
    dispatcher.join();
    WaitAllFinished(conn);
    double ended = DbNow(conn) - t0;

    auto rows = conn.Exec(
        "SELECT extract(epoch FROM created_at) - $1, extract(epoch FROM finished_at) - $1, "
        "extract(epoch FROM started_at - unblocked_at) * 1000 FROM taskmill.task "
        "WHERE state = 'completed' ORDER BY seq",
        pg::Params().Add(t0), DeadlineIn(kTimeout));
    size_t windows = static_cast<size_t>(std::ceil(ended / 10.0));
    std::vector<int> dispatched(windows + 1), served(windows + 1);
    std::vector<std::vector<double>> pickup(windows + 1);
    std::vector<double> before_ms;
    std::vector<std::pair<double, double>> created_pickup;
    for (int i = 0; i < rows.rows(); ++i) {
      double c = rows.GetDouble(i, 0), f = rows.GetDouble(i, 1), p = rows.GetDouble(i, 2);
      size_t wc = std::min(windows, static_cast<size_t>(std::max(0.0, c) / 10));
      size_t wf = std::min(windows, static_cast<size_t>(std::max(0.0, f) / 10));
      ++dispatched[wc];
      ++served[wf];
      pickup[wc].push_back(p);
      if (c < held_from) before_ms.push_back(p);
      created_pickup.emplace_back(c, p);
    }
    double threshold = std::max(100.0, 4 * Percentile(before_ms, 0.95));
    double last_slow = held_to;
    for (auto& [c, p] : created_pickup) {
      if (c >= held_to && p > threshold) last_slow = std::max(last_slow, c);
    }
    double recovery = last_slow - held_to;
    fmt::print("  run {}: snapshot held {:.1f}-{:.1f} s; all finished at {:.1f} s\n", r + 1,
               held_from, held_to, ended);
    fmt::print("    window    phase   dispatched/s  served/s  pickup p50 ms  p95 ms\n");
    for (size_t w = 0; w < windows; ++w) {
      double from = static_cast<double>(w) * 10;
      const char* phase = from + 10 <= held_from ? "before" : from >= held_to ? "after" : "during";
      fmt::print("    {:3.0f}-{:3.0f} s  {:6}  {:12.1f}  {:8.1f}  {:13.1f}  {:6.1f}\n", from,
                 from + 10, phase, dispatched[w] / 10.0, served[w] / 10.0,
                 Percentile(pickup[w], 0.5), Percentile(pickup[w], 0.95));
    }
    fmt::print("    recovery: {:.1f} s after the snapshot ended (threshold {:.0f} ms)\n", recovery,
               threshold);
    recoveries.push_back(recovery);
    stop = true;
    for (auto& w : workers) w.Stop(DeadlineIn(std::chrono::seconds(10)));
  }
  fmt::print("median recovery: {:.1f} s\n", Median(recoveries));
  return 0;
}

}  // namespace
}  // namespace taskmill::bench

int main(int argc, char** argv) {
  using namespace taskmill::bench;
  CLI::App app{"taskmill benchmarks", "taskmill-bench"};
  app.require_subcommand(1);
  Options o;
  app.add_option("--database-url", o.database_url, "Use this database (it is emptied!)");
  app.add_option("--runs", o.runs, "Runs per scenario")->capture_default_str();
  app.add_option("--json-out", o.json_out, "Append results to this file as JSON lines");
  auto* dispatch = app.add_subcommand("dispatch", "Dispatch rate");
  dispatch->add_option("--connections", o.connections)->capture_default_str();
  dispatch->add_option("--seconds", o.seconds)->capture_default_str();
  dispatch->add_option("--pipeline", o.pipeline, "Dispatches in flight per connection")
      ->capture_default_str();
  dispatch->add_option("--batch", o.batch, "Tasks per taskmill.dispatch_many call (1: none)")
      ->capture_default_str()
      ->check(CLI::Range(1, 10000));
  auto* e2e = app.add_subcommand("e2e", "End-to-end no-op throughput");
  e2e->add_option("--workers", o.workers)->capture_default_str();
  e2e->add_flag("--in-process", o.in_process);
  e2e->add_option("--tasks", o.tasks)->capture_default_str();
  auto* latency = app.add_subcommand("latency", "Pickup latency at low load");
  latency->add_option("--workers", o.workers)->capture_default_str();
  latency->add_option("--tasks", o.tasks)->capture_default_str();
  latency->add_option("--interval-ms", o.interval_ms)->capture_default_str();
  auto* backlog = app.add_subcommand("backlog", "Unrelated work behind a large backlog");
  backlog->add_option("--waiting", o.waiting)->capture_default_str();
  backlog->add_option("--connections", o.connections)->capture_default_str();
  backlog->add_option("--seconds", o.seconds)->capture_default_str();
  backlog->add_option("--tasks", o.tasks)->capture_default_str();
  backlog->add_option("--interval-ms", o.interval_ms)->capture_default_str();
  backlog->add_option("--workers", o.workers)->capture_default_str();
  auto* idle = app.add_subcommand("idle", "Database cost of an idle fleet");
  idle->add_option("--workers", o.workers)->capture_default_str();
  idle->add_option("--tasks", o.tasks)->capture_default_str();
  idle->add_option("--interval-ms", o.interval_ms)->capture_default_str();
  idle->add_option("--worker-arg", o.worker_args, "Passed on to `taskmill worker`");
  auto* recovery = app.add_subcommand("recovery", "Recovery time after kill -9 of a worker");
  recovery->add_option("--heartbeat-interval", o.heartbeat_interval)->capture_default_str();
  recovery->add_option("--ttl", o.ttl)->capture_default_str();
  auto* burndown = app.add_subcommand("burndown", "Drain of a pre-inserted backlog of no-op tasks");
  burndown->add_option("--workers", o.workers)->capture_default_str();
  burndown->add_flag("--in-process", o.in_process);
  burndown->add_option("--tasks", o.tasks)->capture_default_str();
  burndown->add_option("--resources", o.resources, "fresh: a new exclusive resource per task")
      ->check(CLI::IsMember({"fresh", "none"}))
      ->capture_default_str();
  burndown
      ->add_option("--insert-pipeline", o.insert_pipeline,
                   "Dispatches in flight per connection (1: one by one)")
      ->capture_default_str();
  burndown->add_option("--insert-connections", o.insert_connections, "Connections that dispatch")
      ->capture_default_str();
  burndown->add_option("--worker-arg", o.worker_args, "Passed on to `taskmill worker`");
  auto* compare = app.add_subcommand("compare", "Medians of two --json-out files side by side");
  compare->add_option("OLD", o.compare_old)->required();
  compare->add_option("NEW", o.compare_new)->required();
  auto* old_snapshot =
      app.add_subcommand("old-snapshot", "Throughput and pickup latency under an old snapshot");
  old_snapshot->add_option("--workers", o.workers)->capture_default_str();
  old_snapshot->add_option("--rate", o.rate, "Tasks dispatched per second")->capture_default_str();
  old_snapshot->add_option("--before", o.before, "Seconds before the snapshot")
      ->capture_default_str();
  old_snapshot->add_option("--hold", o.hold, "Seconds the snapshot is held")->capture_default_str();
  old_snapshot->add_option("--after", o.after, "Seconds after it")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (*compare) return Compare(o.compare_old, o.compare_new);
  o.commit = SourceCommit();
  try {
    if (*dispatch) return Dispatch(o);
    if (*e2e) return EndToEnd(o);
    if (*latency) return Latency(o);
    if (*backlog) return Backlog(o);
    if (*idle) return Idle(o);
    if (*recovery) return Recovery(o);
    if (*burndown) return BurnDown(o);
    if (*old_snapshot) return OldSnapshot(o);
  } catch (const std::exception& e) {
    std::cerr << "taskmill-bench: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
