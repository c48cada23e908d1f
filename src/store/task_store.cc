#include "store/task_store.h"

#include <fmt/format.h>

namespace taskmill::store {

// Every timestamp leaves the store in one format, the one task.h promises
// (ISO 8601 UTC with microseconds); taskmill.task_view renders it the same.
#define TM_ISO_TEXT(column) \
  "to_char(" column " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

#define TM_TASK_COLUMNS                                                                       \
  "id, seq, name, args, kwargs, exclusive_resources, shared_resources, state, created_text, " \
  "unblocked_text, started_text, finished_text, app_lock, worker_name, result, error, "       \
  "progress_reports, immediate, deferred, parent_task, task_group, logging_cid"

const char* const kTaskColumns = TM_TASK_COLUMNS;

namespace {

// Every statement the store runs, declared once with its name (the name
// shows in pg_prepared_statements and pg_stat_statements).

constexpr pg::Query kDispatchTask{
    "dispatch_task",
    "SELECT id, state, ready FROM taskmill.dispatch_task($1, $2::jsonb, $3::jsonb, "
    "$4::text[], $5::text[], $6::boolean, $7::boolean, $8::uuid, $9::uuid, $10, $11::uuid)"};
constexpr pg::Query kCancel{"cancel", "SELECT taskmill.cancel($1::uuid)"};
constexpr pg::Query kCancelGroup{"cancel_group", "SELECT taskmill.cancel_group($1::uuid)"};
constexpr pg::Query kCreateTaskGroup{
    "create_task_group", "INSERT INTO taskmill.task_group (description) VALUES ($1) RETURNING id"};
constexpr pg::Query kGetTask{
    "get_task", "SELECT " TM_TASK_COLUMNS " FROM taskmill.task_view WHERE id = $1::uuid"};
constexpr pg::Query kListTasks{
    "list_tasks", "SELECT " TM_TASK_COLUMNS
                  " FROM taskmill.task_view "
                  "WHERE (cardinality($1::text[]) = 0 OR state = ANY ($1::text[])) "
                  "AND ($2::text IS NULL OR name = $2) "
                  "AND ($3::uuid IS NULL OR task_group = $3::uuid) "
                  "ORDER BY created_at DESC, seq DESC "
                  "LIMIT CASE WHEN $4::bigint < 0 THEN NULL ELSE $4::bigint END OFFSET $5"};
constexpr pg::Query kRegisterApp{
    "register_app",
    "SELECT id, channel FROM taskmill.register_app($1, $2, $3, $4::integer, $5, $6::float8, "
    "$7::text[], $8::integer)"};
constexpr pg::Query kHeartbeat{"heartbeat", "SELECT taskmill.heartbeat($1::uuid)"};
constexpr pg::Query kHeartbeatFleet{
    "heartbeat_fleet", "SELECT alive, idle_processes FROM taskmill.heartbeat_fleet($1::uuid)"};
constexpr pg::Query kCancelingAmong{
    "canceling_among",
    "SELECT id FROM taskmill.task WHERE id = ANY ($1::uuid[]) AND state = 'canceling'"};
constexpr pg::Query kDeregisterApp{"deregister_app", "SELECT taskmill.deregister_app($1::uuid)"};
constexpr pg::Query kRegisterFunctions{
    "register_functions",
    "INSERT INTO taskmill.task_function (name) SELECT DISTINCT unnest($1::text[]) "
    "ON CONFLICT (name) DO UPDATE SET last_seen = clock_timestamp()"};
constexpr pg::Query kReportProgress{
    "report_progress", "SELECT taskmill.report_progress($1::uuid, $2::uuid, $3::jsonb)"};
constexpr pg::Query kTaskStateOf{"task_state_of",
                                 "SELECT state FROM taskmill.task WHERE id = $1::uuid"};
constexpr pg::Query kProcessReleases{"process_releases", "SELECT taskmill.process_releases()"};
constexpr pg::Query kRequeueLost{"requeue_lost",
                                 "SELECT taskmill.requeue_lost($1::uuid, $2::uuid[])"};
constexpr pg::Query kUnblockAll{"unblock_all", "SELECT taskmill.unblock_all()"};
constexpr pg::Query kTryLease{"try_lease", "SELECT taskmill.try_lease($1, $2::uuid, $3::float8)"};
constexpr pg::Query kDeleteMissingApps{
    "delete_missing_apps", "SELECT id, name, app_type FROM taskmill.delete_missing_apps()"};
constexpr pg::Query kOrphanedTasks{"orphaned_tasks",
                                   "SELECT id, state FROM taskmill.orphaned_tasks($1::integer)"};
constexpr pg::Query kFinalizeOrphan{"finalize_orphan", "SELECT taskmill.finalize_orphan($1::uuid)"};

// The columns of kTaskColumns from a taskmill.task row (what taskmill.claim
// returns).
constexpr pg::Query kClaim{"claim",
    "SELECT id, seq, name, args, kwargs, exclusive_resources, shared_resources, state, "
    TM_ISO_TEXT("created_at") " AS created_text, "
    TM_ISO_TEXT("unblocked_at") " AS unblocked_text, "
    TM_ISO_TEXT("started_at") " AS started_text, "
    TM_ISO_TEXT("finished_at") " AS finished_text, "
    "app_lock, worker_name, result, error, progress_reports, immediate, deferred, parent_task, "
    "task_group, logging_cid FROM taskmill.claim($1::uuid, $2::boolean)"};

// The outcome, then those of the claimed task's columns that
// taskmill.finish_and_claim returns (all NULL if none was claimed).
constexpr pg::Query kFinishAndClaim{"finish_and_claim",
    "SELECT finished_state, id, seq, name, args, kwargs, exclusive_resources, shared_resources, "
    "state, immediate, deferred, logging_cid, task_group, parent_task, "
    TM_ISO_TEXT("created_at") " AS created_text, "
    TM_ISO_TEXT("unblocked_at") " AS unblocked_text, "
    TM_ISO_TEXT("started_at") " AS started_text "
    "FROM taskmill.finish_and_claim($1::uuid, $2::uuid, $3, $4::jsonb, $5::jsonb)"};

// The same columns from taskmill.claim_many's rows.
constexpr pg::Query kClaimMany{"claim_many",
    "SELECT id, seq, name, args, kwargs, exclusive_resources, shared_resources, state, "
    TM_ISO_TEXT("created_at") " AS created_text, "
    TM_ISO_TEXT("unblocked_at") " AS unblocked_text, "
    TM_ISO_TEXT("started_at") " AS started_text, "
    TM_ISO_TEXT("finished_at") " AS finished_text, "
    "app_lock, worker_name, result, error, progress_reports, immediate, deferred, parent_task, "
    "task_group, logging_cid "
    "FROM taskmill.claim_many($1::uuid, $2::integer, $3::boolean, $4::uuid[])"};
constexpr pg::Query kFinishMany{"finish_many", "SELECT taskmill.finish_many($1::uuid, $2::jsonb)"};
constexpr pg::Query kDispatchMany{"dispatch_many", "SELECT taskmill.dispatch_many($1::jsonb)"};

constexpr pg::Query kDeleteFinishedTask{
    "delete_finished_task",
    "WITH d AS (DELETE FROM taskmill.task WHERE id = $1::uuid "
    "AND state IN ('completed', 'failed', 'canceled') RETURNING 1) "
    "SELECT (SELECT count(*) FROM d), (SELECT state FROM taskmill.task WHERE id = $1::uuid)"};
constexpr pg::Query kPurgeTasks{
    "purge_tasks",
    "WITH d AS (DELETE FROM taskmill.task WHERE state = ANY ($2::text[]) AND finished_at < "
    "coalesce($1::timestamptz, now() - interval '30 days') RETURNING 1) SELECT count(*) FROM d"};
constexpr pg::Query kOwnedTasksOlderThan{
    "owned_tasks_older_than",
    "SELECT id FROM taskmill.task WHERE app_lock = $1::uuid AND state IN ('running', "
    "'canceling') AND started_at < clock_timestamp() - make_interval(secs => $2) LIMIT $3"};
constexpr pg::Query kCountTasksWithCid{"count_tasks_with_cid",
                                       "SELECT count(*) FROM taskmill.task WHERE logging_cid = $1"};
constexpr pg::Query kCountCompletedWithCid{
    "count_completed_with_cid",
    "SELECT count(*) FROM taskmill.task WHERE logging_cid = $1 AND state = 'completed'"};
constexpr const char* kNoopDispatch =
    "SELECT id FROM taskmill.dispatch_task('taskmill.noop', '[]', '{}', $1::text[], '{}', "
    "false, true, NULL, NULL, $2)";
constexpr const char* kImmediateNoopDispatch =
    "SELECT id, state FROM taskmill.dispatch_task('taskmill.noop', '[]', '{}', $1::text[], "
    "'{}', true, false, NULL, NULL, $2, $3::uuid)";

constexpr pg::Query kFinish{"finish",
                            "SELECT taskmill.finish($1::uuid, $2::uuid, $3, $4::jsonb, $5::jsonb)"};

#undef TM_ISO_TEXT
#undef TM_TASK_COLUMNS

nlohmann::json ParseJsonColumn(const pg::ResultSet& res, int row, std::optional<int> col) {
  if (!col || res.IsNull(row, *col)) return nullptr;
  return nlohmann::json::parse(res.Get(row, *col));
}

// A column some statements do not select (finish_and_claim has no app_lock,
// no result...): nullopt when absent or NULL.
std::optional<std::string> OptionalColumn(const pg::ResultSet& res, int row, const char* name) {
  auto col = res.FindColumn(name);
  if (!col) return std::nullopt;
  return res.GetOptional(row, *col);
}

std::optional<TaskState> OptionalState(const pg::ResultSet& res, int row, int col) {
  if (res.IsNull(row, col)) return std::nullopt;
  return TaskStateFromDb(res.Get(row, col));
}

template <typename T>
Result<T> MapOrRethrow(const pg::Error& e) {
  if (auto mapped = MapSqlError(e)) return *mapped;
  throw;
}

}  // namespace

TaskState TaskStateFromDb(std::string_view name) {
  if (auto state = ParseTaskState(name)) return *state;
  throw DriverError(fmt::format(
      "the database has a task in state \"{}\", which this program does not know (a schema newer "
      "than the program?)",
      name));
}

// The one place where the SQLSTATEs of our SQL functions become ErrorCodes.
std::optional<Error> MapSqlError(const pg::Error& e) {
  const std::string& s = e.sqlstate();
  std::string message = e.what();
  if (s == "TM400") return MakeError(ErrorCode::kInvalidArgument, message);
  if (s == "TM404") return MakeError(ErrorCode::kNotFound, message);
  if (s == "TM409") return MakeError(ErrorCode::kConflict, message);
  if (s == "TM410") return MakeError(ErrorCode::kFenced, message);
  // Malformed input the server itself rejected (bad uuid or JSON text).
  if (s == "22P02" || s == "22P05" || s == "22021" || s == "2202E")
    return MakeError(ErrorCode::kInvalidArgument, message);
  return std::nullopt;
}

bool IsFenced(const pg::Error& e) {
  auto mapped = MapSqlError(e);
  return mapped && mapped->code == ErrorCode::kFenced;
}

Task TaskFromRow(const pg::ResultSet& res, int row) {
  Task t;
  t.id = res.GetString(row, "id");
  t.seq = res.GetInt(row, "seq");
  t.name = res.GetString(row, "name");
  t.args = ParseJsonColumn(res, row, res.Column("args"));
  t.kwargs = ParseJsonColumn(res, row, res.Column("kwargs"));
  t.exclusive_resources = res.GetTextArray(row, "exclusive_resources");
  t.shared_resources = res.GetTextArray(row, "shared_resources");
  t.state = TaskStateFromDb(res.Get(row, "state"));
  t.created_at = res.GetString(row, "created_text");
  t.unblocked_at = OptionalColumn(res, row, "unblocked_text");
  t.started_at = OptionalColumn(res, row, "started_text");
  t.finished_at = OptionalColumn(res, row, "finished_text");
  t.app_lock = OptionalColumn(res, row, "app_lock");
  t.worker_name = OptionalColumn(res, row, "worker_name");
  t.result = ParseJsonColumn(res, row, res.FindColumn("result"));
  t.error = ParseJsonColumn(res, row, res.FindColumn("error"));
  t.progress_reports = ParseJsonColumn(res, row, res.FindColumn("progress_reports"));
  if (t.progress_reports.is_null()) t.progress_reports = nlohmann::json::array();
  t.immediate = res.GetBool(row, "immediate");
  t.deferred = res.GetBool(row, "deferred");
  t.parent_task = OptionalColumn(res, row, "parent_task");
  t.task_group = OptionalColumn(res, row, "task_group");
  t.logging_cid = OptionalColumn(res, row, "logging_cid").value_or("");
  return t;
}

Result<DispatchOutcome> DispatchTask(pg::Connection& conn, const DispatchRequest& request,
                                     const std::optional<std::string>& run_here,
                                     Deadline deadline) {
  pg::Params p;
  p.Add(request.name)
      .Add(request.args.dump())
      .Add(request.kwargs.dump())
      .AddTextArray(request.exclusive_resources)
      .AddTextArray(request.shared_resources)
      .Add(request.immediate)
      .Add(request.deferred)
      .Add(request.task_group)
      .Add(request.parent_task)
      .Add(request.logging_cid)
      .Add(run_here);
  try {
    auto res = conn.Exec(kDispatchTask, p, deadline);
    DispatchOutcome out;
    out.id = res.GetString(0, "id");
    out.state = TaskStateFromDb(res.Get(0, "state"));
    out.ready = res.GetBool(0, "ready");
    return out;
  } catch (const pg::QueryError& e) {
    return MapOrRethrow<DispatchOutcome>(e);
  }
}

nlohmann::json DispatchRequestToJson(const DispatchRequest& request) {
  nlohmann::json j = {{"name", request.name},
                      {"args", request.args},
                      {"kwargs", request.kwargs},
                      {"exclusive_resources", request.exclusive_resources},
                      {"shared_resources", request.shared_resources}};
  if (request.immediate) j["immediate"] = true;
  if (request.task_group) j["task_group"] = *request.task_group;
  if (request.parent_task) j["parent_task"] = *request.parent_task;
  if (!request.logging_cid.empty()) j["logging_cid"] = request.logging_cid;
  return j;
}

Result<std::vector<std::string>> DispatchMany(pg::Connection& conn,
                                              const std::vector<DispatchRequest>& requests,
                                              Deadline deadline) {
  if (requests.size() > kMaxDispatchBatch) {
    return MakeError(ErrorCode::kInvalidArgument,
                     fmt::format("too many tasks in one batch: {} (at most {})", requests.size(),
                                 kMaxDispatchBatch));
  }
  nlohmann::json batch = nlohmann::json::array();
  for (size_t i = 0; i < requests.size(); ++i) {
    if (!requests[i].deferred) {
      return MakeError(ErrorCode::kInvalidArgument,
                       fmt::format("tasks[{}]: a batched task is always deferred (a batch is "
                                   "never run by the dispatching process)",
                                   i));
    }
    batch.push_back(DispatchRequestToJson(requests[i]));
  }
  return DispatchManyJson(conn, batch, deadline);
}

Result<std::vector<std::string>> DispatchManyJson(pg::Connection& conn, const nlohmann::json& batch,
                                                  Deadline deadline) {
  if (!batch.is_array()) {
    return MakeError(ErrorCode::kInvalidArgument, "a batch must be a JSON array of tasks");
  }
  if (batch.empty()) return std::vector<std::string>{};
  try {
    auto res = conn.Exec(
        kDispatchMany,
        pg::Params().Add(batch.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)),
        deadline);
    return res.GetTextArray(0, 0);
  } catch (const pg::QueryError& e) {
    return MapOrRethrow<std::vector<std::string>>(e);
  }
}

