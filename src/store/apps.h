// The processes that run tasks (workers and API servers) as the store reads
// them from taskmill.app_view.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "pg/connection.h"
#include "taskmill/deadline.h"
#include "taskmill/result.h"

namespace taskmill::store {

// A process that runs tasks: a worker or an API server. Timestamps in
// ISO 8601 UTC with microseconds, like a Task's.
struct App {
  std::string id;
  std::string app_type;  // "worker" or "api"
  std::string name;
  std::string hostname;
  int pid = 0;
  std::string version;
  std::string started_at;
  std::string last_heartbeat;
  double ttl_seconds = 0;
  bool online = false;                      // heartbeat within its TTL
  std::optional<std::string> current_task;  // the oldest task it runs
  int slots = 1;                            // tasks it runs at once
  std::vector<std::string> current_tasks;   // every task it runs, oldest first
};

// Every process (of `app_type` if given), oldest first.
std::vector<App> ListApps(pg::Connection& conn, const std::optional<std::string>& app_type,
                          Deadline deadline);

struct AppFilter {
  std::optional<std::string> app_type;
  std::optional<bool> online;
  std::optional<std::string> name;
  int limit = 100;  // >= 1
  int offset = 0;
};
struct AppPage {
  int64_t count = 0;  // every matching process
  std::vector<App> apps;
};
// The processes matching `filter`, oldest first, paged in SQL.
AppPage ListAppsPage(pg::Connection& conn, const AppFilter& filter, Deadline deadline);

// One process by id (of `app_type` if given); kNotFound ("<type> <id> not
// found") if none.
Result<App> GetApp(pg::Connection& conn, const std::string& id,
                   const std::optional<std::string>& app_type, Deadline deadline);

// From a row of taskmill.app_view with the columns the functions above
// select.
App AppFromRow(const pg::ResultSet& res, int row);

}  // namespace taskmill::store
