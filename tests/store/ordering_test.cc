// The conflict and ordering rules, checked against a real PostgreSQL through
// the SQL functions (no worker processes here: the test plays the workers).
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <set>

#include "api/pulp_json.h"
#include "store/task_store.h"
#include "support/reference_model.h"
#include "support/taskmill_fixture.h"
#include "support/test_postgres.h"

namespace taskmill {
namespace {

using testing::Connect;
using testing::MigratedTestDatabase;

constexpr auto kTimeout = std::chrono::seconds(30);

class OrderingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    conninfo_ = MigratedTestDatabase();
    conn_ = Connect(conninfo_);
    store::AppRegistration reg;
    reg.app_type = "worker";
    reg.name = "test-worker";
    reg.functions = {"taskmill.noop"};
    app_ = store::RegisterApp(conn_, reg, DeadlineIn(kTimeout)).id;
  }

  std::string Dispatch(std::vector<std::string> exclusive, std::vector<std::string> shared = {}) {
    return testing::DispatchTask(conn_, testing::Request("taskmill.noop", nlohmann::json::object(),
                                                         std::move(exclusive), std::move(shared)));
  }

  // Ids of waiting tasks that are ready (unblocked), in seq order.
  std::vector<std::string> Ready() {
    auto res = conn_.Exec(
        "SELECT id FROM taskmill.task WHERE state = 'waiting' AND unblocked_at IS NOT NULL "
        "ORDER BY seq",
        DeadlineIn(kTimeout));
    std::vector<std::string> ids;
    for (int i = 0; i < res.rows(); ++i) ids.push_back(res.GetString(i, 0));
    return ids;
  }

  std::optional<Task> Claim() {
    auto c = store::Claim(conn_, app_, false, DeadlineIn(kTimeout));
    EXPECT_TRUE(c.ok());
    return c.ok() ? *c : std::nullopt;
  }

  void Finish(const std::string& id) {
    auto st = store::FinishTask(conn_, id, app_, TaskState::kCompleted, nullptr, nullptr,
                                DeadlineIn(kTimeout));
    ASSERT_TRUE(st.has_value());
    // What the next claim does first, after the finish committed.
    store::ProcessReleases(conn_, DeadlineIn(kTimeout));
  }

  std::string conninfo_;
  pg::Connection conn_;
  std::string app_;
};

// Pulp: one running plus five exclusive and five shared waiting on one
// resource: nothing else may start.
TEST_F(OrderingTest, OneRunningBlocksExclusiveAndSharedWaiters) {
  Dispatch({"R"});
  auto running = Claim();
  ASSERT_TRUE(running);
  for (int i = 0; i < 5; ++i) Dispatch({"R"});
  for (int i = 0; i < 5; ++i) Dispatch({}, {"R"});
  EXPECT_TRUE(Ready().empty());
  EXPECT_FALSE(Claim().has_value());
}

TEST_F(OrderingTest, TwoExclusiveLanesRunTogether) {
  for (int i = 0; i < 3; ++i) {
    Dispatch({"A"});
    Dispatch({"B"});
  }
  EXPECT_EQ(Ready().size(), 2u);
}

TEST_F(OrderingTest, SharedHoldersRunTogether) {
  for (int i = 0; i < 5; ++i) Dispatch({}, {"R"});
  EXPECT_EQ(Ready().size(), 5u);
}

// T1 holds A,B; T2 wants B,C; T3 wants C: T3 waits for T2 although C is free.
TEST_F(OrderingTest, NoOvertakingThroughIndirectConflict) {
  auto t1 = Dispatch({"A", "B"});
  auto t2 = Dispatch({"B", "C"});
  auto t3 = Dispatch({"C"});
  EXPECT_EQ(Ready(), std::vector<std::string>{t1});
  auto c1 = Claim();
  ASSERT_TRUE(c1);
  EXPECT_EQ(c1->id, t1);
  Finish(t1);
  EXPECT_EQ(Ready(), std::vector<std::string>{t2});
  auto c2 = Claim();
  ASSERT_TRUE(c2);
  Finish(t2);
  EXPECT_EQ(Ready(), std::vector<std::string>{t3});
}

