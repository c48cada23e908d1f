// The REST API server: Pulp's task endpoints over HTTP, dispatch over HTTP,
// immediate tasks run in the request thread, and the task-ingestion test
// endpoints of the seed's test plan.
//
// The server is one process. It owns its HTTP listener (cpp-httplib, a
// thread pool sized to the connections it serves), a pool of database
// connections (one per server thread, src/api/connection_pool.h), and an app
// row (app_type "api") heartbeated by a thread of its own, so that an
// immediate task left behind by a killed API process is cleaned up like a
// dead worker's. The same thread registers the process again if it was
// declared dead, and fails immediate tasks it owns but lost track of. The
// database owns every task's state; the server holds none between requests.
// SIGINT/SIGTERM stop it: stop accepting, finish the requests in flight
// (heartbeating meanwhile), deregister, exit 0. docs/api.md is the user's
// description.
#pragma once

#include <string>

#include "taskmill/registry.h"

namespace taskmill::api {

struct ApiOptions {
  std::string database_url;
  std::string listen = "127.0.0.1:24817";  // ADDR:PORT
  std::string name;                        // default "api-<pid>@<host>"
  // Credentials for mutating endpoints (and reads unless read_open): a bearer
  // token, and/or HTTP basic user and password.
  std::string token;
  std::string basic_user;
  std::string basic_password;
  bool read_open = false;
  bool test_endpoints = false;
  int threads = 16;
  size_t max_body_bytes = 1 << 20;
  double immediate_timeout = 5.0;
  // Immediate tasks past their timeout whose function has not returned yet
  // (they keep their resources until it does): at this many, new immediate
  // tasks are left to workers instead of running here.
  int max_overdue_immediate = 8;
  double heartbeat_interval = 5.0;
  double ttl = 30.0;
};

// Runs the server until SIGINT/SIGTERM; returns the exit code. Prints a
// clear error and returns non-zero if it cannot start (bad address, no
// credentials on a non-loopback address, database unusable).
int RunApiServer(const ApiOptions& options, const TaskRegistry& registry);

// True for 127.0.0.0/8, ::1 and "localhost".
bool IsLoopback(const std::string& host);

}  // namespace taskmill::api
