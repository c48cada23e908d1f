// The API server's class, shared by the files that implement it (one concern
// each):
//   routes.cc            routing, credentials, error mapping, replies, paging links
//   task_handlers.cc     /tasks/: list, show, create (one or a batch), cancel, delete, purge
//   status_handlers.cc   /workers/, /task-groups/, /status/, /metrics
//   immediate_tasks.cc   immediate tasks run in this process, and the sweep of lost ones
//   ingest.cc            the seed's ingestion test endpoints
//   server.cc            the lifecycle: start, heartbeat thread, signals, stop
// Internal to src/api: the public face is RunApiServer (api/server.h).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <httplib.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <nlohmann/json.hpp>

#include "api/connection_pool.h"
#include "api/http/http_server.h"
#include "api/http/router.h"
#include "api/immediate.h"
#include "api/server.h"
#include "store/task_store.h"
#include "taskmill/dispatch.h"
#include "taskmill/result.h"
#include "worker/executor.h"

namespace taskmill::api {

constexpr const char* kRoot = "/pulp/api/v3/";
constexpr auto kQueryTimeout = std::chrono::seconds(30);
constexpr auto kAcquireTimeout = std::chrono::seconds(10);

// An error answer: a status and {"detail": message}, plus {"limit": flag}
// when a configured limit was broken. Handlers throw it; the router
// answers it.
struct HttpError {
  int status;
  std::string detail;
  std::string limit = "";
};

// A Result error as the HttpError of its code (api/http_status.h).
[[noreturn]] void ThrowHttpError(const Error& error);

// Replies with `status` and `body` (invalid UTF-8 from the request replaced).
void Reply(httplib::Response& res, int status, const nlohmann::json& body);
// The id in a path: a bare uuid, else HttpError 400.
std::string RequireUuid(const std::string& id);
// HttpError 400 unless `body` is exactly {"state": "canceled"} (the body of
// a cancel, a task's or a group's).
void RequireCancelBody(const nlohmann::json& body);
// HttpError 400 for the first query parameter, if any.
void RejectParams(const httplib::Request& req);
// This host's name.
std::string Hostname();

// Keeps an immediate task's id in the in-flight set for a scope.
class InflightMark {
 public:
  InflightMark(std::mutex& mu, std::set<std::string>& set, std::string id);
  InflightMark(const InflightMark&) = delete;
  InflightMark& operator=(const InflightMark&) = delete;
  ~InflightMark();

 private:
  std::mutex& mu_;
  std::set<std::string>& set_;
  std::string id_;
};

class Server {
 public:
  Server(ApiOptions options, const TaskRegistry& registry);
  int Run();

 private:
  // --- routes.cc
  void AddRoutes();
  void Add(const std::string& method, const std::string& pattern, const std::string& name,
           bool mutating, http::Router::Handler h) {
    router_.Add(method, pattern, name, mutating, std::move(h));
  }
  // Routes a request, checks credentials, runs the handler, answers errors.
  void Dispatch(const httplib::Request& req, httplib::Response& res);
  // Counts a request in /metrics.
  void Count(const std::string& route, const std::string& method, int status, double secs);
  // The JSON body of a request within the JSON limits: an object, or with
  // `allow_array` also an array; else an HttpError.
  nlohmann::json ParseBody(const httplib::Request& req, bool allow_array = false) const;
  bool Authorized(const httplib::Request& req, bool mutating) const;
  std::string PageLink(const httplib::Request& req, int limit, int offset) const;
  // {"count", "results", "next", "previous"} for one page of a list.
  nlohmann::json PageBody(const httplib::Request& req, int64_t count, nlohmann::json results,
                          int limit, int offset) const;

  // --- task_handlers.cc
  void ListTasks(const httplib::Request& req, httplib::Response& res);
  void GetTask(const httplib::Request& req, httplib::Response& res, const std::string& id);
  void CancelTask(const httplib::Request& req, httplib::Response& res, const std::string& id);
  void DeleteTask(const httplib::Request& req, httplib::Response& res, const std::string& id);
  void PurgeTasks(const httplib::Request& req, httplib::Response& res);
  void CreateTask(const httplib::Request& req, httplib::Response& res);

