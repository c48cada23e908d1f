#include "store/groups.h"

#include <map>

#include <fmt/format.h>

#include "store/task_store.h"

namespace taskmill::store {

namespace {

#define TM_GROUP_COUNTS                                                \
  "SELECT g.id, g.description, g.all_tasks_dispatched, g.created_at, " \
  "count(t.id) FILTER (WHERE t.state = 'waiting') AS waiting, "        \
  "count(t.id) FILTER (WHERE t.state = 'running') AS running, "        \
  "count(t.id) FILTER (WHERE t.state = 'completed') AS completed, "    \
  "count(t.id) FILTER (WHERE t.state = 'failed') AS failed, "          \
  "count(t.id) FILTER (WHERE t.state = 'canceling') AS canceling, "    \
  "count(t.id) FILTER (WHERE t.state = 'canceled') AS canceled "       \
  "FROM taskmill.task_group g LEFT JOIN taskmill.task t ON t.task_group = g.id "

constexpr pg::Query kGetGroup{"get_group", TM_GROUP_COUNTS "WHERE g.id = $1::uuid GROUP BY g.id"};
constexpr pg::Query kCountGroups{"count_groups", "SELECT count(*) FROM taskmill.task_group"};
constexpr pg::Query kListGroups{
    "list_groups", TM_GROUP_COUNTS
    "WHERE g.id IN (SELECT id FROM taskmill.task_group ORDER BY created_at DESC "
    "LIMIT $1 OFFSET $2) GROUP BY g.id ORDER BY g.created_at DESC"};

#undef TM_GROUP_COUNTS

GroupSummary SummaryFromRow(const pg::ResultSet& res, int row) {
  GroupSummary g;
  g.id = res.GetString(row, "id");
  g.description = res.GetString(row, "description");
  g.all_tasks_dispatched = res.GetBool(row, "all_tasks_dispatched");
  g.waiting = res.GetInt(row, "waiting");
  g.running = res.GetInt(row, "running");
  g.completed = res.GetInt(row, "completed");
  g.failed = res.GetInt(row, "failed");
  g.canceling = res.GetInt(row, "canceling");
  g.canceled = res.GetInt(row, "canceled");
  return g;
}

// The tasks of `groups`, each group's in seq order.
void AddTasks(pg::Connection& conn, std::vector<GroupSummary>& groups, Deadline deadline) {
  if (groups.empty()) return;
  std::vector<std::string> ids;
  std::map<std::string, GroupSummary*> by_id;
  for (auto& g : groups) {
    ids.push_back(g.id);
    by_id[g.id] = &g;
  }
  auto rows = conn.Exec(fmt::format("SELECT {} FROM taskmill.task_view WHERE task_group = "
                                    "ANY ($1::uuid[]) ORDER BY seq",
                                    kTaskColumns),
                        pg::Params().AddTextArray(ids), deadline);
  for (int i = 0; i < rows.rows(); ++i) {
    Task t = TaskFromRow(rows, i);
    if (!t.task_group) continue;
    auto it = by_id.find(*t.task_group);
    if (it != by_id.end()) it->second->tasks.push_back(std::move(t));
  }
}

}  // namespace

Result<GroupSummary> GetGroup(pg::Connection& conn, const std::string& id, Deadline deadline) {
  auto res = conn.Exec(kGetGroup, pg::Params().Add(id), deadline);
  if (res.rows() == 0) {
    return MakeError(ErrorCode::kNotFound, fmt::format("task group {} not found", id));
  }
  std::vector<GroupSummary> one{SummaryFromRow(res, 0)};
  AddTasks(conn, one, deadline);
  return std::move(one.front());
}

GroupPage ListGroups(pg::Connection& conn, int limit, int offset, Deadline deadline) {
  GroupPage page;
  page.count = conn.Exec(kCountGroups, deadline).GetInt(0, 0);
  auto res = conn.Exec(kListGroups, pg::Params().Add(limit).Add(offset), deadline);
  for (int i = 0; i < res.rows(); ++i) page.groups.push_back(SummaryFromRow(res, i));
  AddTasks(conn, page.groups, deadline);
  return page;
}

}  // namespace taskmill::store
