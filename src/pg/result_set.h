// pg::ResultSet: the rows of one statement's result, owned.
//
// Cells are addressed by row and column index, or by row and column name
// (exact, case-sensitive: the name as the statement's select list gives it).
// Accessors check their arguments: a missing column, a cell out of range or
// a value that does not parse as the type asked for throws DriverError.
#pragma once

#include <libpq-fe.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "pg/errors.h"

namespace taskmill::pg {

class ResultSet {
 public:
  ResultSet() = default;  // no rows, no columns
  // Takes ownership of `res` (PQclear on destruction); null is an empty set.
  explicit ResultSet(PGresult* res) : res_(res) {}
  ResultSet(const ResultSet&) = delete;
  ResultSet& operator=(const ResultSet&) = delete;
  ResultSet(ResultSet&& other) noexcept : res_(std::exchange(other.res_, nullptr)) {}
  ResultSet& operator=(ResultSet&& other) noexcept;
  ~ResultSet();

  int rows() const;
  int columns() const;
  // Rows changed by INSERT/UPDATE/DELETE.
  int64_t affected() const;
  // Index of the named column; throws DriverError if there is none.
  int Column(std::string_view name) const;
  // Index of the named column, or nullopt.
  std::optional<int> FindColumn(std::string_view name) const;

  bool IsNull(int row, int col) const;
  // The cell's text; empty for NULL. Valid while this object lives.
  std::string_view Get(int row, int col) const;
  std::string GetString(int row, int col) const { return std::string(Get(row, col)); }
  // nullopt for NULL.
  std::optional<std::string> GetOptional(int row, int col) const;
  int64_t GetInt(int row, int col) const;
  double GetDouble(int row, int col) const;
  bool GetBool(int row, int col) const;
  // A one-dimensional text[] value ("{a,\"b c\",NULL}"); NULL elements are
  // returned as empty strings, and a NULL array as an empty one.
  std::vector<std::string> GetTextArray(int row, int col) const;

  // The same, by column name.
  bool IsNull(int row, std::string_view col) const { return IsNull(row, Column(col)); }
  std::string_view Get(int row, std::string_view col) const { return Get(row, Column(col)); }
  std::string GetString(int row, std::string_view col) const { return GetString(row, Column(col)); }
  std::optional<std::string> GetOptional(int row, std::string_view col) const {
    return GetOptional(row, Column(col));
  }
  int64_t GetInt(int row, std::string_view col) const { return GetInt(row, Column(col)); }
  double GetDouble(int row, std::string_view col) const { return GetDouble(row, Column(col)); }
  bool GetBool(int row, std::string_view col) const { return GetBool(row, Column(col)); }
  std::vector<std::string> GetTextArray(int row, std::string_view col) const {
    return GetTextArray(row, Column(col));
  }

  // The libpq result, still owned by this object (null if empty).
  PGresult* raw() const { return res_; }

 private:
  PGresult* res_ = nullptr;
};

// The older name, kept while callers move to ResultSet.
using Result = ResultSet;

}  // namespace taskmill::pg
