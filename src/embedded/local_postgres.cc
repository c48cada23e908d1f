#include "embedded/local_postgres.h"

#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>

#include "common/subprocess.h"
#include "pg/connection.h"

namespace taskmill {

namespace fs = std::filesystem;

namespace {

std::string Tail(const fs::path& file, size_t max_bytes = 3000) {
  std::ifstream in(file);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  return s.size() > max_bytes ? s.substr(s.size() - max_bytes) : s;
}

bool RunningAsRoot() { return geteuid() == 0; }

// Gives `path` to the postgres user when we are root (the server refuses to
// run as root).
void GiveToPostgres(const fs::path& path) {
  if (!RunningAsRoot()) return;
  passwd* pw = getpwnam("postgres");
  if (pw == nullptr) {
    throw std::runtime_error(
        "running as root needs the `postgres` user to run PostgreSQL; install postgresql-15");
  }
  if (chown(path.c_str(), pw->pw_uid, pw->pw_gid) != 0) {
    throw std::runtime_error(fmt::format("cannot hand {} to the postgres user", path.string()));
  }
}

// Runs a PostgreSQL tool (as postgres when root) and waits for it.
void RunTool(const fs::path& bindir, const std::vector<std::string>& args, const fs::path& output,
             Deadline deadline) {
  SubprocessOptions so;
  if (RunningAsRoot()) so.argv = {"runuser", "-u", "postgres", "--"};
  so.argv.push_back((bindir / args[0]).string());
  so.argv.insert(so.argv.end(), args.begin() + 1, args.end());
  so.output_file = output;
  so.die_with_parent = false;  // pg_ctl's server must outlive the tool
  auto p = Subprocess::Start(so);
  auto status = p.Wait(deadline);
  if (!status) {
    p.Stop(DeadlineIn(std::chrono::seconds(5)), SIGKILL);
    throw std::runtime_error(fmt::format("{} timed out:\n{}", args[0], Tail(output)));
  }
  if (ExitCodeOf(*status) != 0) {
    throw std::runtime_error(
        fmt::format("{} failed (exit {}):\n{}", args[0], ExitCodeOf(*status), Tail(output)));
  }
}

// Quotes one word for the shell that pg_ctl passes -o options through.
std::string ShellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

}  // namespace

fs::path FindPostgresBinDir() {
  if (const char* env = std::getenv("TASKMILL_PG_BINDIR"); env != nullptr && *env != '\0') {
    return env;
  }
  fs::path best;
  int best_version = -1;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/usr/lib/postgresql", ec)) {
    int v = std::atoi(entry.path().filename().c_str());
    if (v > best_version && fs::exists(entry.path() / "bin" / "pg_ctl")) {
      best_version = v;
      best = entry.path() / "bin";
    }
  }
  if (best.empty()) {
    throw std::runtime_error(
        "no PostgreSQL server found under /usr/lib/postgresql: install postgresql-15 (or set "
        "TASKMILL_PG_BINDIR)");
  }
  return best;
}

LocalPostgres LocalPostgres::Start(const LocalPostgresOptions& options, Deadline deadline) {
  LocalPostgres pg;
  pg.options_ = options;
  pg.options_.data_dir = fs::absolute(options.data_dir);
  if (pg.options_.socket_dir.empty()) {
    pg.options_.socket_dir = pg.options_.data_dir.parent_path() / "socket";
  }
  if (pg.options_.log_file.empty()) {
    pg.options_.log_file = pg.options_.data_dir.parent_path() / "postgres.log";
  }
  pg.bindir_ = FindPostgresBinDir();
  pg.owned_ = true;

  fs::create_directories(pg.options_.data_dir.parent_path());
  fs::create_directories(pg.options_.socket_dir);
  GiveToPostgres(pg.options_.socket_dir);
  if (!fs::exists(pg.options_.data_dir / "PG_VERSION")) {
    fs::create_directories(pg.options_.data_dir);
    fs::permissions(pg.options_.data_dir, fs::perms::owner_all);
    GiveToPostgres(pg.options_.data_dir);
    fs::path out = pg.options_.data_dir.parent_path() / "initdb.log";
    { std::ofstream touch(out); }
    GiveToPostgres(out);
    std::vector<std::string> args = {
        "initdb", "-D",        pg.options_.data_dir.string(), "-A", "trust", "-U", "postgres", "-E",
        "UTF8",   "--locale=C"};
    if (!pg.options_.fsync) args.push_back("--no-sync");
    RunTool(pg.bindir_, args, out, deadline);
  }
  { std::ofstream touch(pg.options_.log_file, std::ios::app); }
  GiveToPostgres(pg.options_.log_file);

  // A server left running on this directory (by an earlier `taskmill up`
  // killed hard) is reused.
  bool alive = false;
  std::ifstream pidfile(pg.options_.data_dir / "postmaster.pid");
  pid_t old = 0;
  if (pidfile >> old && old > 0 && kill(old, 0) == 0) alive = true;
  if (alive) {
    Deadline connect_by = std::min(deadline, DeadlineIn(std::chrono::seconds(5)));
    try {
      pg::Connection::Open(pg.ConnInfo(), connect_by);
      pg.running_ = true;
      return pg;
    } catch (const std::exception&) {
      // Not answering on our socket: start it ourselves below.
    }
  }
  pg.StartServer(deadline);
  return pg;
}

