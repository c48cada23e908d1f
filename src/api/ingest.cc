// The seed's ingestion test endpoints (GET /api/pulp/test/...): dispatch
// no-op tasks for `timeout` seconds and answer how many were dispatched (or,
// for immediate tasks, completed), exactly, even when the database fails
// half way.
#include <algorithm>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <random>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "api/server_impl.h"
#include "service/task_service.h"

namespace taskmill::api {

using nlohmann::json;

namespace {

// A random (version 4) uuid, for the ingestion endpoints' resources.
std::string NewUuid() {
  thread_local std::mt19937_64 rng(std::random_device{}());
  uint64_t a = rng(), b = rng();
  a = (a & 0xffffffffffff0fffULL) | 0x0000000000004000ULL;
  b = (b & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;
  return fmt::format("{:08x}-{:04x}-{:04x}-{:04x}-{:012x}", a >> 32, (a >> 16) & 0xffff, a & 0xffff,
                     b >> 48, b & 0xffffffffffffULL);
}

// An immediate task that ran and whose outcome is still to be recorded.
struct PendingOutcome {
  std::string id;
  worker::Outcome outcome;
  std::unique_ptr<InflightMark> mark;
};

store::TaskOutcome ToRecord(const PendingOutcome& p) {
  return {p.id, p.outcome.state, p.outcome.result, p.outcome.error};
}

// The final state a finish statement answered (NULL: no longer ours).
std::optional<TaskState> FinishedState(const pg::ResultSet& r) {
  if (r.IsNull(0, 0)) return std::nullopt;
  return ParseTaskState(r.Get(0, 0));
}

// An immediate no-op, dispatched `running` with this process as owner.
Task RunningNoop(const std::string& id, const std::string& app_id) {
  Task task;
  task.id = id;
  task.name = "taskmill.noop";
  task.immediate = true;
  task.deferred = false;
  task.state = TaskState::kRunning;
  task.app_lock = app_id;
  return task;
}

}  // namespace

bool Server::CountOutcome(const std::optional<TaskState>& recorded,
                          const worker::Outcome& outcome) {
  immediate_.Add({{"outcome", std::string(TaskStateName(recorded.value_or(outcome.state)))}})
      .Increment();
  return recorded == TaskState::kCompleted;
}

// mode 0: a fresh uuid each; 1: one of three uuids drawn per request;
// 2: immediate tasks run here, counting the completed ones.
void Server::IngestTasks(const httplib::Request& req, httplib::Response& res, int mode) {
  double seconds = 25;
  for (const auto& [k, v] : req.params) {
    if (k != "timeout") throw HttpError{400, fmt::format("unknown parameter \"{}\"", k)};
    try {
      size_t used = 0;
      seconds = std::stod(v, &used);
      if (used != v.size()) throw std::invalid_argument(v);
    } catch (...) {
      throw HttpError{400, "timeout must be a number of seconds"};
    }
    if (!(seconds > 0 && seconds <= 3600)) {
      throw HttpError{400, "timeout must be more than 0 and at most 3600 seconds"};
    }
  }
  // Every task of this request carries the request's correlation id, as a
  // Pulp dispatch inside a request does; it also lets us count exactly what
  // committed if the connection fails half way through a pipeline.
  std::string cid = req.get_header_value("Correlation-ID");
  if (cid.empty() || cid.size() > 128) {
    cid = NewUuid();
    cid.erase(std::remove(cid.begin(), cid.end(), '-'), cid.end());
  }
  Deadline end = DeadlineIn(
      std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds)));
  auto conn = pool_.Acquire(DeadlineIn(kAcquireTimeout));
  try {
    int64_t count =
        mode == 2 ? IngestImmediate(*conn, end, cid) : IngestDeferred(*conn, end, mode, cid);
    Reply(res, 200, json{{"tasks_executed", count}});
  } catch (const pg::Error& e) {
    if (store::MapSqlError(e)) throw;  // a bad request: answered as usual
    std::exception_ptr original = std::current_exception();
    // The count so far is not known from the answers: ask the database.
    spdlog::warn("ingestion request {} stopped by a database error: {}", cid, e.what());
    try {
      if (!conn->ok())
        *conn = pg::Connection::Open(options_.database_url, DeadlineIn(kAcquireTimeout));
      int64_t n = store::CountTasksWithCid(*conn, cid, /*completed_only=*/mode == 2,
                                           DeadlineIn(kQueryTimeout));
      Reply(res, 503,
            json{{"detail", fmt::format("database error after some tasks: {}", e.what())},
                 {"tasks_executed", n}});
    } catch (const pg::Error&) {
      std::rethrow_exception(original);
    }
  }
}

