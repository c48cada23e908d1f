// Batched dispatch (taskmill.dispatch_many, store::DispatchMany,
// Client::DispatchMany): the same semantics as one dispatch per element in
// order, all or nothing, and no lock per resource for large batches.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <set>

#include "store/task_store.h"
#include "support/reference_model.h"
#include "support/taskmill_fixture.h"
#include "support/test_postgres.h"
#include "taskmill/client.h"

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

class DispatchManyTest : public ::testing::Test {
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

  std::vector<std::string> Batch(const std::vector<DispatchRequest>& requests) {
    auto out = store::DispatchMany(conn_, requests, DeadlineIn(kTimeout));
    EXPECT_TRUE(out.ok()) << (out.ok() ? "" : out.error().message);
    return out.ok() ? *out : std::vector<std::string>{};
  }

  int64_t Count(const char* sql) { return conn_.Exec(sql, DeadlineIn(kTimeout)).GetInt(0, 0); }

  bool IsReady(pg::Connection& conn, const std::string& id) {
    return conn
        .Exec("SELECT unblocked_at IS NOT NULL FROM taskmill.task WHERE id = $1",
              pg::Params().Add(id), DeadlineIn(kTimeout))
        .GetBool(0, 0);
  }

  std::string conninfo_;
  pg::Connection conn_;
  std::string app_;
};

TEST_F(DispatchManyTest, ReturnsIdsInOrderWithConsecutivePlacesInLine) {
  auto ids = Batch({Noop({"A"}), Noop({"A"}), Noop({}, {"A"}), Noop({"B"}), Noop({})});
  ASSERT_EQ(ids.size(), 5u);
  std::vector<int64_t> seqs;
  for (const auto& id : ids) {
    seqs.push_back(conn_
                       .Exec("SELECT seq FROM taskmill.task WHERE id = $1", pg::Params().Add(id),
                             DeadlineIn(kTimeout))
                       .GetInt(0, 0));
  }
  for (size_t i = 1; i < seqs.size(); ++i) EXPECT_EQ(seqs[i], seqs[i - 1] + 1);
  // Within the batch: the second exclusive A waits for the first, the shared
  // A for both; B and the resource-less task are free.
  EXPECT_TRUE(IsReady(conn_, ids[0]));
  EXPECT_FALSE(IsReady(conn_, ids[1]));
  EXPECT_FALSE(IsReady(conn_, ids[2]));
  EXPECT_TRUE(IsReady(conn_, ids[3]));
  EXPECT_TRUE(IsReady(conn_, ids[4]));
  // Behind the batch: a single dispatch on A waits too.
  auto single = store::DispatchTask(conn_, Noop({}, {"A"}), std::nullopt, DeadlineIn(kTimeout));
  ASSERT_TRUE(single.ok());
  EXPECT_FALSE(single->ready);
  // Created and unblocked at the same instant for a free task (never a
  // negative resource wait).
  EXPECT_EQ(Count("SELECT count(*) FROM taskmill.task WHERE unblocked_at < created_at"), 0);
}

TEST_F(DispatchManyTest, SharedHoldersInABatchRunTogetherAndExclusiveWaitsForThem) {
  auto ids = Batch({Noop({}, {"S"}), Noop({}, {"S"}), Noop({"S"}), Noop({}, {"S"})});
  EXPECT_TRUE(IsReady(conn_, ids[0]));
  EXPECT_TRUE(IsReady(conn_, ids[1]));
  EXPECT_FALSE(IsReady(conn_, ids[2]));
  EXPECT_FALSE(IsReady(conn_, ids[3]));  // no overtaking of the exclusive one
}

// Pulp's reference scan (tests/support/reference_model.h), fed by batches of random
// size mixed with claims, finishes and cancels; the database's ready set
// must equal the model's after every step. Both lock modes are used (a batch
// naming more than 64 distinct resources takes bucket locks).

