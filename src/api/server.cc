#include "api/server.h"

#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <iostream>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include <fmt/format.h>
#include <httplib.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <spdlog/spdlog.h>

#include "api/connection_pool.h"
#include "api/http/http_server.h"
#include "api/http/json_limits.h"
#include "api/http/router.h"
#include "api/immediate.h"
#include "api/task_query.h"
#include "store/migrate.h"
#include "store/task_store.h"
#include "worker/executor.h"

namespace taskmill::api {

namespace {

using nlohmann::json;
constexpr const char* kRoot = "/pulp/api/v3/";
constexpr auto kQueryTimeout = std::chrono::seconds(30);
constexpr auto kAcquireTimeout = std::chrono::seconds(10);
// At shutdown, how long overdue immediate tasks are waited for.
constexpr auto kOverdueShutdownGrace = std::chrono::seconds(30);

// An error answer: a status and {"detail": message}, plus {"limit": flag}
// when a configured limit was broken.
struct HttpError {
  int status;
  std::string detail;
  std::string limit = "";
};

std::string Hostname() {
  char buf[256] = {0};
  gethostname(buf, sizeof(buf) - 1);
  return buf;
}

// A random (version 4) uuid, for the ingestion endpoints' resources.
std::string NewUuid() {
  thread_local std::mt19937_64 rng(std::random_device{}());
  uint64_t a = rng(), b = rng();
  a = (a & 0xffffffffffff0fffULL) | 0x0000000000004000ULL;
  b = (b & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;
  return fmt::format("{:08x}-{:04x}-{:04x}-{:04x}-{:012x}", a >> 32, (a >> 16) & 0xffff, a & 0xffff,
                     b >> 48, b & 0xffffffffffffULL);
}

bool ConstantTimeEquals(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < std::max(a.size(), b.size()); ++i) {
    unsigned char x = i < a.size() ? a[i] : 0, y = i < b.size() ? b[i] : 0;
    diff |= x ^ y;
  }
  return diff == 0;
}

std::string Base64Decode(const std::string& in) {
  static const std::string kChars =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  int val = 0, bits = -8;
  for (char c : in) {
    if (c == '=') break;
    auto pos = kChars.find(c);
    if (pos == std::string::npos) return "";
    val = (val << 6) + static_cast<int>(pos);
    bits += 6;
    if (bits >= 0) {
      out.push_back(static_cast<char>((val >> bits) & 0xff));
      bits -= 8;
    }
  }
  return out;
}

int StatusFor(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument:
      return 400;
    case ErrorCode::kNotFound:
      return 404;
    case ErrorCode::kConflict:
      return 409;
    case ErrorCode::kUnavailable:
    case ErrorCode::kSchemaMismatch:
      return 503;
    default:
      return 500;
  }
}

// The statement of store::FinishTask, for pipelines.
pg::Connection::Statement FinishStatement(const std::string& task_id, const std::string& app_id,
                                          const worker::Outcome& o) {
  return store::FinishStatement(task_id, app_id, o.state, o.result, o.error);
}

// An immediate, not deferred no-op on a fresh resource, owned by `app_id`
// if it can run at once; for the immediate ingestion endpoint.
pg::Connection::Statement ImmediateNoopStatement(const std::string& cid,
                                                 const std::string& app_id) {
  pg::Params d;
  d.AddTextArray({NewUuid()}).Add(cid).Add(app_id);
  return {
      "SELECT id, state FROM taskmill.dispatch_task('taskmill.noop', '[]', '{}', $1::text[], "
      "'{}', true, false, NULL, NULL, $2, $3::uuid)",
      std::move(d)};
}

class Server {
 public:
  Server(ApiOptions options, const TaskRegistry& registry)
      : options_(std::move(options)),
        registry_(registry),
        // One connection per HTTP thread: a request holds at most one.
        pool_(options_.database_url, static_cast<size_t>(options_.threads)),
        metrics_(std::make_shared<prometheus::Registry>()),
        requests_(prometheus::BuildCounter()
                      .Name("taskmill_api_requests_total")
                      .Help("HTTP requests by route, method and status")
                      .Register(*metrics_)),
        latency_(prometheus::BuildHistogram()
                     .Name("taskmill_api_request_duration_seconds")
                     .Help("HTTP request duration by route")
                     .Register(*metrics_)),
        dispatched_(prometheus::BuildCounter()
                        .Name("taskmill_api_dispatched_tasks_total")
                        .Help("Tasks dispatched through this API process")
                        .Register(*metrics_)),
        immediate_(prometheus::BuildCounter()
                       .Name("taskmill_api_immediate_tasks_total")
                       .Help("Immediate tasks by outcome")
                       .Register(*metrics_)),
        pool_opened_(prometheus::BuildGauge()
                         .Name("taskmill_api_db_connections_opened")
                         .Help("Database connections opened by the pool (reconnects included)")
                         .Register(*metrics_)
                         .Add({})),
        immediate_runs_(registry_, options_.immediate_timeout,
                        static_cast<size_t>(options_.max_overdue_immediate),
                        [this](const Task& task, const worker::Outcome& outcome) {
                          return RecordOverdue(task, outcome);
                        }) {
    if (options_.name.empty()) options_.name = fmt::format("api-{}@{}", getpid(), Hostname());
  }

  int Run();

 private:
  void AddRoutes();
  void Add(const std::string& method, const std::string& pattern, const std::string& name,
           bool mutating, http::Router::Handler h) {
    router_.Add(method, pattern, name, mutating, std::move(h));
  }
  void Dispatch(const httplib::Request& req, httplib::Response& res);
  // Counts a request in /metrics.
  void Count(const std::string& route, const std::string& method, int status, double secs);
  // The JSON object body of a request under the configured limits, or an
  // HttpError.
  json ParseBody(const httplib::Request& req, bool allow_array = false) const;
  bool Authorized(const httplib::Request& req, bool mutating) const;

  // The heartbeat thread: heartbeats, re-registers if declared dead, and
  // finalises immediate tasks this process lost track of.
  void Heartbeats();
  std::string AppId() {
    std::lock_guard<std::mutex> lock(app_mu_);
    return app_id_;
  }
  store::AppRegistration Registration() const {
    return {"api", options_.name, Hostname(), getpid(), options_.ttl, registry_.Names()};
  }
  // Registers again if this process is still known as `stale` (its row was
  // deleted: declared dead). Returns the current id.
  std::string ReRegister(pg::Connection& conn, const std::string& stale);
  // Immediate tasks that failed to be finished or whose dispatch answer was
  // lost stay `running` under our id while we live; finalise them.
  void SweepLostImmediates(pg::Connection& conn);

  // Handlers.
  void ListTasks(const httplib::Request& req, httplib::Response& res);
  void GetTask(const httplib::Request& req, httplib::Response& res, const std::string& id);
  void CancelTask(const httplib::Request& req, httplib::Response& res, const std::string& id);
  void DeleteTask(const httplib::Request& req, httplib::Response& res, const std::string& id);
  void PurgeTasks(const httplib::Request& req, httplib::Response& res);
  void CreateTask(const httplib::Request& req, httplib::Response& res);
  void ListWorkers(const httplib::Request& req, httplib::Response& res);
  void GetWorker(const httplib::Request& req, httplib::Response& res, const std::string& id);
  void ListGroups(const httplib::Request& req, httplib::Response& res);
  void GetGroup(const httplib::Request& req, httplib::Response& res, const std::string& id);
  void CancelGroup(const httplib::Request& req, httplib::Response& res, const std::string& id);
  void CreateGroup(const httplib::Request& req, httplib::Response& res);
  void Status(const httplib::Request& req, httplib::Response& res);
  void Metrics(const httplib::Request& req, httplib::Response& res);
  void IngestTasks(const httplib::Request& req, httplib::Response& res, int mode);

