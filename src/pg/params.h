// pg::Params: the parameters of one statement, all sent in text format.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace taskmill::pg {

// Owns copies of the values it is given. Add() appends $1, $2, ... in order.
class Params {
 public:
  Params() = default;
  Params& Add(std::string_view text);
  Params& Add(const char* text) { return Add(std::string_view(text)); }
  Params& Add(const std::string& text) { return Add(std::string_view(text)); }
  Params& Add(int64_t value);
  Params& Add(int value) { return Add(static_cast<int64_t>(value)); }
  Params& Add(double value);
  Params& Add(bool value);
  Params& AddNull();
  // NULL if empty.
  Params& Add(const std::optional<std::string>& text);
  // A text[] parameter, encoded as an array literal with every element quoted.
  Params& AddTextArray(const std::vector<std::string>& values);

  int size() const { return static_cast<int>(values_.size()); }
  // One pointer per value (nullptr for NULL), valid while this object lives
  // and is not modified.
  std::vector<const char*> Pointers() const;

 private:
  std::vector<std::optional<std::string>> values_;
};

}  // namespace taskmill::pg
