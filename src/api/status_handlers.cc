// The /workers/, /task-groups/, /status/ and /metrics endpoints.
#include <fmt/format.h>
#include <prometheus/text_serializer.h>

#include "api/pulp_json.h"
#include "api/server_impl.h"
#include "api/task_query.h"
#include "service/task_service.h"
#include "store/groups.h"
#include "store/migrate.h"

namespace taskmill::api {

using nlohmann::json;

namespace {

json GroupToJson(const store::GroupSummary& g) {
  TaskQuery minimal;
  minimal.minimal = true;
  json tasks = json::array();
  for (const auto& t : g.tasks) tasks.push_back(ShapeTask(TaskToJson(t, kRoot), minimal));
  return json{{"pulp_href", fmt::format("{}task-groups/{}/", kRoot, g.id)},
              {"prn", "prn:taskmill.taskgroup:" + g.id},
              {"description", g.description},
              {"all_tasks_dispatched", g.all_tasks_dispatched},
              {"waiting", g.waiting},
              {"skipped", 0},
              {"running", g.running},
              {"completed", g.completed},
              {"failed", g.failed},
              {"canceling", g.canceling},
              {"canceled", g.canceled},
              {"group_progress_reports", json::array()},
              {"tasks", std::move(tasks)}};
}

}  // namespace

void Server::ListWorkers(const httplib::Request& req, httplib::Response& res) {
  store::AppFilter filter;
  filter.app_type = "worker";
  for (const auto& [k, v] : req.params) {
    auto boolean = [&](const std::string& s) {
      if (s == "true" || s == "1") return true;
      if (s == "false" || s == "0") return false;
      throw HttpError{400, fmt::format("{} must be true or false", k)};
    };
    if (k == "online") {
      filter.online = boolean(v);
    } else if (k == "missing") {
      filter.online = !boolean(v);
    } else if (k == "name") {
      filter.name = v;
    } else if (k == "limit" || k == "offset") {
      try {
        int x = std::stoi(v);
        if (x < (k == "limit" ? 1 : 0)) throw std::out_of_range("");
        (k == "limit" ? filter.limit : filter.offset) = x;
      } catch (...) {
        throw HttpError{400, fmt::format("{} must be a whole number", k)};
      }
    } else {
      throw HttpError{400, fmt::format("unknown filter \"{}\"", k)};
    }
  }
  auto conn = pool_.Acquire(DeadlineIn(kAcquireTimeout));
  auto page = store::ListAppsPage(*conn, filter, DeadlineIn(kQueryTimeout));
  json results = json::array();
  for (const auto& a : page.apps) results.push_back(AppToJson(a, kRoot));
  Reply(res, 200, PageBody(req, page.count, std::move(results), filter.limit, filter.offset));
}

void Server::GetWorker(const httplib::Request&, httplib::Response& res, const std::string& id) {
  std::string uuid = RequireUuid(id);
  auto conn = pool_.Acquire(DeadlineIn(kAcquireTimeout));
  auto app = store::GetApp(*conn, uuid, std::string("worker"), DeadlineIn(kQueryTimeout));
  if (!app.ok()) ThrowHttpError(app.error());
  Reply(res, 200, AppToJson(*app, kRoot));
}

json Server::GroupJson(pg::Connection& conn, const std::string& id) {
  auto g = store::GetGroup(conn, id, DeadlineIn(kQueryTimeout));
  if (!g.ok()) ThrowHttpError(g.error());
  return GroupToJson(*g);
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
  auto page = store::ListGroups(*conn, limit, offset, DeadlineIn(kQueryTimeout));
  json results = json::array();
  for (const auto& g : page.groups) results.push_back(GroupToJson(g));
  Reply(res, 200, PageBody(req, page.count, std::move(results), limit, offset));
}

void Server::GetGroup(const httplib::Request&, httplib::Response& res, const std::string& id) {
  std::string uuid = RequireUuid(id);
  auto conn = pool_.Acquire(DeadlineIn(kAcquireTimeout));
  Reply(res, 200, GroupJson(*conn, uuid));
}

// 200 with the group once none of its tasks is unfinished; 409 with the
// group while some still run (they are being canceled).
void Server::CancelGroup(const httplib::Request& req, httplib::Response& res,
                         const std::string& id) {
  RequireCancelBody(ParseBody(req));
  std::string uuid = RequireUuid(id);
  auto conn = pool_.Acquire(DeadlineIn(kAcquireTimeout));
  auto n = service::CancelGroup(*conn, uuid, DeadlineIn(kQueryTimeout));
  if (!n.ok()) ThrowHttpError(n.error());
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
  if (!id.ok()) ThrowHttpError(id.error());
  Reply(res, 201, GroupJson(*conn, *id));
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

}  // namespace taskmill::api
