// The REST API server: Pulp's task endpoints over HTTP, dispatch over HTTP,
// immediate tasks run in the request thread, and the task-ingestion test
// endpoints of the seed's test plan.
//
// The server is one process. It owns its HTTP front (src/api/http/: one
// reactor thread for every connection and a pool of worker threads that run
// the requests, so slow clients cannot take the workers), a pool of database
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

#include "api/http/http_server.h"
#include "api/http/json_limits.h"
#include "taskmill/registry.h"

namespace taskmill::api {

struct ApiOptions {
  std::string database_url;
  std::string listen = "127.0.0.1:24817";  // ADDR:PORT (a name is resolved; the first address)
  std::string name;                        // default "api-<pid>@<host>"
  // Credentials for mutating endpoints (and reads unless read_open): a bearer
  // token, and/or HTTP basic user and password.
  std::string token;
  std::string basic_user;
  std::string basic_password;
  bool read_open = false;
  bool test_endpoints = false;
  int threads = 16;
  double immediate_timeout = 5.0;
  // Immediate tasks past their timeout whose function has not returned yet
  // (they keep their resources until it does): at this many, new immediate
  // tasks are left to workers instead of running here.
  int max_overdue_immediate = 8;
  double heartbeat_interval = 5.0;
  double ttl = 30.0;
  // TLS: PEM files; both or neither.
  std::string tls_cert;
  std::string tls_key;
  // Allows a non-loopback address without credentials and TLS.
  bool insecure_listen = false;
  // Scheme and authority put before pagination links ("https://host:port");
  // empty: links are relative (path and query).
  std::string public_url;
  http::HttpLimits http_limits;  // its max_body_bytes is the body limit
  http::JsonLimits json_limits;
};

// Runs the server until SIGINT/SIGTERM; returns the exit code. Prints a
// clear error and returns non-zero if it cannot start: 2 for a bad or busy
// address, a non-loopback address without credentials and TLS (unless
// insecure_listen), unusable TLS files; 5 if the database is unusable.
int RunApiServer(const ApiOptions& options, const TaskRegistry& registry);

}  // namespace taskmill::api
