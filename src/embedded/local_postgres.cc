#include "embedded/local_postgres.h"

#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <optional>
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

// The server refuses to run as root, so as root everything runs as this user.
const passwd& PostgresUser() {
  const passwd* pw = getpwnam("postgres");
  if (pw == nullptr) {
    throw std::runtime_error(
        "running as root needs the `postgres` user to run PostgreSQL; install postgresql-15");
  }
  return *pw;
}

// Gives `path` to the postgres user when we are root.
void GiveToPostgres(const fs::path& path) {
  if (!RunningAsRoot()) return;
  const passwd& pw = PostgresUser();
  if (chown(path.c_str(), pw.pw_uid, pw.pw_gid) != 0) {
    throw std::runtime_error(fmt::format("cannot hand {} to the postgres user: {}", path.string(),
                                         std::strerror(errno)));
  }
}

// Like fs::create_directories, but what it creates is mode 0755 whatever the
// umask: the postgres user must be able to pass through.
void CreateDirectories(const fs::path& dir) {
  if (dir.empty() || fs::is_directory(dir)) return;
  CreateDirectories(dir.parent_path());
  if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    throw std::runtime_error(
        fmt::format("cannot create directory {}: {}", dir.string(), std::strerror(errno)));
  }
  chmod(dir.c_str(), 0755);
}

// As root, fails early with a useful message if the postgres user cannot
// reach `dir` (a parent such as /root is 0700): initdb and pg_ctl would
// otherwise fail with a bare "Permission denied".
void CheckReachableByPostgres(const fs::path& dir) {
  if (!RunningAsRoot()) return;
  const passwd& pw = PostgresUser();
  int n = 64;
  std::vector<gid_t> groups(n);
  if (getgrouplist(pw.pw_name, pw.pw_gid, groups.data(), &n) < 0) {
    groups.resize(n);
    getgrouplist(pw.pw_name, pw.pw_gid, groups.data(), &n);
  }
  groups.resize(std::max(n, 0));
  for (fs::path p = dir;; p = p.parent_path()) {
    struct stat st;
    if (stat(p.c_str(), &st) == 0) {
      bool in_group = std::find(groups.begin(), groups.end(), st.st_gid) != groups.end();
      bool searchable = st.st_uid == pw.pw_uid ? (st.st_mode & S_IXUSR) != 0
                        : in_group             ? (st.st_mode & S_IXGRP) != 0
                                               : (st.st_mode & S_IXOTH) != 0;
      if (!searchable) {
        throw std::runtime_error(fmt::format(
            "the postgres user (which runs PostgreSQL when taskmill runs as root) cannot reach "
            "{}: {} is not searchable by it; use a directory elsewhere or `chmod o+x {}`",
            dir.string(), p.string(), p.string()));
      }
    }
    if (p == p.root_path() || !p.has_parent_path() || p.parent_path() == p) break;
  }
}

}  // namespace