  // --- status_handlers.cc
  void ListWorkers(const httplib::Request& req, httplib::Response& res);
  void GetWorker(const httplib::Request& req, httplib::Response& res, const std::string& id);
  void ListGroups(const httplib::Request& req, httplib::Response& res);
  void GetGroup(const httplib::Request& req, httplib::Response& res, const std::string& id);
  void CancelGroup(const httplib::Request& req, httplib::Response& res, const std::string& id);
  void CreateGroup(const httplib::Request& req, httplib::Response& res);
  void Status(const httplib::Request& req, httplib::Response& res);
  void Metrics(const httplib::Request& req, httplib::Response& res);
  // One group's JSON; HttpError 404 if there is none.
  nlohmann::json GroupJson(pg::Connection& conn, const std::string& id);

  // --- immediate_tasks.cc
  // Dispatches (and, if immediate and free, runs) one task. Returns its id.
  Result<std::string> DispatchOne(pg::Connection& conn, const DispatchRequest& original);
  // Runs an immediate task this process (as `app_id`) owns, records the
  // outcome and unblocks the tasks behind it. Returns the final state.
  TaskState RunImmediate(pg::Connection& conn, const Task& task, const std::string& app_id);
  // Records an immediate task's outcome (store::FinishTask), then, in a
  // separate transaction after that one committed, unblocks what queued
  // behind it (service::ReleaseAfterFinish). Retries database faults (with a
  // new connection if `conn` broke) until a deadline, because a task left
  // `running` under a live process would hold its resources indefinitely.
  std::optional<TaskState> FinishImmediate(pg::Connection& conn, const std::string& task_id,
                                           const std::string& app_id,
                                           const worker::Outcome& outcome);
  // Records an overdue immediate task once its function has returned.
  std::optional<TaskState> RecordOverdue(const Task& task, const worker::Outcome& outcome);
  // Immediate tasks that failed to be finished or whose dispatch answer was
  // lost stay `running` under our id while we live; finalise them.
  void SweepLostImmediates(pg::Connection& conn);
  // The Task an immediate dispatch inserted `running`, owned by `app_id`.
  static Task RunningImmediate(const std::string& id, const DispatchRequest& request,
                               const std::string& app_id);

  // --- ingest.cc
  void IngestTasks(const httplib::Request& req, httplib::Response& res, int mode);
  // The ingestion loops; both return the exact count and end early when the
  // server stops.
  int64_t IngestDeferred(pg::Connection& conn, Deadline end, int mode, const std::string& cid);
  int64_t IngestImmediate(pg::Connection& conn, Deadline end, const std::string& cid);
  int64_t IngestImmediateOneConnection(pg::Connection& conn, Deadline end, const std::string& cid);
  int64_t IngestImmediateTwoConnections(pg::Connection& conn, pg::Connection& recorder,
                                        Deadline end, const std::string& cid);
  // Counts a recorded immediate outcome in /metrics; true if it completed.
  bool CountOutcome(const std::optional<TaskState>& recorded, const worker::Outcome& outcome);

  // --- server.cc
  // The heartbeat thread: heartbeats, re-registers if declared dead, and
  // finalises immediate tasks this process lost track of.
  void Heartbeats();
  std::string AppId() {
    std::lock_guard<std::mutex> lock(app_mu_);
    return app_id_;
  }
  store::AppRegistration Registration() const;
  // Registers again if this process is still known as `stale` (its row was
  // deleted: declared dead). Returns the current id.
  std::string ReRegister(pg::Connection& conn, const std::string& stale);

  ApiOptions options_;
  const TaskRegistry& registry_;
  ConnectionPool pool_;
  std::unique_ptr<http::HttpServer> http_;
  http::Router router_;

  std::shared_ptr<prometheus::Registry> metrics_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& latency_;
  prometheus::Family<prometheus::Counter>& dispatched_;
  prometheus::Family<prometheus::Counter>& immediate_;
  prometheus::Gauge& pool_opened_;
  // After everything it records through (the pool, the metrics).
  ImmediateRunner immediate_runs_;

  std::mutex app_mu_;
  std::string app_id_;  // under app_mu_
  // Immediate tasks between dispatch and a recorded outcome, by id; the
  // sweep leaves these alone.
  std::mutex inflight_mu_;
  std::set<std::string> inflight_;  // under inflight_mu_
  // Set on SIGINT/SIGTERM: no new connections; ingestion loops end early.
  std::atomic<bool> stopping_{false};
  std::atomic<bool> listen_done_{false};
  // Set when the last request is done: the heartbeat thread ends.
  std::atomic<bool> heartbeat_stop_{false};
  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
};

}  // namespace taskmill::api
