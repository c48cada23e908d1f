// The API server's lifecycle: construction, start (address checks,
// listening, registration), the heartbeat thread, signals, and the ordered
// stop.
#include <signal.h>
#include <unistd.h>

#include <csignal>
#include <iostream>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "api/server_impl.h"
#include "cli/exit_codes.h"
#include "store/migrate.h"

namespace taskmill::api {

namespace {
// At shutdown, how long overdue immediate tasks are waited for.
constexpr auto kOverdueShutdownGrace = std::chrono::seconds(30);
}  // namespace

std::string Hostname() {
  char buf[256] = {0};
  gethostname(buf, sizeof(buf) - 1);
  return buf;
}

Server::Server(ApiOptions options, const TaskRegistry& registry)
    : options_(std::move(options)),
      registry_(registry),
      // One connection per HTTP thread: a request holds at most one.
      pool_(options_.database_url, static_cast<size_t>(options_.threads)),
      metrics_(std::make_shared<prometheus::Registry>()),
      requests_(prometheus::BuildCounter()
                    .Name("taskmill_api_requests_total")
                    .Help("HTTP requests by route, method and status")
                    .Register(*metrics_)),
      latency_(prometheus::BuildHistogram()
                   .Name("taskmill_api_request_duration_seconds")
                   .Help("HTTP request duration by route")
                   .Register(*metrics_)),
      dispatched_(prometheus::BuildCounter()
                      .Name("taskmill_api_dispatched_tasks_total")
                      .Help("Tasks dispatched through this API process")
                      .Register(*metrics_)),
      immediate_(prometheus::BuildCounter()
                     .Name("taskmill_api_immediate_tasks_total")
                     .Help("Immediate tasks by outcome")
                     .Register(*metrics_)),
      pool_opened_(prometheus::BuildGauge()
                       .Name("taskmill_api_db_connections_opened")
                       .Help("Database connections opened by the pool (reconnects included)")
                       .Register(*metrics_)
                       .Add({})),
      immediate_runs_(registry_, options_.immediate_timeout,
                      static_cast<size_t>(options_.max_overdue_immediate),
                      [this](const Task& task, const worker::Outcome& outcome) {
                        return RecordOverdue(task, outcome);
                      }) {
  if (options_.name.empty()) options_.name = fmt::format("api-{}@{}", getpid(), Hostname());
}

store::AppRegistration Server::Registration() const {
  return {"api", options_.name, Hostname(), getpid(), options_.ttl, registry_.Names()};
}

std::string Server::ReRegister(pg::Connection& conn, const std::string& stale) {
  std::lock_guard<std::mutex> lock(app_mu_);
  if (app_id_ != stale) return app_id_;  // another thread did it already
  auto app = store::RegisterApp(conn, Registration(), DeadlineIn(kQueryTimeout));
  spdlog::error(
      "this API process was declared dead (no heartbeat within {}s); registered again "
      "as {}",
      options_.ttl, app.id);
  app_id_ = app.id;
  return app_id_;
}

void Server::Heartbeats() {
  pg::Connection conn;
  auto interval = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(options_.heartbeat_interval));
  bool down = false;
  while (!heartbeat_stop_) {
    {
      std::unique_lock<std::mutex> lock(stop_mu_);
      stop_cv_.wait_for(lock, interval, [&] { return heartbeat_stop_.load(); });
    }
    if (heartbeat_stop_) break;
    try {
      if (!conn.ok()) {
        conn = pg::Connection::Open(options_.database_url, DeadlineIn(std::chrono::seconds(5)));
      }
      // A beat must land well within the TTL to count.
      auto beat_deadline =
          DeadlineIn(std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(
              std::max(0.1, options_.ttl - options_.heartbeat_interval))));
      std::string id = AppId();
      if (!store::Heartbeat(conn, id, beat_deadline)) ReRegister(conn, id);
      SweepLostImmediates(conn);
      if (down) spdlog::info("database reachable again");
      down = false;
    } catch (const pg::Error& e) {
      if (!down) spdlog::warn("heartbeat failed ({}); retrying", e.what());
      down = true;
    }
  }
}

