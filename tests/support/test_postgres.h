// The throwaway PostgreSQL server of a test program.
//
// A test program uses one server, in a fresh directory under /tmp (Unix
// socket only, fsync off); tests get databases of their own on it
// (CreateTestDatabase), so cases never see each other's tables.
//
// Two ways to get it:
// - Under ctest, each case is its own ctest entry and process, and all cases
//   share one server: the ctest fixture test-server runs
//   `taskmill-test-postgres start STATE` first (StartSharedServer) and
//   `... stop STATE` last (StopSharedServer), and every case has
//   $TASKMILL_TEST_SERVER=STATE (tests/CMakeLists.txt). TestServer() then
//   uses that server and leaves it running when the process exits.
// - Otherwise (a test program run by hand, or one that restarts or kills its
//   server, like the fault suite), TestServer() starts a server of its own on
//   first use and stops and removes it when the program exits.
#pragma once

#include <sys/types.h>

#include <string>

#include "embedded/local_postgres.h"

namespace taskmill::testing {

// The server of this test program: the shared one named by
// $TASKMILL_TEST_SERVER if set (throws std::runtime_error if its state file
// cannot be read), else one started on first call (thread-safe).
LocalPostgres& TestServer();

// A new empty database with a unique name on the test server; returns its
// conninfo (key=value form).
std::string CreateTestDatabase(const std::string& prefix = "t");

// Starts a server for the cases of a test program and writes its directory
// to `state_file`; the server outlives this process. A watchdog process
// stops and removes the server once `watch_pid` (ctest) has ended, in case
// StopSharedServer never runs. Throws std::runtime_error on failure.
void StartSharedServer(const std::string& state_file, pid_t watch_pid);

// Stops and removes the server of `state_file`, then its watchdog and the
// file. Throws std::runtime_error if the file cannot be read or the server
// does not stop.
void StopSharedServer(const std::string& state_file);

}  // namespace taskmill::testing