TEST_F(OrderingTest, ExclusiveWaitsForAllEarlierSharedAndBlocksLaterShared) {
  auto s1 = Dispatch({}, {"R"});
  auto s2 = Dispatch({}, {"R"});
  auto x = Dispatch({"R"});
  auto s3 = Dispatch({}, {"R"});
  EXPECT_EQ(Ready(), (std::vector<std::string>{s1, s2}));
  auto a = Claim();
  auto b = Claim();
  ASSERT_TRUE(a && b);
  Finish(a->id);
  EXPECT_TRUE(Ready().empty());  // x still waits for the other shared holder
  Finish(b->id);
  EXPECT_EQ(Ready(), std::vector<std::string>{x});
  auto cx = Claim();
  Finish(cx->id);
  EXPECT_EQ(Ready(), std::vector<std::string>{s3});
}

TEST_F(OrderingTest, CancelOfWaitingTaskPassesResourcesOnWithoutOvertaking) {
  auto t1 = Dispatch({"A"});
  auto t2 = Dispatch({"A"});
  auto t3 = Dispatch({"A"});
  auto c1 = Claim();
  ASSERT_TRUE(c1);
  auto st = store::CancelTask(conn_, t2, DeadlineIn(kTimeout));
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(*st, TaskState::kCanceled);
  store::ProcessReleases(conn_, DeadlineIn(kTimeout));
  EXPECT_TRUE(Ready().empty());  // t1 still runs
  Finish(t1);
  EXPECT_EQ(Ready(), std::vector<std::string>{t3});
}

TEST_F(OrderingTest, CancelOfHeadWaitingTaskUnblocksNext) {
  auto t1 = Dispatch({}, {"A"});  // runs
  auto t2 = Dispatch({"A", "B"});
  auto t3 = Dispatch({"B"});
  ASSERT_TRUE(Claim());
  EXPECT_TRUE(Ready().empty());
  ASSERT_TRUE(store::CancelTask(conn_, t2, DeadlineIn(kTimeout)).ok());
  store::ProcessReleases(conn_, DeadlineIn(kTimeout));
  EXPECT_EQ(Ready(), std::vector<std::string>{t3});
  (void)t1;
}

TEST_F(OrderingTest, FinishedTaskCannotBeCanceledAndUnknownIsNotFound) {
  auto t = Dispatch({"A"});
  auto c = Claim();
  ASSERT_TRUE(c);
  Finish(t);
  auto st = store::CancelTask(conn_, t, DeadlineIn(kTimeout));
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, ErrorCode::kConflict);
  auto task = store::GetTask(conn_, t, DeadlineIn(kTimeout));
  ASSERT_TRUE(task.ok());
  EXPECT_EQ(task->state, TaskState::kCompleted);
  auto unknown =
      store::CancelTask(conn_, "00000000-0000-0000-0000-000000000000", DeadlineIn(kTimeout));
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().code, ErrorCode::kNotFound);
  auto malformed = store::CancelTask(conn_, "not-a-uuid", DeadlineIn(kTimeout));
  ASSERT_FALSE(malformed.ok());
  EXPECT_EQ(malformed.error().code, ErrorCode::kInvalidArgument);
}

TEST_F(OrderingTest, CancelRunningThenFinishEndsCanceledOnce) {
  auto t = Dispatch({"A"});
  auto c = Claim();
  ASSERT_TRUE(c);
  auto st = store::CancelTask(conn_, t, DeadlineIn(kTimeout));
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(*st, TaskState::kCanceling);
  auto final_state =
      store::FinishTask(conn_, t, app_, TaskState::kCompleted, 42, nullptr, DeadlineIn(kTimeout));
  ASSERT_TRUE(final_state.has_value());
  EXPECT_EQ(*final_state, TaskState::kCanceled);
  auto task = store::GetTask(conn_, t, DeadlineIn(kTimeout));
  EXPECT_TRUE(task->result.is_null());
  EXPECT_TRUE(task->started_at.has_value());
  EXPECT_TRUE(task->finished_at.has_value());
  // A second finish (a duplicate write) changes nothing.
  EXPECT_FALSE(
      store::FinishTask(conn_, t, app_, TaskState::kCompleted, 1, nullptr, DeadlineIn(kTimeout))
          .has_value());
}

