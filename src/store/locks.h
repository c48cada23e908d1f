// The advisory-lock classes taskmill uses: the first key of every
// pg_advisory_xact_lock(int4, int4) it takes, one class per kind of lock, so
// that a lock of one kind can never be taken for a lock of another (whatever
// the second key). Every such lock is transaction scoped.
#pragma once

#include <cstdint>

namespace taskmill::store {

// The per-resource locks of the SQL functions in migrations/
// (dispatch, finish, cancel, ...); second key hashtext(resource). Written as
// this literal in the SQL; here for tests and documentation.
inline constexpr int32_t kResourceLockClass = 1953720684;

// The 256 bucket locks above the resource locks (migrations/
// 0004_dispatch_many.sql); second key hashtext(resource) & 255. Shared by
// every dispatch and finish, exclusive for a batch naming more than 64
// distinct resources. Written as this literal in the SQL.
inline constexpr int32_t kResourceBucketLockClass = 1953720674;

// Serialises concurrent migrators (store/migrate.cc); second key 0.
inline constexpr int32_t kMigrationLockClass = 1953720685;

}  // namespace taskmill::store
