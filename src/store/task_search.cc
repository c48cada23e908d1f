#include "store/task_search.h"

#include <fmt/format.h>

#include "store/task_store.h"

namespace taskmill::store {

namespace {

const char* Column(TaskTextField f) { return f == TaskTextField::kName ? "name" : "logging_cid"; }

const char* Column(TaskDateField f) {
  switch (f) {
    case TaskDateField::kCreatedAt:
      return "created_at";
    case TaskDateField::kStartedAt:
      return "started_at";
    case TaskDateField::kFinishedAt:
      return "finished_at";
    case TaskDateField::kUnblockedAt:
      return "unblocked_at";
  }
  return "created_at";
}

const char* Column(TaskIdField f) {
  switch (f) {
    case TaskIdField::kTaskGroup:
      return "task_group";
    case TaskIdField::kParentTask:
      return "parent_task";
    case TaskIdField::kWorker:
      return "app_lock";
  }
  return "task_group";
}

const char* Column(TaskOrderField f) {
  switch (f) {
    case TaskOrderField::kCreatedAt:
      return "created_at";
    case TaskOrderField::kName:
      return "name";
    case TaskOrderField::kState:
      return "state";
    case TaskOrderField::kStartedAt:
      return "started_at";
    case TaskOrderField::kFinishedAt:
      return "finished_at";
    case TaskOrderField::kUnblockedAt:
      return "unblocked_at";
    case TaskOrderField::kId:
      return "id";
    case TaskOrderField::kLoggingCid:
      return "logging_cid";
  }
  return "created_at";
}

const char* Operator(Comparison op) {
  switch (op) {
    case Comparison::kEqual:
      return "=";
    case Comparison::kAtLeast:
      return ">=";
    case Comparison::kAtMost:
      return "<=";
    case Comparison::kAfter:
      return ">";
    case Comparison::kBefore:
      return "<";
  }
  return "=";
}

}  // namespace

struct TaskSearchSql {
  static std::string Where(const TaskSearch& s) {
    return s.conditions_.empty() ? "TRUE" : fmt::format("{}", fmt::join(s.conditions_, " AND "));
  }
  static const pg::Params& Params(const TaskSearch& s) { return s.params_; }
  static const std::string& OrderBy(const TaskSearch& s) { return s.order_by_; }
};

std::string TaskSearch::Param(const std::string& value) {
  params_.Add(value);
  return fmt::format("${}", ++next_param_);
}

std::string TaskSearch::ParamArray(const std::vector<std::string>& values) {
  params_.AddTextArray(values);
  return fmt::format("${}::text[]", ++next_param_);
}

TaskSearch& TaskSearch::StateIs(const std::string& state) {
  conditions_.push_back("state = " + Param(state));
  return *this;
}

TaskSearch& TaskSearch::StateIn(const std::vector<std::string>& states) {
  conditions_.push_back("state = ANY (" + ParamArray(states) + ")");
  return *this;
}

TaskSearch& TaskSearch::StateNotIn(const std::vector<std::string>& states) {
  conditions_.push_back("state <> ALL (" + ParamArray(states) + ")");
  return *this;
}

TaskSearch& TaskSearch::TextIs(TaskTextField field, const std::string& value) {
  conditions_.push_back(fmt::format("{} = {}", Column(field), Param(value)));
  return *this;
}

TaskSearch& TaskSearch::TextContains(TaskTextField field, const std::string& value) {
  conditions_.push_back(fmt::format("strpos({}, {}) > 0", Column(field), Param(value)));
  return *this;
}

TaskSearch& TaskSearch::NameIn(const std::vector<std::string>& names) {
  conditions_.push_back("name = ANY (" + ParamArray(names) + ")");
  return *this;
}

TaskSearch& TaskSearch::IdIs(TaskIdField field, const std::string& uuid) {
  conditions_.push_back(fmt::format("{} = {}::uuid", Column(field), Param(uuid)));
  return *this;
}

TaskSearch& TaskSearch::HoldsResource(const std::string& resource) {
  std::string p = Param(resource);
  conditions_.push_back(
      fmt::format("({0} = ANY (exclusive_resources) OR {0} = ANY (shared_resources))", p));
  return *this;
}

TaskSearch& TaskSearch::HoldsExclusive(const std::vector<std::string>& resources) {
  conditions_.push_back("exclusive_resources @> " + ParamArray(resources));
  return *this;
}

TaskSearch& TaskSearch::HoldsShared(const std::vector<std::string>& resources) {
  conditions_.push_back("shared_resources @> " + ParamArray(resources));
  return *this;
}

TaskSearch& TaskSearch::Compare(TaskDateField field, Comparison op, const std::string& timestamp) {
  conditions_.push_back(
      fmt::format("{} {} {}::timestamptz", Column(field), Operator(op), Param(timestamp)));
  return *this;
}

TaskSearch& TaskSearch::OrderBy(const std::vector<std::pair<TaskOrderField, bool>>& fields) {
  if (fields.empty()) return *this;
  std::vector<std::string> parts;
  for (const auto& [field, desc] : fields) {
    parts.push_back(fmt::format("{} {} NULLS LAST", Column(field), desc ? "DESC" : "ASC"));
  }
  order_by_ =
      fmt::format("{}, seq {}", fmt::join(parts, ", "), fields.front().second ? "DESC" : "ASC");
  return *this;
}

TaskSearch& TaskSearch::Page(int limit, int offset) {
  limit_ = limit;
  offset_ = offset;
  return *this;
}

TaskPage SearchTasks(pg::Connection& conn, const TaskSearch& search, Deadline deadline) {
  std::string where = TaskSearchSql::Where(search);
  const pg::Params& params = TaskSearchSql::Params(search);
  TaskPage page;
  page.count = conn.Exec(fmt::format("SELECT count(*) FROM taskmill.task_view WHERE {}", where),
                         params, deadline)
                   .GetInt(0, 0);
  auto rows = conn.Exec(fmt::format("SELECT {} FROM taskmill.task_view WHERE {} ORDER BY {} "
                                    "LIMIT {} OFFSET {}",
                                    kTaskColumns, where, TaskSearchSql::OrderBy(search),
                                    search.limit(), search.offset()),
                        params, deadline);
  page.tasks.reserve(rows.rows());
  for (int i = 0; i < rows.rows(); ++i) page.tasks.push_back(TaskFromRow(rows, i));
  return page;
}

}  // namespace taskmill::store
