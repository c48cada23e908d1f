#include "api/http/router.h"

namespace taskmill::api::http {

std::vector<std::string_view> Router::Split(std::string_view path) {
  std::vector<std::string_view> out;
  if (!path.empty() && path.front() == '/') path.remove_prefix(1);
  for (;;) {
    auto slash = path.find('/');
    out.push_back(path.substr(0, slash));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return out;
}

void Router::Add(std::string method, std::string_view pattern, std::string name, bool mutating,
                 Handler handler) {
  Route r;
  r.method = std::move(method);
  for (auto s : Split(pattern)) r.segments.emplace_back(s);
  r.name = std::move(name);
  r.mutating = mutating;
  r.handler = std::move(handler);
  routes_.push_back(std::move(r));
}

Router::Match Router::Find(const std::string& method, const std::string& path) const {
  Match m;
  if (path.empty() || path.front() != '/') return m;
  auto parts = Split(path);
  for (const auto& r : routes_) {
    if (r.segments.size() != parts.size()) continue;
    std::vector<std::string> captures;
    bool ok = true;
    for (size_t i = 0; i < parts.size() && ok; ++i) {
      if (r.segments[i] == "{}") {
        ok = !parts[i].empty();
        if (ok) captures.emplace_back(parts[i]);
      } else {
        ok = r.segments[i] == parts[i];
      }
    }
    if (!ok) continue;
    m.allowed.push_back(r.method);
    if (m.route == nullptr && r.method == method) {
      m.route = &r;
      m.captures = std::move(captures);
    }
  }
  return m;
}

}  // namespace taskmill::api::http
