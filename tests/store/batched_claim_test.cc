// Claims and outcomes in batches (taskmill.claim_many, taskmill.finish_many,
// store::FinishAndClaimMany): what a worker with several slots sends.
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <set>

#include "store/task_store.h"
#include "support/reference_model.h"
#include "support/taskmill_fixture.h"
#include "support/test_postgres.h"

namespace taskmill {
namespace {

using testing::Connect;
using testing::MigratedTestDatabase;
using testing::ModelReady;
using testing::ModelTask;

constexpr auto kTimeout = std::chrono::seconds(60);

DispatchRequest Noop(std::vector<std::string> exclusive, std::vector<std::string> shared = {}) {
  DispatchRequest req;
  req.name = "taskmill.noop";
  req.exclusive_resources = std::move(exclusive);
  req.shared_resources = std::move(shared);
  return req;
}

class BatchedClaimTest : public ::testing::Test {
 protected:
  void SetUp() override {
    conninfo_ = MigratedTestDatabase();
    conn_ = Connect(conninfo_);
    app_ = Register("slots-1");
  }

  std::string Register(const std::string& name) {
    store::AppRegistration reg;
    reg.app_type = "worker";
    reg.name = name;
    reg.functions = {"taskmill.noop"};
    return store::RegisterApp(conn_, reg, DeadlineIn(kTimeout)).id;
  }

  std::vector<std::string> Dispatch(const std::vector<DispatchRequest>& requests) {
    auto ids = store::DispatchMany(conn_, requests, DeadlineIn(kTimeout));
    EXPECT_TRUE(ids.ok()) << (ids.ok() ? "" : ids.error().message);
    return ids.ok() ? *ids : std::vector<std::string>{};
  }

  store::FinishAndClaimManyResult Step(const std::string& app,
                                       const std::vector<store::TaskOutcome>& outcomes, int claim,
                                       bool idle = false) {
    auto r = store::FinishAndClaimMany(conn_, app, outcomes, claim, idle, DeadlineIn(kTimeout));
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
    return r.ok() ? *r : store::FinishAndClaimManyResult{};
  }

  static std::vector<store::TaskOutcome> Completed(const std::vector<Task>& tasks) {
    std::vector<store::TaskOutcome> out;
    for (const auto& t : tasks)
      out.push_back({t.id, TaskState::kCompleted, {{"ok", true}}, nullptr});
    return out;
  }

  int64_t Count(const std::string& sql) {
    return conn_.Exec(sql, DeadlineIn(kTimeout)).GetInt(0, 0);
  }

