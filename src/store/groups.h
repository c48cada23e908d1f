// Task groups as the store reads them: a group, how many of its tasks are in
// each state, and its tasks.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "pg/connection.h"
#include "taskmill/deadline.h"
#include "taskmill/result.h"
#include "taskmill/task.h"

namespace taskmill::store {

struct GroupSummary {
  std::string id;
  std::string description;
  bool all_tasks_dispatched = false;
  int64_t waiting = 0, running = 0, completed = 0, failed = 0, canceling = 0, canceled = 0;
  std::vector<Task> tasks;  // in dispatch (seq) order
};

// One group with its counts and tasks; kNotFound ("task group <id> not
// found") if there is none.
Result<GroupSummary> GetGroup(pg::Connection& conn, const std::string& id, Deadline deadline);

struct GroupPage {
  int64_t count = 0;  // every group
  std::vector<GroupSummary> groups;
};
// Groups newest first, paged in SQL, each with its counts and tasks (three
// statements, whatever the page size).
GroupPage ListGroups(pg::Connection& conn, int limit, int offset, Deadline deadline);

}  // namespace taskmill::store
