#include "store/task_store.h"

#include <fmt/format.h>

namespace taskmill::store {

const char* const kTaskColumns =
    "id, seq, name, args, kwargs, exclusive_resources, shared_resources, state, created_text, "
    "unblocked_text, started_text, finished_text, app_lock, worker_name, result, error, "
    "progress_reports, immediate, deferred, parent_task, task_group, logging_cid";

namespace {

nlohmann::json ParseJsonColumn(const pg::Result& res, int row, int col) {
  if (col < 0 || res.IsNull(row, col)) return nullptr;
  return nlohmann::json::parse(res.Get(row, col));
}

std::optional<std::string> OptionalColumn(const pg::Result& res, int row, const char* name) {
  int col = PQfnumber(res.raw(), name);
  if (col < 0) return std::nullopt;
  return res.GetOptional(row, col);
}

// A timestamp column: the *_text rendering of the view if selected, else the
// raw column.
std::optional<std::string> TimeColumn(const pg::Result& res, int row, const char* text_name,
                                      const char* raw_name) {
  int col = PQfnumber(res.raw(), text_name);
  if (col < 0) col = PQfnumber(res.raw(), raw_name);
  if (col < 0) return std::nullopt;
  return res.GetOptional(row, col);
}

template <typename T>
Result<T> MapOrRethrow(const pg::Error& e) {
  if (auto mapped = MapSqlError(e)) return *mapped;
  throw;
}

}  // namespace

std::optional<Error> MapSqlError(const pg::Error& e) {
  const std::string& s = e.sqlstate();
  std::string message = e.what();
  if (s == "TM400") return MakeError(ErrorCode::kInvalidArgument, message);
  if (s == "TM404") return MakeError(ErrorCode::kNotFound, message);
  if (s == "TM409") return MakeError(ErrorCode::kConflict, message);
  if (s == "TM410") return MakeError(ErrorCode::kConflict, message);
  // Malformed input the server itself rejected (bad uuid or JSON text).
  if (s == "22P02" || s == "22P05" || s == "22021" || s == "2202E")
    return MakeError(ErrorCode::kInvalidArgument, message);
  return std::nullopt;
}

Task TaskFromRow(const pg::Result& res, int row) {
  Task t;
  t.id = res.GetString(row, res.Column("id"));
  t.seq = res.GetInt(row, res.Column("seq"));
  t.name = res.GetString(row, res.Column("name"));
  t.args = ParseJsonColumn(res, row, res.Column("args"));
  t.kwargs = ParseJsonColumn(res, row, res.Column("kwargs"));
  t.exclusive_resources = res.GetTextArray(row, res.Column("exclusive_resources"));
  t.shared_resources = res.GetTextArray(row, res.Column("shared_resources"));
  auto state = ParseTaskState(res.Get(row, res.Column("state")));
  t.state = state.value_or(TaskState::kFailed);
  t.created_at = TimeColumn(res, row, "created_text", "created_at").value_or("");
  t.unblocked_at = TimeColumn(res, row, "unblocked_text", "unblocked_at");
  t.started_at = TimeColumn(res, row, "started_text", "started_at");
  t.finished_at = TimeColumn(res, row, "finished_text", "finished_at");
  t.app_lock = OptionalColumn(res, row, "app_lock");
  t.worker_name = OptionalColumn(res, row, "worker_name");
  t.result = ParseJsonColumn(res, row, PQfnumber(res.raw(), "result"));
  t.error = ParseJsonColumn(res, row, PQfnumber(res.raw(), "error"));
  t.progress_reports = ParseJsonColumn(res, row, PQfnumber(res.raw(), "progress_reports"));
  if (t.progress_reports.is_null()) t.progress_reports = nlohmann::json::array();
  t.immediate = res.GetBool(row, res.Column("immediate"));
  t.deferred = res.GetBool(row, res.Column("deferred"));
  t.parent_task = OptionalColumn(res, row, "parent_task");
  t.task_group = OptionalColumn(res, row, "task_group");
  t.logging_cid = OptionalColumn(res, row, "logging_cid").value_or("");
  return t;
}

App AppFromRow(const pg::Result& res, int row) {
  App a;
  a.id = res.GetString(row, res.Column("id"));
  a.app_type = res.GetString(row, res.Column("app_type"));
  a.name = res.GetString(row, res.Column("name"));
  a.hostname = res.GetString(row, res.Column("hostname"));
  a.pid = static_cast<int>(res.GetInt(row, res.Column("pid")));
  a.version = res.GetString(row, res.Column("version"));
  a.started_at = res.GetString(row, res.Column("started_text"));
  a.last_heartbeat = res.GetString(row, res.Column("heartbeat_text"));
  a.ttl_seconds = res.GetDouble(row, res.Column("ttl_seconds"));
  a.online = res.GetBool(row, res.Column("online"));
  a.current_task = res.GetOptional(row, res.Column("current_task"));
  return a;
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
    auto res = conn.Exec(
        "SELECT id, state, ready FROM taskmill.dispatch_task($1, $2::jsonb, $3::jsonb, "
        "$4::text[], $5::text[], $6::boolean, $7::boolean, $8::uuid, $9::uuid, $10, $11::uuid)",
        p, deadline);
    DispatchOutcome out;
    out.id = res.GetString(0, 0);
    out.state = ParseTaskState(res.Get(0, 1)).value_or(TaskState::kWaiting);
    out.ready = res.GetBool(0, 2);
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
        "SELECT taskmill.dispatch_many($1::jsonb)",
        pg::Params().Add(batch.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)),
        deadline);
    return res.GetTextArray(0, 0);
  } catch (const pg::QueryError& e) {
    return MapOrRethrow<std::vector<std::string>>(e);
  }
}

