// LocalPostgres: a PostgreSQL server that this process creates and runs.
//
// Used two ways: by `taskmill up` when no database URL is given (a data
// directory under the project, kept between runs), and by every test program
// (a throwaway cluster in a temporary directory, removed at the end). The
// server listens only on a Unix socket in a private directory, so it never
// needs or assumes a TCP port. When this process runs as root, initdb and the
// server run as the `postgres` user through runuser, and the directories are
// handed to that user.
//
// The object owns the server: Stop() or the destructor shuts it down
// (fast mode) and, for an ephemeral cluster, deletes its directory.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "taskmill/deadline.h"

namespace taskmill {

struct LocalPostgresOptions {
  // The cluster's data directory. Created with initdb when it has no
  // PG_VERSION file.
  std::filesystem::path data_dir;
  // Directory for the Unix socket; defaults to data_dir/../socket (a path
  // short enough for sun_path is the caller's concern: keep it < 100 bytes).
  std::filesystem::path socket_dir;
  // Remove data_dir and socket_dir when stopped (tests).
  bool ephemeral = false;
  // fsync off: only for throwaway test clusters.
  bool fsync = true;
  // Extra "name=value" server settings, passed as -c options.
  std::vector<std::string> settings;
  // Server log file; defaults to data_dir/../postgres.log.
  std::filesystem::path log_file;
  // A standby: if set and data_dir is new, the data directory is made by
  // `pg_basebackup -R -X stream` from the server whose Unix socket is in
  // this directory (as the superuser postgres, on port 5432), instead of by
  // initdb; the server then starts as a streaming standby of that one.
  std::filesystem::path standby_of;
};

class LocalPostgres {
 public:
  // Runs initdb if needed and starts the server, waiting until it accepts
  // connections or the deadline passes. Throws std::runtime_error with the
  // tail of the server log if it cannot start. If a server is already running
  // on this data directory (a stale postmaster.pid of a live process), it is
  // reused.
  static LocalPostgres Start(const LocalPostgresOptions& options, Deadline deadline);

  LocalPostgres() = default;
  LocalPostgres(const LocalPostgres&) = delete;
  LocalPostgres& operator=(const LocalPostgres&) = delete;
  LocalPostgres(LocalPostgres&& other) noexcept;
  LocalPostgres& operator=(LocalPostgres&& other) noexcept;
  ~LocalPostgres();

  // libpq conninfo for a database on this server, as the superuser
  // `postgres`: "host=<socket_dir> port=5432 user=postgres dbname=<db>".
  std::string ConnInfo(const std::string& dbname = "postgres") const;
  // The same as a postgresql:// URL.
  std::string Url(const std::string& dbname = "postgres") const;

  // Creates a database (no error if it exists).
  void CreateDatabase(const std::string& dbname, Deadline deadline) const;

  // Stops the server (pg_ctl stop -m fast) and, if ephemeral, removes it.
  void Stop(Deadline deadline);
  // Stops with -m immediate and starts again: a crash-restart, for fault
  // tests. Existing connections break.
  void Restart(Deadline deadline);
  // Stops with -m immediate and leaves it stopped (a primary lost in a
  // failover test).
  void StopImmediately(Deadline deadline);
  // Promotes a standby to primary (pg_ctl promote -w): returns once it
  // accepts writes.
  void Promote(Deadline deadline);
  // Gives up ownership: the server keeps running after this object goes
  // (Stop() and the destructor then do nothing). For a server that another
  // process started and will stop (the shared server of a test program).
  void Detach() { owned_ = false; }
  bool running() const { return running_; }
  const std::filesystem::path& data_dir() const { return options_.data_dir; }
  const std::filesystem::path& socket_dir() const { return options_.socket_dir; }

 private:
  void StartServer(Deadline deadline);
  void StopServer(const char* mode, Deadline deadline);

  LocalPostgresOptions options_;
  std::filesystem::path bindir_;
  bool running_ = false;
  bool owned_ = false;  // false once moved from
};

// True unless this process runs as root and the postgres user cannot reach
// `dir` (some parent, like /root, is not searchable by it).
bool PostgresCanReach(const std::filesystem::path& dir);

// The directory holding initdb/pg_ctl: $TASKMILL_PG_BINDIR, else the newest
// /usr/lib/postgresql/<n>/bin. Throws std::runtime_error naming the package
// to install if none is found.
std::filesystem::path FindPostgresBinDir();

}  // namespace taskmill