int Server::Run() {
  auto colon = options_.listen.rfind(':');
  if (colon == std::string::npos) {
    std::cerr << "taskmill api: --listen must be ADDR:PORT, not \"" << options_.listen << "\"\n";
    return cli::kExitBadInput;
  }
  std::string host = options_.listen.substr(0, colon);
  // "[::1]:8080": the brackets only delimit the address.
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  int port = -1;
  try {
    size_t used = 0;
    std::string p = options_.listen.substr(colon + 1);
    port = std::stoi(p, &used);
    if (used != p.size()) port = -1;
  } catch (...) {
    port = -1;
  }
  if (port < 0 || port > 65535) {
    std::cerr << "taskmill api: bad port in --listen " << options_.listen << "\n";
    return cli::kExitBadInput;
  }
  // Judged on the address it resolves to and will be bound: a name that
  // merely starts with "127." is not loopback.
  http::ListenAddress address;
  if (auto e = http::ResolveListenAddress(host, port, &address); !e.empty()) {
    std::cerr << "taskmill api: --listen " << options_.listen << ": " << e << "\n";
    return cli::kExitBadInput;
  }
  bool credentials = !options_.token.empty() || !options_.basic_user.empty();
  bool tls = !options_.tls_cert.empty();
  if (!address.loopback && !options_.insecure_listen && (!credentials || !tls)) {
    std::cerr << "taskmill api: refusing to listen on " << address.text
              << " (not a loopback address) without "
              << (!credentials && !tls ? "credentials and TLS"
                  : !credentials       ? "credentials"
                                       : "TLS")
              << ": set --token-file (or TASKMILL_API_TOKEN) or basic credentials, and "
                 "--tls-cert/--tls-key; or listen on a loopback address; or pass "
                 "--insecure-listen\n";
    return cli::kExitBadInput;
  }
  if (!credentials) {
    spdlog::warn("no credentials configured: every endpoint is open to {} clients",
                 address.loopback ? "local" : "all");
  }
  http::HttpServerOptions http_options;
  http_options.limits = options_.http_limits;
  http_options.threads = options_.threads;
  http_options.tls_cert = options_.tls_cert;
  http_options.tls_key = options_.tls_key;
  http_ = std::make_unique<http::HttpServer>(
      http_options,
      [this](const httplib::Request& req, httplib::Response& res) { Dispatch(req, res); },
      // Requests the front refused (limits, malformed) are counted too.
      [this](const std::string& method, int status) {
        Count(method.empty() ? "connection" : "rejected", method.empty() ? "-" : method, status, 0);
      });
  if (auto e = http_->Listen(address); !e.empty()) {
    std::cerr << "taskmill api: " << e << "\n";
    return cli::kExitBadInput;
  }

  // Register, so that immediate tasks have an owner the janitor can judge.
  try {
    auto conn = pool_.Acquire(DeadlineIn(std::chrono::seconds(30)));
    auto schema = store::CheckSchema(*conn, DeadlineIn(kQueryTimeout));
    if (!schema.ok()) {
      std::cerr << "taskmill api: " << schema.error().message << "\n";
      return cli::ExitCodeFor(schema.error().code);
    }
    app_id_ = store::RegisterApp(*conn, Registration(), DeadlineIn(kQueryTimeout)).id;
  } catch (const pg::Error& e) {
    std::cerr << "taskmill api: cannot use the database: " << e.what() << "\n";
    return cli::kExitUnavailable;
  }

  // Signals are taken by one thread with sigwait; every other thread
  // (created after this) inherits the blocked mask.
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &mask, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  AddRoutes();
  spdlog::info("API {} listening on {}://{} ({} threads, app {}){}", options_.name,
               tls ? "https" : "http", address.text, options_.threads, app_id_,
               options_.test_endpoints ? "; test endpoints ON" : "");

  std::thread heartbeat([this] { Heartbeats(); });
  std::thread signals([this, mask] {
    int sig = 0;
    sigwait(&mask, &sig);
    if (stopping_.exchange(true)) return;  // woken by Run() itself
    spdlog::info("signal {}: no new requests; finishing those in flight, then exiting", sig);
    http_->Stop();
  });
  // Returns once stopped and every request in flight has been answered (its
  // workers are drained and joined). Heartbeats go on until then: a long
  // request (an ingestion run) must not get this process declared dead.
  http_->Run();
  bool listened = true;
  listen_done_ = true;
  if (!stopping_.exchange(true)) {
    spdlog::error("the HTTP server stopped on its own");
    listened = false;
    pthread_kill(signals.native_handle(), SIGTERM);  // ends the signal thread
  }
  signals.join();
  // Overdue immediate tasks hold their resources until their functions
  // return; heartbeats go on meanwhile. Any still running after the grace
  // keep them until this process is gone and the janitor finds it missing:
  // no deregistering then.
  size_t overdue_left = immediate_runs_.Drain(DeadlineIn(kOverdueShutdownGrace));
  heartbeat_stop_ = true;
  stop_cv_.notify_all();
  heartbeat.join();
  try {
    if (overdue_left == 0) {
      auto conn = pool_.Acquire(DeadlineIn(std::chrono::seconds(5)));
      store::DeregisterApp(*conn, AppId(), DeadlineIn(std::chrono::seconds(5)));
    } else {
      spdlog::error(
          "exiting with {} immediate task(s) still running past their timeout; they are "
          "failed once the janitor declares this process missing",
          overdue_left);
    }
  } catch (const pg::Error& e) {
    spdlog::warn("could not deregister ({}); the janitor will remove this process", e.what());
  }
  spdlog::info("API stopped");
  return listened ? cli::kExitOk : cli::kExitError;
}

int RunApiServer(const ApiOptions& options, const TaskRegistry& registry) {
  Server server(options, registry);
  return server.Run();
}

}  // namespace taskmill::api
