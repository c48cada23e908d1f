// Helpers for tests that need taskmill's schema or its real processes.
//
// Everything runs against the throwaway PostgreSQL of the test program
// (tests/support/test_postgres.h). Processes started here are owned by the
// returned Subprocess objects and killed when those go away.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "common/subprocess.h"
#include "pg/connection.h"

namespace taskmill::testing {

// A new database with taskmill's schema, the built-in functions and the
// test functions (support/test_functions.h) registered for dispatch.
std::string MigratedTestDatabase();

pg::Connection Connect(const std::string& conninfo);

// Starts `taskmill <args...>` (the binary under test); its output goes to a
// log file whose path is returned in `log_path`.
Subprocess StartTaskmill(const std::vector<std::string>& args, std::string* log_path = nullptr);

// Starts `taskmill-test-worker <args...>` (taskmill plus the test
// functions) the same way.
Subprocess StartTestProgram(const std::vector<std::string>& args, std::string* log_path = nullptr);

struct CommandResult {
  int exit_code = -1;
  std::string out;  // standard output
  std::string err;  // standard error
};
// Starts `taskmill-test-worker --database-url <db> worker --name <name>
// <extra...>` (a worker that also runs the test functions) and appends its
// log file to `logs`.
Subprocess StartWorker(const std::string& db, const std::string& name,
                       const std::vector<std::string>& extra, std::vector<std::string>* logs);

// Prints every log file to stderr (for a failed test).
void PrintLogs(const std::vector<std::string>& logs);

// Runs `taskmill <args...>` to completion (at most 60 s) and captures output.
CommandResult RunTaskmill(const std::vector<std::string>& args,
                          const std::vector<std::string>& env = {});

// Polls `done` every 20 ms until it is true or `limit` passes.
bool WaitFor(const std::function<bool()>& done, std::chrono::milliseconds limit);

// A TCP port on 127.0.0.1 that was free a moment ago (for a server a test
// starts; the kernel may hand it out again, so bind it soon).
int FreePort();

// The whole content of a file ("" if missing), for failure messages.
std::string ReadFile(const std::string& path);

}  // namespace taskmill::testing
