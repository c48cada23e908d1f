#include "store/migrate.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "pg/transaction.h"
#include "store/locks.h"
#include "store/migrations_data.h"

namespace taskmill::store {

namespace {

// Serialises concurrent migrators (two workers starting at once); transaction
// scoped, so it is safe behind a transaction pooler. A class of its own: a
// resource lock (whatever its hash) never holds up a migration.
constexpr const char* kMigrationLock = "SELECT pg_advisory_xact_lock($1::integer, 0)";

constexpr const char* kBootstrap =
    "CREATE SCHEMA IF NOT EXISTS taskmill;"
    "CREATE TABLE IF NOT EXISTS taskmill.schema_migrations ("
    "  version integer PRIMARY KEY,"
    "  name text NOT NULL,"
    "  applied_at timestamptz NOT NULL DEFAULT now())";

}  // namespace

int LatestSchemaVersion() {
  const auto& all = EmbeddedMigrations();
  return all.empty() ? 0 : all.back().version;
}

int SchemaVersion(pg::Connection& conn, Deadline deadline) {
  auto exists = conn.Exec("SELECT to_regclass('taskmill.schema_migrations') IS NOT NULL", deadline);
  if (!exists.GetBool(0, 0)) return 0;
  auto res = conn.Exec("SELECT coalesce(max(version), 0)::integer FROM taskmill.schema_migrations",
                       deadline);
  return static_cast<int>(res.GetInt(0, 0));
}

Result<int> Migrate(pg::Connection& conn, Deadline deadline) {
  int applied = 0;
  for (const auto& m : EmbeddedMigrations()) {
    // Rolled back on every way out but the commits below.
    pg::Transaction tx(conn, deadline);
    conn.Exec(kMigrationLock, pg::Params().Add(kMigrationLockClass), deadline);
    conn.ExecScript(kBootstrap, deadline);
    int current = static_cast<int>(
        conn.Exec("SELECT coalesce(max(version), 0)::integer FROM taskmill.schema_migrations",
                  deadline)
            .GetInt(0, 0));
    if (current > LatestSchemaVersion()) {
      return MakeError(ErrorCode::kSchemaMismatch,
                       fmt::format("the database has taskmill schema version {}, newer than this "
                                   "program's {}; upgrade taskmill before using this database",
                                   current, LatestSchemaVersion()));
    }
    if (current >= m.version) {
      tx.Commit(deadline);
      continue;
    }
    conn.ExecScript(m.sql, deadline);
    conn.Exec("INSERT INTO taskmill.schema_migrations (version, name) VALUES ($1, $2)",
              pg::Params().Add(m.version).Add(std::string(m.name)), deadline);
    tx.Commit(deadline);
    spdlog::info("applied migration {} ({})", m.version, m.name);
    ++applied;
  }
  return applied;
}

Status CheckSchema(pg::Connection& conn, Deadline deadline) {
  int version = SchemaVersion(conn, deadline);
  int latest = LatestSchemaVersion();
  if (version == latest) return Status::Ok();
  if (version == 0) {
    return MakeError(ErrorCode::kSchemaMismatch,
                     "taskmill is not installed in this database: run `taskmill migrate` first");
  }
  if (version < latest) {
    return MakeError(ErrorCode::kSchemaMismatch,
                     fmt::format("the database has taskmill schema version {}, this program needs "
                                 "{}: run `taskmill migrate`",
                                 version, latest));
  }
  return MakeError(ErrorCode::kSchemaMismatch,
                   fmt::format("the database has taskmill schema version {}, newer than this "
                               "program's {}: upgrade taskmill",
                               version, latest));
}

}  // namespace taskmill::store