Result<TaskState> CancelTask(pg::Connection& conn, const std::string& task_id, Deadline deadline) {
  try {
    auto res = conn.Exec(kCancel, pg::Params().Add(task_id), deadline);
    return TaskStateFromDb(res.Get(0, 0));
  } catch (const pg::QueryError& e) {
    return MapOrRethrow<TaskState>(e);
  }
}

Result<int> CancelTaskGroup(pg::Connection& conn, const std::string& group_id, Deadline deadline) {
  try {
    auto res = conn.Exec(kCancelGroup, pg::Params().Add(group_id), deadline);
    return static_cast<int>(res.GetInt(0, 0));
  } catch (const pg::QueryError& e) {
    return MapOrRethrow<int>(e);
  }
}

Status DeleteFinishedTask(pg::Connection& conn, const std::string& task_id, Deadline deadline) {
  try {
    auto r = conn.Exec(kDeleteFinishedTask, pg::Params().Add(task_id), deadline);
    if (r.GetInt(0, 0) == 1) return Status::Ok();
    if (r.IsNull(0, 1)) {
      return MakeError(ErrorCode::kNotFound, fmt::format("task {} not found", task_id));
    }
    return MakeError(
        ErrorCode::kConflict,
        fmt::format("task {} is {}: only finished tasks can be deleted", task_id, r.Get(0, 1)));
  } catch (const pg::QueryError& e) {
    if (auto mapped = MapSqlError(e)) return *mapped;
    throw;
  }
}

