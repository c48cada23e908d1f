// Router: maps a method and a decoded path to a route by plain comparison of
// path segments. No regular expression ever runs on request data (libstdc++'s
// std::regex recurses once per character and overflows the stack on long
// input).
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <httplib.h>

namespace taskmill::api::http {

class Router {
 public:
  // `captures`: the path segments that matched "{}" in the pattern, in order.
  using Handler = std::function<void(const httplib::Request&, httplib::Response&,
                                     const std::vector<std::string>& captures)>;
  struct Route {
    std::string method;
    std::vector<std::string> segments;  // "{}" matches any one non-empty segment
    std::string name;                   // for metrics
    bool mutating = false;
    Handler handler;
  };
  struct Match {
    const Route* route = nullptr;  // null: no route for this method
    std::vector<std::string> captures;
    std::vector<std::string> allowed;  // methods of every route whose path matched
  };

  // `pattern`: a path such as "/pulp/api/v3/tasks/{}/" (the trailing slash
  // counts, as in Pulp).
  void Add(std::string method, std::string_view pattern, std::string name, bool mutating,
           Handler handler);

  // The first route for `method` whose pattern matches `path`.
  Match Find(const std::string& method, const std::string& path) const;

  // "/a/b/" -> {"a", "b", ""}; "/" -> {""}.
  static std::vector<std::string_view> Split(std::string_view path);

 private:
  std::vector<Route> routes_;
};

}  // namespace taskmill::api::http