  // Dispatches (and, if immediate and free, runs) one task. Returns its id.
  Result<std::string> DispatchOne(pg::Connection& conn, const DispatchRequest& original);
  // Runs an immediate task this process (as `app_id`) owns, records the
  // outcome and unblocks the tasks behind it. Returns the final state.
  TaskState RunImmediate(pg::Connection& conn, const Task& task, const std::string& app_id);
  // Records an immediate task's outcome (store::FinishTask), then, in a
  // separate transaction after that one committed, unblocks what queued
  // behind it (store::ProcessReleases). Retries database faults (with a new
  // connection if `conn` broke) until a deadline, because a task left
  // `running` under a live process would hold its resources indefinitely.
  std::optional<TaskState> FinishImmediate(pg::Connection& conn, const std::string& task_id,
                                           const std::string& app_id,
                                           const worker::Outcome& outcome);
  // The ingestion loops; both return the exact count and end early when the
  // server stops.
  int64_t IngestDeferred(pg::Connection& conn, Deadline end, int mode, const std::string& cid);
  int64_t IngestImmediate(pg::Connection& conn, Deadline end, const std::string& cid);
  int64_t IngestImmediateOneConnection(pg::Connection& conn, Deadline end, const std::string& cid);
  int64_t IngestImmediateTwoConnections(pg::Connection& conn, pg::Connection& recorder,
                                        Deadline end, const std::string& cid);
  // Records an overdue immediate task once its function has returned.
  std::optional<TaskState> RecordOverdue(const Task& task, const worker::Outcome& outcome);

  json GroupJson(pg::Connection& conn, const std::string& id);
  std::string PageLink(const httplib::Request& req, int limit, int offset) const;

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

// Keeps an immediate task's id in the in-flight set for a scope.
class InflightMark {
 public:
  InflightMark(std::mutex& mu, std::set<std::string>& set, std::string id)
      : mu_(mu), set_(set), id_(std::move(id)) {
    std::lock_guard<std::mutex> lock(mu_);
    set_.insert(id_);
  }
  InflightMark(const InflightMark&) = delete;
  InflightMark& operator=(const InflightMark&) = delete;
  ~InflightMark() {
    std::lock_guard<std::mutex> lock(mu_);
    set_.erase(id_);
  }

