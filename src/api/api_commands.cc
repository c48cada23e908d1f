// The `api` and `bench ingest` subcommands.
#include <cstdlib>
#include <future>
#include <iostream>

#include <fmt/format.h>
#include <httplib.h>

#include "api/server.h"
#include "cli/commands.h"

namespace taskmill::cli {

namespace {

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : "";
}

// The seed's load client: concurrent GETs with ?timeout=, summing
// tasks_executed.
// `token`: a bearer token to send (empty: none); `basic`: "user:pass" for
// HTTP basic (empty: none).
int RunIngestBench(const std::string& url, int timeout, int max_workers, const std::string& token,
                   const std::string& basic) {
  std::string rest = url;
  std::string scheme = "http://";
  if (rest.rfind(scheme, 0) == 0) rest = rest.substr(scheme.size());
  if (rest.rfind("https://", 0) == 0) {
    std::cerr << "taskmill bench ingest: only http:// URLs are supported\n";
    return 2;
  }
  auto slash = rest.find('/');
  std::string hostport = rest.substr(0, slash);
  std::string path = slash == std::string::npos ? "/" : rest.substr(slash);
  fmt::print("Running with URL: {}, Timeout: {}s, Workers: {}\n", url, timeout, max_workers);
  std::vector<std::future<std::optional<int64_t>>> futures;
  for (int i = 0; i < max_workers; ++i) {
    futures.push_back(std::async(std::launch::async, [&]() -> std::optional<int64_t> {
      httplib::Client client("http://" + hostport);
      client.set_read_timeout(timeout + 30, 0);
      client.set_connection_timeout(10, 0);
      if (!token.empty()) {
        client.set_bearer_token_auth(token.c_str());
      } else if (auto colon = basic.find(':'); colon != std::string::npos) {
        client.set_basic_auth(basic.substr(0, colon).c_str(), basic.substr(colon + 1).c_str());
      }
      auto start = std::chrono::steady_clock::now();
      std::string sep = path.find('?') == std::string::npos ? "?" : "&";
      auto res = client.Get(fmt::format("{}{}timeout={}", path, sep, timeout));
      double elapsed =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (!res) {
        fmt::print("Request failed: {}\n", httplib::to_string(res.error()));
        return std::nullopt;
      }
      if (res->status != 200) {
        fmt::print("Request failed: HTTP {}: {}\n", res->status, res->body);
        return std::nullopt;
      }
      auto j = nlohmann::json::parse(res->body, nullptr, false);
      if (j.is_discarded() || !j.contains("tasks_executed")) {
        fmt::print("Error processing tasks: unexpected answer {}\n", res->body);
        return std::nullopt;
      }
      int64_t n = j["tasks_executed"].get<int64_t>();
      fmt::print("Processed {} tasks in {:.2f} seconds.\n", n, elapsed);
      return n;
    }));
  }
  int64_t total = 0;
  int failed = 0;
  for (auto& f : futures) {
    auto n = f.get();
    if (n) {
      total += *n;
    } else {
      ++failed;
    }
  }
  fmt::print("Total tasks processed: {}. Request rate: {}/s\n", total,
             static_cast<double>(total) / timeout);
  if (failed == max_workers) {
    std::cerr << "taskmill bench ingest: every request failed (see above)\n";
    return 1;
  }
  return 0;
}

}  // namespace

