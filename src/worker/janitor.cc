#include "worker/janitor.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "worker/backoff.h"

namespace taskmill::worker {

namespace {
constexpr auto kQueryTimeout = std::chrono::seconds(30);
}

Janitor::Janitor(JanitorOptions options) : options_(options), rng_(std::random_device{}()) {
  next_round_ = Clock::now() + Jittered(rng_, options_.interval);
  eligible_at_ = Clock::now() + SecondsToDuration(options_.ttl);
}

void Janitor::Connected() { eligible_at_ = Clock::now() + SecondsToDuration(options_.ttl); }

bool Janitor::RunIfDue(pg::Connection& conn, const std::string& holder_app_id) {
  if (Clock::now() < next_round_) return false;
  // Every interval (at most 20% early): a dead worker is declared missing
  // within its ttl plus one interval.
  next_round_ = Clock::now() + Jittered(rng_, options_.interval, 0.8, 1.0);
  if (Clock::now() < eligible_at_) return false;
  auto deadline = DeadlineIn(kQueryTimeout);
  if (!store::TryLease(conn, "janitor", holder_app_id, options_.interval * 3, deadline)) {
    return false;
  }
  for (const auto& app : store::DeleteMissingApps(conn, deadline)) {
    spdlog::warn("declared {} {} ({}) missing: no heartbeat within its ttl", app.app_type, app.name,
                 app.id);
  }
  int finalized = 0;
  for (const auto& orphan : store::OrphanedTasks(conn, 100, deadline)) {
    auto final_state = store::FinalizeOrphan(conn, orphan.id, deadline);
    if (final_state) {
      spdlog::warn("task {} of a missing process is now {}", orphan.id,
                   TaskStateName(*final_state));
      ++finalized;
    }
  }
  // Let the tasks behind them through now (and wake idle workers for them),
  // not at the next poll.
  if (finalized > 0) store::ProcessReleases(conn, deadline);
  WatchHorizon(conn, deadline);
  return finalized > 0;
}

void Janitor::WatchHorizon(pg::Connection& conn, Deadline deadline) {
  if (options_.snapshot_warning <= 0) return;
  auto holders = store::HorizonHolders(conn, options_.snapshot_warning, deadline);
  auto describe = [](const store::HorizonHolder& h) {
    std::string who = h.pid > 0 ? fmt::format("{} pid {} (application_name \"{}\", state {})",
                                              h.kind, h.pid, h.name, h.state)
                                : fmt::format("{} \"{}\" ({})", h.kind, h.name, h.state);
    return h.age_seconds >= 0 ? fmt::format("{}, {:.0f}s old", who, h.age_seconds) : who;
  };
  if (horizon_episode_ && (holders.empty() || holders.front().key != horizon_episode_->key)) {
    spdlog::info("the old snapshot is gone: {}; vacuum can clean up again",
                 describe(*horizon_episode_));
    horizon_episode_.reset();
  }
  if (!holders.empty() && !horizon_episode_) {
    horizon_episode_ = holders.front();
    spdlog::warn(
        "old snapshot: {} holds back the database's xmin horizon ({} transactions): vacuum "
        "cannot remove dead rows of taskmill's tables while it lasts (docs/operations.md)",
        describe(*horizon_episode_), horizon_episode_->xmin_age);
  }
}

}  // namespace taskmill::worker
