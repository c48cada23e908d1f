// The service layer (src/service): the rules every door shares, against a
// real database. Each test fails if the rule moved back to (or vanished
// from) one door: cancel-then-release, group cancel, finish-then-release,
// the dispatch checks, delete and purge, the liveness check.
#include <gtest/gtest.h>

#include "service/task_service.h"
#include "store/task_store.h"
#include "support/taskmill_fixture.h"

namespace taskmill {
namespace {

using testing::Connect;
using testing::MigratedTestDatabase;

constexpr auto kTimeout = std::chrono::seconds(60);

DispatchRequest Noop(std::vector<std::string> exclusive) {
  DispatchRequest req;
  req.name = "taskmill.noop";
  req.exclusive_resources = std::move(exclusive);
  return req;
}

class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override { conn_ = Connect(MigratedTestDatabase()); }

  std::string Dispatch(const DispatchRequest& req) {
    auto out = service::Dispatch(conn_, req, std::nullopt, DeadlineIn(kTimeout));
    EXPECT_TRUE(out.ok()) << (out.ok() ? "" : out.error().message);
    return out.ok() ? out->id : "";
  }
  Task Get(const std::string& id) {
    auto t = store::GetTask(conn_, id, DeadlineIn(kTimeout));
    EXPECT_TRUE(t.ok());
    return t.ok() ? *t : Task{};
  }
  int64_t Count(const std::string& sql) {
    return conn_.Exec(sql, DeadlineIn(kTimeout)).GetInt(0, 0);
  }

  pg::Connection conn_;
};

// No worker runs here: only the service's own release can unblock `second`.
TEST_F(ServiceTest, CancelOfAWaitingTaskLetsTheNextThroughAtOnce) {
  std::string first = Dispatch(Noop({"r"}));
  std::string second = Dispatch(Noop({"r"}));
  ASSERT_FALSE(Get(second).unblocked_at.has_value());
  auto st = service::Cancel(conn_, first, DeadlineIn(kTimeout));
  ASSERT_TRUE(st.ok()) << st.error().message;
  EXPECT_EQ(*st, TaskState::kCanceled);
  EXPECT_TRUE(Get(second).unblocked_at.has_value());
}

TEST_F(ServiceTest, CancelAnswersEachExpectedFailureWithItsCode) {
  std::string t = Dispatch(Noop({"r"}));
  ASSERT_TRUE(service::Cancel(conn_, t, DeadlineIn(kTimeout)).ok());
  auto again = service::Cancel(conn_, t, DeadlineIn(kTimeout));
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, ErrorCode::kConflict);
  auto unknown =
      service::Cancel(conn_, "6f1d1a52-0000-4000-8000-000000000000", DeadlineIn(kTimeout));
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().code, ErrorCode::kNotFound);
}

TEST_F(ServiceTest, GroupCancelLetsTheTasksBehindTheGroupThrough) {
  auto group = store::CreateTaskGroup(conn_, "g", DeadlineIn(kTimeout));
  ASSERT_TRUE(group.ok());
  DispatchRequest in_group = Noop({"r"});
  in_group.task_group = *group;
  Dispatch(in_group);
  Dispatch(in_group);
  std::string outside = Dispatch(Noop({"r"}));
  auto n = service::CancelGroup(conn_, *group, DeadlineIn(kTimeout));
  ASSERT_TRUE(n.ok()) << n.error().message;
  EXPECT_EQ(*n, 2);
  EXPECT_TRUE(Get(outside).unblocked_at.has_value());
}

TEST_F(ServiceTest, FinishAndReleaseUnblocksWhatQueuedBehind) {
  store::AppRegistration reg;
  reg.app_type = "api";
  reg.name = "service-test";
  std::string app = store::RegisterApp(conn_, reg, DeadlineIn(kTimeout)).id;
  DispatchRequest here = Noop({"r"});
  here.immediate = true;
  here.deferred = false;
  auto first = service::Dispatch(conn_, here, app, DeadlineIn(kTimeout));
  ASSERT_TRUE(first.ok()) << first.error().message;
  ASSERT_EQ(first->state, TaskState::kRunning);  // owned by `app`, run here
  std::string second = Dispatch(Noop({"r"}));
  auto st = service::FinishAndRelease(conn_, first->id, app, TaskState::kCompleted,
                                      nlohmann::json(7), nullptr, DeadlineIn(kTimeout));
  EXPECT_EQ(st, TaskState::kCompleted);
  EXPECT_EQ(Get(first->id).result, nlohmann::json(7));
  EXPECT_TRUE(Get(second).unblocked_at.has_value());
  // Not ours any more: nothing is written.
  EXPECT_EQ(service::FinishAndRelease(conn_, first->id, app, TaskState::kFailed, nullptr, nullptr,
                                      DeadlineIn(kTimeout)),
            std::nullopt);
}