int64_t PurgeTasks(pg::Connection& conn, const std::optional<std::string>& finished_before,
                   const std::vector<std::string>& states, Deadline deadline) {
  pg::Params p;
  p.Add(finished_before).AddTextArray(states);
  return conn.Exec(kPurgeTasks, p, deadline).GetInt(0, 0);
}

Result<std::string> CreateTaskGroup(pg::Connection& conn, const std::string& description,
                                    Deadline deadline) {
  auto res = conn.Exec(kCreateTaskGroup, pg::Params().Add(description), deadline);
  return res.GetString(0, 0);
}

Result<Task> GetTask(pg::Connection& conn, const std::string& task_id, Deadline deadline) {
  try {
    auto res = conn.Exec(kGetTask, pg::Params().Add(task_id), deadline);
    if (res.rows() == 0) {
      return MakeError(ErrorCode::kNotFound, fmt::format("task {} not found", task_id));
    }
    return TaskFromRow(res, 0);
  } catch (const pg::QueryError& e) {
    return MapOrRethrow<Task>(e);
  }
}

std::vector<Task> ListTasks(pg::Connection& conn, const TaskFilter& filter, Deadline deadline) {
  std::vector<std::string> states;
  for (auto s : filter.states) states.emplace_back(TaskStateName(s));
  pg::Params p;
  p.AddTextArray(states).Add(filter.name).Add(filter.task_group);
  p.Add(static_cast<int64_t>(filter.limit > 0 ? filter.limit : -1)).Add(filter.offset);
  auto res = conn.Exec(kListTasks, p, deadline);
  std::vector<Task> tasks;
  tasks.reserve(res.rows());
  for (int i = 0; i < res.rows(); ++i) tasks.push_back(TaskFromRow(res, i));
  return tasks;
}

