// The JSON of Pulp's REST API for taskmill's rows: what GET /tasks/,
// /workers/ and the CLI's --json print.
#pragma once

#include <string_view>

#include <nlohmann/json.hpp>

#include "store/apps.h"
#include "taskmill/task.h"

namespace taskmill::api {

// The Pulp-compatible JSON of a task: pulp_href, prn, pulp_created, state,
// name, logging_cid, unblocked_at, started_at, finished_at, error, worker,
// worker_name, parent_task, task_group, progress_reports,
// reserved_resources_record (exclusive names plain, shared ones prefixed
// "shared:"), result, and taskmill's own additions (immediate, deferred).
// Hrefs are under `api_root` (default "/pulp/api/v3/").
nlohmann::json TaskToJson(const Task& task, std::string_view api_root = "/pulp/api/v3/");

// The JSON of a process: pulp_href (under workers/ for a worker, api-apps/
// for an API process), prn, pulp_created, name, app_type, hostname, pid,
// last_heartbeat, ttl, online, versions, current_task.
nlohmann::json AppToJson(const store::App& app, std::string_view api_root = "/pulp/api/v3/");

}  // namespace taskmill::api
