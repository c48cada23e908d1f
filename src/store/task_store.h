// The store: every read and write of taskmill's tables, as C++ calls.
//
// Each function runs one statement (most call a SQL function defined in
// migrations/) on a connection the caller owns. Expected failures (bad input,
// unknown ids, finished tasks) come back as Result errors mapped from the
// SQLSTATEs of class TM that the SQL functions raise; anything else is thrown
// as an exception of taskmill/errors.h: DatabaseError for what the database
// reports, DriverError for an answer this program does not understand.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "pg/connection.h"
#include "store/apps.h"
#include "taskmill/dispatch.h"
#include "taskmill/result.h"
#include "taskmill/task.h"

namespace taskmill::store {

// Maps an error raised by one of our SQL functions (SQLSTATE TMxxx) to an
// Error; returns nullopt for any other error (to be rethrown). TM400
// kInvalidArgument, TM404 kNotFound, TM409 kConflict, TM410 kFenced (the
// caller was declared dead); the server's own rejections of malformed
// values (a bad uuid or JSON text) kInvalidArgument. This is the only place
// that knows these SQLSTATEs.
std::optional<Error> MapSqlError(const pg::Error& e);
// True if `e` says the calling process was declared dead (kFenced), for
// callers that catch the exception of a statement that does not map it.
bool IsFenced(const pg::Error& e);

// --- dispatch and cancel --------------------------------------------------

// `run_here`: the id of the calling process, for an immediate task it will
// run itself if its resources are free (see taskmill.dispatch_task).
Result<DispatchOutcome> DispatchTask(pg::Connection& conn, const DispatchRequest& request,
                                     const std::optional<std::string>& run_here, Deadline deadline);

// Dispatches `requests` in one statement (taskmill.dispatch_many) with the
// semantics of DispatchTask called once per element in order: consecutive
// places in line, each task waiting for every earlier conflicting one (in
// the batch or before it). Returns the ids in request order. Every element
// must be deferred (a batch is never run by the dispatching process); an
// invalid element fails the whole batch with kInvalidArgument and a message
// that starts with "tasks[i]:" (i from 0), and nothing is written. At most
// kMaxDispatchBatch elements.
constexpr size_t kMaxDispatchBatch = 10000;
Result<std::vector<std::string>> DispatchMany(pg::Connection& conn,
                                              const std::vector<DispatchRequest>& requests,
                                              Deadline deadline);
// The same for a JSON array whose elements are already in the form
// taskmill.dispatch_many takes (see DispatchRequestToJson); every check is
// the SQL function's.
Result<std::vector<std::string>> DispatchManyJson(pg::Connection& conn, const nlohmann::json& batch,
                                                  Deadline deadline);
// The JSON object taskmill.dispatch_many takes for one request.
nlohmann::json DispatchRequestToJson(const DispatchRequest& request);

// Returns the state after the cancel ("canceled" or "canceling").
Result<TaskState> CancelTask(pg::Connection& conn, const std::string& task_id, Deadline deadline);
// Returns how many tasks were canceled or are being canceled.
Result<int> CancelTaskGroup(pg::Connection& conn, const std::string& group_id, Deadline deadline);
Result<std::string> CreateTaskGroup(pg::Connection& conn, const std::string& description,
                                    Deadline deadline);

// Deletes a finished task (completed, failed or canceled). kNotFound if
// there is no such task, kConflict ("task <id> is <state>: only finished
// tasks can be deleted") if it is unfinished; nothing changes then.
Status DeleteFinishedTask(pg::Connection& conn, const std::string& task_id, Deadline deadline);
// Deletes the tasks in one of `states` (state names) that finished before
// `finished_before` (timestamptz input; nullopt: 30 days ago). Returns how
// many. The caller checks that `states` are final.
int64_t PurgeTasks(pg::Connection& conn, const std::optional<std::string>& finished_before,
                   const std::vector<std::string>& states, Deadline deadline);

// --- reading --------------------------------------------------------------

Result<Task> GetTask(pg::Connection& conn, const std::string& task_id, Deadline deadline);

struct TaskFilter {
  std::vector<TaskState> states;  // any of these; empty = all
  std::optional<std::string> name;
  std::optional<std::string> task_group;
  int limit = 100;  // <= 0: no limit
  int offset = 0;
};
// Newest first.
std::vector<Task> ListTasks(pg::Connection& conn, const TaskFilter& filter, Deadline deadline);

// The state a task has in the database. Throws DriverError for a name this
// program does not know (never maps it to some other state).
TaskState TaskStateFromDb(std::string_view name);

// Builds a Task from row `row` of a result with the columns of kTaskColumns
// (timestamps as the *_text columns, in ISO 8601). Columns a statement may
// leave out (unblocked_text, started_text, finished_text, app_lock,
// worker_name, result, error, progress_reports, parent_task, task_group,
// logging_cid) are then empty; any other missing column, or an unknown
// state, throws DriverError.
Task TaskFromRow(const pg::ResultSet& res, int row);

// The column list to select from taskmill.task_view for TaskFromRow.
extern const char* const kTaskColumns;

// --- processes --------------------------------------------------------------

struct AppRegistration {
  std::string app_type;  // "worker" or "api"
  std::string name;
  std::string hostname;
  int pid = 0;
  double ttl_seconds = 30;
  std::vector<std::string> functions;
  int slots = 1;  // tasks the process runs at once (1-1000)
};
struct RegisteredApp {
  std::string id;
  std::string channel;  // NOTIFY channel of this process
};
RegisteredApp RegisterApp(pg::Connection& conn, const AppRegistration& reg, Deadline deadline);
// False if the row is gone: the process was declared dead.
bool Heartbeat(pg::Connection& conn, const std::string& app_id, Deadline deadline);
// Heartbeat, plus the number of processes on the idle list (for spacing
// idle polls by the size of the idle fleet).
struct FleetHeartbeat {
  bool alive = false;  // false: the row is gone (declared dead)
  int idle_processes = 0;
};
FleetHeartbeat HeartbeatFleet(pg::Connection& conn, const std::string& app_id, Deadline deadline);
// Those of `ids` whose state is canceling (one query for every slot's
// fallback check of a lost cancel notification).
std::vector<std::string> CancelingAmong(pg::Connection& conn, const std::vector<std::string>& ids,
                                        Deadline deadline);
void DeregisterApp(pg::Connection& conn, const std::string& app_id, Deadline deadline);
// Adds function names to taskmill.task_function (what dispatch accepts).
void RegisterFunctions(pg::Connection& conn, const std::vector<std::string>& names,
                       Deadline deadline);

// --- worker side ------------------------------------------------------------

// Claims the next ready task (see taskmill.claim). nullopt if none; then, if
// `idle`, the process is on the idle list. Returns kFenced if `app_id` was
// declared dead.
Result<std::optional<Task>> Claim(pg::Connection& conn, const std::string& app_id, bool idle,
                                  Deadline deadline);

// Records the outcome. `state` is kCompleted, kFailed or kCanceled. Returns
// the final state, or nullopt if `app_id` no longer owns the task (fenced):
// nothing was written.
std::optional<TaskState> FinishTask(pg::Connection& conn, const std::string& task_id,
                                    const std::string& app_id, TaskState state,
                                    const nlohmann::json& result, const nlohmann::json& error,
                                    Deadline deadline);

// The statement FinishTask runs, for callers that pipeline it with others.
pg::Connection::Statement FinishStatement(const std::string& task_id, const std::string& app_id,
                                          TaskState state, const nlohmann::json& result,
                                          const nlohmann::json& error);

// FinishTask and Claim in one transaction (taskmill.finish_and_claim): the
// busy worker's single round trip. The finished task's own release is left
// for the next claim. Never puts the worker on the idle list.
struct FinishAndClaimResult {
  std::optional<TaskState> finished;  // nullopt: the task was no longer ours
  std::optional<Task> next;
};
FinishAndClaimResult FinishAndClaim(pg::Connection& conn, const std::string& task_id,
                                    const std::string& app_id, TaskState state,
                                    const nlohmann::json& result, const nlohmann::json& error,
                                    Deadline deadline);

// The outcome of one task of this process, for FinishAndClaimMany.
struct TaskOutcome {
  std::string task_id;
  TaskState state = TaskState::kCompleted;  // kCompleted, kFailed or kCanceled
  nlohmann::json result;                    // null: none
  nlohmann::json error;                     // null: none
};
struct FinishAndClaimManyResult {
  // One per outcome, in order: the final state, or nullopt if the task was no
  // longer ours (nothing was written for it).
  std::vector<std::optional<TaskState>> finished;
  std::vector<Task> claimed;
};
// Records `outcomes` (taskmill.finish_many) and claims up to `claim` ready
// tasks (taskmill.claim_many; none if 0) in ONE transaction and one round
// trip. The releases of the finished tasks are left for a later
// transaction. With `idle`, a process left with free slots is put on the
// idle list. Returns kFenced if `app_id` was declared dead: then nothing
// was written. Outcomes are durable when this returns a value.
Result<FinishAndClaimManyResult> FinishAndClaimMany(pg::Connection& conn, const std::string& app_id,
                                                    const std::vector<TaskOutcome>& outcomes,
                                                    int claim, bool idle, Deadline deadline);

bool ReportProgress(pg::Connection& conn, const std::string& task_id, const std::string& app_id,
                    const nlohmann::json& report, Deadline deadline);

// Current state of a task, or nullopt if it does not exist.
std::optional<TaskState> TaskStateOf(pg::Connection& conn, const std::string& task_id,
                                     Deadline deadline);

// Puts back in line tasks claimed by `app_id` that are not among `running`
// (a claim whose answer was lost to a database fault), and finalises such
// tasks found canceling. Returns how many.
int RequeueLost(pg::Connection& conn, const std::string& app_id,
                const std::vector<std::string>& running, Deadline deadline);

// Unblocks tasks behind released resources; returns how many.
int ProcessReleases(pg::Connection& conn, Deadline deadline);
// The statement ProcessReleases runs, for pipelines (after the finishes it
// follows, each its own transaction).
pg::Connection::Statement ProcessReleasesStatement();
// Re-examines every blocked task (worker start).
int UnblockAll(pg::Connection& conn, Deadline deadline);

// Up to `limit` unfinished tasks owned by `app_id` that started more than
// `min_age_seconds` ago (an API process's immediate tasks whose outcome it
// may have lost).
std::vector<std::string> OwnedTasksOlderThan(pg::Connection& conn, const std::string& app_id,
                                             double min_age_seconds, int limit, Deadline deadline);

// --- the ingestion endpoints (src/api/ingest.cc) ----------------------------

// A deferred taskmill.noop on `resource` with correlation id `cid`; its
// result is one row with the column id.
pg::Connection::Statement NoopDispatchStatement(const std::string& resource,
                                                const std::string& cid);
// An immediate, not deferred taskmill.noop on `resource`, owned by (run
// here by) `app_id` if it can run at once; its result is one row with the
// columns id and state.
pg::Connection::Statement ImmediateNoopDispatchStatement(const std::string& resource,
                                                         const std::string& cid,
                                                         const std::string& app_id);
// How many tasks carry correlation id `cid` (only the completed ones if
// `completed_only`).
int64_t CountTasksWithCid(pg::Connection& conn, const std::string& cid, bool completed_only,
                          Deadline deadline);

// --- janitor ----------------------------------------------------------------

bool TryLease(pg::Connection& conn, const std::string& name, const std::string& holder,
              double seconds, Deadline deadline);
struct MissingApp {
  std::string id, name, app_type;
};
std::vector<MissingApp> DeleteMissingApps(pg::Connection& conn, Deadline deadline);
struct OrphanedTask {
  std::string id;
  TaskState state;
};
std::vector<OrphanedTask> OrphanedTasks(pg::Connection& conn, int limit, Deadline deadline);
std::optional<TaskState> FinalizeOrphan(pg::Connection& conn, const std::string& task_id,
                                        Deadline deadline);

// What holds back this database's xmin horizon (so vacuum cannot remove the
// dead rows of taskmill's busy tables) for longer than `older_than_seconds`:
// a session's snapshot or transaction (pid > 0), a prepared transaction or a
// replication slot (pid 0). `key` identifies the episode (the same holder
// gives the same key while it lasts). The oldest first; empty if none
// (taskmill.horizon_holders). Seeing other roles' sessions needs
// pg_read_all_stats (or superuser); without it they are not reported.
struct HorizonHolder {
  std::string key;
  std::string kind;  // "session", "prepared transaction", "replication slot"
  int pid = 0;
  std::string name;        // application_name, gid or slot name
  std::string state;       // pg_stat_activity.state, or "prepared", or "inactive" (a slot)
  double age_seconds = 0;  // for a slot: -1 (a slot has no start time)
  int64_t xmin_age = 0;    // transactions since its xmin
};
std::vector<HorizonHolder> HorizonHolders(pg::Connection& conn, double older_than_seconds,
                                          Deadline deadline);

}  // namespace taskmill::store