RegisteredApp RegisterApp(pg::Connection& conn, const AppRegistration& reg, Deadline deadline) {
  auto res = conn.Exec(kRegisterApp,
                       pg::Params()
                           .Add(reg.app_type)
                           .Add(reg.name)
                           .Add(reg.hostname)
                           .Add(reg.pid)
                           .Add(TASKMILL_VERSION)
                           .Add(reg.ttl_seconds)
                           .AddTextArray(reg.functions)
                           .Add(reg.slots),
                       deadline);
  return RegisteredApp{res.GetString(0, 0), res.GetString(0, 1)};
}

bool Heartbeat(pg::Connection& conn, const std::string& app_id, Deadline deadline) {
  auto res = conn.Exec(kHeartbeat, pg::Params().Add(app_id), deadline);
  return res.GetBool(0, 0);
}

FleetHeartbeat HeartbeatFleet(pg::Connection& conn, const std::string& app_id, Deadline deadline) {
  auto res = conn.Exec(kHeartbeatFleet, pg::Params().Add(app_id), deadline);
  return FleetHeartbeat{res.GetBool(0, 0), static_cast<int>(res.GetInt(0, 1))};
}

std::vector<std::string> CancelingAmong(pg::Connection& conn, const std::vector<std::string>& ids,
                                        Deadline deadline) {
  std::vector<std::string> out;
  if (ids.empty()) return out;
  auto res = conn.Exec(kCancelingAmong, pg::Params().AddTextArray(ids), deadline);
  for (int i = 0; i < res.rows(); ++i) out.push_back(res.GetString(i, 0));
  return out;
}

