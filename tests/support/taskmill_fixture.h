// Helpers for tests that need taskmill's schema or its real processes.
//
// Everything runs against the throwaway PostgreSQL of the test program
// (tests/support/test_postgres.h). Processes started here are owned by the
// returned Subprocess objects and killed when those go away.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/subprocess.h"
#include "pg/connection.h"
#include "taskmill/dispatch.h"
#include "taskmill/task.h"

namespace taskmill::testing {

// A new database with taskmill's schema, the built-in functions and the
// test functions (support/test_functions.h) registered for dispatch.
std::string MigratedTestDatabase();

pg::Connection Connect(const std::string& conninfo);

// A request for `name` with these kwargs and exclusive and shared resources.
DispatchRequest Request(const std::string& name, nlohmann::json kwargs = nlohmann::json::object(),
                        std::vector<std::string> exclusive = {},
                        std::vector<std::string> shared = {});

// Dispatches through the store (not immediately run here); returns the
// task's id, or "" after recording a test failure with the store's message
// if the dispatch was refused.
std::string DispatchTask(pg::Connection& conn, const DispatchRequest& request);

// The task as the store reads it; throws std::runtime_error (which fails
// the test) if the store cannot read it.
Task GetTask(pg::Connection& conn, const std::string& id);

// Poll the task until it is in state `state` (or in a final state), or
// until `limit` passes; false then.
bool WaitForState(pg::Connection& conn, const std::string& id, TaskState state,
                  std::chrono::milliseconds limit = std::chrono::seconds(30));
bool WaitForFinal(pg::Connection& conn, const std::string& id,
                  std::chrono::milliseconds limit = std::chrono::seconds(30));

// The integer in the first column of the first row of `sql`'s answer.
int64_t QueryInt(pg::Connection& conn, const std::string& sql);

// The journal test.sleep keeps (kwargs "journal": a path): task id -> the
// pids that ran it, in order.
std::map<std::string, std::vector<int>> ReadJournal(const std::string& path);

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
