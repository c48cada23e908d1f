// The janitor: declares processes that stopped heartbeating missing,
// finalises the tasks they held (so that their resources move on), and
// watches for old snapshots that hold back vacuum.
//
// Any worker may take part; one at a time does the work, the holder of the
// lease row "janitor" (it lasts three intervals and is renewed each run). A
// worker that does not hold it loses its attempt without writing anything.
// The janitor is driven by its owner's loop: Due() says when, Run() does one
// round on the owner's connection.
#pragma once

#include <optional>
#include <random>
#include <string>

#include "pg/connection.h"
#include "store/task_store.h"
#include "taskmill/deadline.h"

namespace taskmill::worker {

struct JanitorOptions {
  double interval = 5.0;  // seconds between rounds (at most 20% early)
  // Not before the owner has been connected this long: declaring others
  // dead needs our own view of time to be continuous for a whole ttl.
  double ttl = 30.0;
  // Warn when the xmin horizon is held back longer than this; 0: never.
  double snapshot_warning = 60.0;
};

class Janitor {
 public:
  explicit Janitor(JanitorOptions options);

  // The owner (re)connected to the database: start counting eligibility.
  void Connected();
  // When the next round is due.
  Deadline next_round() const { return next_round_; }
  // One round if due (and eligible and the lease is won). Returns true if
  // tasks of missing processes were finalised: tasks behind them may have
  // become ready. Throws pg::Error as the store does.
  bool RunIfDue(pg::Connection& conn, const std::string& holder_app_id);

 private:
  void WatchHorizon(pg::Connection& conn, Deadline deadline);

  JanitorOptions options_;
  std::mt19937_64 rng_;
  Deadline next_round_;
  Deadline eligible_at_;
  std::optional<store::HorizonHolder> horizon_episode_;
};

}  // namespace taskmill::worker