TEST_F(ServiceTest, FinishAndReleaseStatementsFinishThenRelease) {
  store::AppRegistration reg;
  reg.app_type = "api";
  reg.name = "service-test";
  std::string app = store::RegisterApp(conn_, reg, DeadlineIn(kTimeout)).id;
  auto st = conn_.ExecPipeline({store::ImmediateNoopDispatchStatement("r", "cid-1", app)},
                               DeadlineIn(kTimeout));
  ASSERT_EQ(st[0].Get(0, 1), "running");
  std::string first = st[0].GetString(0, 0);
  std::string second = Dispatch(Noop({"r"}));
  auto statements = service::FinishAndReleaseStatements(
      app, {store::TaskOutcome{first, TaskState::kCompleted, nullptr, nullptr}});
  ASSERT_EQ(statements.size(), 2u);
  auto results = conn_.ExecPipeline(statements, DeadlineIn(kTimeout));
  EXPECT_EQ(results[0].Get(0, 0), "completed");
  EXPECT_TRUE(Get(second).unblocked_at.has_value());
  EXPECT_EQ(store::CountTasksWithCid(conn_, "cid-1", true, DeadlineIn(kTimeout)), 1);
}

TEST_F(ServiceTest, DispatchChecksArgumentTypesAtEveryDoor) {
  DispatchRequest bad_args = Noop({});
  bad_args.args = nlohmann::json::object();
  auto one = service::Dispatch(conn_, bad_args, std::nullopt, DeadlineIn(kTimeout));
  ASSERT_FALSE(one.ok());
  EXPECT_EQ(one.error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(one.error().message, "args must be a JSON array");

  DispatchRequest bad_kwargs = Noop({});
  bad_kwargs.kwargs = nlohmann::json::array();
  auto many = service::DispatchMany(conn_, {Noop({"a"}), bad_kwargs}, DeadlineIn(kTimeout));
  ASSERT_FALSE(many.ok());
  EXPECT_EQ(many.error().message, "tasks[1]: kwargs must be a JSON object");

  auto json = service::DispatchManyJson(
      conn_, nlohmann::json::array({{{"name", "taskmill.noop"}}, 5}), DeadlineIn(kTimeout));
  ASSERT_FALSE(json.ok());
  EXPECT_EQ(json.error().message, "tasks[1]: a task must be a JSON object");
  EXPECT_EQ(Count("SELECT count(*) FROM taskmill.task"), 0);  // all or nothing
}

TEST_F(ServiceTest, DeleteOnlyFinishedTasks) {
  std::string t = Dispatch(Noop({"r"}));
  auto waiting = service::DeleteTask(conn_, t, DeadlineIn(kTimeout));
  ASSERT_FALSE(waiting.ok());
  EXPECT_EQ(waiting.error().code, ErrorCode::kConflict);
  EXPECT_EQ(waiting.error().message,
            "task " + t + " is waiting: only finished tasks can be deleted");
  ASSERT_TRUE(service::Cancel(conn_, t, DeadlineIn(kTimeout)).ok());
  EXPECT_TRUE(service::DeleteTask(conn_, t, DeadlineIn(kTimeout)).ok());
  auto gone = service::DeleteTask(conn_, t, DeadlineIn(kTimeout));
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.error().code, ErrorCode::kNotFound);
}

TEST_F(ServiceTest, PurgeTakesOnlyFinalStates) {
  std::string t = Dispatch(Noop({"r"}));
  Dispatch(Noop({"s"}));  // waiting: never purged
  ASSERT_TRUE(service::Cancel(conn_, t, DeadlineIn(kTimeout)).ok());
  service::PurgeRequest bad;
  bad.states = {"canceled", "running"};
  auto refused = service::Purge(conn_, bad, DeadlineIn(kTimeout));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().message,
            "\"running\" is not a final state (completed, failed, canceled)");
  bad.states = {};
  EXPECT_FALSE(service::Purge(conn_, bad, DeadlineIn(kTimeout)).ok());

  service::PurgeRequest recent;  // default: finished more than 30 days ago
  recent.states = {"canceled"};
  EXPECT_EQ(*service::Purge(conn_, recent, DeadlineIn(kTimeout)), 0);
  recent.finished_before = "2999-01-01T00:00:00+00:00";
  EXPECT_EQ(*service::Purge(conn_, recent, DeadlineIn(kTimeout)), 1);
  EXPECT_EQ(Count("SELECT count(*) FROM taskmill.task"), 1);
}

TEST(ServiceLivenessTest, TtlMustExceedTheHeartbeat) {
  EXPECT_TRUE(service::CheckLiveness(30, 5).ok());
  auto st = service::CheckLiveness(1, 2);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(st.error().message, "--ttl (1) must be longer than --heartbeat-interval (2)");
  EXPECT_FALSE(service::CheckLiveness(2, 2).ok());
}

}  // namespace
}  // namespace taskmill
