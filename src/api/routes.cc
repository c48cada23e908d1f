// The API's front door: the route table, the credential check, the mapping
// of every failure to an HTTP answer, and the shared pieces of replies.
#include <algorithm>
#include <set>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "api/http/json_limits.h"
#include "api/http_status.h"
#include "api/server_impl.h"
#include "api/task_query.h"

namespace taskmill::api {

using nlohmann::json;

namespace {

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

void ReplyError(httplib::Response& res, int status, const std::string& detail,
                const std::string& limit = "") {
  json body{{"detail", detail}};
  if (!limit.empty()) body["limit"] = limit;
  Reply(res, status, body);
}

}  // namespace

void ThrowHttpError(const Error& error) {
  throw HttpError{HttpStatusFor(error.code), error.message};
}

// Strings from the request (a path, a parameter name) may hold any bytes:
// the dump replaces invalid UTF-8 rather than throwing.
void Reply(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(http::DumpJson(body), "application/json");
}

// Pulp answers 404 only for a well-formed id that names nothing.
std::string RequireUuid(const std::string& id) {
  if (!IsUuid(id)) throw HttpError{400, fmt::format("\"{}\" is not a valid uuid", id)};
  return id;
}

void RequireCancelBody(const json& body) {
  if (body.size() != 1 || !body.contains("state") || body["state"] != "canceled") {
    throw HttpError{400, "The only acceptable value for 'state' is 'canceled'."};
  }
}

void RejectParams(const httplib::Request& req) {
  if (!req.params.empty()) {
    throw HttpError{400, fmt::format("unknown parameter \"{}\"", req.params.begin()->first)};
  }
}

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
      ReplyError(res, HttpStatusFor(mapped->code), mapped->message);
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

json Server::PageBody(const httplib::Request& req, int64_t count, json results, int limit,
                      int offset) const {
  json body{{"count", count}, {"results", std::move(results)}};
  body["next"] =
      offset + limit < count ? json(PageLink(req, limit, offset + limit)) : json(nullptr);
  body["previous"] =
      offset > 0 ? json(PageLink(req, limit, std::max(0, offset - limit))) : json(nullptr);
  return body;
}

void Server::AddRoutes() {
  const std::string id = "{}";
  const std::string r = kRoot;
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

}  // namespace taskmill::api
