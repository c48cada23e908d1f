#include "pg/statement_cache.h"

#include <atomic>
#include <cstdint>
#include <cstdlib>

#include <fmt/format.h>

namespace taskmill::pg {

namespace {

// -1: not decided yet (read the environment on first use).
std::atomic<int> prepared_default{-1};

}  // namespace

void SetPreparedStatements(bool on) { prepared_default = on ? 1 : 0; }

bool PreparedStatements() {
  int v = prepared_default.load();
  if (v < 0) {
    const char* env = std::getenv("TASKMILL_PREPARED_STATEMENTS");
    std::string_view e = env ? env : "";
    v = (e == "off" || e == "0" || e == "false" || e == "no") ? 0 : 1;
    int expected = -1;
    prepared_default.compare_exchange_strong(expected, v);
    v = prepared_default.load();
  }
  return v == 1;
}

std::string PreparedStatementName(std::string_view sql, int nparams, std::string_view label) {
  uint64_t h = 14695981039346656037ull;
  auto mix = [&h](unsigned char c) {
    h ^= c;
    h *= 1099511628211ull;
  };
  for (char c : std::to_string(nparams)) mix(static_cast<unsigned char>(c));
  mix(0);
  for (char c : sql) mix(static_cast<unsigned char>(c));
  if (label.empty()) return fmt::format("tm_{:016x}", h);
  return fmt::format("tm_{}_{:016x}", label, h);
}

StatementCache::StatementCache(StatementCache&& other) noexcept
    : entries_(std::move(other.entries_)) {
  other.entries_.clear();
}

StatementCache& StatementCache::operator=(StatementCache&& other) noexcept {
  if (this != &other) {
    entries_ = std::move(other.entries_);
    other.entries_.clear();
  }
  return *this;
}

const StatementCache::Entry* StatementCache::Find(std::string_view sql) const {
  auto it = entries_.find(sql);
  return it == entries_.end() ? nullptr : &it->second;
}

const StatementCache::Entry& StatementCache::Add(std::string sql, int nparams, std::string name) {
  return entries_.insert_or_assign(std::move(sql), Entry{nparams, std::move(name)}).first->second;
}

}  // namespace taskmill::pg
