// taskmill::Client (include/taskmill/client.h), the C++ door, as a program
// that only dispatches would use it: every call, and each expected failure
// with its code.
#include <gtest/gtest.h>

#include "support/taskmill_fixture.h"
#include "support/test_postgres.h"
#include "taskmill/client.h"

namespace taskmill {
namespace {

constexpr auto kTimeout = std::chrono::seconds(60);

DispatchRequest Noop(std::vector<std::string> exclusive) {
  DispatchRequest req;
  req.name = "taskmill.noop";
  req.exclusive_resources = std::move(exclusive);
  return req;
}

class ClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto client = Client::Connect(testing::MigratedTestDatabase(), DeadlineIn(kTimeout));
    ASSERT_TRUE(client.ok()) << client.error().message;
    client_.emplace(std::move(*client));
  }
  Client& client() { return *client_; }
  std::string Dispatch(const DispatchRequest& req) {
    auto out = client().Dispatch(req, DeadlineIn(kTimeout));
    EXPECT_TRUE(out.ok()) << (out.ok() ? "" : out.error().message);
    return out.ok() ? out->id : "";
  }

  std::optional<Client> client_;
};

TEST_F(ClientTest, DispatchGetAndList) {
  DispatchRequest req = Noop({"r"});
  req.args = nlohmann::json::array({1, "two"});
  req.shared_resources = {"s"};
  auto out = client().Dispatch(req, DeadlineIn(kTimeout));
  ASSERT_TRUE(out.ok()) << out.error().message;
  EXPECT_EQ(out->state, TaskState::kWaiting);
  EXPECT_TRUE(out->ready);
  auto behind = client().Dispatch(Noop({"r"}), DeadlineIn(kTimeout));
  ASSERT_TRUE(behind.ok());
  EXPECT_FALSE(behind->ready);

  auto task = client().Get(out->id, DeadlineIn(kTimeout));
  ASSERT_TRUE(task.ok()) << task.error().message;
  EXPECT_EQ(task->name, "taskmill.noop");
  EXPECT_EQ(task->args, req.args);
  EXPECT_EQ(task->exclusive_resources, std::vector<std::string>{"r"});
  EXPECT_EQ(task->shared_resources, std::vector<std::string>{"s"});

  auto all = client().List({}, 10, DeadlineIn(kTimeout));
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].id, behind->id);  // newest first
  EXPECT_EQ(client().List({TaskState::kCanceled}, 10, DeadlineIn(kTimeout)).size(), 0u);
  EXPECT_EQ(client().List({}, 1, DeadlineIn(kTimeout)).size(), 1u);
}

TEST_F(ClientTest, CancelLetsTheNextTaskThrough) {
  std::string first = Dispatch(Noop({"r"}));
  std::string second = Dispatch(Noop({"r"}));
  auto st = client().Cancel(first, DeadlineIn(kTimeout));
  ASSERT_TRUE(st.ok()) << st.error().message;
  EXPECT_EQ(*st, TaskState::kCanceled);
  EXPECT_TRUE(client().Get(second, DeadlineIn(kTimeout))->unblocked_at.has_value());

  auto again = client().Cancel(first, DeadlineIn(kTimeout));
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, ErrorCode::kConflict);
  auto unknown = client().Cancel("6f1d1a52-0000-4000-8000-000000000000", DeadlineIn(kTimeout));
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().code, ErrorCode::kNotFound);
  auto missing = client().Get("6f1d1a52-0000-4000-8000-000000000000", DeadlineIn(kTimeout));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, ErrorCode::kNotFound);
  auto malformed = client().Get("not-a-uuid", DeadlineIn(kTimeout));
  ASSERT_FALSE(malformed.ok());
  EXPECT_EQ(malformed.error().code, ErrorCode::kInvalidArgument);
}

TEST_F(ClientTest, GroupsAndBatches) {
  auto group = client().CreateGroup("a group", DeadlineIn(kTimeout));
  ASSERT_TRUE(group.ok()) << group.error().message;
  DispatchRequest in_group = Noop({"r"});
  in_group.task_group = *group;
  auto ids = client().DispatchMany({in_group, in_group, Noop({"r"})}, DeadlineIn(kTimeout));
  ASSERT_TRUE(ids.ok()) << ids.error().message;
  ASSERT_EQ(ids->size(), 3u);
  EXPECT_EQ(client().Get((*ids)[0], DeadlineIn(kTimeout))->task_group, *group);
  auto n = client().CancelGroup(*group, DeadlineIn(kTimeout));
  ASSERT_TRUE(n.ok()) << n.error().message;
  EXPECT_EQ(*n, 2);
  // The group's tasks released "r": the third is ready now.
  EXPECT_TRUE(client().Get((*ids)[2], DeadlineIn(kTimeout))->unblocked_at.has_value());
}

TEST_F(ClientTest, BadInputIsAnErrorAndWritesNothing) {
  DispatchRequest bad = Noop({});
  bad.kwargs = nlohmann::json::array();
  auto one = client().Dispatch(bad, DeadlineIn(kTimeout));
  ASSERT_FALSE(one.ok());
  EXPECT_EQ(one.error().code, ErrorCode::kInvalidArgument);
  DispatchRequest unknown = Noop({});
  unknown.name = "no.such.function";
  EXPECT_EQ(client().Dispatch(unknown, DeadlineIn(kTimeout)).error().code,
            ErrorCode::kInvalidArgument);
  auto batch = client().DispatchMany({Noop({"a"}), unknown}, DeadlineIn(kTimeout));
  ASSERT_FALSE(batch.ok());
  EXPECT_EQ(batch.error().message.rfind("tasks[1]:", 0), 0u) << batch.error().message;
  DispatchRequest not_deferred = Noop({});
  not_deferred.immediate = true;
  not_deferred.deferred = false;
  EXPECT_FALSE(client().DispatchMany({not_deferred}, DeadlineIn(kTimeout)).ok());
  EXPECT_TRUE(client().List({}, 0, DeadlineIn(kTimeout)).empty());
}

TEST(ClientConnectTest, RefusesADatabaseWithoutTheSchema) {
  auto client = Client::Connect(testing::CreateTestDatabase("noschema"), DeadlineIn(kTimeout));
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.error().code, ErrorCode::kSchemaMismatch);
}

TEST(ClientConnectTest, ThrowsConnectionErrorWhenNoServerAnswers) {
  std::string url = "postgresql://127.0.0.1:" + std::to_string(testing::FreePort()) + "/x";
  try {
    (void)Client::Connect(url, DeadlineIn(std::chrono::seconds(10)));
    FAIL() << "connected to nothing";
  } catch (const ConnectionError& e) {
    EXPECT_TRUE(e.retryable());
  }
}

}  // namespace
}  // namespace taskmill
