#include "api/server.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <iostream>
#include <mutex>
#include <random>
#include <regex>
#include <thread>

#include <fmt/format.h>
#include <httplib.h>
#include <prometheus/counter.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <spdlog/spdlog.h>

#include "api/connection_pool.h"
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

// An error answer: a status and {"detail": message}.
struct HttpError {
  int status;
  std::string detail;
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

class Server {
 public:
  Server(ApiOptions options, const TaskRegistry& registry)
      : options_(std::move(options)),
        registry_(registry),
        pool_(options_.database_url, static_cast<size_t>(options_.threads) + 2),
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
                       .Register(*metrics_)) {
    if (options_.name.empty()) options_.name = fmt::format("api-{}@{}", getpid(), Hostname());
  }

  int Run();

 private:
  using Handler = std::function<void(const httplib::Request&, httplib::Response&,
                                     const std::smatch&)>;
  struct Route {
    std::string method;
    std::regex pattern;
    std::string name;  // for metrics
    bool mutating;
    Handler handler;
  };

  void AddRoutes();
  void Add(const std::string& method, const std::string& pattern, const std::string& name,
           bool mutating, Handler h) {
    routes_.push_back({method, std::regex(pattern), name, mutating, std::move(h)});
  }
  void Dispatch(const httplib::Request& req, httplib::Response& res);
  bool Authorized(const httplib::Request& req, bool mutating) const;

  void Heartbeats();
  std::string AppId() {
    std::lock_guard<std::mutex> lock(app_mu_);
    return app_id_;
  }

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
  Result<std::string> DispatchOne(pg::Connection& conn, const DispatchRequest& request);
  // Runs an immediate task this process owns and records the outcome.
  TaskState RunImmediate(pg::Connection& conn, const Task& task);

  json GroupJson(pg::Connection& conn, const std::string& id);
  std::string PageLink(const httplib::Request& req, int limit, int offset) const;

  ApiOptions options_;
  const TaskRegistry& registry_;
  ConnectionPool pool_;
  httplib::Server http_;
  std::vector<Route> routes_;

  std::shared_ptr<prometheus::Registry> metrics_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& latency_;
  prometheus::Family<prometheus::Counter>& dispatched_;
  prometheus::Family<prometheus::Counter>& immediate_;

  std::mutex app_mu_;
  std::string app_id_;
  std::atomic<bool> stopping_{false};
  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
};

void Reply(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump(), "application/json");
}

void ReplyError(httplib::Response& res, int status, const std::string& detail) {
  Reply(res, status, json{{"detail", detail}});
}

// The JSON body of a request, or an HttpError.
json ParseBody(const httplib::Request& req) {
  if (req.body.empty()) throw HttpError{400, "a JSON body is required"};
  auto j = json::parse(req.body, nullptr, false);
  if (j.is_discarded()) throw HttpError{400, "the body is not valid JSON"};
  if (!j.is_object()) throw HttpError{400, "the body must be a JSON object"};
  return j;
}

QueryParams Query(const httplib::Request& req) {
  return QueryParams(req.params.begin(), req.params.end());
}

std::string RequireUuid(const std::string& id) {
  auto u = UuidFromRef(id);
  if (!u) throw HttpError{404, fmt::format("not found: \"{}\" is not a uuid", id)};
  return *u;
}

bool Authorized_Basic(const std::string& header, const std::string& user, const std::string& pass) {
  if (user.empty() || header.rfind("Basic ", 0) != 0) return false;
  std::string decoded = Base64Decode(header.substr(6));
  return ConstantTimeEquals(decoded, user + ":" + pass);
}

bool Server::Authorized(const httplib::Request& req, bool mutating) const {
  bool configured = !options_.token.empty() || !options_.basic_user.empty();
  if (!configured) return true;  // loopback only, enforced at start
  if (!mutating && options_.read_open) return true;
  std::string auth = req.get_header_value("Authorization");
  if (!options_.token.empty() && auth.rfind("Bearer ", 0) == 0 &&
      ConstantTimeEquals(auth.substr(7), options_.token)) {
    return true;
  }
  return Authorized_Basic(auth, options_.basic_user, options_.basic_password);
}