void DeregisterApp(pg::Connection& conn, const std::string& app_id, Deadline deadline) {
  conn.Exec(kDeregisterApp, pg::Params().Add(app_id), deadline);
}

void RegisterFunctions(pg::Connection& conn, const std::vector<std::string>& names,
                       Deadline deadline) {
  conn.Exec(kRegisterFunctions, pg::Params().AddTextArray(names), deadline);
}

Result<std::optional<Task>> Claim(pg::Connection& conn, const std::string& app_id, bool idle,
                                  Deadline deadline) {
  try {
    auto res = conn.Exec(kClaim, pg::Params().Add(app_id).Add(idle), deadline);
    if (res.rows() == 0) return std::optional<Task>();
    return std::optional<Task>(TaskFromRow(res, 0));
  } catch (const pg::QueryError& e) {
    return MapOrRethrow<std::optional<Task>>(e);
  }
}

namespace {
pg::Params OutcomeParams(const std::string& task_id, const std::string& app_id, TaskState state,
                         const nlohmann::json& result, const nlohmann::json& error) {
  pg::Params p;
  p.Add(task_id).Add(app_id).Add(std::string(TaskStateName(state)));
  if (result.is_null()) {
    p.AddNull();
  } else {
    p.Add(result.dump());
  }
  if (error.is_null()) {
    p.AddNull();
  } else {
    p.Add(error.dump());
  }
  return p;
}
}  // namespace

