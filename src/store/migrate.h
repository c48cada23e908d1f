// Schema migrations: bringing a database to the schema this program speaks.
#pragma once

#include "pg/connection.h"
#include "taskmill/result.h"

namespace taskmill::store {

// The newest schema version compiled into this program.
int LatestSchemaVersion();

// Applies every migration newer than the database's version, each in its own
// transaction, serialised against concurrent migrators by a transaction-scoped
// advisory lock. Idempotent. Returns the number applied, or kSchemaMismatch
// if the database is newer than this program.
Result<int> Migrate(pg::Connection& conn, Deadline deadline);

// The database's schema version (0 if taskmill was never installed).
int SchemaVersion(pg::Connection& conn, Deadline deadline);

// OK if the database has exactly this program's schema version; otherwise a
// kSchemaMismatch error that says what to do.
Status CheckSchema(pg::Connection& conn, Deadline deadline);

}  // namespace taskmill::store