void Server::Dispatch(const httplib::Request& req, httplib::Response& res) {
  auto start = std::chrono::steady_clock::now();
  std::string route_name = "unknown";
  std::vector<std::string> allowed;
  try {
    const Route* match = nullptr;
    std::smatch m;
    for (const auto& r : routes_) {
      std::smatch mm;
      if (!std::regex_match(req.path, mm, r.pattern)) continue;
      allowed.push_back(r.method);
      if (r.method == req.method && match == nullptr) {
        match = &r;
        m = mm;
      }
    }
    if (match == nullptr) {
      if (allowed.empty()) throw HttpError{404, fmt::format("no such path: {}", req.path)};
      res.set_header("Allow", fmt::format("{}", fmt::join(allowed, ", ")));
      throw HttpError{405, fmt::format("method {} not allowed on {}", req.method, req.path)};
    }
    route_name = match->name;
    if (!Authorized(req, match->mutating)) {
      res.set_header("WWW-Authenticate", "Bearer realm=\"taskmill\"");
      throw HttpError{401, "authentication credentials were not provided or are wrong"};
    }
    match->handler(req, res, m);
  } catch (const HttpError& e) {
    ReplyError(res, e.status, e.detail);
  } catch (const pg::Error& e) {
    if (auto mapped = store::MapSqlError(e)) {
      ReplyError(res, StatusFor(mapped->code), mapped->message);
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
  requests_.Add({{"route", route_name}, {"method", req.method}, {"status", std::to_string(res.status)}})
      .Increment();
  latency_
      .Add({{"route", route_name}},
           prometheus::Histogram::BucketBoundaries{0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30})
      .Observe(secs);
}

std::string Server::PageLink(const httplib::Request& req, int limit, int offset) const {
  std::string host = req.get_header_value("Host");
  std::string q;
  for (const auto& [k, v] : req.params) {
    if (k == "limit" || k == "offset") continue;
    q += fmt::format("{}={}&", httplib::detail::encode_query_param(k),
                     httplib::detail::encode_query_param(v));
  }
  q += fmt::format("limit={}&offset={}", limit, offset);
  return fmt::format("http://{}{}?{}", host, req.path, q);
}

void Server::ListTasks(const httplib::Request& req, httplib::Response& res) {
  auto q = ParseTaskQuery(Query(req));
  if (!q.ok()) throw HttpError{400, q.error().message};
  auto conn = pool_.Acquire(DeadlineIn(kAcquireTimeout));
  auto count = conn->Exec(fmt::format("SELECT count(*) FROM taskmill.task_view WHERE {}", q->where),
                          q->params, DeadlineIn(kQueryTimeout))
                   .GetInt(0, 0);
  auto rows = conn->Exec(fmt::format("SELECT {} FROM taskmill.task_view WHERE {} ORDER BY {} "
                                     "LIMIT {} OFFSET {}",
                                     store::kTaskColumns, q->where, q->order_by, q->limit,
                                     q->offset),
                         q->params, DeadlineIn(kQueryTimeout));
  json results = json::array();
  for (int i = 0; i < rows.rows(); ++i) {
    results.push_back(ShapeTask(TaskToJson(store::TaskFromRow(rows, i), kRoot), *q));
  }
  json body{{"count", count}, {"results", results}};
  body["next"] = q->offset + q->limit < count ? json(PageLink(req, q->limit, q->offset + q->limit))
                                              : json(nullptr);
  body["previous"] = q->offset > 0 ? json(PageLink(req, q->limit, std::max(0, q->offset - q->limit)))
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

void Server::CancelTask(const httplib::Request& req, httplib::Response& res, const std::string& id) {
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
  throw HttpError{409, fmt::format("task {} is {}: only finished tasks can be deleted", uuid,
                                   r.Get(0, 1))};
}

void Server::PurgeTasks(const httplib::Request& req, httplib::Response& res) {
  json body = req.body.empty() ? json::object() : ParseBody(req);
  std::string before;
  std::vector<std::string> states = {"completed"};
  for (auto it = body.begin(); it != body.end(); ++it) {
    if (it.key() == "finished_before") {
      if (!it->is_string()) throw HttpError{400, "finished_before must be a date string"};
      before = it->get<std::string>();
      static const std::regex kDate(
          R"(\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?(Z|[+-]\d{2}(:?\d{2})?)?)");
      if (!std::regex_match(before, kDate)) {
        throw HttpError{400, fmt::format("finished_before: \"{}\" is not an ISO 8601 date", before)};
      }
    } else if (it.key() == "states") {
      if (!it->is_array() || it->empty()) throw HttpError{400, "states must be a list of final states"};
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

Result<std::string> Server::DispatchOne(pg::Connection& conn, const DispatchRequest& request) {
  std::optional<std::string> run_here;
  if (request.immediate) run_here = AppId();
  auto out = store::DispatchTask(conn, request, run_here, DeadlineIn(kQueryTimeout));
  if (!out.ok()) return out.error();
  dispatched_.Add({}).Increment();
  if (request.immediate) {
    if (out->state == TaskState::kRunning) {
      Task task;
      task.id = out->id;
      task.name = request.name;
      task.args = request.args;
      task.kwargs = request.kwargs;
      task.immediate = true;
      RunImmediate(conn, task);
    } else {
      immediate_.Add({{"outcome", out->state == TaskState::kCanceled ? "refused" : "deferred"}})
          .Increment();
    }
  }
  return out->id;
}

TaskState Server::RunImmediate(pg::Connection& conn, const Task& task) {
  auto timeout = std::chrono::milliseconds(static_cast<int64_t>(options_.immediate_timeout * 1000));
  worker::Outcome o = worker::RunWithTimeout(registry_, task, timeout, nullptr);
  // The outcome and the unblocking behind it: two transactions, one round
  // trip.
  pg::Params finish;
  finish.Add(task.id).Add(AppId()).Add(std::string(TaskStateName(o.state)));
  if (o.result.is_null()) {
    finish.AddNull();
  } else {
    finish.Add(o.result.dump());
  }
  if (o.error.is_null()) {
    finish.AddNull();
  } else {
    finish.Add(o.error.dump());
  }
  auto results = conn.ExecPipeline(
      {{"SELECT taskmill.finish($1::uuid, $2::uuid, $3, $4::jsonb, $5::jsonb)", finish},
       {"SELECT taskmill.process_releases()", {}}},
      DeadlineIn(kQueryTimeout));
  TaskState final_state = o.state;
  if (!results[0].IsNull(0, 0)) {
    final_state = ParseTaskState(results[0].Get(0, 0)).value_or(o.state);
  }
  immediate_.Add({{"outcome", std::string(TaskStateName(final_state))}}).Increment();
  return final_state;
}

void Server::CreateTask(const httplib::Request& req, httplib::Response& res) {
  json body = ParseBody(req);
  DispatchRequest r;
  bool have_name = false;
  auto string_list = [](const json& v, const char* field) {
    if (!v.is_array()) throw HttpError{400, fmt::format("{} must be a list of strings", field)};
    std::vector<std::string> out;
    for (const auto& s : v) {
      if (!s.is_string()) throw HttpError{400, fmt::format("{} must be a list of strings", field)};
      out.push_back(s.get<std::string>());
    }
    return out;
  };
  for (auto it = body.begin(); it != body.end(); ++it) {
    const std::string& k = it.key();
    const json& v = *it;
    if (k == "name") {
      if (!v.is_string()) throw HttpError{400, "name must be a string"};
      r.name = v.get<std::string>();
      have_name = true;
    } else if (k == "args") {
      if (!v.is_array()) throw HttpError{400, "args must be a JSON array"};
      r.args = v;
    } else if (k == "kwargs") {
      if (!v.is_object()) throw HttpError{400, "kwargs must be a JSON object"};
      r.kwargs = v;
    } else if (k == "exclusive_resources") {
      r.exclusive_resources = string_list(v, "exclusive_resources");
    } else if (k == "shared_resources") {
      r.shared_resources = string_list(v, "shared_resources");
    } else if (k == "immediate" || k == "deferred") {
      if (!v.is_boolean()) throw HttpError{400, fmt::format("{} must be true or false", k)};
      (k == "immediate" ? r.immediate : r.deferred) = v.get<bool>();
    } else if (k == "task_group") {
      if (v.is_null()) continue;
      if (!v.is_string() || !UuidFromRef(v.get<std::string>())) {
        throw HttpError{400, "task_group must be a task group href or uuid"};
      }
      r.task_group = UuidFromRef(v.get<std::string>());
    } else {
      throw HttpError{400, fmt::format("unknown field \"{}\"", k)};
    }
  }
  if (!have_name) throw HttpError{400, "name is required"};
  r.logging_cid = req.get_header_value("Correlation-ID");
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
  body["next"] = offset + limit < count ? json(PageLink(req, limit, offset + limit)) : json(nullptr);
  body["previous"] = offset > 0 ? json(PageLink(req, limit, std::max(0, offset - limit))) : json(nullptr);
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
    if (k != "limit" && k != "offset") throw HttpError{400, fmt::format("unknown filter \"{}\"", k)};
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
  auto ids = conn->Exec("SELECT id FROM taskmill.task_group ORDER BY created_at DESC LIMIT $1 OFFSET $2",
                        pg::Params().Add(limit).Add(offset), DeadlineIn(kQueryTimeout));
  json results = json::array();
  for (int i = 0; i < ids.rows(); ++i) results.push_back(GroupJson(*conn, ids.GetString(i, 0)));
  json body{{"count", count}, {"results", results}};
  body["next"] = offset + limit < count ? json(PageLink(req, limit, offset + limit)) : json(nullptr);
  body["previous"] = offset > 0 ? json(PageLink(req, limit, std::max(0, offset - limit))) : json(nullptr);
  Reply(res, 200, body);
}

void Server::GetGroup(const httplib::Request&, httplib::Response& res, const std::string& id) {
  std::string uuid = RequireUuid(id);
  auto conn = pool_.Acquire(DeadlineIn(kAcquireTimeout));
  Reply(res, 200, GroupJson(*conn, uuid));
}

void Server::CancelGroup(const httplib::Request& req, httplib::Response& res, const std::string& id) {
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
    if (it.key() != "description") throw HttpError{400, fmt::format("unknown field \"{}\"", it.key())};
    if (!it->is_string()) throw HttpError{400, "description must be a string"};
    description = it->get<std::string>();
  }
  auto conn = pool_.Acquire(DeadlineIn(kAcquireTimeout));
  auto id = store::CreateTaskGroup(*conn, description, DeadlineIn(kQueryTimeout));
  Reply(res, 201, GroupJson(*conn, *id));
}

void Server::Status(const httplib::Request&, httplib::Response& res) {
  json body{{"versions", json::array({json{{"component", "taskmill"}, {"version", TASKMILL_VERSION}}})}};
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

void Server::Metrics(const httplib::Request&, httplib::Response& res) {
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
    if (seconds <= 0 || seconds > 3600) throw HttpError{400, "timeout must be between 0 and 3600"};
  }
  std::vector<std::string> three = {NewUuid(), NewUuid(), NewUuid()};
  thread_local std::mt19937 rng(std::random_device{}());
  auto conn = pool_.Acquire(DeadlineIn(kAcquireTimeout));
  Deadline end = DeadlineIn(std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(seconds)));
  int64_t count = 0;
  if (mode == 2) {
    DispatchRequest r;
    r.name = "taskmill.noop";
    r.immediate = true;
    r.deferred = false;
    while (!Expired(end)) {
      r.exclusive_resources = {NewUuid()};
      auto out = store::DispatchTask(*conn, r, AppId(), DeadlineIn(kQueryTimeout));
      if (!out.ok()) throw HttpError{StatusFor(out.error().code), out.error().message};
      if (out->state != TaskState::kRunning) continue;
      Task task;
      task.id = out->id;
      task.name = r.name;
      task.immediate = true;
      if (RunImmediate(*conn, task) == TaskState::kCompleted) ++count;
    }
  } else {
    // Several dispatches in flight per round trip (libpq pipeline mode);
    // each is still its own transaction, and the count is exact.
    constexpr int kDepth = 8;
    std::vector<pg::Connection::Statement> batch(kDepth);
    while (!Expired(end)) {
      for (auto& s : batch) {
        s.sql = "SELECT id FROM taskmill.dispatch_task('taskmill.noop', '[]', '{}', $1::text[])";
        s.params = pg::Params();
        s.params.AddTextArray({mode == 0 ? NewUuid() : three[rng() % 3]});
      }
      auto results = conn->ExecPipeline(batch, DeadlineIn(kQueryTimeout));
      count += static_cast<int64_t>(results.size());
    }
    dispatched_.Add({}).Increment(static_cast<double>(count));
  }
  Reply(res, 200, json{{"tasks_executed", count}});
}

void Server::AddRoutes() {
  const std::string id = "([^/]+)";
  const std::string r = "/pulp/api/v3/";
  auto with_id = [](auto fn) {
    return [fn](const httplib::Request& req, httplib::Response& res, const std::smatch& m) {
      fn(req, res, m[1].str());
    };
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
    // As in the seed's test plan: no credentials asked, on only when enabled.
    auto ingest = [this](int mode) {
      return [this, mode](auto& req, auto& res, auto&) { IngestTasks(req, res, mode); };
    };
    Add("GET", "/api/pulp/test/tasks/", "test-tasks", false, ingest(0));
    Add("GET", "/api/pulp/test/random_lock_tasks/", "test-random-lock", false, ingest(1));
    Add("GET", "/api/pulp/test/immediate_tasks/", "test-immediate", false, ingest(2));
  }
}

void Server::Heartbeats() {
  pg::Connection conn;
  auto interval = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(options_.heartbeat_interval));
  bool down = false;
  while (!stopping_) {
    {
      std::unique_lock<std::mutex> lock(stop_mu_);
      stop_cv_.wait_for(lock, interval, [&] { return stopping_.load(); });
    }
    if (stopping_) break;
    try {
      if (!conn.ok()) conn = pg::Connection::Open(options_.database_url, DeadlineIn(std::chrono::seconds(5)));
      if (!store::Heartbeat(conn, AppId(), DeadlineIn(std::chrono::seconds(10)))) {
        store::AppRegistration reg{"api", options_.name, Hostname(), getpid(), options_.ttl,
                                   registry_.Names()};
        auto app = store::RegisterApp(conn, reg, DeadlineIn(kQueryTimeout));
        spdlog::error("this API process was declared dead (no heartbeat within {}s); registered "
                      "again as {}",
                      options_.ttl, app.id);
        std::lock_guard<std::mutex> lock(app_mu_);
        app_id_ = app.id;
      }
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
  int port = 0;
  try {
    port = std::stoi(options_.listen.substr(colon + 1));
  } catch (...) {
    port = -1;
  }
  if (port < 0 || port > 65535) {
    std::cerr << "taskmill api: bad port in --listen " << options_.listen << "\n";
    return 2;
  }
  if (options_.token.empty() && options_.basic_user.empty() && !IsLoopback(host)) {
    std::cerr << "taskmill api: refusing to listen on " << host
              << " without credentials: set --token (or TASKMILL_API_TOKEN) or basic "
                 "credentials, or listen on a loopback address\n";
    return 2;
  }
  if (options_.token.empty() && options_.basic_user.empty()) {
    spdlog::warn("no credentials configured: every endpoint is open to local clients");
  }

  // Register, so that immediate tasks have an owner the janitor can judge.
  try {
    auto conn = pool_.Acquire(DeadlineIn(std::chrono::seconds(30)));
    auto schema = store::CheckSchema(*conn, DeadlineIn(kQueryTimeout));
    if (!schema.ok()) {
      std::cerr << "taskmill api: " << schema.error().message << "\n";
      return 5;
    }
    store::AppRegistration reg{"api", options_.name, Hostname(), getpid(), options_.ttl,
                               registry_.Names()};
    app_id_ = store::RegisterApp(*conn, reg, DeadlineIn(kQueryTimeout)).id;
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
  int threads = options_.threads;
  http_.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  http_.set_tcp_nodelay(true);
  http_.set_payload_max_length(options_.max_body_bytes);
  http_.set_read_timeout(30, 0);
  http_.set_write_timeout(30, 0);
  http_.set_keep_alive_max_count(1000);
  auto handler = [this](const httplib::Request& req, httplib::Response& res) { Dispatch(req, res); };
  http_.Get(".*", handler);
  http_.Post(".*", handler);
  http_.Put(".*", handler);
  http_.Patch(".*", handler);
  http_.Delete(".*", handler);
  http_.Options(".*", handler);
  // Errors httplib answers itself (413, 400 for a bad request line, ...)
  // get a JSON body too.
  http_.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.body.empty()) {
      std::string msg = res.status == 413   ? "request body too large"
                        : res.status == 404 ? "not found"
                        : res.status == 400 ? "bad request"
                                            : fmt::format("HTTP error {}", res.status);
      ReplyError(res, res.status, msg);
    }
  });

  if (!http_.bind_to_port(host, port)) {
    std::cerr << "taskmill api: cannot listen on " << options_.listen << "\n";
    return 2;
  }
  spdlog::info("API {} listening on http://{} ({} threads, app {}){}", options_.name,
               options_.listen, threads, app_id_,
               options_.test_endpoints ? "; test endpoints ON" : "");

  std::thread heartbeat([this] { Heartbeats(); });
  std::thread signals([this, mask] {
    int sig = 0;
    sigwait(&mask, &sig);
    spdlog::info("signal {}: finishing requests in flight, then exiting", sig);
    stopping_ = true;
    stop_cv_.notify_all();
    http_.stop();
  });
  http_.listen_after_bind();
  stopping_ = true;
  stop_cv_.notify_all();
  heartbeat.join();
  // Wake the signal thread if the server stopped for another reason.
  if (signals.joinable()) {
    pthread_kill(signals.native_handle(), SIGTERM);
    signals.join();
  }
  try {
    auto conn = pool_.Acquire(DeadlineIn(std::chrono::seconds(5)));
    store::DeregisterApp(*conn, AppId(), DeadlineIn(std::chrono::seconds(5)));
  } catch (const pg::Error& e) {
    spdlog::warn("could not deregister ({}); the janitor will remove this process", e.what());
  }
  spdlog::info("API stopped");
  return 0;
}

}  // namespace

bool IsLoopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host == "[::1]" || host.rfind("127.", 0) == 0;
}

int RunApiServer(const ApiOptions& options, const TaskRegistry& registry) {
  Server server(options, registry);
  return server.Run();
}

}  // namespace taskmill::api