Result<TaskState> CancelTask(pg::Connection& conn, const std::string& task_id, Deadline deadline) {
  try {
    auto res = conn.Exec("SELECT taskmill.cancel($1::uuid)", pg::Params().Add(task_id), deadline);
    return ParseTaskState(res.Get(0, 0)).value_or(TaskState::kCanceling);
  } catch (const pg::QueryError& e) {
    return MapOrRethrow<TaskState>(e);
  }
}

Result<int> CancelTaskGroup(pg::Connection& conn, const std::string& group_id, Deadline deadline) {
  try {
    auto res =
        conn.Exec("SELECT taskmill.cancel_group($1::uuid)", pg::Params().Add(group_id), deadline);
    return static_cast<int>(res.GetInt(0, 0));
  } catch (const pg::QueryError& e) {
    return MapOrRethrow<int>(e);
  }
}

Result<std::string> CreateTaskGroup(pg::Connection& conn, const std::string& description,
                                    Deadline deadline) {
  auto res = conn.Exec("INSERT INTO taskmill.task_group (description) VALUES ($1) RETURNING id",
                       pg::Params().Add(description), deadline);
  return res.GetString(0, 0);
}

Result<Task> GetTask(pg::Connection& conn, const std::string& task_id, Deadline deadline) {
  try {
    auto res = conn.Exec(
        fmt::format("SELECT {} FROM taskmill.task_view WHERE id = $1::uuid", kTaskColumns),
        pg::Params().Add(task_id), deadline);
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
  auto res = conn.Exec(
      fmt::format("SELECT {} FROM taskmill.task_view "
                  "WHERE (cardinality($1::text[]) = 0 OR state = ANY ($1::text[])) "
                  "AND ($2::text IS NULL OR name = $2) "
                  "AND ($3::uuid IS NULL OR task_group = $3::uuid) "
                  "ORDER BY created_at DESC, seq DESC "
                  "LIMIT CASE WHEN $4::bigint < 0 THEN NULL ELSE $4::bigint END OFFSET $5",
                  kTaskColumns),
      p, deadline);
  std::vector<Task> tasks;
  tasks.reserve(res.rows());
  for (int i = 0; i < res.rows(); ++i) tasks.push_back(TaskFromRow(res, i));
  return tasks;
}

std::vector<App> ListApps(pg::Connection& conn, const std::optional<std::string>& app_type,
                          Deadline deadline) {
  auto res = conn.Exec(
      "SELECT id, app_type, name, hostname, pid, version, started_text, heartbeat_text, "
      "extract(epoch FROM ttl)::float8 AS ttl_seconds, online, current_task "
      "FROM taskmill.app_view WHERE ($1::text IS NULL OR app_type = $1) ORDER BY started_at, name",
      pg::Params().Add(app_type), deadline);
  std::vector<App> apps;
  for (int i = 0; i < res.rows(); ++i) apps.push_back(AppFromRow(res, i));
  return apps;
}

RegisteredApp RegisterApp(pg::Connection& conn, const AppRegistration& reg, Deadline deadline) {
  auto res = conn.Exec(
      "SELECT id, channel FROM taskmill.register_app($1, $2, $3, $4::integer, $5, $6::float8, "
      "$7::text[])",
      pg::Params()
          .Add(reg.app_type)
          .Add(reg.name)
          .Add(reg.hostname)
          .Add(reg.pid)
          .Add(TASKMILL_VERSION)
          .Add(reg.ttl_seconds)
          .AddTextArray(reg.functions),
      deadline);
  return RegisteredApp{res.GetString(0, 0), res.GetString(0, 1)};
}

bool Heartbeat(pg::Connection& conn, const std::string& app_id, Deadline deadline) {
  auto res = conn.Exec("SELECT taskmill.heartbeat($1::uuid)", pg::Params().Add(app_id), deadline);
  return res.GetBool(0, 0);
}

void DeregisterApp(pg::Connection& conn, const std::string& app_id, Deadline deadline) {
  conn.Exec("SELECT taskmill.deregister_app($1::uuid)", pg::Params().Add(app_id), deadline);
}

void RegisterFunctions(pg::Connection& conn, const std::vector<std::string>& names,
                       Deadline deadline) {
  conn.Exec(
      "INSERT INTO taskmill.task_function (name) SELECT DISTINCT unnest($1::text[]) "
      "ON CONFLICT (name) DO UPDATE SET last_seen = clock_timestamp()",
      pg::Params().AddTextArray(names), deadline);
}

Result<std::optional<Task>> Claim(pg::Connection& conn, const std::string& app_id, bool idle,
                                  Deadline deadline) {
  try {
    auto res = conn.Exec("SELECT * FROM taskmill.claim($1::uuid, $2::boolean)",
                         pg::Params().Add(app_id).Add(idle), deadline);
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
  return {"SELECT taskmill.finish($1::uuid, $2::uuid, $3, $4::jsonb, $5::jsonb)",
          OutcomeParams(task_id, app_id, state, result, error)};
}

FinishAndClaimResult FinishAndClaim(pg::Connection& conn, const std::string& task_id,
                                    const std::string& app_id, TaskState state,
                                    const nlohmann::json& result, const nlohmann::json& error,
                                    Deadline deadline) {
  auto res = conn.Exec(
      "SELECT * FROM taskmill.finish_and_claim($1::uuid, $2::uuid, $3, $4::jsonb, $5::jsonb)",
      OutcomeParams(task_id, app_id, state, result, error), deadline);
  FinishAndClaimResult out;
  if (!res.IsNull(0, res.Column("finished_state"))) {
    out.finished = ParseTaskState(res.Get(0, res.Column("finished_state")));
  }
  if (!res.IsNull(0, res.Column("id"))) out.next = TaskFromRow(res, 0);
  return out;
}

Result<FinishAndClaimManyResult> FinishAndClaimMany(pg::Connection& conn, const std::string& app_id,
                                                    const std::vector<TaskOutcome>& outcomes,
                                                    int claim, bool idle, Deadline deadline) {
  nlohmann::json batch = nlohmann::json::array();
  pg::Params exclude;
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
        {"SELECT taskmill.finish_many($1::uuid, $2::jsonb)",
         pg::Params().Add(app_id).Add(
             batch.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace))});
  }
  if (claim > 0) {
    statements.push_back(
        {"SELECT * FROM taskmill.claim_many($1::uuid, $2::integer, $3::boolean, $4::uuid[])",
         pg::Params().Add(app_id).Add(claim).Add(idle).AddTextArray(ids)});
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
      for (int row = 0; row < claimed.rows(); ++row) out.claimed.push_back(TaskFromRow(claimed, row));
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
  auto st = FinishStatement(task_id, app_id, state, result, error);
  auto res = conn.Exec(st.sql, st.params, deadline);
  if (res.IsNull(0, 0)) return std::nullopt;
  return ParseTaskState(res.Get(0, 0));
}