int64_t Server::IngestDeferred(pg::Connection& conn, Deadline end, int mode,
                               const std::string& cid) {
  // Many dispatches in flight per round trip (libpq pipeline mode, a sync
  // after each): each is still its own transaction, and every result is
  // read, so the count is exact. The database executes them back to back
  // instead of waiting a round trip for each.
  constexpr int kDepth = 32;
  std::vector<std::string> three = {NewUuid(), NewUuid(), NewUuid()};
  thread_local std::mt19937 rng(std::random_device{}());
  std::vector<pg::Connection::Statement> batch(kDepth);
  int64_t count = 0;
  auto& dispatched = dispatched_.Add({});
  while (!Expired(end) && !stopping_) {
    for (auto& st : batch) {
      st = store::NoopDispatchStatement(mode == 0 ? NewUuid() : three[rng() % 3], cid);
    }
    auto results = conn.ExecPipeline(batch, DeadlineIn(kQueryTimeout));
    count += static_cast<int64_t>(results.size());
    dispatched.Increment(static_cast<double>(results.size()));
  }
  return count;
}

int64_t Server::IngestImmediate(pg::Connection& conn, Deadline end, const std::string& cid) {
  // A second connection lets the database record outcomes while it
  // dispatches the next task (two backends, two cores, commits flushed
  // together) instead of one after the other. Only if one is free right now:
  // a request never waits for its second connection.
  auto recorder = pool_.TryAcquire(DeadlineIn(std::chrono::seconds(5)));
  if (!recorder) return IngestImmediateOneConnection(conn, end, cid);
  return IngestImmediateTwoConnections(conn, **recorder, end, cid);
}

int64_t Server::IngestImmediateTwoConnections(pg::Connection& conn, pg::Connection& recorder,
                                              Deadline end, const std::string& cid) {
  // This thread dispatches on `conn` and runs each task; a recorder thread
  // records the outcomes on `recorder`, as many as have piled up per round
  // trip: each finish its own transaction, then the unblocking behind them
  // in a transaction of its own after they committed.
  constexpr size_t kMaxPending = 64;
  constexpr int kDispatchDepth = 8;
  std::string app_id = AppId();
  std::mutex mu;
  std::condition_variable cv;
  std::deque<PendingOutcome> pending;  // under mu
  bool done = false;                   // under mu
  std::exception_ptr recorder_error;   // under mu
  int64_t completed = 0;               // the recorder's until it is joined
  std::thread recorder_thread([&] {
    try {
      for (;;) {
        std::vector<PendingOutcome> batch;
        {
          std::unique_lock<std::mutex> lock(mu);
          cv.wait(lock, [&] { return done || !pending.empty(); });
          if (pending.empty()) return;  // done, and all recorded
          while (!pending.empty()) {
            batch.push_back(std::move(pending.front()));
            pending.pop_front();
          }
        }
        cv.notify_all();  // room for the dispatcher
        std::vector<store::TaskOutcome> outcomes;
        for (const auto& p : batch) outcomes.push_back(ToRecord(p));
        std::vector<pg::ResultSet> results;
        try {
          results = recorder.ExecPipeline(service::FinishAndReleaseStatements(app_id, outcomes),
                                          DeadlineIn(kQueryTimeout));
        } catch (...) {
          // Back for the clean-up below (finishing twice is harmless).
          std::lock_guard<std::mutex> lock(mu);
          for (auto& p : batch) pending.push_back(std::move(p));
          throw;
        }
        for (size_t i = 0; i < batch.size(); ++i) {
          if (CountOutcome(FinishedState(results[i]), batch[i].outcome)) ++completed;
        }
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu);
      recorder_error = std::current_exception();
      cv.notify_all();
    }
  });

  std::exception_ptr error;
  auto& dispatched = dispatched_.Add({});
  try {
    while (!Expired(end) && !stopping_) {
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return recorder_error || pending.size() < kMaxPending; });
        if (recorder_error) break;
      }
      // A few dispatches per round trip (each its own transaction); each
      // task runs once its dispatch came back `running`.
      std::vector<pg::Connection::Statement> batch;
      for (int i = 0; i < kDispatchDepth; ++i) {
        batch.push_back(store::ImmediateNoopDispatchStatement(NewUuid(), cid, app_id));
      }
      auto results = conn.ExecPipeline(batch, DeadlineIn(kQueryTimeout));
      dispatched.Increment(static_cast<double>(results.size()));
      std::vector<PendingOutcome> ran;
      for (const auto& r : results) {
        if (r.Get(0, 1) != "running") {
          immediate_.Add({{"outcome", "refused"}}).Increment();
          continue;
        }
        Task task = RunningNoop(r.GetString(0, 0), app_id);
        auto mark = std::make_unique<InflightMark>(inflight_mu_, inflight_, task.id);
        auto outcome = immediate_runs_.Run(task);
        if (!outcome) continue;  // overdue: recorded when it returns
        ran.push_back(PendingOutcome{task.id, std::move(*outcome), std::move(mark)});
      }
      {
        std::lock_guard<std::mutex> lock(mu);
        for (auto& p : ran) pending.push_back(std::move(p));
      }
      cv.notify_all();
    }
  } catch (...) {
    error = std::current_exception();
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    done = true;
  }
  cv.notify_all();
  recorder_thread.join();
  if (!error) error = recorder_error;
  if (error) {
    // Record what ran but was not recorded; the caller then counts exactly.
    for (const auto& p : pending) FinishImmediate(conn, p.id, app_id, p.outcome);
    std::rethrow_exception(error);
  }
  return completed;
}

