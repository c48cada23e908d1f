// Client: the C++ door to a taskmill database, for programs that dispatch,
// inspect or cancel tasks.
//
// A Client owns one database connection and is used by one thread at a time
// (make one per thread). It reconnects on the next call after the connection
// broke. Expected failures (bad input, unknown ids, finished tasks) are
// Result errors; database failures are thrown as taskmill::DatabaseError (or
// its subclasses ConnectionError, TimeoutError), whose retryable() says
// whether trying again may help (taskmill/errors.h).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "taskmill/deadline.h"
#include "taskmill/dispatch.h"
#include "taskmill/errors.h"
#include "taskmill/result.h"
#include "taskmill/task.h"

namespace taskmill {

class Client {
 public:
  // `database_url`: a postgresql:// URL or a libpq conninfo string. Connects
  // at once; throws ConnectionError if the server cannot be reached by
  // the deadline. Fails with kSchemaMismatch if the schema is not this
  // program's (run `taskmill migrate`).
  static Result<Client> Connect(const std::string& database_url, Deadline deadline);

  Client(Client&&) noexcept;
  Client& operator=(Client&&) noexcept;
  ~Client();

  // Creates a task (see include/taskmill/dispatch.h for the contract).
  // kInvalidArgument for bad input (args not a JSON array, kwargs not a JSON
  // object, an unknown function, bad resource names); nothing is created.
  Result<DispatchOutcome> Dispatch(const DispatchRequest& request, Deadline deadline);
  // Creates many tasks in one statement and one round trip, with exactly the
  // semantics of calling Dispatch for each in order (see
  // include/taskmill/dispatch.h). Returns the ids in request order. All or
  // nothing: an invalid request fails the whole batch with kInvalidArgument,
  // its message starting "tasks[i]:" (i from 0), and nothing is created.
  // Every request must have deferred = true; at most 10,000 per call. Any
  // number of distinct resources is fine (no lock per resource is held for
  // large batches; see migrations/0004_dispatch_many.sql).
  Result<std::vector<std::string>> DispatchMany(const std::vector<DispatchRequest>& requests,
                                                Deadline deadline);
  // Cancels a task: returns kCanceled (it was waiting; the tasks queued
  // behind it on its resources are let through before this returns) or
  // kCanceling (its owner is stopping it). kNotFound for an unknown id,
  // kInvalidArgument for a malformed one, kConflict for a finished task
  // (nothing changes).
  Result<TaskState> Cancel(const std::string& task_id, Deadline deadline);
  // Cancels every unfinished task of a group and lets through what queued
  // behind them; returns how many were canceled or are being canceled.
  Result<int> CancelGroup(const std::string& group_id, Deadline deadline);
  Result<std::string> CreateGroup(const std::string& description, Deadline deadline);
  // kNotFound for an unknown id, kInvalidArgument for a malformed one.
  Result<Task> Get(const std::string& task_id, Deadline deadline);
  // Newest first, at most `limit` (<= 0: all); empty `states` means all
  // states.
  std::vector<Task> List(const std::vector<TaskState>& states, int limit, Deadline deadline);

 private:
  class Impl;
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace taskmill