bool ReportProgress(pg::Connection& conn, const std::string& task_id, const std::string& app_id,
                    const nlohmann::json& report, Deadline deadline) {
  auto res = conn.Exec("SELECT taskmill.report_progress($1::uuid, $2::uuid, $3::jsonb)",
                       pg::Params().Add(task_id).Add(app_id).Add(report.dump()), deadline);
  return res.GetBool(0, 0);
}

std::optional<TaskState> TaskStateOf(pg::Connection& conn, const std::string& task_id,
                                     Deadline deadline) {
  auto res = conn.Exec("SELECT state FROM taskmill.task WHERE id = $1::uuid",
                       pg::Params().Add(task_id), deadline);
  if (res.rows() == 0) return std::nullopt;
  return ParseTaskState(res.Get(0, 0));
}

int ProcessReleases(pg::Connection& conn, Deadline deadline) {
  return static_cast<int>(conn.Exec("SELECT taskmill.process_releases()", deadline).GetInt(0, 0));
}

int RequeueLost(pg::Connection& conn, const std::string& app_id,
                const std::optional<std::string>& current, Deadline deadline) {
  return static_cast<int>(conn.Exec("SELECT taskmill.requeue_lost($1::uuid, $2::uuid)",
                                    pg::Params().Add(app_id).Add(current), deadline)
                              .GetInt(0, 0));
}

