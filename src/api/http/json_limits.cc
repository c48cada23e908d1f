#include "api/http/json_limits.h"

#include <vector>

#include <fmt/format.h>

namespace taskmill::api::http {

size_t JsonNestingDepth(std::string_view text, size_t stop_above) {
  size_t depth = 0, deepest = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > deepest) {
        deepest = depth;
        if (deepest > stop_above) return deepest;
      }
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return deepest;
}

namespace {

// Walks a value whose depth is already bounded (so recursion is too).
std::optional<JsonLimitError> CheckSizes(const nlohmann::json& j, const JsonLimits& limits) {
  auto too_long = [&](size_t n) -> std::optional<JsonLimitError> {
    if (n <= limits.max_string_bytes) return std::nullopt;
    return JsonLimitError{"max-json-string-bytes",
                          fmt::format("a string of {} bytes is longer than the limit of {} bytes",
                                      n, limits.max_string_bytes)};
  };
  if (j.is_string()) return too_long(j.get_ref<const std::string&>().size());
  if (j.is_array() || j.is_object()) {
    if (j.size() > limits.max_items) {
      return JsonLimitError{"max-json-items",
                            fmt::format("an {} of {} {} is larger than the limit of {}",
                                        j.is_array() ? "array" : "object", j.size(),
                                        j.is_array() ? "elements" : "members", limits.max_items)};
    }
    if (j.is_object()) {
      for (auto it = j.begin(); it != j.end(); ++it) {
        if (auto e = too_long(it.key().size())) return e;
        if (auto e = CheckSizes(it.value(), limits)) return e;
      }
    } else {
      for (const auto& v : j) {
        if (auto e = CheckSizes(v, limits)) return e;
      }
    }
  }
  return std::nullopt;
}

}  // namespace

std::optional<nlohmann::json> ParseLimitedJson(std::string_view text, const JsonLimits& limits,
                                               JsonLimitError* error) {
  size_t depth = JsonNestingDepth(text, limits.max_depth);
  if (depth > limits.max_depth) {
    *error = {"max-json-depth",
              fmt::format("the JSON body is nested deeper than the limit of {} levels",
                          limits.max_depth)};
    return std::nullopt;
  }
  auto j = nlohmann::json::parse(text.begin(), text.end(), nullptr, false);
  if (j.is_discarded()) {
    *error = {"", "the body is not valid JSON"};
    return std::nullopt;
  }
  if (auto e = CheckSizes(j, limits)) {
    *error = *e;
    return std::nullopt;
  }
  return j;
}

bool IsValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t n;
    uint32_t cp;
    if ((c & 0xe0) == 0xc0) {
      n = 1;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      n = 2;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      n = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + n >= s.size()) return false;
    for (size_t k = 1; k <= n; ++k) {
      auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    static const uint32_t kMin[] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += n + 1;
  }
  return true;
}

std::string DumpJson(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace taskmill::api::http
