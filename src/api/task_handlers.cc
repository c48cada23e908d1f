// The /tasks/ endpoints: list, show, create (one task or a batch), cancel,
// delete and purge. Every rule beyond the HTTP shape is the service's.
#include <fmt/format.h>

#include "api/pulp_json.h"
#include "api/server_impl.h"
#include "api/task_query.h"
#include "service/task_service.h"
#include "store/task_search.h"

namespace taskmill::api {

using nlohmann::json;

namespace {

QueryParams Query(const httplib::Request& req) {
  return QueryParams(req.params.begin(), req.params.end());
}

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
      r.args = v;
    } else if (k == "kwargs") {
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
  // The types of args and kwargs are the service's rule; checked here too so
  // that a batch names its first bad element.
  if (auto st = service::CheckDispatchRequest(r); !st.ok()) throw bad(st.error().message);
  if (!have_name) throw bad("name is required");
  return r;
}

// The body of POST /tasks/purge/.
service::PurgeRequest PurgeRequestFromJson(const json& body) {
  service::PurgeRequest p;
  for (auto it = body.begin(); it != body.end(); ++it) {
    if (it.key() == "finished_before") {
      if (!it->is_string()) throw HttpError{400, "finished_before must be a date string"};
      auto date = NormalizeDate(it->get<std::string>());
      if (!date) {
        throw HttpError{400, fmt::format("finished_before: \"{}\" is not an ISO 8601 date",
                                         it->get<std::string>())};
      }
      p.finished_before = *date;
    } else if (it.key() == "states") {
      if (!it->is_array() || it->empty())
        throw HttpError{400, "states must be a list of final states"};
      p.states.clear();
      for (const auto& s : *it) {
        if (!s.is_string()) throw HttpError{400, "states must be a list of final states"};
        p.states.push_back(s.get<std::string>());  // final or not: the service's check
      }
    } else {
      throw HttpError{400, fmt::format("unknown field \"{}\"", it.key())};
    }
  }
  return p;
}

}  // namespace

void Server::ListTasks(const httplib::Request& req, httplib::Response& res) {
  auto q = ParseTaskQuery(Query(req));
  if (!q.ok()) throw HttpError{400, q.error().message};
  auto conn = pool_.Acquire(DeadlineIn(kAcquireTimeout));
  auto page = store::SearchTasks(*conn, q->search, DeadlineIn(kQueryTimeout));
  json results = json::array();
  for (const auto& t : page.tasks) results.push_back(ShapeTask(TaskToJson(t, kRoot), *q));
  Reply(res, 200,
        PageBody(req, page.count, std::move(results), q->search.limit(), q->search.offset()));
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
  if (!task.ok()) ThrowHttpError(task.error());
  Reply(res, 200, ShapeTask(TaskToJson(*task, kRoot), shape));
}

// 200 with the task after the cancel; 409 with the task as it is if it had
// already finished.
void Server::CancelTask(const httplib::Request& req, httplib::Response& res,
                        const std::string& id) {
  RequireCancelBody(ParseBody(req));
  std::string uuid = RequireUuid(id);
  auto conn = pool_.Acquire(DeadlineIn(kAcquireTimeout));
  auto st = service::Cancel(*conn, uuid, DeadlineIn(kQueryTimeout));
  if (!st.ok() && st.error().code != ErrorCode::kConflict) ThrowHttpError(st.error());
  auto task = store::GetTask(*conn, uuid, DeadlineIn(kQueryTimeout));
  if (!task.ok()) ThrowHttpError(task.error());
  Reply(res, st.ok() ? 200 : 409, TaskToJson(*task, kRoot));
}

void Server::DeleteTask(const httplib::Request&, httplib::Response& res, const std::string& id) {
  std::string uuid = RequireUuid(id);
  auto conn = pool_.Acquire(DeadlineIn(kAcquireTimeout));
  auto st = service::DeleteTask(*conn, uuid, DeadlineIn(kQueryTimeout));
  if (!st.ok()) ThrowHttpError(st.error());
  res.status = 204;
}

void Server::PurgeTasks(const httplib::Request& req, httplib::Response& res) {
  json body = req.body.empty() ? json::object() : ParseBody(req);
  service::PurgeRequest request = PurgeRequestFromJson(body);
  auto conn = pool_.Acquire(DeadlineIn(kAcquireTimeout));
  auto n = service::Purge(*conn, request, DeadlineIn(std::chrono::minutes(5)));
  if (!n.ok()) ThrowHttpError(n.error());
  Reply(res, 200, json{{"deleted", *n}});
}

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
    auto ids = service::DispatchMany(*conn, requests, DeadlineIn(kQueryTimeout));
    if (!ids.ok()) ThrowHttpError(ids.error());
    json hrefs = json::array();
    for (const auto& id : *ids) hrefs.push_back(fmt::format("{}tasks/{}/", kRoot, id));
    Reply(res, 202, json{{"tasks", std::move(hrefs)}});
    return;
  }
  DispatchRequest r = DispatchRequestFromJson(body, "");
  r.logging_cid = cid;
  auto conn = pool_.Acquire(DeadlineIn(kAcquireTimeout));
  auto id = DispatchOne(*conn, r);
  if (!id.ok()) ThrowHttpError(id.error());
  Reply(res, 202, json{{"task", fmt::format("{}tasks/{}/", kRoot, *id)}});
}

}  // namespace taskmill::api