TEST_F(DispatchManyTest, RandomBatchesMatchTheReferenceModel) {
  std::mt19937 rng(::testing::UnitTest::GetInstance()->random_seed() + 4242);
  std::vector<std::string> resources = {"r0", "r1", "r2", "r3", "r4"};
  for (int i = 0; i < 80; ++i) resources.push_back("wide" + std::to_string(i));
  std::vector<ModelTask> model;
  for (int step = 0; step < 250; ++step) {
    int action = static_cast<int>(rng() % 10);
    if (action < 4 || model.empty()) {
      // Mostly the five hot resources; sometimes a wide batch over many.
      bool wide = rng() % 5 == 0;
      int n = wide ? 70 + static_cast<int>(rng() % 30) : 1 + static_cast<int>(rng() % 12);
      std::vector<DispatchRequest> batch;
      std::vector<ModelTask> added;
      for (int k = 0; k < n; ++k) {
        ModelTask t;
        int m = static_cast<int>(rng() % 3);  // 0-2 resources
        for (int j = 0; j < m; ++j) {
          const auto& r = wide ? resources[rng() % resources.size()] : resources[rng() % 5];
          (rng() % 2 ? t.x : t.s).insert(r);
        }
        for (const auto& r : t.x) t.s.erase(r);
        batch.push_back(Noop({t.x.begin(), t.x.end()}, {t.s.begin(), t.s.end()}));
        added.push_back(t);
      }
      auto ids = Batch(batch);
      ASSERT_EQ(ids.size(), added.size());
      for (size_t k = 0; k < ids.size(); ++k) {
        added[k].id = ids[k];
        model.push_back(added[k]);
      }
    } else if (action < 7) {
      auto c = store::Claim(conn_, app_, false, DeadlineIn(kTimeout));
      ASSERT_TRUE(c.ok());
      if (*c) {
        for (auto& t : model) {
          if (t.id == (*c)->id) t.running = true;
        }
      }
    } else if (action < 9) {
      std::vector<ModelTask*> running;
      for (auto& t : model) {
        if (t.running && !t.finished) running.push_back(&t);
      }
      if (!running.empty()) {
        auto* t = running[rng() % running.size()];
        ASSERT_TRUE(store::FinishTask(conn_, t->id, app_, TaskState::kCompleted, nullptr, nullptr,
                                      DeadlineIn(kTimeout)));
        store::ProcessReleases(conn_, DeadlineIn(kTimeout));
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

TEST_F(DispatchManyTest, AnInvalidElementRejectsTheWholeBatchWithItsIndex) {
  auto try_batch = [&](const std::string& bad_element) {
    std::string batch = R"([{"name": "taskmill.noop", "exclusive_resources": ["A"]},
                            {"name": "taskmill.noop"}, {"name": "taskmill.noop"}, )" +
                        bad_element + R"(, {"name": "taskmill.noop"}])";
    return store::DispatchManyJson(conn_, nlohmann::json::parse(batch), DeadlineIn(kTimeout));
  };
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"("taskmill.noop")", "a task must be a JSON object"},
      {R"({"name": "taskmill.noop", "argz": []})", "unknown field 'argz'"},
      {R"({"args": []})", "a task needs a function name"},
      {R"({"name": ""})", "a task needs a function name"},
      {R"({"name": 7})", "a task needs a function name"},
      {R"({"name": "taskmill.noop", "args": {}})", "args must be a JSON array"},
      {R"({"name": "taskmill.noop", "kwargs": []})", "kwargs must be a JSON object"},
      {R"({"name": "taskmill.noop", "exclusive_resources": "A"})", "flat lists of names"},
      {R"({"name": "taskmill.noop", "shared_resources": [["A"]]})", "flat lists of names"},
      {R"({"name": "taskmill.noop", "shared_resources": [null]})", "flat lists of names"},
      {R"({"name": "taskmill.noop", "exclusive_resources": [""]})", "empty resource name"},
      {R"({"name": "taskmill.noop", "exclusive_resources": [")" + std::string(513, 'x') + R"("]})",
       "too long"},
      {R"({"name": "taskmill.noop", "exclusive_resources": ["a\nb"]})", "control character"},
      {R"({"name": "no.such.function"})", "unknown task function \"no.such.function\""},
      {R"({"name": "taskmill.noop", "immediate": "yes"})", "immediate must be true or false"},
      {R"({"name": "taskmill.noop", "task_group": "not-a-uuid"})", "task_group must be a uuid"},
      {R"({"name": "taskmill.noop", "task_group": "8d5b1a3e-0000-4000-8000-000000000000"})",
       "task group 8d5b1a3e-0000-4000-8000-000000000000 does not exist"},
      {R"({"name": "taskmill.noop", "parent_task": "8d5b1a3e-0000-4000-8000-000000000001"})",
       "parent task 8d5b1a3e-0000-4000-8000-000000000001 does not exist"},
      {R"({"name": "taskmill.noop", "logging_cid": 5})", "logging_cid must be a string"},
  };
  for (const auto& [element, reason] : cases) {
    auto out = try_batch(element);
    ASSERT_FALSE(out.ok()) << element;
    EXPECT_EQ(out.error().code, ErrorCode::kInvalidArgument) << element;
    EXPECT_EQ(out.error().message.rfind("tasks[3]: ", 0), 0u) << out.error().message;
    EXPECT_NE(out.error().message.find(reason), std::string::npos)
        << element << " -> " << out.error().message;
  }
  // Not an array; too many.
  EXPECT_FALSE(store::DispatchManyJson(conn_, nlohmann::json::object(), DeadlineIn(kTimeout)).ok());
  auto too_many = nlohmann::json::array();
  for (int i = 0; i < 10001; ++i) too_many.push_back({{"name", "taskmill.noop"}});
  auto big = store::DispatchManyJson(conn_, too_many, DeadlineIn(kTimeout));
  ASSERT_FALSE(big.ok());
  EXPECT_NE(big.error().message.find("at most 10000"), std::string::npos);
  // A request that is not deferred cannot be batched.
  auto not_deferred = Noop({});
  not_deferred.deferred = false;
  not_deferred.immediate = true;
  EXPECT_FALSE(store::DispatchMany(conn_, {Noop({}), not_deferred}, DeadlineIn(kTimeout)).ok());

  EXPECT_EQ(Count("SELECT count(*) FROM taskmill.task"), 0);
  EXPECT_EQ(Count("SELECT count(*) FROM taskmill.task_resource"), 0);
  // And an empty batch creates nothing and is no error.
  auto empty = store::DispatchManyJson(conn_, nlohmann::json::array(), DeadlineIn(kTimeout));
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
}

// 10,000 fresh resources in one batch, and four such batches in one
// transaction: one lock per resource would need 40,000 lock table entries
// (the test server has room for 64 x 300 connections = 19,200); the bucket
// locks need at most 256.
TEST_F(DispatchManyTest, ThousandsOfDistinctResourcesDoNotExhaustTheLockTable) {
  conn_.Exec("BEGIN", DeadlineIn(kTimeout));
  for (int round = 0; round < 4; ++round) {
    auto batch = nlohmann::json::array();
    for (int i = 0; i < 10000; ++i) {
      batch.push_back(
          {{"name", "taskmill.noop"},
           {"exclusive_resources", nlohmann::json::array({fmt::format("fresh-{}-{}", round, i)})}});
    }
    auto out = store::DispatchManyJson(conn_, batch, DeadlineIn(kTimeout));
    ASSERT_TRUE(out.ok()) << out.error().message;
    ASSERT_EQ(out->size(), 10000u);
  }
  auto locks =
      Count("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()");
  EXPECT_LE(locks, 256);
  conn_.Exec("COMMIT", DeadlineIn(kTimeout));
  EXPECT_EQ(Count("SELECT count(*) FROM taskmill.task WHERE unblocked_at IS NOT NULL"), 40000);
}

// A large batch (bucket locks) and a single dispatch on a common resource
// are ordered like two single dispatches: the later one waits for the
// earlier one's transaction, and then queues behind it.
TEST_F(DispatchManyTest, LargeBatchAndSingleDispatchOnACommonResourceWaitForEachOther) {
  std::vector<DispatchRequest> wide;
  for (int i = 0; i < 100; ++i) wide.push_back(Noop({"wide-" + std::to_string(i)}));
  wide.push_back(Noop({"A"}));

  // Single first, uncommitted: the batch waits.
  auto other = Connect(conninfo_);
  other.Exec("BEGIN", DeadlineIn(kTimeout));
  other.Exec("SELECT taskmill.dispatch('taskmill.noop', '[]', '{}', ARRAY['A'])",
             DeadlineIn(kTimeout));
  EXPECT_THROW(store::DispatchMany(conn_, wide, DeadlineIn(std::chrono::milliseconds(300))),
               pg::TimeoutError);
  other.Exec("COMMIT", DeadlineIn(kTimeout));
  auto ids = Batch(wide);
  ASSERT_EQ(ids.size(), 101u);
  EXPECT_FALSE(IsReady(conn_, ids.back()));  // behind the single one
  EXPECT_TRUE(IsReady(conn_, ids.front()));

  // Batch first, uncommitted: a single dispatch on one of its resources
  // waits; one on an unrelated resource in another bucket does not need to,
  // but may (false sharing); we only check the conflicting one.
  for (auto& r : wide) r.exclusive_resources[0] += "-2";
  other.Exec("BEGIN", DeadlineIn(kTimeout));
  auto open_batch = store::DispatchMany(other, wide, DeadlineIn(kTimeout));
  ASSERT_TRUE(open_batch.ok());
  EXPECT_THROW(store::DispatchTask(conn_, Noop({"A-2"}), std::nullopt,
                                   DeadlineIn(std::chrono::milliseconds(300))),
               pg::TimeoutError);
  other.Exec("COMMIT", DeadlineIn(kTimeout));
  auto after = store::DispatchTask(conn_, Noop({"A-2"}), std::nullopt, DeadlineIn(kTimeout));
  ASSERT_TRUE(after.ok());
  EXPECT_FALSE(after->ready);
}

// The race the bucket locks close for finishes: a large batch that saw a
// running task's queue row must not commit a blocked task that nobody will
// unblock. The finish waits for the batch, then releases it.
TEST_F(DispatchManyTest, AFinishWaitsForAnOpenLargeBatchAndThenUnblocksIt) {
  auto running_id = Batch({Noop({"R"})});
  auto claimed = store::Claim(conn_, app_, false, DeadlineIn(kTimeout));
  ASSERT_TRUE(claimed.ok() && *claimed);
  ASSERT_EQ((*claimed)->id, running_id[0]);

  std::vector<DispatchRequest> wide;
  for (int i = 0; i < 100; ++i) wide.push_back(Noop({"w-" + std::to_string(i)}));
  wide.push_back(Noop({"R"}));
  auto other = Connect(conninfo_);
  other.Exec("BEGIN", DeadlineIn(kTimeout));
  auto ids = store::DispatchMany(other, wide, DeadlineIn(kTimeout));
  ASSERT_TRUE(ids.ok());
  EXPECT_THROW(store::FinishTask(conn_, running_id[0], app_, TaskState::kCompleted, nullptr,
                                 nullptr, DeadlineIn(std::chrono::milliseconds(300))),
               pg::TimeoutError);
  other.Exec("COMMIT", DeadlineIn(kTimeout));
  ASSERT_TRUE(store::FinishTask(conn_, running_id[0], app_, TaskState::kCompleted, nullptr, nullptr,
                                DeadlineIn(kTimeout)));
  store::ProcessReleases(conn_, DeadlineIn(kTimeout));
  EXPECT_TRUE(IsReady(conn_, ids->back()));
}

// A name repeated within an element, within both lists of one element and
// across elements: stored normalised exactly as a single dispatch stores it
// (sorted, distinct, a name in both lists exclusive), and queued as the
// same dispatches one by one would be.
TEST_F(DispatchManyTest, RepeatedResourcesAreNormalisedAsSingleDispatchesAreAndQueueInOrder) {
  auto ids = Batch({Noop({"b", "a", "b"}, {"a", "c", "c"}), Noop({"c"}, {"c"}),
                    Noop({}, {"d", "d"}), Noop({}, {"d"}), Noop({"d", "d"})});
  auto single = store::DispatchTask(conn_, Noop({"b", "a", "b"}, {"a", "c", "c"}), std::nullopt,
                                    DeadlineIn(kTimeout));
  ASSERT_TRUE(single.ok());
  auto lists = [&](const std::string& id) {
    auto res = conn_.Exec(
        "SELECT exclusive_resources::text, shared_resources::text FROM taskmill.task WHERE id = $1",
        pg::Params().Add(id), DeadlineIn(kTimeout));
    return res.GetString(0, 0) + " " + res.GetString(0, 1);
  };
  EXPECT_EQ(lists(ids[0]), "{a,b} {c}");
  EXPECT_EQ(lists(single->id), "{a,b} {c}");
  EXPECT_EQ(lists(ids[1]), "{c} {}");
  EXPECT_EQ(lists(ids[2]), "{} {d}");
  EXPECT_EQ(lists(ids[4]), "{d} {}");
  // One queue row per distinct resource of each task.
  EXPECT_EQ(Count("SELECT count(*) FROM taskmill.task_resource"), 3 + 1 + 1 + 1 + 1 + 3);
  EXPECT_TRUE(IsReady(conn_, ids[0]));
  EXPECT_FALSE(IsReady(conn_, ids[1]));  // c: exclusive behind the shared holder in ids[0]
  EXPECT_TRUE(IsReady(conn_, ids[2]));   // d shared
  EXPECT_TRUE(IsReady(conn_, ids[3]));   // d shared beside it
  EXPECT_FALSE(IsReady(conn_, ids[4]));  // d exclusive behind both
}

// A batch behind a running task and behind committed queue rows: shared
// after a running shared holder runs, exclusive waits; an exclusive running
// task blocks every later user of its resource in the batch; unrelated tasks
// in the same batch are free. Finishing the running task moves the queue on
// in order.
TEST_F(DispatchManyTest, ABatchBehindARunningTaskQueuesBehindIt) {
  auto first = Batch({Noop({"R"}), Noop({}, {"S"})});
  for (int i = 0; i < 2; ++i) {
    auto c = store::Claim(conn_, app_, false, DeadlineIn(kTimeout));
    ASSERT_TRUE(c.ok() && *c);
  }
  auto ids = Batch({Noop({"R"}), Noop({}, {"R"}), Noop({"free"}), Noop({}, {"S"}), Noop({"S"}),
                    Noop({}, {"S"})});
  EXPECT_FALSE(IsReady(conn_, ids[0]));
  EXPECT_FALSE(IsReady(conn_, ids[1]));
  EXPECT_TRUE(IsReady(conn_, ids[2]));
  EXPECT_TRUE(IsReady(conn_, ids[3]));   // shared beside the running shared holder
  EXPECT_FALSE(IsReady(conn_, ids[4]));  // exclusive behind it
  EXPECT_FALSE(IsReady(conn_, ids[5]));  // and no overtaking of that one

  ASSERT_TRUE(store::FinishTask(conn_, first[0], app_, TaskState::kCompleted, nullptr, nullptr,
                                DeadlineIn(kTimeout)));
  store::ProcessReleases(conn_, DeadlineIn(kTimeout));
  EXPECT_TRUE(IsReady(conn_, ids[0]));
  EXPECT_FALSE(IsReady(conn_, ids[1]));  // shared behind the now ready exclusive one
}

// Names the quick check of the batch cannot tell from bad ones (a backslash
// or a quote, lists longer than 516 bytes of JSON text) are
// accepted and stored as given; a control character that JSON does not
// escape (DEL) is still refused with the element's index.
TEST_F(DispatchManyTest, NamesNearTheLimitsAreJudgedExactly) {
  std::string backslash = "a\\b\"c";
  std::string long_name(300, 'n');
  std::string max_name(512, 'm');
  std::string multibyte;
  for (int i = 0; i < 170; ++i) multibyte += "\xc3\xa9";  // 340 bytes, 170 characters
  auto ids = Batch({Noop({backslash}), Noop({long_name}), Noop({max_name}),
                    Noop({long_name + "-1", long_name + "-2"}, {multibyte})});
  ASSERT_EQ(ids.size(), 4u);
  auto stored = [&](const std::string& id) {
    return conn_
        .Exec("SELECT exclusive_resources[1] FROM taskmill.task WHERE id = $1",
              pg::Params().Add(id), DeadlineIn(kTimeout))
        .GetString(0, 0);
  };
  EXPECT_EQ(stored(ids[0]), backslash);
  EXPECT_EQ(stored(ids[1]), long_name);
  EXPECT_EQ(stored(ids[2]), max_name);
  EXPECT_EQ(Count("SELECT count(*) FROM taskmill.task_resource"), 6);

  auto del = store::DispatchMany(conn_, {Noop({"ok"}), Noop({"x\x7fy"})}, DeadlineIn(kTimeout));
  ASSERT_FALSE(del.ok());
  EXPECT_EQ(del.error().message.rfind("tasks[1]: resource name contains a control character", 0),
            0u)
      << del.error().message;
  auto nested = store::DispatchManyJson(
      conn_,
      nlohmann::json::parse(R"([{"name": "taskmill.noop", "exclusive_resources": [["A"]]}])"),
      DeadlineIn(kTimeout));
  ASSERT_FALSE(nested.ok());
  EXPECT_EQ(nested.error().message, "tasks[0]: resources must be flat lists of names");
  EXPECT_EQ(Count("SELECT count(*) FROM taskmill.task"), 4);
}

TEST_F(DispatchManyTest, SqlDoorRunsInTheCallersTransaction) {
  conn_.Exec("BEGIN", DeadlineIn(kTimeout));
  auto res = conn_.Exec(
      "SELECT unnest(taskmill.dispatch_many('[{\"name\": \"taskmill.noop\"}, "
      "{\"name\": \"taskmill.echo\", \"args\": [1], \"exclusive_resources\": [\"x\"]}]'))",
      DeadlineIn(kTimeout));
  ASSERT_EQ(res.rows(), 2);
  conn_.Exec("ROLLBACK", DeadlineIn(kTimeout));
  EXPECT_EQ(Count("SELECT count(*) FROM taskmill.task"), 0);
  conn_.Exec("BEGIN ISOLATION LEVEL REPEATABLE READ", DeadlineIn(kTimeout));
  try {
    conn_.Exec("SELECT taskmill.dispatch_many('[{\"name\": \"taskmill.noop\"}]')",
               DeadlineIn(kTimeout));
    FAIL() << "dispatch_many in REPEATABLE READ must be refused";
  } catch (const pg::QueryError& e) {
    EXPECT_EQ(e.sqlstate(), "TM400");
  }
  conn_.Exec("ROLLBACK", DeadlineIn(kTimeout));
}

TEST_F(DispatchManyTest, ClientDoor) {
  auto client = Client::Connect(conninfo_, DeadlineIn(kTimeout));
  ASSERT_TRUE(client.ok()) << client.error().message;
  auto group = client->CreateGroup("batch", DeadlineIn(kTimeout));
  ASSERT_TRUE(group.ok());
  std::vector<DispatchRequest> batch = {Noop({"c"}), Noop({"c"})};
  batch[1].task_group = *group;
  batch[1].logging_cid = "cid-1";
  batch[1].kwargs = {{"k", 1}};
  auto ids = client->DispatchMany(batch, DeadlineIn(kTimeout));
  ASSERT_TRUE(ids.ok()) << ids.error().message;
  ASSERT_EQ(ids->size(), 2u);
  auto second = client->Get((*ids)[1], DeadlineIn(kTimeout));
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->logging_cid, "cid-1");
  EXPECT_EQ(second->kwargs, nlohmann::json({{"k", 1}}));
  EXPECT_EQ(second->task_group, *group);
  EXPECT_EQ(second->state, TaskState::kWaiting);
  auto bad = client->DispatchMany({Noop({}), Noop({""})}, DeadlineIn(kTimeout));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().message.rfind("tasks[1]: ", 0), 0u) << bad.error().message;
}

}  // namespace
}  // namespace taskmill
