#include "api/task_query.h"

#include <string_view>

#include <fmt/format.h>

#include "taskmill/task.h"

namespace taskmill::api {

namespace {

// Hand-written matchers instead of std::regex: libstdc++'s regex recurses
// per character and overflows the stack on long input (a 30,000-character
// task_group killed the API).
bool IsHex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// `n` digits at `s[*pos]`, advancing; -1 (and no advance) if not there.
int Digits(const std::string& s, size_t* pos, size_t n) {
  if (*pos + n > s.size()) return -1;
  int v = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!IsDigit(s[*pos + i])) return -1;
    v = v * 10 + (s[*pos + i] - '0');
  }
  *pos += n;
  return v;
}

const std::map<std::string, store::TaskOrderField> kOrderable = {
    {"pulp_created", store::TaskOrderField::kCreatedAt},
    {"name", store::TaskOrderField::kName},
    {"state", store::TaskOrderField::kState},
    {"started_at", store::TaskOrderField::kStartedAt},
    {"finished_at", store::TaskOrderField::kFinishedAt},
    {"unblocked_at", store::TaskOrderField::kUnblockedAt},
    {"pulp_id", store::TaskOrderField::kId},
    {"logging_cid", store::TaskOrderField::kLoggingCid}};

const std::map<std::string, store::TaskDateField> kDateFields = {
    {"pulp_created", store::TaskDateField::kCreatedAt},
    {"started_at", store::TaskDateField::kStartedAt},
    {"finished_at", store::TaskDateField::kFinishedAt},
    {"unblocked_at", store::TaskDateField::kUnblockedAt}};

const std::map<std::string, store::Comparison> kDateOps = {{"gte", store::Comparison::kAtLeast},
                                                           {"lte", store::Comparison::kAtMost},
                                                           {"gt", store::Comparison::kAfter},
                                                           {"lt", store::Comparison::kBefore},
                                                           {"", store::Comparison::kEqual}};

Error Bad(std::string message) {
  return MakeError(ErrorCode::kInvalidArgument, std::move(message));
}

}  // namespace

std::vector<std::string> SplitComma(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t end = s.find(',', start);
    if (end == std::string::npos) end = s.size();
    std::string part = s.substr(start, end - start);
    if (!part.empty()) out.push_back(part);
    start = end + 1;
  }
  return out;
}

bool IsUuid(const std::string& s) {
  if (s.size() != 36) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? s[i] != '-' : !IsHex(s[i])) return false;
  }
  return true;
}

std::optional<std::string> NormalizeDate(const std::string& text) {
  // YYYY-MM-DD[(T| )hh:mm[:ss[.ffffff]]][Z|z|(+|-)hh[[:]mm]], all of it.
  size_t pos = 0;
  int year = Digits(text, &pos, 4);
  if (year < 0 || pos >= text.size() || text[pos++] != '-') return std::nullopt;
  int month = Digits(text, &pos, 2);
  if (month < 0 || pos >= text.size() || text[pos++] != '-') return std::nullopt;
  int day = Digits(text, &pos, 2);
  if (day < 0) return std::nullopt;
  int hour = 0, minute = 0, second = 0;
  std::string fraction;
  if (pos < text.size() && (text[pos] == 'T' || text[pos] == ' ')) {
    ++pos;
    hour = Digits(text, &pos, 2);
    if (hour < 0 || pos >= text.size() || text[pos++] != ':') return std::nullopt;
    minute = Digits(text, &pos, 2);
    if (minute < 0) return std::nullopt;
    if (pos < text.size() && text[pos] == ':') {
      ++pos;
      second = Digits(text, &pos, 2);
      if (second < 0) return std::nullopt;
      if (pos < text.size() && text[pos] == '.') {
        size_t start = pos++;
        while (pos < text.size() && IsDigit(text[pos]) && pos - start <= 6) ++pos;
        if (pos - start < 2 || (pos < text.size() && IsDigit(text[pos]))) return std::nullopt;
        fraction = text.substr(start, pos - start);
      }
    }
  }
  std::string zone = "+00:00";
  if (pos < text.size() && (text[pos] == 'Z' || text[pos] == 'z')) {
    ++pos;
  } else if (pos < text.size() && (text[pos] == '+' || text[pos] == '-')) {
    char sign = text[pos++];
    int zh = Digits(text, &pos, 2), zm = 0;
    if (zh < 0) return std::nullopt;
    if (pos < text.size()) {
      if (text[pos] == ':') ++pos;
      zm = Digits(text, &pos, 2);
      if (zm < 0) return std::nullopt;
    }
    if (zh > 14 || zm > 59) return std::nullopt;
    zone = fmt::format("{}{:02}:{:02}", sign, zh, zm);
  }
  if (pos != text.size()) return std::nullopt;
  static const int kDays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (year < 1 || month < 1 || month > 12 || day < 1 || day > kDays[month - 1]) return std::nullopt;
  bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
  if (month == 2 && day == 29 && !leap) return std::nullopt;
  if (hour > 23 || minute > 59 || second > 59) return std::nullopt;
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{}{}", year, month, day, hour, minute,
                     second, fraction, zone);
}