void AddApiCommands(CLI::App& app, GlobalOptions& options) {
  auto o = std::make_shared<api::ApiOptions>();
  auto* cmd = app.add_subcommand("api", "Run the REST API server");
  cmd->add_option("--listen", o->listen, "ADDR:PORT to listen on")->capture_default_str();
  cmd->add_option("--name", o->name, "Process name shown in /status/");
  cmd->add_option("--token", o->token, "Bearer token for requests (or TASKMILL_API_TOKEN)");
  cmd->add_option("--basic-user", o->basic_user,
                  "HTTP basic user (or TASKMILL_API_BASIC=user:pass)");
  cmd->add_option("--basic-password", o->basic_password, "HTTP basic password");
  cmd->add_flag("--read-open", o->read_open, "Serve GET endpoints without credentials");
  cmd->add_flag("--enable-test-endpoints", o->test_endpoints,
                "Serve /api/pulp/test/... (or TASKMILL_TEST_ENDPOINTS=1)");
  cmd->add_option("--threads", o->threads, "HTTP threads (and database connections)")
      ->check(CLI::Range(1, 512))
      ->capture_default_str();
  cmd->add_option("--max-body-bytes", o->max_body_bytes,
                  "Largest request body accepted (413 above)")
      ->check(CLI::Range(static_cast<size_t>(64), static_cast<size_t>(1) << 30))
      ->capture_default_str();
  cmd->add_option("--immediate-timeout", o->immediate_timeout, "Time limit of immediate tasks (s)")
      ->check(CLI::Range(0.01, 3600.0))
      ->capture_default_str();
  cmd->add_option("--max-overdue-immediate", o->max_overdue_immediate,
                  "Immediate tasks past their timeout still running here, at most; beyond, "
                  "immediate tasks go to workers")
      ->check(CLI::Range(0, 4096))
      ->capture_default_str();
  cmd->add_option("--heartbeat-interval", o->heartbeat_interval, "Seconds between heartbeats")
      ->check(CLI::Range(0.05, 3600.0))
      ->capture_default_str();
  cmd->add_option("--ttl", o->ttl, "Declared missing after this many silent seconds")
      ->check(CLI::Range(0.2, 86400.0))
      ->capture_default_str();
  cmd->callback([&options, o] {
    auto url = ResolveDatabaseUrl(options);
    if (!url.ok()) {
      std::cerr << "taskmill: " << url.error().message << "\n";
      throw CLI::RuntimeError(2);
    }
    api::ApiOptions a = *o;
    a.database_url = *url;
    if (a.token.empty()) a.token = Env("TASKMILL_API_TOKEN");
    if (a.basic_user.empty()) {
      std::string basic = Env("TASKMILL_API_BASIC");
      if (auto colon = basic.find(':'); colon != std::string::npos) {
        a.basic_user = basic.substr(0, colon);
        a.basic_password = basic.substr(colon + 1);
      }
    }
    if (!a.basic_user.empty() && a.basic_password.empty()) {
      std::cerr << "taskmill: --basic-user needs --basic-password\n";
      throw CLI::RuntimeError(2);
    }
    if (Env("TASKMILL_TEST_ENDPOINTS") == "1") a.test_endpoints = true;
    if (a.ttl <= a.heartbeat_interval) {
      std::cerr << "taskmill: --ttl must be longer than --heartbeat-interval\n";
      throw CLI::RuntimeError(2);
    }
    SetupLogging(options.log_level, "api");
    int rc = api::RunApiServer(a, *options.registry);
    if (rc != 0) throw CLI::RuntimeError(rc);
  });

  auto* bench = app.add_subcommand("bench", "Load clients");
  bench->require_subcommand(1);
  auto url = std::make_shared<std::string>();
  auto timeout = std::make_shared<int>(25);
  auto workers = std::make_shared<int>(1);
  auto bench_token = std::make_shared<std::string>();
  auto* ingest = bench->add_subcommand(
      "ingest", "The task-ingestion test: concurrent requests to an ingestion endpoint");
  ingest->add_option("--url", *url, "e.g. http://127.0.0.1:24817/api/pulp/test/tasks/")->required();
  ingest->add_option("--timeout", *timeout, "Seconds each request dispatches for")
      ->check(CLI::Range(1, 3600))
      ->capture_default_str();
  ingest->add_option("--max-workers", *workers, "Concurrent requests")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  ingest->add_option("--token", *bench_token,
                     "Bearer token to send (or TASKMILL_API_TOKEN; TASKMILL_API_BASIC=user:pass "
                     "for basic)");
  ingest->callback([url, timeout, workers, bench_token] {
    std::string token = bench_token->empty() ? Env("TASKMILL_API_TOKEN") : *bench_token;
    int rc = RunIngestBench(*url, *timeout, *workers, token, Env("TASKMILL_API_BASIC"));
    if (rc != 0) throw CLI::RuntimeError(rc);
  });
}

}  // namespace taskmill::cli
