// pg::StatementCache: which statement texts one connection has prepared,
// and under what names.
//
// A statement is prepared under "tm_" and a 64-bit FNV-1a hash of its
// parameter count and text (a declared Query adds its own name before the
// hash: "tm_claim_..."), so that one name always means one text, even in a
// server session that other clients share through a pooler. Entries are
// looked up by the caller's text without copying it.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace taskmill::pg {

// At most this many statements are prepared per connection; more distinct
// texts (dynamic list queries) run unnamed.
inline constexpr size_t kMaxPreparedStatements = 200;

// The name a statement text is prepared under. `label`, if given, must be
// a lower-case identifier; it only makes the name readable (in
// pg_prepared_statements, in logs).
std::string PreparedStatementName(std::string_view sql, int nparams, std::string_view label = {});

// The process-wide default for new connections: on, unless set off here or
// the environment has TASKMILL_PREPARED_STATEMENTS=off|0|false|no.
void SetPreparedStatements(bool on);
bool PreparedStatements();

class StatementCache {
 public:
  struct Entry {
    int nparams;
    std::string name;
  };

  StatementCache() = default;
  StatementCache(StatementCache&& other) noexcept;
  StatementCache& operator=(StatementCache&& other) noexcept;

  // The entry for this text, or nullptr if it was not prepared here.
  const Entry* Find(std::string_view sql) const;
  bool full() const { return entries_.size() >= kMaxPreparedStatements; }
  // Records that `sql` is prepared under `name`; returns the stored entry
  // (valid until Clear()).
  const Entry& Add(std::string sql, int nparams, std::string name);
  void Clear() { entries_.clear(); }
  size_t size() const { return entries_.size(); }

 private:
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, Entry, Hash, std::equal_to<>> entries_;
};

}  // namespace taskmill::pg
