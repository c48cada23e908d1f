#include "pg/result_set.h"

#include <charconv>
#include <cstdlib>
#include <cstring>

#include <fmt/format.h>

namespace taskmill::pg {

ResultSet& ResultSet::operator=(ResultSet&& other) noexcept {
  if (this != &other) {
    if (res_ != nullptr) PQclear(res_);
    res_ = std::exchange(other.res_, nullptr);
  }
  return *this;
}
ResultSet::~ResultSet() {
  if (res_ != nullptr) PQclear(res_);
}
int ResultSet::rows() const { return res_ ? PQntuples(res_) : 0; }
int ResultSet::columns() const { return res_ ? PQnfields(res_) : 0; }
int64_t ResultSet::affected() const {
  if (res_ == nullptr) return 0;
  const char* n = PQcmdTuples(res_);
  return (n == nullptr || *n == '\0') ? 0 : std::strtoll(n, nullptr, 10);
}

std::optional<int> ResultSet::FindColumn(std::string_view name) const {
  // Not PQfnumber: it folds unquoted names to lower case and needs a
  // NUL-terminated copy.
  for (int c = 0, n = columns(); c < n; ++c) {
    if (name == PQfname(res_, c)) return c;
  }
  return std::nullopt;
}

int ResultSet::Column(std::string_view name) const {
  if (auto c = FindColumn(name)) return *c;
  throw DriverError(fmt::format("the result has no column \"{}\"", name));
}

namespace {
void CheckCell(PGresult* res, int row, int col) {
  if (res == nullptr || row < 0 || row >= PQntuples(res) || col < 0 || col >= PQnfields(res)) {
    throw DriverError(fmt::format("the result has no cell (row {}, column {})", row, col));
  }
}
}  // namespace

bool ResultSet::IsNull(int row, int col) const {
  CheckCell(res_, row, col);
  return PQgetisnull(res_, row, col) != 0;
}
std::string_view ResultSet::Get(int row, int col) const {
  CheckCell(res_, row, col);
  return std::string_view(PQgetvalue(res_, row, col), PQgetlength(res_, row, col));
}
std::optional<std::string> ResultSet::GetOptional(int row, int col) const {
  if (IsNull(row, col)) return std::nullopt;
  return std::string(Get(row, col));
}
int64_t ResultSet::GetInt(int row, int col) const {
  auto s = Get(row, col);
  int64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) {
    throw DriverError(fmt::format("not an integer: \"{}\"", s));
  }
  return v;
}
double ResultSet::GetDouble(int row, int col) const {
  // from_chars, unlike strtod, ignores the C locale; it also reads the
  // server's "Infinity" and "NaN".
  auto s = Get(row, col);
  double v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) {
    throw DriverError(fmt::format("not a number: \"{}\"", s));
  }
  return v;
}
bool ResultSet::GetBool(int row, int col) const {
  auto s = Get(row, col);
  if (s == "t") return true;
  if (s == "f") return false;
  throw DriverError(fmt::format("not a boolean: \"{}\"", s));
}
std::vector<std::string> ResultSet::GetTextArray(int row, int col) const {
  std::vector<std::string> out;
  if (IsNull(row, col)) return out;
  const std::string_view whole = Get(row, col);
  auto malformed = [&] {
    return DriverError(fmt::format("not a one-dimensional text array: \"{}\"", whole));
  };
  std::string_view s = whole;
  // An array whose lower bound is not 1 is printed with its bounds first:
  // "[0:1]={a,b}".
  if (!s.empty() && s.front() == '[') {
    size_t eq = s.find('=');
    if (eq == std::string_view::npos) throw malformed();
    s.remove_prefix(eq + 1);
  }
  if (s.size() < 2 || s.front() != '{' || s.back() != '}') throw malformed();
  s = s.substr(1, s.size() - 2);
  if (s.empty()) return out;
  size_t i = 0;
  for (;;) {
    std::string item;
    if (i < s.size() && s[i] == '"') {
      ++i;
      for (;;) {
        if (i >= s.size()) throw malformed();
        char c = s[i++];
        if (c == '"') break;
        if (c == '\\') {
          if (i >= s.size()) throw malformed();
          c = s[i++];
        }
        item += c;
      }
    } else {
      size_t start = i;
      while (i < s.size() && s[i] != ',') {
        char c = s[i++];
        // A brace or quote here means a nested (multi-dimensional) array.
        if (c == '{' || c == '}' || c == '"') throw malformed();
        if (c == '\\') {
          if (i >= s.size()) throw malformed();
          c = s[i++];
        }
        item += c;
      }
      // The server quotes a "NULL" string, so an unquoted NULL is a null.
      if (s.substr(start, i - start) == "NULL") item.clear();
    }
    out.push_back(std::move(item));
    if (i == s.size()) break;
    if (s[i] != ',') throw malformed();
    ++i;
  }
  return out;
}

}  // namespace taskmill::pg