pg::Connection::Statement FinishStatement(const std::string& task_id, const std::string& app_id,
                                          TaskState state, const nlohmann::json& result,
                                          const nlohmann::json& error) {
  return {kFinish.text, OutcomeParams(task_id, app_id, state, result, error)};
}

FinishAndClaimResult FinishAndClaim(pg::Connection& conn, const std::string& task_id,
                                    const std::string& app_id, TaskState state,
                                    const nlohmann::json& result, const nlohmann::json& error,
                                    Deadline deadline) {
  auto res =
      conn.Exec(kFinishAndClaim, OutcomeParams(task_id, app_id, state, result, error), deadline);
  FinishAndClaimResult out;
  out.finished = OptionalState(res, 0, res.Column("finished_state"));
  if (!res.IsNull(0, "id")) out.next = TaskFromRow(res, 0);
  return out;
}

Result<FinishAndClaimManyResult> FinishAndClaimMany(pg::Connection& conn, const std::string& app_id,
                                                    const std::vector<TaskOutcome>& outcomes,
                                                    int claim, bool idle, Deadline deadline) {
  nlohmann::json batch = nlohmann::json::array();
  std::vector<std::string> ids;
  for (const auto& o : outcomes) {
    batch.push_back({{"id", o.task_id},
                     {"state", TaskStateName(o.state)},
                     {"result", o.result},
                     {"error", o.error}});
    ids.push_back(o.task_id);
  }
  std::vector<pg::Connection::Statement> statements;
  statements.push_back({"BEGIN", {}});
  if (!outcomes.empty()) {
    statements.push_back(
        {kFinishMany.text, pg::Params().Add(app_id).Add(batch.dump(
                               -1, ' ', false, nlohmann::json::error_handler_t::replace))});
  }
  if (claim > 0) {
    statements.push_back(
        {kClaimMany.text, pg::Params().Add(app_id).Add(claim).Add(idle).AddTextArray(ids)});
  }
  statements.push_back({"COMMIT", {}});
  try {
    auto results = conn.ExecPipeline(statements, deadline);
    FinishAndClaimManyResult out;
    size_t next = 1;
    if (!outcomes.empty()) {
      auto states = results[next++].GetTextArray(0, 0);
      // NULL elements come back empty: not ours.
      for (const auto& st : states) {
        out.finished.push_back(st.empty() ? std::nullopt : ParseTaskState(st));
      }
      out.finished.resize(outcomes.size());
    }
    if (claim > 0) {
      const auto& claimed = results[next++];
      for (int row = 0; row < claimed.rows(); ++row)
        out.claimed.push_back(TaskFromRow(claimed, row));
    }
    return out;
  } catch (const pg::QueryError& e) {
    return MapOrRethrow<FinishAndClaimManyResult>(e);
  }
}

std::optional<TaskState> FinishTask(pg::Connection& conn, const std::string& task_id,
                                    const std::string& app_id, TaskState state,
                                    const nlohmann::json& result, const nlohmann::json& error,
                                    Deadline deadline) {
  auto res = conn.Exec(kFinish, OutcomeParams(task_id, app_id, state, result, error), deadline);
  return OptionalState(res, 0, 0);
}

bool ReportProgress(pg::Connection& conn, const std::string& task_id, const std::string& app_id,
                    const nlohmann::json& report, Deadline deadline) {
  auto res = conn.Exec(kReportProgress, pg::Params().Add(task_id).Add(app_id).Add(report.dump()),
                       deadline);
  return res.GetBool(0, 0);
}

std::optional<TaskState> TaskStateOf(pg::Connection& conn, const std::string& task_id,
                                     Deadline deadline) {
  auto res = conn.Exec(kTaskStateOf, pg::Params().Add(task_id), deadline);
  if (res.rows() == 0) return std::nullopt;
  return TaskStateFromDb(res.Get(0, 0));
}

int ProcessReleases(pg::Connection& conn, Deadline deadline) {
  return static_cast<int>(conn.Exec(kProcessReleases, deadline).GetInt(0, 0));
}

