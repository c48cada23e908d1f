// TaskQuery: the query string of GET /tasks/ turned into a safe SQL query.
//
// Every filter becomes a condition with a bound parameter; no user text is
// ever spliced into SQL. Unknown parameters and malformed values are errors
// (HTTP 400), not silently ignored filters.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "pg/connection.h"
#include "taskmill/result.h"

namespace taskmill::api {

using QueryParams = std::multimap<std::string, std::string>;

struct TaskQuery {
  std::string where = "TRUE";  // conditions on taskmill.task_view
  pg::Params params;
  std::string order_by = "created_at DESC, seq DESC";
  int limit = 100;
  int offset = 0;
  // Output shaping.
  std::vector<std::string> fields;          // only these keys (empty: all)
  std::vector<std::string> exclude_fields;  // without these keys
  bool minimal = false;
};

// Parses the query of GET /tasks/. `max_limit` caps `limit`.
Result<TaskQuery> ParseTaskQuery(const QueryParams& query, int max_limit = 1000);

// Applies fields / exclude_fields / minimal to one task's JSON.
nlohmann::json ShapeTask(const nlohmann::json& task, const TaskQuery& query);

// A uuid from a bare uuid or an href ending in "/<uuid>/"; nullopt if none.
std::optional<std::string> UuidFromRef(const std::string& ref);

// Splits "a,b,c" (empty parts dropped).
std::vector<std::string> SplitComma(const std::string& s);

}  // namespace taskmill::api