void LocalPostgres::StartServer(Deadline deadline) {
  std::vector<std::string> settings = {
      "listen_addresses=", "unix_socket_directories=" + options_.socket_dir.string(),
      "max_connections=300"};
  if (!options_.fsync) {
    // Not synchronous_commit=off: with it, a crash-restart (the fault
    // suite's) loses acknowledged commits, which no real deployment does.
    // fsync=off only skips the flush to disk; a server crash keeps the data.
    settings.insert(settings.end(), {"fsync=off", "full_page_writes=off"});
  }
  settings.insert(settings.end(), options_.settings.begin(), options_.settings.end());
  std::string opts;
  for (const auto& s : settings) opts += " -c " + ShellQuote(s);
  fs::path out = options_.data_dir.parent_path() / "pg_ctl.log";
  { std::ofstream touch(out, std::ios::app); }
  GiveToPostgres(out);
  int seconds = std::max(5, MillisLeft(deadline) / 1000);
  RunTool(bindir_,
          {"pg_ctl", "start", "-w", "-t", std::to_string(seconds), "-D", options_.data_dir.string(),
           "-l", options_.log_file.string(), "-o", opts},
          out, deadline);
  // pg_ctl -w returns when the server accepts connections; confirm on our
  // socket.
  for (;;) {
    try {
      pg::Connection::Open(ConnInfo(), DeadlineIn(std::chrono::seconds(2)));
      break;
    } catch (const pg::Error& e) {
      if (Expired(deadline)) {
        throw std::runtime_error(fmt::format("PostgreSQL did not accept connections: {}\n{}",
                                             e.what(), Tail(options_.log_file)));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  running_ = true;
}

void LocalPostgres::StopServer(const char* mode, Deadline deadline) {
  if (!running_) return;
  fs::path out = options_.data_dir.parent_path() / "pg_ctl.log";
  int seconds = std::max(5, MillisLeft(deadline) / 1000);
  RunTool(bindir_,
          {"pg_ctl", "stop", "-w", "-t", std::to_string(seconds), "-m", mode, "-D",
           options_.data_dir.string()},
          out, deadline);
  running_ = false;
}

LocalPostgres::LocalPostgres(LocalPostgres&& other) noexcept
    : options_(std::move(other.options_)),
      bindir_(std::move(other.bindir_)),
      running_(std::exchange(other.running_, false)),
      owned_(std::exchange(other.owned_, false)) {}

LocalPostgres& LocalPostgres::operator=(LocalPostgres&& other) noexcept {
  if (this != &other) {
    try {
      if (owned_) Stop(DeadlineIn(std::chrono::seconds(30)));
    } catch (const std::exception& e) {
      std::cerr << "LocalPostgres: " << e.what() << "\n";
    }
    options_ = std::move(other.options_);
    bindir_ = std::move(other.bindir_);
    running_ = std::exchange(other.running_, false);
    owned_ = std::exchange(other.owned_, false);
  }
  return *this;
}

LocalPostgres::~LocalPostgres() {
  if (!owned_) return;
  try {
    Stop(DeadlineIn(std::chrono::seconds(30)));
  } catch (const std::exception& e) {
    std::cerr << "LocalPostgres: could not stop the server: " << e.what() << "\n";
  }
}

std::string LocalPostgres::ConnInfo(const std::string& dbname) const {
  return fmt::format("host={} port=5432 user=postgres dbname={}", options_.socket_dir.string(),
                     dbname);
}

std::string LocalPostgres::Url(const std::string& dbname) const {
  std::string host;
  for (char c : options_.socket_dir.string()) {
    if (c == '/') {
      host += "%2F";
    } else {
      host += c;
    }
  }
  return fmt::format("postgresql://postgres@{}:5432/{}", host, dbname);
}

void LocalPostgres::CreateDatabase(const std::string& dbname, Deadline deadline) const {
  auto conn = pg::Connection::Open(ConnInfo(), deadline);
  try {
    conn.Exec("CREATE DATABASE " + pg::QuoteIdentifier(dbname), deadline);
  } catch (const pg::QueryError& e) {
    if (e.sqlstate() != "42P04") throw;  // duplicate_database
  }
}

void LocalPostgres::Stop(Deadline deadline) {
  if (!owned_) return;
  StopServer("fast", deadline);
  if (options_.ephemeral) {
    std::error_code ec;
    fs::remove_all(options_.data_dir, ec);
    fs::remove_all(options_.socket_dir, ec);
    fs::remove(options_.log_file, ec);
    fs::remove(options_.data_dir.parent_path() / "pg_ctl.log", ec);
    fs::remove(options_.data_dir.parent_path() / "initdb.log", ec);
    owned_ = false;
  }
}

void LocalPostgres::Restart(Deadline deadline) {
  StopServer("immediate", deadline);
  StartServer(deadline);
}

}  // namespace taskmill
