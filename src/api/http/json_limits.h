// Checks on request data before it reaches JSON or the database: nesting
// depth (checked on the raw text, before any parser recurses), string and
// container sizes (on the parsed value), and UTF-8 validity.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace taskmill::api::http {

struct JsonLimits {
  size_t max_depth = 64;            // nested arrays/objects
  size_t max_string_bytes = 65536;  // one string (keys included)
  size_t max_items = 10000;         // elements of one array or members of one object
};

// A limit a JSON body broke: which flag and a message saying so.
struct JsonLimitError {
  std::string limit;  // e.g. "max-json-depth"
  std::string detail;
};

// The deepest nesting of arrays and objects in `text`, counted without
// parsing (brackets inside strings do not count). Stops counting at
// `stop_above` + 1.
size_t JsonNestingDepth(std::string_view text, size_t stop_above);

// Parses `text` under `limits`. Returns the value, or nullopt with `error`
// set: a broken limit (error->limit non-empty), or text that is not JSON
// (error->limit empty).
std::optional<nlohmann::json> ParseLimitedJson(std::string_view text, const JsonLimits& limits,
                                               JsonLimitError* error);

// Strict UTF-8 (no overlong forms, no surrogates, at most U+10FFFF).
bool IsValidUtf8(std::string_view s);

// JSON text of `j`; invalid UTF-8 in strings is replaced, never thrown on.
std::string DumpJson(const nlohmann::json& j);

}  // namespace taskmill::api::http
