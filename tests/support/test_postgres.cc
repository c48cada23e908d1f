#include "support/test_postgres.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>

#include "common/subprocess.h"

namespace taskmill::testing {

namespace {

std::mutex g_mu;
LocalPostgres* g_server = nullptr;
Subprocess* g_watchdog = nullptr;
std::string g_dir;
// Forked children (worker tests fork) inherit the atexit handler; only the
// process that started the server may stop it.
pid_t g_owner = 0;

// A fresh directory for a server. Short: the socket path must fit in
// sun_path.
std::string MakeServerDir() {
  char tmpl[] = "/tmp/tmtest-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
  chmod(tmpl, 0755);  // when root, the postgres user must reach its directories
  return tmpl;
}

LocalPostgresOptions ServerOptions(const std::string& dir, bool ephemeral) {
  LocalPostgresOptions o;
  o.data_dir = dir + "/data";
  o.socket_dir = dir + "/sock";
  o.ephemeral = ephemeral;
  o.fsync = false;
  return o;
}

// Runs at a normal exit.
void StopServer() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_server == nullptr || getpid() != g_owner) return;
  delete g_server;  // stops it and removes its directories
  g_server = nullptr;
  std::error_code ec;
  std::filesystem::remove_all(g_dir, ec);
  if (g_watchdog != nullptr) {
    // Its job is done; the group holds its `tail` too.
    kill(-g_watchdog->pid(), SIGKILL);
    delete g_watchdog;
    g_watchdog = nullptr;
  }
}

// A process that dies without exiting normally (a crash, ctest's timeout
// kill) runs no atexit handler. A small shell, in a process group of its own
// so that a Ctrl-C does not reach it, waits for `watch_pid` to end and then
// stops the server and removes the directory.
Subprocess StartWatchdog(const LocalPostgres& server, const std::string& dir, pid_t watch_pid) {
  SubprocessOptions so;
  so.argv = {"/bin/sh",
             "-c",
             "tail --pid=\"$1\" -f /dev/null; dir=$2; shift 2; \"$@\"; rm -rf \"$dir\"",
             "taskmill-test-watchdog",
             std::to_string(watch_pid),
             dir};
  if (geteuid() == 0) {
    std::string runuser = access("/usr/sbin/runuser", X_OK) == 0 ? "/usr/sbin/runuser" : "runuser";
    so.argv.insert(so.argv.end(), {runuser, "-u", "postgres", "--"});
  }
  so.argv.insert(so.argv.end(), {(FindPostgresBinDir() / "pg_ctl").string(), "stop", "-m",
                                 "immediate", "-D", server.data_dir().string()});
  so.output_file = "/dev/null";
  so.die_with_parent = false;
  so.new_process_group = true;
  so.working_dir = "/";
  return Subprocess::Start(so);
}

// True while process `pid` runs (not once it is gone or a zombie that
// nobody reaped yet, as under a PID 1 that reaps nothing).
bool Alive(pid_t pid) {
  std::ifstream stat(fmt::format("/proc/{}/stat", pid));
  std::string line;
  if (!std::getline(stat, line)) return false;
  size_t close = line.rfind(')');
  return close != std::string::npos && close + 2 < line.size() && line[close + 2] != 'Z';
}

struct SharedState {
  std::string dir;
  pid_t watchdog = -1;
};

SharedState ReadState(const std::string& state_file) {
  std::ifstream in(state_file);
  SharedState s;
  if (!(in >> s.dir >> s.watchdog) || s.dir.empty()) {
    throw std::runtime_error(fmt::format(
        "cannot read the shared test server's state file {} (started by "
        "`taskmill-test-postgres start`, the ctest fixture; unset TASKMILL_TEST_SERVER to let "
        "the test program start a server of its own)",
        state_file));
  }
  return s;
}

}  // namespace

LocalPostgres& TestServer() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_server != nullptr) return *g_server;
  if (const char* state = std::getenv("TASKMILL_TEST_SERVER"); state != nullptr && *state) {
    // Another process's server: found running, left running.
    auto shared = ReadState(state);
    auto server = std::make_unique<LocalPostgres>(LocalPostgres::Start(
        ServerOptions(shared.dir, false), DeadlineIn(std::chrono::minutes(2))));
    server->Detach();
    g_server = server.release();
    return *g_server;
  }
  std::string dir = MakeServerDir();
  try {
    auto server = std::make_unique<LocalPostgres>(
        LocalPostgres::Start(ServerOptions(dir, true), DeadlineIn(std::chrono::minutes(2))));
    try {
      g_watchdog = new Subprocess(StartWatchdog(*server, dir, getpid()));
    } catch (const std::exception& e) {
      // Only the crash case loses: the normal exit still cleans up.
      std::cerr << "test_postgres: no watchdog: " << e.what() << "\n";
    }
    g_server = server.release();
  } catch (...) {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
    throw;
  }
  g_dir = dir;
  static bool registered = false;
  if (!registered) {
    registered = true;
    std::atexit(StopServer);
  }
  g_owner = getpid();
  return *g_server;
}

std::string CreateTestDatabase(const std::string& prefix) {
  static std::atomic<int> counter{0};
  auto& server = TestServer();
  // The pid keeps the names of cases that share a server apart.
  std::string name = fmt::format("{}_{}_{}", prefix, getpid(), counter++);
  server.CreateDatabase(name, DeadlineIn(std::chrono::minutes(1)));
  return server.ConnInfo(name);
}

void StartSharedServer(const std::string& state_file, pid_t watch_pid) {
  std::string dir = MakeServerDir();
  try {
    auto server =
        LocalPostgres::Start(ServerOptions(dir, true), DeadlineIn(std::chrono::minutes(2)));
    Subprocess watchdog = StartWatchdog(server, dir, watch_pid);
    {
      std::ofstream out(state_file + ".tmp", std::ios::trunc);
      out << dir << "\n" << watchdog.pid() << "\n";
      if (!out.flush()) throw std::runtime_error("cannot write " + state_file);
    }
    std::filesystem::rename(state_file + ".tmp", state_file);
    // Both outlive this process: StopSharedServer (or the watchdog) ends them.
    server.Detach();
    watchdog.Release();
  } catch (...) {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
    throw;
  }
}

void StopSharedServer(const std::string& state_file) {
  auto shared = ReadState(state_file);
  // SIGQUIT, PostgreSQL's immediate shutdown: the data is thrown away, so
  // neither the shutdown checkpoint of a fast stop (of every database the
  // cases made) nor pg_ctl is worth waiting for.
  pid_t postmaster = 0;
  {
    std::ifstream pidfile(shared.dir + "/data/postmaster.pid");
    pidfile >> postmaster;
  }
  if (postmaster > 0 && kill(postmaster, SIGQUIT) == 0) {
    Deadline deadline = DeadlineIn(std::chrono::minutes(1));
    while (Alive(postmaster) && !Expired(deadline)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (Alive(postmaster)) {
      throw std::runtime_error(fmt::format("the server {} (pid {}) did not stop within a minute",
                                           shared.dir, postmaster));
    }
  }
  std::error_code ec;
  std::filesystem::remove_all(shared.dir, ec);
  // Its job is done; the group holds its `tail` too.
  if (shared.watchdog > 0) kill(-shared.watchdog, SIGKILL);
  std::filesystem::remove(state_file, ec);
}

}  // namespace taskmill::testing