bool PostgresCanReach(const fs::path& dir) {
  try {
    CheckReachableByPostgres(dir);
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

namespace {

fs::path RunuserPath() {
  // Not every PATH (cron, some CI runners) has the sbin directories.
  for (const char* p : {"/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"}) {
    if (access(p, X_OK) == 0) return p;
  }
  return "runuser";
}

// Runs a PostgreSQL tool (as postgres when root) and waits for it. Its output
// goes to `output`, whose tail is in the exception if it fails.
void RunTool(const fs::path& bindir, const std::vector<std::string>& args, const fs::path& output,
             Deadline deadline) {
  SubprocessOptions so;
  if (RunningAsRoot()) so.argv = {RunuserPath().string(), "-u", "postgres", "--"};
  so.argv.push_back((bindir / args[0]).string());
  so.argv.insert(so.argv.end(), args.begin() + 1, args.end());
  so.output_file = output;
  // The postgres user may not be allowed into our working directory; the
  // tools then warn "could not change directory".
  so.working_dir = "/";
  // pg_ctl's server must outlive the tool (and us, for `taskmill up`).
  so.die_with_parent = false;
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

// Quotes one word for the shell through which pg_ctl starts the server with
// the -o options.
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

// Quotes a directory for a list-valued setting (unix_socket_directories),
// where a comma or a space would split it.
std::string GucListItem(const std::string& s) {
  if (s.find_first_of(", \t\"") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

// A value in a key=value conninfo string.
std::string ConnInfoValue(const std::string& s) {
  if (!s.empty() && s.find_first_of(" \t\n'\\") == std::string::npos) return s;
  std::string out = "'";
  for (char c : s) {
    if (c == '\'' || c == '\\') out += '\\';
    out += c;
  }
  return out + "'";
}

std::string PercentEncode(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += fmt::format("%{:02X}", c);
    }
  }
  return out;
}

// The postmaster of `data_dir` if one runs: the pid in postmaster.pid, if
// that process lives (a killed one may linger as a zombie) and is a postgres
// (a stale file's pid may have been reused by anything).
std::optional<pid_t> LivePostmaster(const fs::path& data_dir) {
  std::ifstream pidfile(data_dir / "postmaster.pid");
  pid_t pid = 0;
  if (!(pidfile >> pid) || pid <= 0) return std::nullopt;
  // /proc/<pid>/stat: "<pid> (<comm>) <state> ...".
  std::ifstream stat(fmt::format("/proc/{}/stat", pid));
  std::string line;
  if (!std::getline(stat, line)) return std::nullopt;
  size_t open = line.find('('), close = line.rfind(')');
  if (open == std::string::npos || close == std::string::npos || close + 2 >= line.size()) {
    return std::nullopt;
  }
  std::string comm = line.substr(open + 1, close - open - 1);
  char state = line[close + 2];
  if (comm.rfind("postgres", 0) != 0 || state == 'Z' || state == 'X') return std::nullopt;
  return pid;
}

}  // namespace

fs::path FindPostgresBinDir() {
  if (const char* env = std::getenv("TASKMILL_PG_BINDIR"); env != nullptr && *env != '\0') {
    if (!fs::exists(fs::path(env) / "pg_ctl")) {
      throw std::runtime_error(fmt::format("TASKMILL_PG_BINDIR={} has no pg_ctl", env));
    }
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
  // Absolute: the tools run in "/".
  pg.options_.data_dir = fs::absolute(options.data_dir);
  if (pg.options_.socket_dir.empty()) {
    pg.options_.socket_dir = pg.options_.data_dir.parent_path() / "socket";
  }
  pg.options_.socket_dir = fs::absolute(pg.options_.socket_dir);
  if (pg.options_.log_file.empty()) {
    pg.options_.log_file = pg.options_.data_dir.parent_path() / "postgres.log";
  }
  pg.options_.log_file = fs::absolute(pg.options_.log_file);
  std::string socket_path = (pg.options_.socket_dir / ".s.PGSQL.5432").string();
  if (socket_path.size() >= sizeof(sockaddr_un::sun_path)) {
    throw std::runtime_error(fmt::format(
        "the socket path {} is too long for a Unix socket (at most {} bytes); choose a shorter "
        "socket directory",
        socket_path, sizeof(sockaddr_un::sun_path) - 1));
  }
  pg.bindir_ = FindPostgresBinDir();

  const auto& o = pg.options_;
  bool new_socket_dir = !fs::exists(o.socket_dir);
  CreateDirectories(o.data_dir.parent_path());
  CreateDirectories(o.log_file.parent_path());
  CreateDirectories(o.socket_dir);
  CheckReachableByPostgres(o.data_dir.parent_path());
  CheckReachableByPostgres(o.log_file.parent_path());
  CheckReachableByPostgres(o.socket_dir.parent_path());
  // Only the server's user may use the socket: authentication is `trust`
  // (root passes anyway). A directory that someone else owns (say /tmp) is
  // left as it is.
  struct stat st;
  uid_t server_uid = RunningAsRoot() ? PostgresUser().pw_uid : geteuid();
  if (new_socket_dir || (stat(o.socket_dir.c_str(), &st) == 0 && st.st_uid == server_uid)) {
    fs::permissions(o.socket_dir, fs::perms::owner_all);
    GiveToPostgres(o.socket_dir);
  }
  // From here the destructor cleans up (an ephemeral cluster is removed).
  pg.owned_ = true;

  if (!fs::exists(o.data_dir / "PG_VERSION")) {
    CreateDirectories(o.data_dir);
    fs::permissions(o.data_dir, fs::perms::owner_all);  // the server insists on 0700
    GiveToPostgres(o.data_dir);
    fs::path out = o.data_dir.parent_path() / "initdb.log";
    { std::ofstream truncate(out); }
    GiveToPostgres(out);
    if (!o.standby_of.empty()) {
      // A copy of the primary, with the standby.signal and primary_conninfo
      // that make it follow it.
      std::vector<std::string> args = {"pg_basebackup",
                                       "-D",
                                       o.data_dir.string(),
                                       "-R",
                                       "-X",
                                       "stream",
                                       "-c",
                                       "fast",
                                       "-h",
                                       fs::absolute(o.standby_of).string(),
                                       "-p",
                                       "5432",
                                       "-U",
                                       "postgres"};
      if (!o.fsync) args.push_back("--no-sync");
      RunTool(pg.bindir_, args, out, deadline);
    } else {
      // Locale C: no dependence on the locales the host has generated.
      std::vector<std::string> args = {"initdb", "-D",        o.data_dir.string(), "-A",
                                       "trust",  "-U",        "postgres",          "-E",
                                       "UTF8",   "--locale=C"};
      if (!o.fsync) args.push_back("--no-sync");
      RunTool(pg.bindir_, args, out, deadline);
    }
  }
  { std::ofstream touch(o.log_file, std::ios::app); }
  GiveToPostgres(o.log_file);

  // A server left running on this directory (by an earlier `taskmill up`
  // killed hard) is reused if it answers on our socket. If it does not, the
  // pg_ctl start below fails and says why.
  if (LivePostmaster(o.data_dir)) {
    try {
      pg::Connection::Open(pg.ConnInfo(), std::min(deadline, DeadlineIn(std::chrono::seconds(5))));
      pg.running_ = true;
      return pg;
    } catch (const pg::Error&) {
    }
  }
  pg.StartServer(deadline);
  return pg;
}

void LocalPostgres::StartServer(Deadline deadline) {
  // Explicit port: a PGPORT in our environment would otherwise move the
  // socket file away from the name ConnInfo() uses.
  std::vector<std::string> settings = {
      "listen_addresses=", "unix_socket_directories=" + GucListItem(options_.socket_dir.string()),
      "port=5432", "max_connections=300"};
  if (!options_.fsync) {
    // Not synchronous_commit=off: with it, a crash-restart (the fault
    // suite's) loses acknowledged commits, which no real deployment does.
    // fsync=off only skips the flush to disk; a server crash keeps the data.
    settings.insert(settings.end(), {"fsync=off", "full_page_writes=off"});
  }
  // Later -c options win, so the caller's settings override ours.
  settings.insert(settings.end(), options_.settings.begin(), options_.settings.end());
  // pg_ctl runs the server through `/bin/sh -c "exec postgres <-o options>"`,
  // so each option is one shell word.
  std::string opts;
  for (const auto& s : settings) opts += " -c " + ShellQuote(s);
  fs::path out = options_.data_dir.parent_path() / "pg_ctl.log";
  { std::ofstream touch(out, std::ios::app); }
  GiveToPostgres(out);
  int seconds = std::max(5, MillisLeft(deadline) / 1000);
  try {
    RunTool(bindir_,
            {"pg_ctl", "start", "-w", "-t", std::to_string(seconds), "-D",
             options_.data_dir.string(), "-l", options_.log_file.string(), "-o", opts},
            out, deadline);
  } catch (const std::runtime_error& e) {
    // pg_ctl's own output only says to look at the server log.
    std::string message = fmt::format("{}\nserver log ({}):\n{}", e.what(),
                                      options_.log_file.string(), Tail(options_.log_file));
    // A server still coming up after pg_ctl gave up would be nobody's.
    if (LivePostmaster(options_.data_dir)) {
      try {
        RunTool(bindir_,
                {"pg_ctl", "stop", "-w", "-m", "immediate", "-D", options_.data_dir.string()}, out,
                DeadlineIn(std::chrono::seconds(30)));
      } catch (const std::exception&) {
      }
    }
    throw std::runtime_error(message);
  }
  running_ = true;
  // pg_ctl -w returns once the server accepts connections; confirm on our
  // socket, the way clients will come.
  for (;;) {
    try {
      pg::Connection::Open(ConnInfo(), std::min(deadline, DeadlineIn(std::chrono::seconds(2))));
      return;
    } catch (const pg::Error& e) {
      if (Expired(deadline)) {
        throw std::runtime_error(fmt::format("PostgreSQL did not accept connections: {}\n{}",
                                             e.what(), Tail(options_.log_file)));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
}

void LocalPostgres::StopServer(const char* mode, Deadline deadline) {
  if (!running_) return;
  // Crashed or killed (fault tests do that): nothing left to stop.
  if (!LivePostmaster(options_.data_dir)) {
    running_ = false;
    return;
  }
  fs::path out = options_.data_dir.parent_path() / "pg_ctl.log";
  int seconds = std::max(5, MillisLeft(deadline) / 1000);
  try {
    RunTool(bindir_,
            {"pg_ctl", "stop", "-w", "-t", std::to_string(seconds), "-m", mode, "-D",
             options_.data_dir.string()},
            out, deadline);
  } catch (const std::exception&) {
    // It may have exited by itself in between; pg_ctl then fails.
    if (LivePostmaster(options_.data_dir)) throw;
  }
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
      std::cerr << "LocalPostgres: could not stop the server: " << e.what() << "\n";
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
  return fmt::format("host={} port=5432 user=postgres dbname={}",
                     ConnInfoValue(options_.socket_dir.string()), ConnInfoValue(dbname));
}

std::string LocalPostgres::Url(const std::string& dbname) const {
  // libpq takes a percent-encoded socket directory as the host.
  return fmt::format("postgresql://postgres@{}:5432/{}",
                     PercentEncode(options_.socket_dir.string()), PercentEncode(dbname));
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
  std::exception_ptr failure;
  try {
    StopServer("fast", deadline);
  } catch (const std::exception&) {
    failure = std::current_exception();
    // Fast mode waits for sessions to roll back; immediate does not.
    try {
      StopServer("immediate", DeadlineIn(std::chrono::seconds(15)));
    } catch (const std::exception&) {
    }
  }
  if (options_.ephemeral) {
    // Its files are about to go: a server that would not stop goes too.
    if (auto pid = LivePostmaster(options_.data_dir)) {
      kill(*pid, SIGKILL);
      running_ = false;
    }
    std::error_code ec;
    fs::remove_all(options_.data_dir, ec);
    // Not remove_all: the socket directory may be shared (say /tmp).
    fs::remove(options_.socket_dir / ".s.PGSQL.5432", ec);
    fs::remove(options_.socket_dir / ".s.PGSQL.5432.lock", ec);
    fs::remove(options_.socket_dir, ec);  // if empty
    fs::remove(options_.log_file, ec);
    fs::remove(options_.data_dir.parent_path() / "pg_ctl.log", ec);
    fs::remove(options_.data_dir.parent_path() / "initdb.log", ec);
    owned_ = false;
  }
  if (failure) std::rethrow_exception(failure);
}

void LocalPostgres::StopImmediately(Deadline deadline) { StopServer("immediate", deadline); }

void LocalPostgres::Promote(Deadline deadline) {
  fs::path out = options_.data_dir.parent_path() / "pg_ctl.log";
  int seconds = std::max(5, MillisLeft(deadline) / 1000);
  RunTool(
      bindir_,
      {"pg_ctl", "promote", "-w", "-t", std::to_string(seconds), "-D", options_.data_dir.string()},
      out, deadline);
}

void LocalPostgres::Restart(Deadline deadline) {
  StopServer("immediate", deadline);
  StartServer(deadline);
}

}  // namespace taskmill
