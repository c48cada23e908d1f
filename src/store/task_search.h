// TaskSearch: a filtered, ordered, paged read of tasks, built from typed
// conditions; the SQL it becomes is the store's alone.
//
// Every value is a bound parameter, never spliced into the statement text.
// The conditions are ANDed. The page is cut in SQL (LIMIT/OFFSET), and the
// count of all matching tasks is read by a second statement.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "pg/connection.h"
#include "taskmill/deadline.h"
#include "taskmill/task.h"

namespace taskmill::store {

enum class TaskTextField { kName, kLoggingCid };
enum class TaskDateField { kCreatedAt, kStartedAt, kFinishedAt, kUnblockedAt };
enum class TaskIdField { kTaskGroup, kParentTask, kWorker };  // the worker: app_lock
enum class TaskOrderField {
  kCreatedAt,
  kName,
  kState,
  kStartedAt,
  kFinishedAt,
  kUnblockedAt,
  kId,
  kLoggingCid
};
enum class Comparison { kEqual, kAtLeast, kAtMost, kAfter, kBefore };  // = >= <= > <

class TaskSearch {
 public:
  // `states` are state names; a name no task has (Pulp's "skipped") simply
  // matches nothing.
  TaskSearch& StateIs(const std::string& state);
  TaskSearch& StateIn(const std::vector<std::string>& states);
  TaskSearch& StateNotIn(const std::vector<std::string>& states);
  TaskSearch& TextIs(TaskTextField field, const std::string& value);
  TaskSearch& TextContains(TaskTextField field, const std::string& value);
  TaskSearch& NameIn(const std::vector<std::string>& names);
  // `uuid` must be a well-formed uuid (the caller checks; else the read
  // fails with kInvalidArgument from the database).
  TaskSearch& IdIs(TaskIdField field, const std::string& uuid);
  // Holds `resource`, exclusively or shared.
  TaskSearch& HoldsResource(const std::string& resource);
  // Holds every one of `resources` exclusively / shared.
  TaskSearch& HoldsExclusive(const std::vector<std::string>& resources);
  TaskSearch& HoldsShared(const std::vector<std::string>& resources);
  // `timestamp`: ISO 8601 with an explicit zone (timestamptz input).
  TaskSearch& Compare(TaskDateField field, Comparison op, const std::string& timestamp);
  // Orders by these fields (NULLS LAST each), then by seq, ascending or
  // descending as the first field is. Default: newest first.
  TaskSearch& OrderBy(const std::vector<std::pair<TaskOrderField, bool /*descending*/>>& fields);
  TaskSearch& Page(int limit, int offset);

  int limit() const { return limit_; }
  int offset() const { return offset_; }

 private:
  friend struct TaskSearchSql;
  std::string Param(const std::string& value);
  std::string ParamArray(const std::vector<std::string>& values);

  std::vector<std::string> conditions_;
  pg::Params params_;
  int next_param_ = 0;
  std::string order_by_ = "created_at DESC, seq DESC";
  int limit_ = 100;
  int offset_ = 0;
};

struct TaskPage {
  int64_t count = 0;        // every matching task
  std::vector<Task> tasks;  // the page
};
TaskPage SearchTasks(pg::Connection& conn, const TaskSearch& search, Deadline deadline);

}  // namespace taskmill::store