int UnblockAll(pg::Connection& conn, Deadline deadline) {
  return static_cast<int>(conn.Exec("SELECT taskmill.unblock_all()", deadline).GetInt(0, 0));
}

bool TryLease(pg::Connection& conn, const std::string& name, const std::string& holder,
              double seconds, Deadline deadline) {
  auto res = conn.Exec("SELECT taskmill.try_lease($1, $2::uuid, $3::float8)",
                       pg::Params().Add(name).Add(holder).Add(seconds), deadline);
  return res.GetBool(0, 0);
}

std::vector<MissingApp> DeleteMissingApps(pg::Connection& conn, Deadline deadline) {
  auto res = conn.Exec("SELECT id, name, app_type FROM taskmill.delete_missing_apps()", deadline);
  std::vector<MissingApp> out;
  for (int i = 0; i < res.rows(); ++i) {
    out.push_back({res.GetString(i, 0), res.GetString(i, 1), res.GetString(i, 2)});
  }
  return out;
}

std::vector<OrphanedTask> OrphanedTasks(pg::Connection& conn, int limit, Deadline deadline) {
  auto res = conn.Exec("SELECT id, state FROM taskmill.orphaned_tasks($1::integer)",
                       pg::Params().Add(limit), deadline);
  std::vector<OrphanedTask> out;
  for (int i = 0; i < res.rows(); ++i) {
    out.push_back(
        {res.GetString(i, 0), ParseTaskState(res.Get(i, 1)).value_or(TaskState::kRunning)});
  }
  return out;
}

std::optional<TaskState> FinalizeOrphan(pg::Connection& conn, const std::string& task_id,
                                        Deadline deadline) {
  auto res =
      conn.Exec("SELECT taskmill.finalize_orphan($1::uuid)", pg::Params().Add(task_id), deadline);
  if (res.IsNull(0, 0)) return std::nullopt;
  return ParseTaskState(res.Get(0, 0));
}

}  // namespace taskmill::store
