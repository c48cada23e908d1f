#include "api/pulp_json.h"

namespace taskmill::api {

namespace {
nlohmann::json OptionalString(const std::optional<std::string>& s) {
  return s ? nlohmann::json(*s) : nlohmann::json(nullptr);
}
}  // namespace

nlohmann::json TaskToJson(const Task& task, std::string_view api_root) {
  std::string root(api_root);
  nlohmann::json reserved = nlohmann::json::array();
  for (const auto& r : task.exclusive_resources) reserved.push_back(r);
  for (const auto& r : task.shared_resources) reserved.push_back("shared:" + r);
  nlohmann::json j;
  j["pulp_href"] = root + "tasks/" + task.id + "/";
  j["prn"] = "prn:taskmill.task:" + task.id;
  j["pulp_created"] = task.created_at;
  j["state"] = TaskStateName(task.state);
  j["name"] = task.name;
  j["logging_cid"] = task.logging_cid;
  j["unblocked_at"] = OptionalString(task.unblocked_at);
  j["started_at"] = OptionalString(task.started_at);
  j["finished_at"] = OptionalString(task.finished_at);
  j["error"] = task.error;
  j["worker"] = task.app_lock ? nlohmann::json(root + "workers/" + *task.app_lock + "/")
                              : nlohmann::json(nullptr);
  j["worker_name"] = OptionalString(task.worker_name);
  j["parent_task"] = task.parent_task ? nlohmann::json(root + "tasks/" + *task.parent_task + "/")
                                      : nlohmann::json(nullptr);
  j["task_group"] = task.task_group ? nlohmann::json(root + "task-groups/" + *task.task_group + "/")
                                    : nlohmann::json(nullptr);
  j["progress_reports"] = task.progress_reports;
  j["reserved_resources_record"] = std::move(reserved);
  j["result"] = task.result;
  j["immediate"] = task.immediate;
  j["deferred"] = task.deferred;
  return j;
}

nlohmann::json AppToJson(const store::App& app, std::string_view api_root) {
  std::string root(api_root);
  std::string kind = app.app_type == "worker" ? "workers/" : "api-apps/";
  nlohmann::json j;
  j["pulp_href"] = root + kind + app.id + "/";
  j["prn"] = "prn:taskmill." + app.app_type + ":" + app.id;
  j["pulp_created"] = app.started_at;
  j["name"] = app.name;
  j["app_type"] = app.app_type;
  j["hostname"] = app.hostname;
  j["pid"] = app.pid;
  j["last_heartbeat"] = app.last_heartbeat;
  j["ttl"] = app.ttl_seconds;
  j["online"] = app.online;
  j["versions"] = nlohmann::json{{"taskmill", app.version}};
  j["current_task"] = app.current_task ? nlohmann::json(root + "tasks/" + *app.current_task + "/")
                                       : nlohmann::json(nullptr);
  if (app.app_type == "worker") {
    nlohmann::json tasks = nlohmann::json::array();
    for (const auto& id : app.current_tasks) tasks.push_back(root + "tasks/" + id + "/");
    j["slots"] = {{"total", app.slots}, {"busy", app.current_tasks.size()}};
    j["current_tasks"] = std::move(tasks);
  }
  return j;
}

}  // namespace taskmill::api
