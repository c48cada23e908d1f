// The `api` and `bench ingest` subcommands.
#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <future>
#include <iostream>

#include <fmt/format.h>
#include <httplib.h>

#include "api/server.h"
#include "cli/commands.h"
#include "cli/exit_codes.h"
#include "service/task_service.h"

namespace taskmill::cli {

namespace {

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : "";
}

// A bad setting found at start: the message, and exit code 2.
[[noreturn]] void Refuse(const std::string& message) {
  std::cerr << "taskmill api: " << message << "\n";
  throw CLI::RuntimeError(kExitBadInput);
}

// The secret in a file, without the line end(s) editors add.
std::string ReadSecretFile(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) Refuse(fmt::format("cannot read {} file {}: {}", what, path, std::strerror(errno)));
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s;
}

// Visible ASCII only: anything else (spaces, control characters, a stray
// line from a file) cannot be sent in an Authorization header as given.
bool IsPrintableSecret(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](unsigned char c) { return c > 0x20 && c < 0x7f; });
}

// "user:password", as in TASKMILL_API_BASIC or a --basic-file.
void ParseBasic(const std::string& text, const std::string& source, api::ApiOptions& a) {
  auto colon = text.find(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size()) {
    Refuse(fmt::format("{} must be USER:PASSWORD with neither empty", source));
  }
  a.basic_user = text.substr(0, colon);
  a.basic_password = text.substr(colon + 1);
  if (!IsPrintableSecret(a.basic_user) || !IsPrintableSecret(a.basic_password)) {
    Refuse(fmt::format("{}: spaces and control characters are not allowed", source));
  }
}

// Fills a.token and a.basic_* from exactly one source each: a flag (kept for
// scripts, with a warning: every local user sees it in ps), a file, or the
// environment. Malformed settings stop the start.
void ResolveCredentials(api::ApiOptions& a, const std::string& token_file,
                        const std::string& basic_file) {
  const char* env_token = std::getenv("TASKMILL_API_TOKEN");
  const char* env_basic = std::getenv("TASKMILL_API_BASIC");
  int token_sources = !a.token.empty() + !token_file.empty();
  if (token_sources > 1) Refuse("give the token by one of --token and --token-file");
  if (!a.token.empty()) {
    std::cerr << "taskmill api: warning: --token is visible to every local user (ps); prefer "
                 "--token-file or TASKMILL_API_TOKEN\n";
  } else if (!token_file.empty()) {
    a.token = ReadSecretFile(token_file, "token");
    if (a.token.empty()) Refuse(fmt::format("the token file {} is empty", token_file));
  } else if (env_token != nullptr) {
    a.token = env_token;
    if (a.token.empty()) Refuse("TASKMILL_API_TOKEN is set but empty");
  }
  if (!a.token.empty() && !IsPrintableSecret(a.token)) {
    Refuse("the token may hold only visible ASCII characters (no spaces or control characters)");
  }

  bool basic_flags = !a.basic_user.empty() || !a.basic_password.empty();
  if (basic_flags && !basic_file.empty()) {
    Refuse("give basic credentials by one of --basic-user/--basic-password and --basic-file");
  }
  if (basic_flags) {
    if (a.basic_user.empty() || a.basic_password.empty()) {
      Refuse("--basic-user and --basic-password go together");
    }
    std::cerr << "taskmill api: warning: --basic-password is visible to every local user (ps); "
                 "prefer --basic-file or TASKMILL_API_BASIC\n";
    ParseBasic(a.basic_user + ":" + a.basic_password, "--basic-user/--basic-password", a);
    if (a.basic_user.find(':') != std::string::npos) Refuse("--basic-user cannot contain ':'");
  } else if (!basic_file.empty()) {
    ParseBasic(ReadSecretFile(basic_file, "basic credentials"),
               fmt::format("the basic credentials file {}", basic_file), a);
  } else if (env_basic != nullptr) {
    ParseBasic(env_basic, "TASKMILL_API_BASIC", a);
  }
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
    return kExitBadInput;
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
    return kExitError;
  }
  return kExitOk;
}

}  // namespace