std::optional<std::string> UuidFromRef(const std::string& ref) {
  if (IsUuid(ref)) return ref;
  // An href: ".../<uuid>" or ".../<uuid>/".
  std::string_view r(ref);
  if (!r.empty() && r.back() == '/') r.remove_suffix(1);
  if (r.size() < 37 || r[r.size() - 37] != '/') return std::nullopt;
  std::string id(r.substr(r.size() - 36));
  if (!IsUuid(id)) return std::nullopt;
  return id;
}

Result<TaskQuery> ParseTaskQuery(const QueryParams& query, int max_limit) {
  TaskQuery q;
  store::TaskSearch& search = q.search;
  int limit = 100, offset = 0;
  auto parse_int = [](const std::string& v, int lo, int hi) -> std::optional<int> {
    try {
      size_t used = 0;
      long x = std::stol(v, &used);
      if (used != v.size() || x < lo || x > hi) return std::nullopt;
      return static_cast<int>(x);
    } catch (...) {
      return std::nullopt;
    }
  };
  auto parse_states = [&](const std::string& v) -> Result<std::vector<std::string>> {
    std::vector<std::string> states;
    for (const auto& s : SplitComma(v)) {
      if (!ParseTaskState(s) && s != "skipped") {
        return Bad(fmt::format("unknown state \"{}\"", s));
      }
      states.push_back(s);
    }
    return states;
  };

  for (const auto& [key, value] : query) {
    if (key == "limit") {
      auto v = parse_int(value, 1, max_limit);
      if (!v) return Bad(fmt::format("limit must be a whole number from 1 to {}", max_limit));
      limit = *v;
    } else if (key == "offset") {
      auto v = parse_int(value, 0, 1 << 30);
      if (!v) return Bad("offset must be a whole number >= 0");
      offset = *v;
    } else if (key == "ordering") {
      std::vector<std::pair<store::TaskOrderField, bool>> parts;
      for (const auto& f : SplitComma(value)) {
        bool desc = !f.empty() && f[0] == '-';
        auto it = kOrderable.find(desc ? f.substr(1) : f);
        if (it == kOrderable.end()) return Bad(fmt::format("cannot order by \"{}\"", f));
        parts.emplace_back(it->second, desc);
      }
      if (parts.empty()) return Bad("ordering needs a field");
      search.OrderBy(parts);
    } else if (key == "state") {
      auto st = parse_states(value);
      if (!st.ok()) return st.error();
      if (st->size() != 1) return Bad("state takes one state; use state__in for several");
      search.StateIs((*st)[0]);
    } else if (key == "state__in") {
      auto st = parse_states(value);
      if (!st.ok()) return st.error();
      search.StateIn(*st);
    } else if (key == "state__ne") {
      auto st = parse_states(value);
      if (!st.ok()) return st.error();
      search.StateNotIn(*st);
    } else if (key == "name") {
      search.TextIs(store::TaskTextField::kName, value);
    } else if (key == "name__contains") {
      search.TextContains(store::TaskTextField::kName, value);
    } else if (key == "name__in") {
      search.NameIn(SplitComma(value));
    } else if (key == "logging_cid") {
      search.TextIs(store::TaskTextField::kLoggingCid, value);
    } else if (key == "logging_cid__contains") {
      search.TextContains(store::TaskTextField::kLoggingCid, value);
    } else if (key == "task_group" || key == "parent_task") {
      auto id = UuidFromRef(value);
      if (!id) return Bad(fmt::format("{} must be a task group href or uuid", key));
      search.IdIs(
          key == "task_group" ? store::TaskIdField::kTaskGroup : store::TaskIdField::kParentTask,
          *id);
    } else if (key == "reserved_resources" || key == "reserved_resources__in") {
      for (const auto& r :
           key == "reserved_resources" ? std::vector<std::string>{value} : SplitComma(value)) {
        search.HoldsResource(r);
      }
    } else if (key == "exclusive_resources" || key == "exclusive_resources__in") {
      search.HoldsExclusive(key == "exclusive_resources" ? std::vector<std::string>{value}
                                                         : SplitComma(value));
    } else if (key == "shared_resources" || key == "shared_resources__in") {
      search.HoldsShared(key == "shared_resources" ? std::vector<std::string>{value}
                                                   : SplitComma(value));
    } else if (key == "fields") {
      q.fields = SplitComma(value);
    } else if (key == "exclude_fields") {
      q.exclude_fields = SplitComma(value);
    } else if (key == "minimal") {
      if (value != "true" && value != "false" && value != "1" && value != "0") {
        return Bad("minimal must be true or false");
      }
      q.minimal = value == "true" || value == "1";
    } else if (key == "worker") {
      // Pulp's deprecated filter: null is ignored.
      if (value != "null" && !value.empty()) {
        auto id = UuidFromRef(value);
        if (!id) return Bad("worker must be a worker href or uuid");
        search.IdIs(store::TaskIdField::kWorker, *id);
      }
    } else {
      // Date filters: <field>[__gte|__lte|__gt|__lt].
      std::string field = key, op;
      if (auto pos = key.rfind("__"); pos != std::string::npos) {
        field = key.substr(0, pos);
        op = key.substr(pos + 2);
      }
      auto df = kDateFields.find(field);
      auto dop = kDateOps.find(op);
      if (df == kDateFields.end() || dop == kDateOps.end()) {
        return Bad(fmt::format("unknown filter \"{}\"", key));
      }
      auto date = NormalizeDate(value);
      if (!date) return Bad(fmt::format("{}: \"{}\" is not an ISO 8601 date", key, value));
      search.Compare(df->second, dop->second, *date);
    }
  }
  search.Page(limit, offset);
  return q;
}

nlohmann::json ShapeTask(const nlohmann::json& task, const TaskQuery& query) {
  static const std::vector<std::string> kMinimal = {"pulp_href",  "prn",         "pulp_created",
                                                    "name",       "state",       "unblocked_at",
                                                    "started_at", "finished_at", "worker"};
  nlohmann::json out = task;
  if (query.minimal) {
    nlohmann::json m = nlohmann::json::object();
    for (const auto& k : kMinimal) {
      if (task.contains(k)) m[k] = task[k];
    }
    out = std::move(m);
  }
  if (!query.fields.empty()) {
    nlohmann::json m = nlohmann::json::object();
    for (const auto& k : query.fields) {
      if (out.contains(k)) m[k] = out[k];
    }
    out = std::move(m);
  }
  for (const auto& k : query.exclude_fields) out.erase(k);
  return out;
}

}  // namespace taskmill::api
