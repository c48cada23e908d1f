#include "support/test_postgres.h"

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <mutex>

#include <fmt/format.h>

namespace taskmill::testing {

namespace {

std::mutex g_mu;
LocalPostgres* g_server = nullptr;
std::string g_dir;

void StopServer() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_server == nullptr) return;
  delete g_server;  // stops it and removes its directories
  g_server = nullptr;
  std::error_code ec;
  std::filesystem::remove_all(g_dir, ec);
}

}  // namespace

LocalPostgres& TestServer() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_server == nullptr) {
    char tmpl[] = "/tmp/tmtest-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
    g_dir = tmpl;
    chmod(g_dir.c_str(), 0755);  // the postgres user must reach its directories
    LocalPostgresOptions o;
    o.data_dir = g_dir + "/data";
    o.socket_dir = g_dir + "/sock";
    o.ephemeral = true;
    o.fsync = false;
    g_server = new LocalPostgres(LocalPostgres::Start(o, DeadlineIn(std::chrono::minutes(2))));
    std::atexit(StopServer);
  }
  return *g_server;
}

std::string CreateTestDatabase(const std::string& prefix) {
  static std::atomic<int> counter{0};
  auto& server = TestServer();
  std::string name = fmt::format("{}_{}_{}", prefix, getpid(), counter++);
  server.CreateDatabase(name, DeadlineIn(std::chrono::minutes(1)));
  return server.ConnInfo(name);
}

}  // namespace taskmill::testing