int64_t Server::IngestImmediateOneConnection(pg::Connection& conn, Deadline end,
                                             const std::string& cid) {
  // One round trip per task: the outcome of the previous task, the
  // unblocking behind it and the next dispatch go in one pipeline, each its
  // own transaction, in that order (so the unblocking runs after the finish
  // committed). The task itself runs between round trips, in this thread's
  // helper under the immediate timeout, like any immediate task.
  std::string app_id = AppId();
  std::optional<PendingOutcome> prev;
  int64_t completed = 0;
  auto& dispatched = dispatched_.Add({});
  try {
    while (!Expired(end) && !stopping_) {
      std::vector<pg::Connection::Statement> stmts;
      if (prev) stmts = service::FinishAndReleaseStatements(app_id, {ToRecord(*prev)});
      stmts.push_back(store::ImmediateNoopDispatchStatement(NewUuid(), cid, app_id));
      auto results = conn.ExecPipeline(stmts, DeadlineIn(kQueryTimeout));
      if (prev) {
        if (CountOutcome(FinishedState(results[0]), prev->outcome)) ++completed;
        prev.reset();
      }
      dispatched.Increment();
      const pg::ResultSet& r = results.back();
      if (r.Get(0, 1) != "running") {
        // Busy (cannot happen with a fresh resource) and not deferred: it
        // ended canceled; not counted.
        immediate_.Add({{"outcome", "refused"}}).Increment();
        continue;
      }
      Task task = RunningNoop(r.GetString(0, 0), app_id);
      auto mark = std::make_unique<InflightMark>(inflight_mu_, inflight_, task.id);
      auto outcome = immediate_runs_.Run(task);
      if (!outcome) continue;  // overdue: recorded when it returns
      prev = PendingOutcome{task.id, std::move(*outcome), std::move(mark)};
    }
  } catch (const pg::Error&) {
    // Record the task that ran (a finish that already committed is a no-op
    // now); a dispatch whose answer was lost is left to the sweep.
    if (prev) FinishImmediate(conn, prev->id, app_id, prev->outcome);
    throw;
  }
  if (prev && CountOutcome(FinishImmediate(conn, prev->id, app_id, prev->outcome), prev->outcome))
    ++completed;
  return completed;
}

}  // namespace taskmill::api