TEST_F(OrderingTest, TaskGroupCancelCancelsEveryUnfinishedTask) {
  auto group = store::CreateTaskGroup(conn_, "g", DeadlineIn(kTimeout));
  ASSERT_TRUE(group.ok());
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    DispatchRequest req;
    req.name = "taskmill.noop";
    req.exclusive_resources = {"G"};
    req.task_group = *group;
    ids.push_back(store::DispatchTask(conn_, req, std::nullopt, DeadlineIn(kTimeout))->id);
  }
  ASSERT_TRUE(Claim());
  auto n = store::CancelTaskGroup(conn_, *group, DeadlineIn(kTimeout));
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 3);
  EXPECT_EQ(store::GetTask(conn_, ids[0], DeadlineIn(kTimeout))->state, TaskState::kCanceling);
  EXPECT_EQ(store::GetTask(conn_, ids[1], DeadlineIn(kTimeout))->state, TaskState::kCanceled);
  EXPECT_EQ(store::GetTask(conn_, ids[2], DeadlineIn(kTimeout))->state, TaskState::kCanceled);
}

TEST_F(OrderingTest, BadInputIsRefusedAndWritesNothing) {
  auto try_dispatch = [&](DispatchRequest req) {
    return store::DispatchTask(conn_, req, std::nullopt, DeadlineIn(kTimeout));
  };
  DispatchRequest unknown;
  unknown.name = "no.such.function";
  auto r1 = try_dispatch(unknown);
  ASSERT_FALSE(r1.ok());
  EXPECT_EQ(r1.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(r1.error().message.find("unknown task function"), std::string::npos);

  DispatchRequest bad_args;
  bad_args.name = "taskmill.noop";
  bad_args.args = nlohmann::json::object();
  EXPECT_FALSE(try_dispatch(bad_args).ok());

  DispatchRequest bad_kwargs;
  bad_kwargs.name = "taskmill.noop";
  bad_kwargs.kwargs = nlohmann::json::array();
  EXPECT_FALSE(try_dispatch(bad_kwargs).ok());

  DispatchRequest empty_resource;
  empty_resource.name = "taskmill.noop";
  empty_resource.exclusive_resources = {""};
  auto r4 = try_dispatch(empty_resource);
  ASSERT_FALSE(r4.ok());
  EXPECT_NE(r4.error().message.find("empty"), std::string::npos);

  DispatchRequest long_resource;
  long_resource.name = "taskmill.noop";
  long_resource.shared_resources = {std::string(513, 'x')};
  auto r5 = try_dispatch(long_resource);
  ASSERT_FALSE(r5.ok());
  EXPECT_NE(r5.error().message.find("too long"), std::string::npos);

  DispatchRequest control;
  control.name = "taskmill.noop";
  control.exclusive_resources = {"a\nb"};
  EXPECT_FALSE(try_dispatch(control).ok());

  DispatchRequest not_deferred;
  not_deferred.name = "taskmill.noop";
  not_deferred.deferred = false;
  EXPECT_FALSE(try_dispatch(not_deferred).ok());

  auto count = conn_.Exec("SELECT count(*) FROM taskmill.task", DeadlineIn(kTimeout));
  EXPECT_EQ(count.GetInt(0, 0), 0);
  auto rows = conn_.Exec("SELECT count(*) FROM taskmill.task_resource", DeadlineIn(kTimeout));
  EXPECT_EQ(rows.GetInt(0, 0), 0);
}

TEST_F(OrderingTest, DispatchRefusesSnapshotIsolation) {
  conn_.Exec("BEGIN ISOLATION LEVEL REPEATABLE READ", DeadlineIn(kTimeout));
  try {
    conn_.Exec("SELECT taskmill.dispatch('taskmill.noop')", DeadlineIn(kTimeout));
    FAIL() << "dispatch in REPEATABLE READ must be refused";
  } catch (const pg::QueryError& e) {
    EXPECT_EQ(e.sqlstate(), "TM400");
    EXPECT_NE(std::string(e.what()).find("READ COMMITTED"), std::string::npos);
  }
  conn_.Exec("ROLLBACK", DeadlineIn(kTimeout));
}

TEST_F(OrderingTest, SqlDispatchInsideCallerTransaction) {
  conn_.Exec("BEGIN", DeadlineIn(kTimeout));
  auto res = conn_.Exec(
      "SELECT taskmill.dispatch('taskmill.echo', '[1]', '{\"k\": 2}', ARRAY['x'], ARRAY['y'])",
      DeadlineIn(kTimeout));
  std::string id = res.GetString(0, 0);
  conn_.Exec("ROLLBACK", DeadlineIn(kTimeout));
  EXPECT_FALSE(store::GetTask(conn_, id, DeadlineIn(kTimeout)).ok());
  auto res2 = conn_.Exec("SELECT taskmill.dispatch('taskmill.echo', '[1]', '{}', ARRAY['x'])",
                         DeadlineIn(kTimeout));
  auto task = store::GetTask(conn_, res2.GetString(0, 0), DeadlineIn(kTimeout));
  ASSERT_TRUE(task.ok());
  EXPECT_EQ(task->exclusive_resources, std::vector<std::string>{"x"});
  auto json = api::TaskToJson(*task);
  EXPECT_EQ(json["reserved_resources_record"], nlohmann::json::array({"x"}));
  EXPECT_EQ(json["state"], "waiting");
  EXPECT_EQ(json["pulp_href"], "/pulp/api/v3/tasks/" + task->id + "/");
}

// A dispatch that shares no resource with an open (uncommitted) dispatch does
// not wait for it; one that conflicts does.
TEST_F(OrderingTest, OnlyConflictingDispatchesWaitForEachOther) {
  auto other = Connect(conninfo_);
  other.Exec("BEGIN", DeadlineIn(kTimeout));
  other.Exec("SELECT taskmill.dispatch('taskmill.noop', '[]', '{}', ARRAY['A'])",
             DeadlineIn(kTimeout));
  // Unrelated resource: goes through at once.
  DispatchRequest free_req;
  free_req.name = "taskmill.noop";
  free_req.exclusive_resources = {"B"};
  EXPECT_TRUE(
      store::DispatchTask(conn_, free_req, std::nullopt, DeadlineIn(std::chrono::seconds(5))).ok());
  // Same resource: waits for the open transaction's lock.
  DispatchRequest conflicting = free_req;
  conflicting.exclusive_resources = {"A"};
  EXPECT_THROW(store::DispatchTask(conn_, conflicting, std::nullopt,
                                   DeadlineIn(std::chrono::milliseconds(300))),
               pg::TimeoutError);
  other.Exec("COMMIT", DeadlineIn(kTimeout));
  auto after = store::DispatchTask(conn_, conflicting, std::nullopt, DeadlineIn(kTimeout));
  ASSERT_TRUE(after.ok());
  EXPECT_FALSE(after->ready);  // behind the first one
}

using testing::ModelReady;
using testing::ModelTask;

TEST_F(OrderingTest, RandomWorkloadMatchesReferenceModel) {
  std::mt19937 rng(12345);
  const std::vector<std::string> resources = {"r0", "r1", "r2", "r3", "r4"};
  std::vector<ModelTask> model;
  for (int step = 0; step < 400; ++step) {
    int action = static_cast<int>(rng() % 10);
    if (action < 5 || model.empty()) {
      ModelTask t;
      int n = 1 + static_cast<int>(rng() % 3);
      for (int i = 0; i < n; ++i) {
        const auto& r = resources[rng() % resources.size()];
        (rng() % 2 ? t.x : t.s).insert(r);
      }
      for (const auto& r : t.x) t.s.erase(r);
      t.id = Dispatch({t.x.begin(), t.x.end()}, {t.s.begin(), t.s.end()});
      model.push_back(t);
    } else if (action < 8) {
      auto c = Claim();
      if (c) {
        for (auto& t : model) {
          if (t.id == c->id) t.running = true;
        }
      }
    } else if (action < 9) {
      std::vector<ModelTask*> running;
      for (auto& t : model) {
        if (t.running && !t.finished) running.push_back(&t);
      }
      if (!running.empty()) {
        auto* t = running[rng() % running.size()];
        Finish(t->id);
        t->finished = true;
      }
    } else {
      std::vector<ModelTask*> waiting;
      for (auto& t : model) {
        if (!t.running && !t.finished) waiting.push_back(&t);
      }
      if (!waiting.empty()) {
        auto* t = waiting[rng() % waiting.size()];
        ASSERT_TRUE(store::CancelTask(conn_, t->id, DeadlineIn(kTimeout)).ok());
        store::ProcessReleases(conn_, DeadlineIn(kTimeout));
        t->finished = true;
      }
    }
    // The database's ready-or-running set equals the model's ready set.
    std::set<std::string> expected = ModelReady(model);
    auto res = conn_.Exec(
        "SELECT id FROM taskmill.task WHERE (state = 'waiting' AND unblocked_at IS NOT NULL) "
        "OR state = 'running'",
        DeadlineIn(kTimeout));
    std::set<std::string> actual;
    for (int i = 0; i < res.rows(); ++i) actual.insert(res.GetString(i, 0));
    ASSERT_EQ(actual, expected) << "at step " << step;
  }
}

}  // namespace
}  // namespace taskmill
