#include "store/apps.h"

#include <fmt/format.h>

namespace taskmill::store {

namespace {

#define TM_APP_COLUMNS                                                         \
  "id, app_type, name, hostname, pid, version, started_text, heartbeat_text, " \
  "extract(epoch FROM ttl)::float8 AS ttl_seconds, online, current_task, slots, current_tasks "

#define TM_APP_FILTER                                                                   \
  "WHERE ($1::text IS NULL OR app_type = $1) AND ($2::boolean IS NULL OR online = $2) " \
  "AND ($3::text IS NULL OR name = $3) "

constexpr pg::Query kListApps{"list_apps", "SELECT " TM_APP_COLUMNS
                                           "FROM taskmill.app_view WHERE ($1::text IS NULL OR "
                                           "app_type = $1) ORDER BY started_at, name"};
constexpr pg::Query kCountAppsPage{"count_apps_page",
                                   "SELECT count(*) FROM taskmill.app_view " TM_APP_FILTER};
constexpr pg::Query kListAppsPage{"list_apps_page",
                                  "SELECT " TM_APP_COLUMNS "FROM taskmill.app_view " TM_APP_FILTER
                                  "ORDER BY started_at, name, id LIMIT $4 OFFSET $5"};
constexpr pg::Query kGetApp{"get_app", "SELECT " TM_APP_COLUMNS
                                       "FROM taskmill.app_view WHERE id = $1::uuid AND "
                                       "($2::text IS NULL OR app_type = $2)"};

#undef TM_APP_COLUMNS
#undef TM_APP_FILTER

std::vector<App> Apps(const pg::ResultSet& res) {
  std::vector<App> apps;
  apps.reserve(res.rows());
  for (int i = 0; i < res.rows(); ++i) apps.push_back(AppFromRow(res, i));
  return apps;
}

}  // namespace

App AppFromRow(const pg::ResultSet& res, int row) {
  App a;
  a.id = res.GetString(row, "id");
  a.app_type = res.GetString(row, "app_type");
  a.name = res.GetString(row, "name");
  a.hostname = res.GetString(row, "hostname");
  a.pid = static_cast<int>(res.GetInt(row, "pid"));
  a.version = res.GetString(row, "version");
  a.started_at = res.GetString(row, "started_text");
  a.last_heartbeat = res.GetString(row, "heartbeat_text");
  a.ttl_seconds = res.GetDouble(row, "ttl_seconds");
  a.online = res.GetBool(row, "online");
  a.current_task = res.GetOptional(row, "current_task");
  a.slots = static_cast<int>(res.GetInt(row, "slots"));
  a.current_tasks = res.GetTextArray(row, "current_tasks");
  return a;
}

std::vector<App> ListApps(pg::Connection& conn, const std::optional<std::string>& app_type,
                          Deadline deadline) {
  return Apps(conn.Exec(kListApps, pg::Params().Add(app_type), deadline));
}

AppPage ListAppsPage(pg::Connection& conn, const AppFilter& filter, Deadline deadline) {
  pg::Params p;
  p.Add(filter.app_type);
  if (filter.online) {
    p.Add(*filter.online);
  } else {
    p.AddNull();
  }
  p.Add(filter.name);
  AppPage page;
  page.count = conn.Exec(kCountAppsPage, p, deadline).GetInt(0, 0);
  p.Add(filter.limit).Add(filter.offset);
  page.apps = Apps(conn.Exec(kListAppsPage, p, deadline));
  return page;
}

Result<App> GetApp(pg::Connection& conn, const std::string& id,
                   const std::optional<std::string>& app_type, Deadline deadline) {
  auto res = conn.Exec(kGetApp, pg::Params().Add(id).Add(app_type), deadline);
  if (res.rows() == 0) {
    return MakeError(ErrorCode::kNotFound,
                     fmt::format("{} {} not found", app_type.value_or("process"), id));
  }
  return AppFromRow(res, 0);
}

}  // namespace taskmill::store