pg::Connection::Statement ProcessReleasesStatement() { return {kProcessReleases.text, {}}; }

std::vector<std::string> OwnedTasksOlderThan(pg::Connection& conn, const std::string& app_id,
                                             double min_age_seconds, int limit, Deadline deadline) {
  auto rows = conn.Exec(kOwnedTasksOlderThan,
                        pg::Params().Add(app_id).Add(min_age_seconds).Add(limit), deadline);
  std::vector<std::string> ids;
  for (int i = 0; i < rows.rows(); ++i) ids.push_back(rows.GetString(i, 0));
  return ids;
}

pg::Connection::Statement NoopDispatchStatement(const std::string& resource,
                                                const std::string& cid) {
  pg::Params p;
  p.AddTextArray({resource}).Add(cid);
  return {kNoopDispatch, std::move(p)};
}

pg::Connection::Statement ImmediateNoopDispatchStatement(const std::string& resource,
                                                         const std::string& cid,
                                                         const std::string& app_id) {
  pg::Params p;
  p.AddTextArray({resource}).Add(cid).Add(app_id);
  return {kImmediateNoopDispatch, std::move(p)};
}

int64_t CountTasksWithCid(pg::Connection& conn, const std::string& cid, bool completed_only,
                          Deadline deadline) {
  return conn
      .Exec(completed_only ? kCountCompletedWithCid : kCountTasksWithCid, pg::Params().Add(cid),
            deadline)
      .GetInt(0, 0);
}

int RequeueLost(pg::Connection& conn, const std::string& app_id,
                const std::vector<std::string>& running, Deadline deadline) {
  return static_cast<int>(
      conn.Exec(kRequeueLost, pg::Params().Add(app_id).AddTextArray(running), deadline)
          .GetInt(0, 0));
}

int UnblockAll(pg::Connection& conn, Deadline deadline) {
  return static_cast<int>(conn.Exec(kUnblockAll, deadline).GetInt(0, 0));
}

bool TryLease(pg::Connection& conn, const std::string& name, const std::string& holder,
              double seconds, Deadline deadline) {
  auto res = conn.Exec(kTryLease, pg::Params().Add(name).Add(holder).Add(seconds), deadline);
  return res.GetBool(0, 0);
}

std::vector<MissingApp> DeleteMissingApps(pg::Connection& conn, Deadline deadline) {
  auto res = conn.Exec(kDeleteMissingApps, deadline);
  std::vector<MissingApp> out;
  for (int i = 0; i < res.rows(); ++i) {
    out.push_back({res.GetString(i, "id"), res.GetString(i, "name"), res.GetString(i, "app_type")});
  }
  return out;
}

std::vector<OrphanedTask> OrphanedTasks(pg::Connection& conn, int limit, Deadline deadline) {
  auto res = conn.Exec(kOrphanedTasks, pg::Params().Add(limit), deadline);
  std::vector<OrphanedTask> out;
  for (int i = 0; i < res.rows(); ++i) {
    out.push_back({res.GetString(i, "id"), TaskStateFromDb(res.Get(i, "state"))});
  }
  return out;
}

std::optional<TaskState> FinalizeOrphan(pg::Connection& conn, const std::string& task_id,
                                        Deadline deadline) {
  auto res = conn.Exec(kFinalizeOrphan, pg::Params().Add(task_id), deadline);
  return OptionalState(res, 0, 0);
}

std::vector<HorizonHolder> HorizonHolders(pg::Connection& conn, double older_than_seconds,
                                          Deadline deadline) {
  auto res = conn.Exec(
      "SELECT key, kind, pid, name, state, age_seconds, xmin_age "
      "FROM taskmill.horizon_holders(make_interval(secs => $1::float8))",
      pg::Params().Add(older_than_seconds), deadline);
  std::vector<HorizonHolder> out;
  for (int i = 0; i < res.rows(); ++i) {
    HorizonHolder h;
    h.key = res.GetString(i, 0);
    h.kind = res.GetString(i, 1);
    h.pid = static_cast<int>(res.GetInt(i, 2));
    h.name = res.GetString(i, 3);
    h.state = res.GetString(i, 4);
    h.age_seconds = res.GetDouble(i, 5);
    h.xmin_age = res.GetInt(i, 6);
    out.push_back(std::move(h));
  }
  return out;
}

}  // namespace taskmill::store