 private:
  std::mutex& mu_;
  std::set<std::string>& set_;
  std::string id_;
};

// Strings from the request (a path, a parameter name) may hold any bytes:
// the dump replaces invalid UTF-8 rather than throwing.
void Reply(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(http::DumpJson(body), "application/json");
}

void ReplyError(httplib::Response& res, int status, const std::string& detail,
                const std::string& limit = "") {
  json body{{"detail", detail}};
  if (!limit.empty()) body["limit"] = limit;
  Reply(res, status, body);
}

// The JSON body of a request within the JSON limits: an object, or with
// `allow_array` also an array; else an HttpError.
json Server::ParseBody(const httplib::Request& req, bool allow_array) const {
  if (req.body.empty()) throw HttpError{400, "a JSON body is required"};
  http::JsonLimitError error;
  auto j = http::ParseLimitedJson(req.body, options_.json_limits, &error);
  if (!j) throw HttpError{400, error.detail, error.limit};
  if (!j->is_object() && !(allow_array && j->is_array())) {
    throw HttpError{400, allow_array ? "the body must be a JSON object or an array of them"
                                     : "the body must be a JSON object"};
  }
  return std::move(*j);
}

QueryParams Query(const httplib::Request& req) {
  return QueryParams(req.params.begin(), req.params.end());
}

// The id in a path: a bare uuid, else 400 (Pulp answers 404 only for a
// well-formed id that names nothing).
std::string RequireUuid(const std::string& id) {
  if (!IsUuid(id)) throw HttpError{400, fmt::format("\"{}\" is not a valid uuid", id)};
  return id;
}

// An Authorization header's scheme (compared case-insensitively, RFC 9110
// 11.1) and its credentials, without the whitespace around them.
std::pair<std::string, std::string> SplitAuthorization(const std::string& header) {
  size_t start = header.find_first_not_of(" \t");
  if (start == std::string::npos) return {};
  size_t sp = header.find_first_of(" \t", start);
  if (sp == std::string::npos) return {header.substr(start), ""};
  std::string scheme = header.substr(start, sp - start);
  size_t cred = header.find_first_not_of(" \t", sp);
  size_t end = header.find_last_not_of(" \t");
  if (cred == std::string::npos) return {scheme, ""};
  std::transform(scheme.begin(), scheme.end(), scheme.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return {scheme, header.substr(cred, end + 1 - cred)};
}

bool Server::Authorized(const httplib::Request& req, bool mutating) const {
  bool configured = !options_.token.empty() || !options_.basic_user.empty();
  if (!configured) return true;  // loopback only, enforced at start
  if (!mutating && options_.read_open) return true;
  auto [scheme, credentials] = SplitAuthorization(req.get_header_value("Authorization"));
  if (!options_.token.empty() && scheme == "bearer" &&
      ConstantTimeEquals(credentials, options_.token)) {
    return true;
  }
  if (!options_.basic_user.empty() && scheme == "basic") {
    return ConstantTimeEquals(Base64Decode(credentials),
                              options_.basic_user + ":" + options_.basic_password);
  }
  return false;
}

void Server::Count(const std::string& route, const std::string& method, int status, double secs) {
  // A method is any token a client sends: only known ones become labels, so
  // the series stay few.
  static const std::set<std::string> kMethods = {"GET",  "POST",    "PUT",   "PATCH", "DELETE",
                                                 "HEAD", "OPTIONS", "TRACE", "-"};
  const std::string& label = kMethods.count(method) != 0 ? method : "other";
  requests_.Add({{"route", route}, {"method", label}, {"status", std::to_string(status)}})
      .Increment();
  latency_
      .Add({{"route", route}},
           prometheus::Histogram::BucketBoundaries{0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30})
      .Observe(secs);
}

void Server::Dispatch(const httplib::Request& req, httplib::Response& res) {
  auto start = std::chrono::steady_clock::now();
  std::string route_name = "unknown";
  try {
    // The path and parameters are decoded bytes; what is not UTF-8 cannot
    // name anything here, and must not reach JSON or the database.
    if (!http::IsValidUtf8(req.path)) throw HttpError{400, "the path is not valid UTF-8"};
    for (const auto& [k, v] : req.params) {
      if (!http::IsValidUtf8(k) || !http::IsValidUtf8(v)) {
        throw HttpError{400, "a query parameter is not valid UTF-8"};
      }
    }
    auto found = router_.Find(req.method, req.path);
    if (found.route == nullptr) {
      if (found.allowed.empty()) throw HttpError{404, fmt::format("no such path: {}", req.path)};
      res.set_header("Allow", fmt::format("{}", fmt::join(found.allowed, ", ")));
      throw HttpError{405, fmt::format("method {} not allowed on {}", req.method, req.path)};
    }
    const auto* match = found.route;
    route_name = match->name;
    if (!Authorized(req, match->mutating)) {
      // One challenge per scheme configured (RFC 7235 allows several).
      if (!options_.token.empty()) res.set_header("WWW-Authenticate", "Bearer realm=\"taskmill\"");
      if (!options_.basic_user.empty()) {
        res.set_header("WWW-Authenticate", "Basic realm=\"taskmill\", charset=\"UTF-8\"");
      }
      throw HttpError{401, "authentication credentials were not provided or are wrong"};
    }
    match->handler(req, res, found.captures);
  } catch (const HttpError& e) {
    ReplyError(res, e.status, e.detail, e.limit);
  } catch (const pg::Error& e) {
    if (auto mapped = store::MapSqlError(e)) {
      ReplyError(res, StatusFor(mapped->code), mapped->message);
    } else if (e.sqlstate().rfind("22", 0) == 0) {
      // A data exception: a value of the request the server could not take
      // (our own checks should have caught it first).
      ReplyError(res, 400, fmt::format("invalid value: {}", e.what()));
    } else if (e.retryable()) {
      spdlog::warn("{} {}: database unavailable: {}", req.method, req.path, e.what());
      ReplyError(res, 503, fmt::format("database unavailable: {}", e.what()));
    } else {
      spdlog::error("{} {}: database error {}: {}", req.method, req.path, e.sqlstate(), e.what());
      ReplyError(res, 500, "internal error (logged)");
    }
  } catch (const std::exception& e) {
    spdlog::error("{} {}: {}", req.method, req.path, e.what());
    ReplyError(res, 500, "internal error (logged)");
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  Count(route_name, req.method, res.status, secs);
}

// The Host header is the client's word: links are built from --public-url
// when it is set, else they are relative references (path and query), which
// a client resolves against the URL it asked.
std::string Server::PageLink(const httplib::Request& req, int limit, int offset) const {
  std::string q;
  for (const auto& [k, v] : req.params) {
    if (k == "limit" || k == "offset") continue;
    q += fmt::format("{}={}&", httplib::detail::encode_query_param(k),
                     httplib::detail::encode_query_param(v));
  }
  q += fmt::format("limit={}&offset={}", limit, offset);
  // req.path matched a list route: a fixed path, nothing to encode.
  return fmt::format("{}{}?{}", options_.public_url, req.path, q);
}

void Server::ListTasks(const httplib::Request& req, httplib::Response& res) {
  auto q = ParseTaskQuery(Query(req));
  if (!q.ok()) throw HttpError{400, q.error().message};
  auto conn = pool_.Acquire(DeadlineIn(kAcquireTimeout));
  auto count = conn->Exec(fmt::format("SELECT count(*) FROM taskmill.task_view WHERE {}", q->where),
                          q->params, DeadlineIn(kQueryTimeout))
                   .GetInt(0, 0);
  auto rows =
      conn->Exec(fmt::format("SELECT {} FROM taskmill.task_view WHERE {} ORDER BY {} "
                             "LIMIT {} OFFSET {}",
                             store::kTaskColumns, q->where, q->order_by, q->limit, q->offset),
                 q->params, DeadlineIn(kQueryTimeout));
  json results = json::array();
  for (int i = 0; i < rows.rows(); ++i) {
    results.push_back(ShapeTask(TaskToJson(store::TaskFromRow(rows, i), kRoot), *q));
  }
  json body{{"count", count}, {"results", results}};
  body["next"] = q->offset + q->limit < count ? json(PageLink(req, q->limit, q->offset + q->limit))
                                              : json(nullptr);
  body["previous"] = q->offset > 0
                         ? json(PageLink(req, q->limit, std::max(0, q->offset - q->limit)))
                         : json(nullptr);
  Reply(res, 200, body);
}

void Server::GetTask(const httplib::Request& req, httplib::Response& res, const std::string& id) {
  TaskQuery shape;
  for (const auto& [k, v] : req.params) {
    if (k == "fields") {
      shape.fields = SplitComma(v);
    } else if (k == "exclude_fields") {
      shape.exclude_fields = SplitComma(v);
    } else if (k == "minimal") {
      shape.minimal = v == "true" || v == "1";
    } else {
      throw HttpError{400, fmt::format("unknown parameter \"{}\"", k)};
    }
  }
  auto conn = pool_.Acquire(DeadlineIn(kAcquireTimeout));
  auto task = store::GetTask(*conn, RequireUuid(id), DeadlineIn(kQueryTimeout));
  if (!task.ok()) throw HttpError{StatusFor(task.error().code), task.error().message};
  Reply(res, 200, ShapeTask(TaskToJson(*task, kRoot), shape));
}

void Server::CancelTask(const httplib::Request& req, httplib::Response& res,
                        const std::string& id) {
  json body = ParseBody(req);
  if (body.size() != 1 || !body.contains("state") || body["state"] != "canceled") {
    throw HttpError{400, "The only acceptable value for 'state' is 'canceled'."};
  }
  std::string uuid = RequireUuid(id);
  auto conn = pool_.Acquire(DeadlineIn(kAcquireTimeout));
  auto st = store::CancelTask(*conn, uuid, DeadlineIn(kQueryTimeout));
  if (!st.ok() && st.error().code != ErrorCode::kConflict) {
    throw HttpError{StatusFor(st.error().code), st.error().message};
  }
  if (st.ok() && *st == TaskState::kCanceled) {
    // Its resources passed on: let the tasks behind it through now.
    store::ProcessReleases(*conn, DeadlineIn(kQueryTimeout));
  }
  auto task = store::GetTask(*conn, uuid, DeadlineIn(kQueryTimeout));
  if (!task.ok()) throw HttpError{StatusFor(task.error().code), task.error().message};
  Reply(res, st.ok() ? 200 : 409, TaskToJson(*task, kRoot));
}

void Server::DeleteTask(const httplib::Request&, httplib::Response& res, const std::string& id) {
  std::string uuid = RequireUuid(id);
  auto conn = pool_.Acquire(DeadlineIn(kAcquireTimeout));
  auto r = conn->Exec(
      "WITH d AS (DELETE FROM taskmill.task WHERE id = $1::uuid "
      "AND state IN ('completed', 'failed', 'canceled') RETURNING 1) "
      "SELECT (SELECT count(*) FROM d), (SELECT state FROM taskmill.task WHERE id = $1::uuid)",
      pg::Params().Add(uuid), DeadlineIn(kQueryTimeout));
  if (r.GetInt(0, 0) == 1) {
    res.status = 204;
    return;
  }
  if (r.IsNull(0, 1)) throw HttpError{404, fmt::format("task {} not found", uuid)};
  throw HttpError{
      409, fmt::format("task {} is {}: only finished tasks can be deleted", uuid, r.Get(0, 1))};
}

void Server::PurgeTasks(const httplib::Request& req, httplib::Response& res) {
  json body = req.body.empty() ? json::object() : ParseBody(req);
  std::string before;
  std::vector<std::string> states = {"completed"};
  for (auto it = body.begin(); it != body.end(); ++it) {
    if (it.key() == "finished_before") {
      if (!it->is_string()) throw HttpError{400, "finished_before must be a date string"};
      auto date = NormalizeDate(it->get<std::string>());
      if (!date) {
        throw HttpError{400, fmt::format("finished_before: \"{}\" is not an ISO 8601 date",
                                         it->get<std::string>())};
      }
      before = *date;
    } else if (it.key() == "states") {
      if (!it->is_array() || it->empty())
        throw HttpError{400, "states must be a list of final states"};
      states.clear();
      for (const auto& s : *it) {
        if (!s.is_string()) throw HttpError{400, "states must be a list of final states"};
        auto st = ParseTaskState(s.get<std::string>());
        if (!st || !IsFinal(*st)) {
          throw HttpError{400, fmt::format("\"{}\" is not a final state (completed, failed, "
                                           "canceled)",
                                           s.get<std::string>())};
        }
        states.push_back(s.get<std::string>());
      }
    } else {
      throw HttpError{400, fmt::format("unknown field \"{}\"", it.key())};
    }
  }
  auto conn = pool_.Acquire(DeadlineIn(kAcquireTimeout));
  pg::Params p;
  p.Add(before.empty() ? std::optional<std::string>() : std::optional<std::string>(before))
      .AddTextArray(states);
  auto r = conn->Exec(
      "WITH d AS (DELETE FROM taskmill.task WHERE state = ANY ($2::text[]) AND finished_at < "
      "coalesce($1::timestamptz, now() - interval '30 days') RETURNING 1) SELECT count(*) FROM d",
      p, DeadlineIn(std::chrono::minutes(5)));
  Reply(res, 200, json{{"deleted", r.GetInt(0, 0)}});
}

Result<std::string> Server::DispatchOne(pg::Connection& conn, const DispatchRequest& original) {
  // An immediate task runs here only if its function is declared safe to
  // run in this process and not too many overdue ones are still running;
  // otherwise it waits for a worker, as a deferred one would.
  bool run_inline = original.immediate && immediate_runs_.MayRunInline(original.name);
  const DispatchRequest* request = &original;
  DispatchRequest for_workers;
  if (original.immediate && !run_inline && !original.deferred) {
    for_workers = original;
    for_workers.deferred = true;
    request = &for_workers;
  }
  std::optional<std::string> run_here;
  if (run_inline) run_here = AppId();
  auto out = store::DispatchTask(conn, *request, run_here, DeadlineIn(kQueryTimeout));
  if (!out.ok() && run_here && out.error().code == ErrorCode::kConflict &&
      !store::Heartbeat(conn, *run_here, DeadlineIn(kQueryTimeout))) {
    // We were declared dead (our row is gone, so dispatch refused us as the
    // owner): register again and dispatch once more.
    run_here = ReRegister(conn, *run_here);
    out = store::DispatchTask(conn, *request, run_here, DeadlineIn(kQueryTimeout));
  }
  if (!out.ok()) {
    // A task group or parent that does not exist is a bad request body, not
    // a missing resource at this URL.
    if (out.error().code == ErrorCode::kNotFound) {
      return MakeError(ErrorCode::kInvalidArgument, out.error().message);
    }
    return out.error();
  }
  dispatched_.Add({}).Increment();
  if (request->immediate) {
    if (run_here && out->state == TaskState::kRunning) {
      Task task;
      task.id = out->id;
      task.name = request->name;
      task.args = request->args;
      task.kwargs = request->kwargs;
      task.exclusive_resources = request->exclusive_resources;
      task.shared_resources = request->shared_resources;
      task.immediate = true;
      task.deferred = request->deferred;
      task.state = TaskState::kRunning;
      task.app_lock = run_here;
      RunImmediate(conn, task, *run_here);
    } else {
      immediate_.Add({{"outcome", out->state == TaskState::kCanceled ? "refused" : "deferred"}})
          .Increment();
    }
  }
  return out->id;
}

TaskState Server::RunImmediate(pg::Connection& conn, const Task& task, const std::string& app_id) {
  InflightMark mark(inflight_mu_, inflight_, task.id);
  auto o = immediate_runs_.Run(task);
  if (!o) {
    // Still running past its timeout: recorded when it returns.
    immediate_.Add({{"outcome", "overdue"}}).Increment();
    return TaskState::kRunning;
  }
  auto final_state = FinishImmediate(conn, task.id, app_id, *o);
  TaskState st = final_state.value_or(o->state);
  immediate_.Add({{"outcome", std::string(TaskStateName(st))}}).Increment();
  return st;
}

std::optional<TaskState> Server::RecordOverdue(const Task& task, const worker::Outcome& outcome) {
  auto conn = pool_.Acquire(DeadlineIn(kAcquireTimeout));
  auto st = FinishImmediate(*conn, task.id, task.app_lock.value_or(""), outcome);
  immediate_.Add({{"outcome", std::string(TaskStateName(st.value_or(outcome.state)))}}).Increment();
  return st;
}

std::optional<TaskState> Server::FinishImmediate(pg::Connection& conn, const std::string& task_id,
                                                 const std::string& app_id,
                                                 const worker::Outcome& outcome) {
  Deadline give_up = DeadlineIn(std::chrono::seconds(60));
  std::optional<TaskState> final_state;
  for (int attempt = 0;; ++attempt) {
    try {
      if (!conn.ok()) conn = pg::Connection::Open(options_.database_url, DeadlineIn(kQueryTimeout));
      final_state = store::FinishTask(conn, task_id, app_id, outcome.state, outcome.result,
                                      outcome.error, DeadlineIn(kQueryTimeout));
      break;
    } catch (const pg::Error& e) {
      if (!e.retryable() || Expired(give_up)) {
        spdlog::error(
            "could not record the outcome of immediate task {}: {}; it stays running "
            "until the sweep or the janitor ends it",
            task_id, e.what());
        throw;
      }
      if (attempt == 0)
        spdlog::warn("recording immediate task {}: {}; retrying", task_id, e.what());
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }
  // Only after the finish committed can the tasks queued behind it be judged
  // free. Not fatal if it fails: the next claim of any worker does it too.
  try {
    store::ProcessReleases(conn, DeadlineIn(kQueryTimeout));
  } catch (const pg::Error& e) {
    spdlog::warn("unblocking behind immediate task {}: {} (a worker will do it)", task_id,
                 e.what());
  }
  return final_state;
}

std::string Server::ReRegister(pg::Connection& conn, const std::string& stale) {
  std::lock_guard<std::mutex> lock(app_mu_);
  if (app_id_ != stale) return app_id_;  // another thread did it already
  auto app = store::RegisterApp(conn, Registration(), DeadlineIn(kQueryTimeout));
  spdlog::error(
      "this API process was declared dead (no heartbeat within {}s); registered again "
      "as {}",
      options_.ttl, app.id);
  app_id_ = app.id;
  return app_id_;
}

void Server::SweepLostImmediates(pg::Connection& conn) {
  std::string app_id = AppId();
  // Old enough that its dispatch answer, had it arrived, would have put it in
  // the in-flight set long ago.
  double min_age = std::chrono::duration<double>(kQueryTimeout).count() + 5;
  auto rows = conn.Exec(
      "SELECT id FROM taskmill.task WHERE app_lock = $1::uuid AND state IN ('running', "
      "'canceling') AND started_at < clock_timestamp() - make_interval(secs => $2) LIMIT 100",
      pg::Params().Add(app_id).Add(min_age), DeadlineIn(kQueryTimeout));
  for (int i = 0; i < rows.rows(); ++i) {
    std::string id = rows.GetString(i, 0);
    {
      std::lock_guard<std::mutex> lock(inflight_mu_);
      if (inflight_.count(id) != 0) continue;
    }
    if (immediate_runs_.Owns(id)) continue;
    worker::Outcome lost;
    lost.state = TaskState::kFailed;
    lost.error = {{"description",
                   "The API process lost track of this immediate task (a database fault); its "
                   "outcome is unknown."}};
    spdlog::warn("finalising immediate task {}: its outcome was never recorded", id);
    store::FinishTask(conn, id, app_id, lost.state, lost.result, lost.error,
                      DeadlineIn(kQueryTimeout));
    store::ProcessReleases(conn, DeadlineIn(kQueryTimeout));
  }
}

namespace {

// One task of a POST /tasks/ body. Errors are HttpError 400 whose message
// starts with `where` ("" for a single task, "tasks[i]: " in an array).
DispatchRequest DispatchRequestFromJson(const json& body, const std::string& where) {
  auto bad = [&](const std::string& message) { return HttpError{400, where + message}; };
  if (!body.is_object()) throw bad("a task must be a JSON object");
  DispatchRequest r;
  bool have_name = false;
  auto string_list = [&](const json& v, const char* field) {
    if (!v.is_array()) throw bad(fmt::format("{} must be a list of strings", field));
    std::vector<std::string> out;
    for (const auto& s : v) {
      if (!s.is_string()) throw bad(fmt::format("{} must be a list of strings", field));
      out.push_back(s.get<std::string>());
    }
    return out;
  };
  for (auto it = body.begin(); it != body.end(); ++it) {
    const std::string& k = it.key();
    const json& v = *it;
    if (k == "name") {
      if (!v.is_string()) throw bad("name must be a string");
      r.name = v.get<std::string>();
      have_name = true;
    } else if (k == "args") {
      if (!v.is_array()) throw bad("args must be a JSON array");
      r.args = v;
    } else if (k == "kwargs") {
      if (!v.is_object()) throw bad("kwargs must be a JSON object");
      r.kwargs = v;
    } else if (k == "exclusive_resources") {
      r.exclusive_resources = string_list(v, "exclusive_resources");
    } else if (k == "shared_resources") {
      r.shared_resources = string_list(v, "shared_resources");
    } else if (k == "immediate" || k == "deferred") {
      if (!v.is_boolean()) throw bad(fmt::format("{} must be true or false", k));
      (k == "immediate" ? r.immediate : r.deferred) = v.get<bool>();
    } else if (k == "task_group") {
      if (v.is_null()) continue;
      if (!v.is_string() || !UuidFromRef(v.get<std::string>())) {
        throw bad("task_group must be a task group href or uuid");
      }
      r.task_group = UuidFromRef(v.get<std::string>());
    } else {
      throw bad(fmt::format("unknown field \"{}\"", k));
    }
  }
  if (!have_name) throw bad("name is required");
  return r;
}

}  // namespace

// A JSON object creates one task (202 {"task": href}); a JSON array creates
// all of its tasks in one transaction with the semantics of one POST per
// element in order (202 {"tasks": [href, ...]}), or none of them (400
// naming the first bad element as "tasks[i]: ..."). Batched tasks are never
// run here as immediate tasks: they go to the workers.
void Server::CreateTask(const httplib::Request& req, httplib::Response& res) {
  json body = ParseBody(req, /*allow_array=*/true);
  std::string cid = req.get_header_value("Correlation-ID");
  if (body.is_array()) {
    // The batch size and "every batched task is deferred" are the store's
    // checks (store::DispatchMany), answered as 400 like any invalid input.
    std::vector<DispatchRequest> requests;
    requests.reserve(body.size());
    for (size_t i = 0; i < body.size(); ++i) {
      requests.push_back(DispatchRequestFromJson(body[i], fmt::format("tasks[{}]: ", i)));
      requests.back().logging_cid = cid;
    }
    auto conn = pool_.Acquire(DeadlineIn(kAcquireTimeout));
    auto ids = store::DispatchMany(*conn, requests, DeadlineIn(kQueryTimeout));
    if (!ids.ok()) throw HttpError{StatusFor(ids.error().code), ids.error().message};
    json hrefs = json::array();
    for (const auto& id : *ids) hrefs.push_back(fmt::format("{}tasks/{}/", kRoot, id));
    Reply(res, 202, json{{"tasks", std::move(hrefs)}});
    return;
  }
  DispatchRequest r = DispatchRequestFromJson(body, "");
  r.logging_cid = cid;
  auto conn = pool_.Acquire(DeadlineIn(kAcquireTimeout));
  auto id = DispatchOne(*conn, r);
  if (!id.ok()) throw HttpError{StatusFor(id.error().code), id.error().message};
  Reply(res, 202, json{{"task", fmt::format("{}tasks/{}/", kRoot, *id)}});
}

void Server::ListWorkers(const httplib::Request& req, httplib::Response& res) {
  std::optional<bool> online;
  std::optional<std::string> name;
  int limit = 100, offset = 0;
  for (const auto& [k, v] : req.params) {
    auto boolean = [&](const std::string& s) {
      if (s == "true" || s == "1") return true;
      if (s == "false" || s == "0") return false;
      throw HttpError{400, fmt::format("{} must be true or false", k)};
    };
    if (k == "online") {
      online = boolean(v);
    } else if (k == "missing") {
      online = !boolean(v);
    } else if (k == "name") {
      name = v;
    } else if (k == "limit" || k == "offset") {
      try {
        int x = std::stoi(v);
        if (x < (k == "limit" ? 1 : 0)) throw std::out_of_range("");
        (k == "limit" ? limit : offset) = x;
      } catch (...) {
        throw HttpError{400, fmt::format("{} must be a whole number", k)};
      }
    } else {
      throw HttpError{400, fmt::format("unknown filter \"{}\"", k)};
    }
  }
  auto conn = pool_.Acquire(DeadlineIn(kAcquireTimeout));
  std::vector<App> apps = store::ListApps(*conn, std::string("worker"), DeadlineIn(kQueryTimeout));
  json results = json::array();
  int count = 0;
  for (const auto& a : apps) {
    if (online && a.online != *online) continue;
    if (name && a.name != *name) continue;
    if (count >= offset && count < offset + limit) results.push_back(AppToJson(a, kRoot));
    ++count;
  }
  json body{{"count", count}, {"results", results}};
  body["next"] =
      offset + limit < count ? json(PageLink(req, limit, offset + limit)) : json(nullptr);
  body["previous"] =
      offset > 0 ? json(PageLink(req, limit, std::max(0, offset - limit))) : json(nullptr);
  Reply(res, 200, body);
}

void Server::GetWorker(const httplib::Request&, httplib::Response& res, const std::string& id) {
  std::string uuid = RequireUuid(id);
  auto conn = pool_.Acquire(DeadlineIn(kAcquireTimeout));
  for (const auto& a : store::ListApps(*conn, std::string("worker"), DeadlineIn(kQueryTimeout))) {
    if (a.id == uuid) {
      Reply(res, 200, AppToJson(a, kRoot));
      return;
    }
  }
  throw HttpError{404, fmt::format("worker {} not found", uuid)};
}

json Server::GroupJson(pg::Connection& conn, const std::string& id) {
  auto g = conn.Exec(
      "SELECT g.id, g.description, g.all_tasks_dispatched, "
      "count(*) FILTER (WHERE t.state = 'waiting'), count(*) FILTER (WHERE t.state = 'running'), "
      "count(*) FILTER (WHERE t.state = 'completed'), count(*) FILTER (WHERE t.state = 'failed'), "
      "count(*) FILTER (WHERE t.state = 'canceling'), count(*) FILTER (WHERE t.state = "
      "'canceled') FROM taskmill.task_group g LEFT JOIN taskmill.task t ON t.task_group = g.id "
      "WHERE g.id = $1::uuid GROUP BY g.id",
      pg::Params().Add(id), DeadlineIn(kQueryTimeout));
  if (g.rows() == 0) throw HttpError{404, fmt::format("task group {} not found", id)};
  json j{{"pulp_href", fmt::format("{}task-groups/{}/", kRoot, id)},
         {"prn", "prn:taskmill.taskgroup:" + id},
         {"description", g.GetString(0, 1)},
         {"all_tasks_dispatched", g.GetBool(0, 2)},
         {"waiting", g.GetInt(0, 3)},
         {"skipped", 0},
         {"running", g.GetInt(0, 4)},
         {"completed", g.GetInt(0, 5)},
         {"failed", g.GetInt(0, 6)},
         {"canceling", g.GetInt(0, 7)},
         {"canceled", g.GetInt(0, 8)},
         {"group_progress_reports", json::array()}};
  auto rows = conn.Exec(fmt::format("SELECT {} FROM taskmill.task_view WHERE task_group = $1::uuid "
                                    "ORDER BY seq",
                                    store::kTaskColumns),
                        pg::Params().Add(id), DeadlineIn(kQueryTimeout));
  TaskQuery minimal;
  minimal.minimal = true;
  json tasks = json::array();
  for (int i = 0; i < rows.rows(); ++i) {
    tasks.push_back(ShapeTask(TaskToJson(store::TaskFromRow(rows, i), kRoot), minimal));
  }
  j["tasks"] = tasks;
  return j;
}

void Server::ListGroups(const httplib::Request& req, httplib::Response& res) {
  for (const auto& [k, v] : req.params) {
    if (k != "limit" && k != "offset")
      throw HttpError{400, fmt::format("unknown filter \"{}\"", k)};
  }
  int limit = 100, offset = 0;
  try {
    if (req.has_param("limit")) limit = std::stoi(req.get_param_value("limit"));
    if (req.has_param("offset")) offset = std::stoi(req.get_param_value("offset"));
  } catch (...) {
    throw HttpError{400, "limit and offset must be whole numbers"};
  }
  if (limit < 1 || limit > 1000 || offset < 0) throw HttpError{400, "limit or offset out of range"};
  auto conn = pool_.Acquire(DeadlineIn(kAcquireTimeout));
  auto count = conn->Exec("SELECT count(*) FROM taskmill.task_group", DeadlineIn(kQueryTimeout))
                   .GetInt(0, 0);
  auto ids =
      conn->Exec("SELECT id FROM taskmill.task_group ORDER BY created_at DESC LIMIT $1 OFFSET $2",
                 pg::Params().Add(limit).Add(offset), DeadlineIn(kQueryTimeout));
  json results = json::array();
  for (int i = 0; i < ids.rows(); ++i) results.push_back(GroupJson(*conn, ids.GetString(i, 0)));
  json body{{"count", count}, {"results", results}};
  body["next"] =
      offset + limit < count ? json(PageLink(req, limit, offset + limit)) : json(nullptr);
  body["previous"] =
      offset > 0 ? json(PageLink(req, limit, std::max(0, offset - limit))) : json(nullptr);
  Reply(res, 200, body);
}

void Server::GetGroup(const httplib::Request&, httplib::Response& res, const std::string& id) {
  std::string uuid = RequireUuid(id);
  auto conn = pool_.Acquire(DeadlineIn(kAcquireTimeout));
  Reply(res, 200, GroupJson(*conn, uuid));
}

void Server::CancelGroup(const httplib::Request& req, httplib::Response& res,
                         const std::string& id) {
  json body = ParseBody(req);
  if (body.size() != 1 || !body.contains("state") || body["state"] != "canceled") {
    throw HttpError{400, "The only acceptable value for 'state' is 'canceled'."};
  }
  std::string uuid = RequireUuid(id);
  auto conn = pool_.Acquire(DeadlineIn(kAcquireTimeout));
  auto n = store::CancelTaskGroup(*conn, uuid, DeadlineIn(kQueryTimeout));
  if (!n.ok()) throw HttpError{StatusFor(n.error().code), n.error().message};
  store::ProcessReleases(*conn, DeadlineIn(kQueryTimeout));
  json g = GroupJson(*conn, uuid);
  bool unfinished = g["running"].get<int64_t>() + g["waiting"].get<int64_t>() > 0;
  Reply(res, unfinished ? 409 : 200, g);
}

void Server::CreateGroup(const httplib::Request& req, httplib::Response& res) {
  json body = req.body.empty() ? json::object() : ParseBody(req);
  std::string description;
  for (auto it = body.begin(); it != body.end(); ++it) {
    if (it.key() != "description")
      throw HttpError{400, fmt::format("unknown field \"{}\"", it.key())};
    if (!it->is_string()) throw HttpError{400, "description must be a string"};
    description = it->get<std::string>();
  }
  auto conn = pool_.Acquire(DeadlineIn(kAcquireTimeout));
  auto id = store::CreateTaskGroup(*conn, description, DeadlineIn(kQueryTimeout));
  Reply(res, 201, GroupJson(*conn, *id));
}

void RejectParams(const httplib::Request& req) {
  if (!req.params.empty()) {
    throw HttpError{400, fmt::format("unknown parameter \"{}\"", req.params.begin()->first)};
  }
}

void Server::Status(const httplib::Request& req, httplib::Response& res) {
  RejectParams(req);
  json body{
      {"versions", json::array({json{{"component", "taskmill"}, {"version", TASKMILL_VERSION}}})}};
  try {
    auto conn = pool_.Acquire(DeadlineIn(std::chrono::seconds(5)));
    auto apps = store::ListApps(*conn, std::nullopt, DeadlineIn(std::chrono::seconds(5)));
    json workers = json::array(), api_apps = json::array();
    for (const auto& a : apps) {
      if (!a.online) continue;
      (a.app_type == "worker" ? workers : api_apps).push_back(AppToJson(a, kRoot));
    }
    body["database_connection"] = {{"connected", true}};
    body["schema_version"] = store::SchemaVersion(*conn, DeadlineIn(std::chrono::seconds(5)));
    body["online_workers"] = workers;
    body["online_api_apps"] = api_apps;
    Reply(res, 200, body);
  } catch (const pg::Error& e) {
    body["database_connection"] = {{"connected", false}, {"error", e.what()}};
    Reply(res, 503, body);
  }
}

void Server::Metrics(const httplib::Request& req, httplib::Response& res) {
  RejectParams(req);
  pool_opened_.Set(static_cast<double>(pool_.opened()));
  res.status = 200;
  res.set_content(prometheus::TextSerializer().Serialize(metrics_->Collect()),
                  "text/plain; version=0.0.4");
}

// The seed's ingestion test: dispatch no-op tasks for `timeout` seconds.
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
      auto n = conn->Exec(mode == 2 ? "SELECT count(*) FROM taskmill.task WHERE logging_cid = $1 "
                                      "AND state = 'completed'"
                                    : "SELECT count(*) FROM taskmill.task WHERE logging_cid = $1",
                          pg::Params().Add(cid), DeadlineIn(kQueryTimeout));
      Reply(res, 503,
            json{{"detail", fmt::format("database error after some tasks: {}", e.what())},
                 {"tasks_executed", n.GetInt(0, 0)}});
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
      st.sql =
          "SELECT id FROM taskmill.dispatch_task('taskmill.noop', '[]', '{}', $1::text[], '{}', "
          "false, true, NULL, NULL, $2)";
      st.params = pg::Params();
      st.params.AddTextArray({mode == 0 ? NewUuid() : three[rng() % 3]}).Add(cid);
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

namespace {

// An immediate task that ran and whose outcome is still to be recorded.
struct PendingOutcome {
  std::string id;
  worker::Outcome outcome;
  std::unique_ptr<InflightMark> mark;
};

}  // namespace

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
        std::vector<pg::Connection::Statement> stmts;
        for (const auto& p : batch) stmts.push_back(FinishStatement(p.id, app_id, p.outcome));
        stmts.push_back({"SELECT taskmill.process_releases()", {}});
        std::vector<pg::Result> results;
        try {
          results = recorder.ExecPipeline(stmts, DeadlineIn(kQueryTimeout));
        } catch (...) {
          // Back for the clean-up below (finishing twice is harmless).
          std::lock_guard<std::mutex> lock(mu);
          for (auto& p : batch) pending.push_back(std::move(p));
          throw;
        }
        for (size_t i = 0; i < batch.size(); ++i) {
          std::optional<TaskState> st;
          if (!results[i].IsNull(0, 0)) st = ParseTaskState(results[i].Get(0, 0));
          if (st == TaskState::kCompleted) ++completed;
          immediate_
              .Add({{"outcome", std::string(TaskStateName(st.value_or(batch[i].outcome.state)))}})
              .Increment();
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
      for (int i = 0; i < kDispatchDepth; ++i) batch.push_back(ImmediateNoopStatement(cid, app_id));
      auto results = conn.ExecPipeline(batch, DeadlineIn(kQueryTimeout));
      dispatched.Increment(static_cast<double>(results.size()));
      std::vector<PendingOutcome> ran;
      for (const auto& r : results) {
        if (r.Get(0, 1) != "running") {
          immediate_.Add({{"outcome", "refused"}}).Increment();
          continue;
        }
        Task task;
        task.id = r.GetString(0, 0);
        task.name = "taskmill.noop";
        task.immediate = true;
        task.deferred = false;
        task.state = TaskState::kRunning;
        task.app_lock = app_id;
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
  struct Pending {
    std::string id;
    worker::Outcome outcome;
    std::unique_ptr<InflightMark> mark;
  };
  std::string app_id = AppId();
  std::optional<Pending> prev;
  int64_t completed = 0;
  auto& dispatched = dispatched_.Add({});
  auto count_finish = [&](const std::optional<TaskState>& st, const worker::Outcome& o) {
    TaskState final_state = st.value_or(o.state);
    if (st == TaskState::kCompleted) ++completed;
    immediate_.Add({{"outcome", std::string(TaskStateName(final_state))}}).Increment();
  };
  try {
    while (!Expired(end) && !stopping_) {
      std::vector<pg::Connection::Statement> stmts;
      if (prev) {
        stmts.push_back(FinishStatement(prev->id, app_id, prev->outcome));
        stmts.push_back({"SELECT taskmill.process_releases()", {}});
      }
      stmts.push_back(ImmediateNoopStatement(cid, app_id));
      auto results = conn.ExecPipeline(stmts, DeadlineIn(kQueryTimeout));
      if (prev) {
        std::optional<TaskState> st;
        if (!results[0].IsNull(0, 0)) st = ParseTaskState(results[0].Get(0, 0));
        count_finish(st, prev->outcome);
        prev.reset();
      }
      dispatched.Increment();
      const pg::Result& r = results.back();
      if (r.Get(0, 1) != "running") {
        // Busy (cannot happen with a fresh resource) and not deferred: it
        // ended canceled; not counted.
        immediate_.Add({{"outcome", "refused"}}).Increment();
        continue;
      }
      Task task;
      task.id = r.GetString(0, 0);
      task.name = "taskmill.noop";
      task.immediate = true;
      task.deferred = false;
      task.state = TaskState::kRunning;
      task.app_lock = app_id;
      auto mark = std::make_unique<InflightMark>(inflight_mu_, inflight_, task.id);
      auto outcome = immediate_runs_.Run(task);
      if (!outcome) continue;  // overdue: recorded when it returns
      prev = Pending{task.id, std::move(*outcome), std::move(mark)};
    }
  } catch (const pg::Error&) {
    // Record the task that ran (a finish that already committed is a no-op
    // now); a dispatch whose answer was lost is left to the sweep.
    if (prev) FinishImmediate(conn, prev->id, app_id, prev->outcome);
    throw;
  }
  if (prev) count_finish(FinishImmediate(conn, prev->id, app_id, prev->outcome), prev->outcome);
  return completed;
}

void Server::AddRoutes() {
  const std::string id = "{}";
  const std::string r = "/pulp/api/v3/";
  auto with_id = [](auto fn) {
    return [fn](const httplib::Request& req, httplib::Response& res,
                const std::vector<std::string>& captures) { fn(req, res, captures.at(0)); };
  };
  Add("GET", r + "tasks/", "tasks", false,
      [this](auto& req, auto& res, auto&) { ListTasks(req, res); });
  Add("POST", r + "tasks/", "tasks", true,
      [this](auto& req, auto& res, auto&) { CreateTask(req, res); });
  Add("POST", r + "tasks/purge/", "tasks-purge", true,
      [this](auto& req, auto& res, auto&) { PurgeTasks(req, res); });
  Add("GET", r + "tasks/" + id + "/", "task", false,
      with_id([this](auto& req, auto& res, const std::string& i) { GetTask(req, res, i); }));
  Add("PATCH", r + "tasks/" + id + "/", "task", true,
      with_id([this](auto& req, auto& res, const std::string& i) { CancelTask(req, res, i); }));
  Add("DELETE", r + "tasks/" + id + "/", "task", true,
      with_id([this](auto& req, auto& res, const std::string& i) { DeleteTask(req, res, i); }));
  Add("GET", r + "workers/", "workers", false,
      [this](auto& req, auto& res, auto&) { ListWorkers(req, res); });
  Add("GET", r + "workers/" + id + "/", "worker", false,
      with_id([this](auto& req, auto& res, const std::string& i) { GetWorker(req, res, i); }));
  Add("GET", r + "task-groups/", "task-groups", false,
      [this](auto& req, auto& res, auto&) { ListGroups(req, res); });
  Add("POST", r + "task-groups/", "task-groups", true,
      [this](auto& req, auto& res, auto&) { CreateGroup(req, res); });
  Add("GET", r + "task-groups/" + id + "/", "task-group", false,
      with_id([this](auto& req, auto& res, const std::string& i) { GetGroup(req, res, i); }));
  Add("PATCH", r + "task-groups/" + id + "/", "task-group", true,
      with_id([this](auto& req, auto& res, const std::string& i) { CancelGroup(req, res, i); }));
  Add("GET", r + "status/", "status", false,
      [this](auto& req, auto& res, auto&) { Status(req, res); });
  Add("GET", "/metrics", "metrics", false,
      [this](auto& req, auto& res, auto&) { Metrics(req, res); });
  if (options_.test_endpoints) {
    // GETs that write: they need credentials whenever some are configured,
    // even with --read-open (Pulp's are open, but exist only on test
    // deployments; here they exist only when asked for).
    auto ingest = [this](int mode) {
      return [this, mode](auto& req, auto& res, auto&) { IngestTasks(req, res, mode); };
    };
    Add("GET", "/api/pulp/test/tasks/", "test-tasks", true, ingest(0));
    Add("GET", "/api/pulp/test/random_lock_tasks/", "test-random-lock", true, ingest(1));
    Add("GET", "/api/pulp/test/immediate_tasks/", "test-immediate", true, ingest(2));
  }
}

void Server::Heartbeats() {
  pg::Connection conn;
  auto interval = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(options_.heartbeat_interval));
  bool down = false;
  while (!heartbeat_stop_) {
    {
      std::unique_lock<std::mutex> lock(stop_mu_);
      stop_cv_.wait_for(lock, interval, [&] { return heartbeat_stop_.load(); });
    }
    if (heartbeat_stop_) break;
    try {
      if (!conn.ok()) {
        conn = pg::Connection::Open(options_.database_url, DeadlineIn(std::chrono::seconds(5)));
      }
      // A beat must land well within the TTL to count.
      auto beat_deadline =
          DeadlineIn(std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(
              std::max(0.1, options_.ttl - options_.heartbeat_interval))));
      std::string id = AppId();
      if (!store::Heartbeat(conn, id, beat_deadline)) ReRegister(conn, id);
      SweepLostImmediates(conn);
      if (down) spdlog::info("database reachable again");
      down = false;
    } catch (const pg::Error& e) {
      if (!down) spdlog::warn("heartbeat failed ({}); retrying", e.what());
      down = true;
    }
  }
}

int Server::Run() {
  auto colon = options_.listen.rfind(':');
  if (colon == std::string::npos) {
    std::cerr << "taskmill api: --listen must be ADDR:PORT, not \"" << options_.listen << "\"\n";
    return 2;
  }
  std::string host = options_.listen.substr(0, colon);
  // "[::1]:8080": the brackets only delimit the address.
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  int port = -1;
  try {
    size_t used = 0;
    std::string p = options_.listen.substr(colon + 1);
    port = std::stoi(p, &used);
    if (used != p.size()) port = -1;
  } catch (...) {
    port = -1;
  }
  if (port < 0 || port > 65535) {
    std::cerr << "taskmill api: bad port in --listen " << options_.listen << "\n";
    return 2;
  }
  // Judged on the address it resolves to and will be bound: a name that
  // merely starts with "127." is not loopback.
  http::ListenAddress address;
  if (auto e = http::ResolveListenAddress(host, port, &address); !e.empty()) {
    std::cerr << "taskmill api: --listen " << options_.listen << ": " << e << "\n";
    return 2;
  }
  bool credentials = !options_.token.empty() || !options_.basic_user.empty();
  bool tls = !options_.tls_cert.empty();
  if (!address.loopback && !options_.insecure_listen && (!credentials || !tls)) {
    std::cerr << "taskmill api: refusing to listen on " << address.text
              << " (not a loopback address) without "
              << (!credentials && !tls ? "credentials and TLS"
                  : !credentials       ? "credentials"
                                       : "TLS")
              << ": set --token-file (or TASKMILL_API_TOKEN) or basic credentials, and "
                 "--tls-cert/--tls-key; or listen on a loopback address; or pass "
                 "--insecure-listen\n";
    return 2;
  }
  if (!credentials) {
    spdlog::warn("no credentials configured: every endpoint is open to {} clients",
                 address.loopback ? "local" : "all");
  }
  http::HttpServerOptions http_options;
  http_options.limits = options_.http_limits;
  http_options.threads = options_.threads;
  http_options.tls_cert = options_.tls_cert;
  http_options.tls_key = options_.tls_key;
  http_ = std::make_unique<http::HttpServer>(
      http_options,
      [this](const httplib::Request& req, httplib::Response& res) { Dispatch(req, res); },
      // Requests the front refused (limits, malformed) are counted too.
      [this](const std::string& method, int status) {
        Count(method.empty() ? "connection" : "rejected", method.empty() ? "-" : method, status, 0);
      });
  if (auto e = http_->Listen(address); !e.empty()) {
    std::cerr << "taskmill api: " << e << "\n";
    return 2;
  }

  // Register, so that immediate tasks have an owner the janitor can judge.
  try {
    auto conn = pool_.Acquire(DeadlineIn(std::chrono::seconds(30)));
    auto schema = store::CheckSchema(*conn, DeadlineIn(kQueryTimeout));
    if (!schema.ok()) {
      std::cerr << "taskmill api: " << schema.error().message << "\n";
      return 5;
    }
    app_id_ = store::RegisterApp(*conn, Registration(), DeadlineIn(kQueryTimeout)).id;
  } catch (const pg::Error& e) {
    std::cerr << "taskmill api: cannot use the database: " << e.what() << "\n";
    return 5;
  }

  // Signals are taken by one thread with sigwait; every other thread
  // (created after this) inherits the blocked mask.
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &mask, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  AddRoutes();
  spdlog::info("API {} listening on {}://{} ({} threads, app {}){}", options_.name,
               tls ? "https" : "http", address.text, options_.threads, app_id_,
               options_.test_endpoints ? "; test endpoints ON" : "");

  std::thread heartbeat([this] { Heartbeats(); });
  std::thread signals([this, mask] {
    int sig = 0;
    sigwait(&mask, &sig);
    if (stopping_.exchange(true)) return;  // woken by Run() itself
    spdlog::info("signal {}: no new requests; finishing those in flight, then exiting", sig);
    http_->Stop();
  });
  // Returns once stopped and every request in flight has been answered (its
  // workers are drained and joined). Heartbeats go on until then: a long
  // request (an ingestion run) must not get this process declared dead.
  http_->Run();
  bool listened = true;
  listen_done_ = true;
  if (!stopping_.exchange(true)) {
    spdlog::error("the HTTP server stopped on its own");
    listened = false;
    pthread_kill(signals.native_handle(), SIGTERM);  // ends the signal thread
  }
  signals.join();
  // Overdue immediate tasks hold their resources until their functions
  // return; heartbeats go on meanwhile. Any still running after the grace
  // keep them until this process is gone and the janitor finds it missing:
  // no deregistering then.
  size_t overdue_left = immediate_runs_.Drain(DeadlineIn(kOverdueShutdownGrace));
  heartbeat_stop_ = true;
  stop_cv_.notify_all();
  heartbeat.join();
  try {
    if (overdue_left == 0) {
      auto conn = pool_.Acquire(DeadlineIn(std::chrono::seconds(5)));
      store::DeregisterApp(*conn, AppId(), DeadlineIn(std::chrono::seconds(5)));
    } else {
      spdlog::error(
          "exiting with {} immediate task(s) still running past their timeout; they are "
          "failed once the janitor declares this process missing",
          overdue_left);
    }
  } catch (const pg::Error& e) {
    spdlog::warn("could not deregister ({}); the janitor will remove this process", e.what());
  }
  spdlog::info("API stopped");
  return listened ? 0 : 1;
}

}  // namespace

int RunApiServer(const ApiOptions& options, const TaskRegistry& registry) {
  Server server(options, registry);
  return server.Run();
}

}  // namespace taskmill::api