  std::string conninfo_;
  pg::Connection conn_;
  std::string app_;
};

TEST_F(BatchedClaimTest, ClaimsOnlyReadyTasksUpToTheLimit) {
  // A chain of five on A, three sharing S, four free.
  std::vector<DispatchRequest> batch;
  for (int i = 0; i < 5; ++i) batch.push_back(Noop({"A"}));
  for (int i = 0; i < 3; ++i) batch.push_back(Noop({}, {"S"}));
  for (int i = 0; i < 4; ++i) batch.push_back(Noop({"free-" + std::to_string(i)}));
  auto ids = Dispatch(batch);
  auto first = Step(app_, {}, 5);
  EXPECT_EQ(first.claimed.size(), 5u);
  auto second = Step(app_, {}, 100);
  // 1 head of A + 3 shared + 4 free = 8 ready in all.
  EXPECT_EQ(first.claimed.size() + second.claimed.size(), 8u);
  std::set<std::string> claimed;
  for (const auto* part : {&first, &second}) {
    for (const auto& t : part->claimed) {
      claimed.insert(t.id);
      EXPECT_EQ(t.state, TaskState::kRunning);
    }
  }
  EXPECT_TRUE(claimed.count(ids[0]));
  for (int i = 1; i < 5; ++i) EXPECT_FALSE(claimed.count(ids[i])) << i;
  EXPECT_EQ(Count("SELECT count(*) FROM taskmill.task WHERE state = 'running'"), 8);
}

TEST_F(BatchedClaimTest, OutcomesAreRecordedAndTheReleasesHappenInALaterTransaction) {
  auto ids = Dispatch({Noop({"A"}), Noop({"A"}), Noop({"B"})});
  auto claimed = Step(app_, {}, 10).claimed;
  ASSERT_EQ(claimed.size(), 2u);  // ids[0] and ids[2]
  std::vector<store::TaskOutcome> outcomes = Completed(claimed);
  outcomes[1].state = TaskState::kFailed;
  outcomes[1].result = nullptr;
  outcomes[1].error = {{"description", "boom"}};
  auto step = Step(app_, outcomes, 10);
  ASSERT_EQ(step.finished.size(), 2u);
  EXPECT_EQ(step.finished[0], TaskState::kCompleted);
  EXPECT_EQ(step.finished[1], TaskState::kFailed);
  // The second A was not ready in that transaction's snapshot...
  EXPECT_TRUE(step.claimed.empty());
  // ...and the next claim examines the release and takes it.
  auto next = Step(app_, {}, 10).claimed;
  ASSERT_EQ(next.size(), 1u);
  EXPECT_EQ(next[0].id, ids[1]);
  auto failed = store::GetTask(conn_, outcomes[1].task_id, DeadlineIn(kTimeout));
  ASSERT_TRUE(failed.ok());
  EXPECT_EQ(failed->error, nlohmann::json({{"description", "boom"}}));
  auto done = store::GetTask(conn_, outcomes[0].task_id, DeadlineIn(kTimeout));
  EXPECT_EQ(done->result, nlohmann::json({{"ok", true}}));
  EXPECT_EQ(Count("SELECT count(*) FROM taskmill.task_resource"), 1);  // the running second A
}

TEST_F(BatchedClaimTest, ATaskNoLongerOursIsReportedAndTheOthersAreRecorded) {
  auto other = Register("slots-2");
  Dispatch({Noop({"x"}), Noop({"y"})});
  auto mine = Step(app_, {}, 1).claimed;
  auto theirs = Step(other, {}, 1).claimed;
  ASSERT_EQ(mine.size(), 1u);
  ASSERT_EQ(theirs.size(), 1u);
  // A cancel while running: ends canceled whatever we report.
  ASSERT_TRUE(store::CancelTask(conn_, mine[0].id, DeadlineIn(kTimeout)).ok());
  auto step = Step(app_,
                   {{mine[0].id, TaskState::kCompleted, nullptr, nullptr},
                    {theirs[0].id, TaskState::kCompleted, nullptr, nullptr}},
                   0);
  ASSERT_EQ(step.finished.size(), 2u);
  EXPECT_EQ(step.finished[0], TaskState::kCanceled);
  EXPECT_EQ(step.finished[1], std::nullopt);  // the other worker's: untouched
  EXPECT_EQ(store::TaskStateOf(conn_, theirs[0].id, DeadlineIn(kTimeout)), TaskState::kRunning);
}

TEST_F(BatchedClaimTest, AFencedWorkerWritesNothing) {
  Dispatch({Noop({"x"}), Noop({"y"})});
  auto mine = Step(app_, {}, 1).claimed;
  ASSERT_EQ(mine.size(), 1u);
  conn_.Exec("DELETE FROM taskmill.app WHERE id = $1", pg::Params().Add(app_),
             DeadlineIn(kTimeout));
  auto r = store::FinishAndClaimMany(conn_, app_, Completed(mine), 5, true, DeadlineIn(kTimeout));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kFenced);
  // The outcome went with the rolled-back transaction; the janitor owns it.
  EXPECT_EQ(store::TaskStateOf(conn_, mine[0].id, DeadlineIn(kTimeout)), TaskState::kRunning);
  EXPECT_EQ(Count("SELECT count(*) FROM taskmill.task WHERE state = 'waiting'"), 1);
}

TEST_F(BatchedClaimTest, TheIdleListHoldsAProcessWithFreeSlotsOnly) {
  auto on_list = [&] {
    return Count("SELECT count(*) FROM taskmill.idle_worker WHERE app_id = '" + app_ + "'");
  };
  Dispatch({Noop({"x"})});
  Step(app_, {}, 4, /*idle=*/true);
  EXPECT_EQ(on_list(), 1);  // one task for four slots
  Dispatch({Noop({"y"}), Noop({"z"}), Noop({"w"})});
  auto full = Step(app_, {}, 3, /*idle=*/true);
  EXPECT_EQ(full.claimed.size(), 3u);
  EXPECT_EQ(on_list(), 0);  // every slot busy
  auto bad = store::FinishAndClaimMany(conn_, app_, {}, 0, false, DeadlineIn(kTimeout));
  EXPECT_TRUE(bad.ok());  // nothing to do is no error
  auto too_many = store::FinishAndClaimMany(conn_, app_, {}, 1001, false, DeadlineIn(kTimeout));
  ASSERT_FALSE(too_many.ok());
  EXPECT_EQ(too_many.error().code, ErrorCode::kInvalidArgument);
  for (const char* bad_outcomes :
       {R"({"id": "x"})", R"([5])", R"([{"id": "nope", "state": "completed"}])",
        R"([{"id": "8d5b1a3e-0000-4000-8000-000000000000", "state": "running"}])"}) {
    try {
      conn_.Exec("SELECT taskmill.finish_many($1::uuid, $2::jsonb)",
                 pg::Params().Add(app_).Add(std::string(bad_outcomes)), DeadlineIn(kTimeout));
      ADD_FAILURE() << bad_outcomes << " was accepted";
    } catch (const pg::QueryError& e) {
      EXPECT_EQ(e.sqlstate(), "TM400") << bad_outcomes;
    }
  }
}

// Several slot-holding "workers" (one connection each, as a worker has),
// random claim sizes and random subsets of their running tasks finished in
// each step, against Pulp's reference scan: the running set never holds two
// conflicting tasks, and ready+running equals the model's ready set.

TEST_F(BatchedClaimTest, RandomSlotsNeverRunConflictingTasksAndMatchTheModel) {
  std::mt19937 rng(::testing::UnitTest::GetInstance()->random_seed() + 99);
  std::vector<std::string> apps = {app_, Register("slots-2"), Register("slots-3")};
  std::map<std::string, std::vector<Task>> running;  // per app
  std::vector<ModelTask> model;
  const std::vector<std::string> resources = {"r0", "r1", "r2", "r3", "r4", "r5"};
  for (int step = 0; step < 200; ++step) {
    if (rng() % 3 == 0 || model.empty()) {
      std::vector<DispatchRequest> batch;
      std::vector<ModelTask> added;
      int n = 1 + static_cast<int>(rng() % 8);
      for (int k = 0; k < n; ++k) {
        ModelTask t;
        for (int j = 0, m = static_cast<int>(rng() % 3); j < m; ++j) {
          (rng() % 2 ? t.x : t.s).insert(resources[rng() % resources.size()]);
        }
        for (const auto& r : t.x) t.s.erase(r);
        batch.push_back(Noop({t.x.begin(), t.x.end()}, {t.s.begin(), t.s.end()}));
        added.push_back(t);
      }
      auto ids = Dispatch(batch);
      for (size_t k = 0; k < ids.size(); ++k) {
        added[k].id = ids[k];
        model.push_back(added[k]);
      }
    }
    const auto& app = apps[rng() % apps.size()];
    auto& mine = running[app];
    std::vector<store::TaskOutcome> outcomes;
    std::vector<Task> keep;
    for (const auto& t : mine) {
      if (rng() % 2) {
        outcomes.push_back({t.id, TaskState::kCompleted, nullptr, nullptr});
        for (auto& m : model) {
          if (m.id == t.id) m.finished = true;
        }
      } else {
        keep.push_back(t);
      }
    }
    int slots = 4;
    int free_slots = slots - static_cast<int>(keep.size());
    auto r = Step(app, outcomes, free_slots, true);
    for (const auto& f : r.finished) ASSERT_EQ(f, TaskState::kCompleted);
    keep.insert(keep.end(), r.claimed.begin(), r.claimed.end());
    mine = keep;

    // No two running tasks conflict.
    auto conflicts = Count(
        "SELECT count(*) FROM taskmill.task a JOIN taskmill.task b ON a.seq < b.seq "
        "WHERE a.state = 'running' AND b.state = 'running' AND "
        "(a.exclusive_resources && (b.exclusive_resources || b.shared_resources) OR "
        " b.exclusive_resources && a.shared_resources)");
    ASSERT_EQ(conflicts, 0) << "at step " << step;
    // Releases are examined by later transactions: run one as a claim would.
    store::ProcessReleases(conn_, DeadlineIn(kTimeout));
    auto res = conn_.Exec(
        "SELECT id FROM taskmill.task WHERE (state = 'waiting' AND unblocked_at IS NOT NULL) "
        "OR state = 'running'",
        DeadlineIn(kTimeout));
    std::set<std::string> actual;
    for (int i = 0; i < res.rows(); ++i) actual.insert(res.GetString(i, 0));
    ASSERT_EQ(actual, ModelReady(model)) << "at step " << step;
  }
}

}  // namespace
}  // namespace taskmill
