// TaskQuery: the query string of GET /tasks/ (Pulp's filters) turned into a
// store::TaskSearch and the shape of the answer.
//
// Each filter becomes a typed condition of the search (the store makes it
// SQL with bound parameters). Unknown parameters and malformed values are
// errors (HTTP 400), not silently ignored filters.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "store/task_search.h"
#include "taskmill/result.h"

namespace taskmill::api {

using QueryParams = std::multimap<std::string, std::string>;

struct TaskQuery {
  store::TaskSearch search;  // the filters, the order and the page (default 100 from 0)
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
// True if `s` is exactly a uuid (8-4-4-4-12 hex digits).
bool IsUuid(const std::string& s);

// An ISO 8601 date or date-time ("2026-11-24", "2026-11-24T09:13:23.5Z",
// "2026-11-24 09:13:23+02:00"), checked field by field (month 1-12, a day
// that exists, hour < 24, ...) and rewritten with an explicit zone for
// PostgreSQL's timestamptz input. A value without a zone is UTC (Pulp's
// TIME_ZONE default), never the database session's zone. nullopt if
// malformed.
std::optional<std::string> NormalizeDate(const std::string& text);

// Splits "a,b,c" (empty parts dropped).
std::vector<std::string> SplitComma(const std::string& s);

}  // namespace taskmill::api