void AddApiCommands(CLI::App& app, GlobalOptions& options) {
  auto o = std::make_shared<api::ApiOptions>();
  auto* cmd = app.add_subcommand("api", "Run the REST API server");
  cmd->add_option("--listen", o->listen, "ADDR:PORT to listen on")->capture_default_str();
  cmd->add_option("--name", o->name, "Process name shown in /status/");
  auto token_file = std::make_shared<std::string>();
  auto basic_file = std::make_shared<std::string>();
  cmd->add_option("--token-file", *token_file,
                  "File holding the bearer token (or TASKMILL_API_TOKEN)");
  cmd->add_option("--basic-file", *basic_file,
                  "File holding USER:PASSWORD for HTTP basic (or TASKMILL_API_BASIC)");
  cmd->add_option("--token", o->token,
                  "Bearer token (visible in ps: prefer --token-file or TASKMILL_API_TOKEN)");
  cmd->add_option("--basic-user", o->basic_user, "HTTP basic user (with --basic-password)");
  cmd->add_option("--basic-password", o->basic_password,
                  "HTTP basic password (visible in ps: prefer --basic-file)");
  cmd->add_option("--tls-cert", o->tls_cert, "PEM certificate (chain) file: serve HTTPS")
      ->check(CLI::ExistingFile);
  cmd->add_option("--tls-key", o->tls_key, "PEM private key file of --tls-cert")
      ->check(CLI::ExistingFile);
  cmd->add_flag("--insecure-listen", o->insecure_listen,
                "Allow a non-loopback address without credentials and TLS");
  cmd->add_option("--public-url", o->public_url,
                  "SCHEME://HOST[:PORT] put before pagination links (default: relative links)");
  cmd->add_flag("--read-open", o->read_open, "Serve GET endpoints without credentials");
  cmd->add_flag("--enable-test-endpoints", o->test_endpoints,
                "Serve /api/pulp/test/... (or TASKMILL_TEST_ENDPOINTS=1)");
  cmd->add_option("--threads", o->threads, "HTTP threads (and database connections)")
      ->check(CLI::Range(1, 512))
      ->capture_default_str();
  auto& lim = o->http_limits;
  auto& jlim = o->json_limits;
  auto size_opt = [&](const char* flag, size_t& v, size_t lo, size_t hi, const char* help) {
    cmd->add_option(flag, v, help)->check(CLI::Range(lo, hi))->capture_default_str();
  };
  auto secs_opt = [&](const char* flag, double& v, const char* help) {
    cmd->add_option(flag, v, help)->check(CLI::Range(0.05, 86400.0))->capture_default_str();
  };
  size_opt("--max-body-bytes", lim.max_body_bytes, 64, size_t{1} << 30,
           "Largest request body, however sent (413 above)");
  size_opt("--max-request-line", lim.max_request_line, 64, 1 << 20,
           "Longest request line in bytes (414 above)");
  size_opt("--max-header-bytes", lim.max_header_bytes, 64, 1 << 20,
           "Longest header line in bytes (431 above)");
  size_opt("--max-head-bytes", lim.max_head_bytes, 256, 1 << 24,
           "Largest request head (request line and headers) in bytes (431 above)");
  size_opt("--max-headers", lim.max_headers, 1, 100000, "Most headers in a request (431 above)");
  secs_opt("--head-timeout", lim.head_timeout,
           "Seconds from a request's first byte to the end of its head (408 after)");
  secs_opt("--body-timeout", lim.body_timeout,
           "Seconds for a request's body after its head (408 after)");
  secs_opt("--idle-timeout", lim.idle_timeout,
           "Seconds a connection may wait idle for its next request");
  secs_opt("--write-timeout", lim.write_timeout, "Seconds to write one answer");
  size_opt("--max-connections", lim.max_connections, 1, 1000000,
           "Open connections in all (503 at accept above)");
  size_opt("--max-connections-per-address", lim.max_connections_per_address, 1, 1000000,
           "Open connections per client IP address (503 at accept above)");
  size_opt("--max-requests-per-connection", lim.max_requests_per_connection, 1, 100000000,
           "Requests on one keep-alive connection before it is closed");
  size_opt("--max-json-depth", jlim.max_depth, 2, 10000,
           "Deepest nesting of arrays/objects in a JSON body (400 above)");
  size_opt("--max-json-string-bytes", jlim.max_string_bytes, 64, size_t{1} << 30,
           "Longest string in a JSON body (400 above)");
  size_opt("--max-json-items", jlim.max_items, 1, 100000000,
           "Most elements of one array or members of one object in a JSON body (400 above)");
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
  cmd->callback([&options, o, token_file, basic_file] {
    auto url = ResolveDatabaseUrl(options);
    if (!url.ok()) {
      std::cerr << "taskmill: " << url.error().message << "\n";
      throw CLI::RuntimeError(ExitCodeFor(url.error().code));
    }
    api::ApiOptions a = *o;
    a.database_url = *url;
    ResolveCredentials(a, *token_file, *basic_file);
    if (a.tls_cert.empty() != a.tls_key.empty()) Refuse("--tls-cert and --tls-key go together");
    while (!a.public_url.empty() && a.public_url.back() == '/') a.public_url.pop_back();
    if (!a.public_url.empty() && a.public_url.rfind("http://", 0) != 0 &&
        a.public_url.rfind("https://", 0) != 0) {
      Refuse("--public-url must start with http:// or https://");
    }
    if (Env("TASKMILL_TEST_ENDPOINTS") == "1") a.test_endpoints = true;
    if (auto live = service::CheckLiveness(a.ttl, a.heartbeat_interval); !live.ok()) {
      std::cerr << "taskmill: " << live.error().message << "\n";
      throw CLI::RuntimeError(ExitCodeFor(live.error().code));
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
