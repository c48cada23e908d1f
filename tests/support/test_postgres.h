// The throwaway PostgreSQL server of a test program.
//
// Each test program starts one server, on first use, in a fresh directory
// under /tmp (Unix socket only, fsync off), and stops and removes it when the
// program exits. Tests get databases of their own on it.
#pragma once

#include <string>

#include "embedded/local_postgres.h"

namespace taskmill::testing {

// The server of this test program, started on first call (thread-safe).
LocalPostgres& TestServer();

// A new empty database with a unique name on the test server; returns its
// conninfo (key=value form).
std::string CreateTestDatabase(const std::string& prefix = "t");

}  // namespace taskmill::testing
