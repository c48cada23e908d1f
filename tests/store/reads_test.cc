// The store's paged reads behind the API's list endpoints: tasks by a
// search, processes by a filter, groups with their counts and tasks. Each
// pages in SQL and counts every match.
#include <gtest/gtest.h>

#include "store/apps.h"
#include "store/groups.h"
#include "store/task_search.h"
#include "store/task_store.h"
#include "support/taskmill_fixture.h"

namespace taskmill {
namespace {

using testing::Connect;
using testing::MigratedTestDatabase;

constexpr auto kTimeout = std::chrono::seconds(60);

class StoreReadsTest : public ::testing::Test {
 protected:
  void SetUp() override { conn_ = Connect(MigratedTestDatabase()); }

  std::string Dispatch(const std::string& name, std::vector<std::string> exclusive,
                       std::optional<std::string> group = std::nullopt) {
    DispatchRequest req;
    req.name = name;
    req.exclusive_resources = std::move(exclusive);
    req.task_group = std::move(group);
    auto out = store::DispatchTask(conn_, req, std::nullopt, DeadlineIn(kTimeout));
    EXPECT_TRUE(out.ok()) << (out.ok() ? "" : out.error().message);
    return out.ok() ? out->id : "";
  }
  std::string Register(const std::string& name, const std::string& type = "worker") {
    store::AppRegistration reg;
    reg.app_type = type;
    reg.name = name;
    return store::RegisterApp(conn_, reg, DeadlineIn(kTimeout)).id;
  }

  pg::Connection conn_;
};

TEST_F(StoreReadsTest, SearchFiltersOrdersAndPages) {
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(Dispatch("taskmill.noop", {"r" + std::to_string(i)}));
  std::string echo = Dispatch("taskmill.echo", {"r0"});
  store::TaskSearch by_name;
  by_name.TextIs(store::TaskTextField::kName, "taskmill.noop").Page(2, 1);
  auto page = store::SearchTasks(conn_, by_name, DeadlineIn(kTimeout));
  EXPECT_EQ(page.count, 5);
  ASSERT_EQ(page.tasks.size(), 2u);
  EXPECT_EQ(page.tasks[0].id, ids[3]);  // newest first, one skipped
  EXPECT_EQ(page.tasks[1].id, ids[2]);

  store::TaskSearch oldest;
  oldest.HoldsResource("r0").OrderBy({{store::TaskOrderField::kCreatedAt, false}});
  auto r0 = store::SearchTasks(conn_, oldest, DeadlineIn(kTimeout));
  ASSERT_EQ(r0.count, 2);
  EXPECT_EQ(r0.tasks[0].id, ids[0]);
  EXPECT_EQ(r0.tasks[1].id, echo);

  store::TaskSearch none;
  none.StateIn({"skipped"})
      .Compare(store::TaskDateField::kCreatedAt, store::Comparison::kBefore,
               "2999-01-01T00:00:00+00:00");
  EXPECT_EQ(store::SearchTasks(conn_, none, DeadlineIn(kTimeout)).count, 0);
}

TEST_F(StoreReadsTest, AppsPageInSqlAndOneIsFoundById) {
  std::string a = Register("a"), b = Register("b"), c = Register("c");
  Register("api-1", "api");
  conn_.Exec("UPDATE taskmill.app SET last_heartbeat = now() - interval '1 hour' WHERE id = $1",
             pg::Params().Add(b), DeadlineIn(kTimeout));
  store::AppFilter online;
  online.app_type = "worker";
  online.online = true;
  online.limit = 1;
  online.offset = 1;
  auto page = store::ListAppsPage(conn_, online, DeadlineIn(kTimeout));
  EXPECT_EQ(page.count, 2);  // a and c
  ASSERT_EQ(page.apps.size(), 1u);
  EXPECT_EQ(page.apps[0].id, c);
  store::AppFilter named;
  named.name = "b";
  auto by_name = store::ListAppsPage(conn_, named, DeadlineIn(kTimeout));
  ASSERT_EQ(by_name.count, 1);
  EXPECT_FALSE(by_name.apps[0].online);

  auto found = store::GetApp(conn_, a, std::string("worker"), DeadlineIn(kTimeout));
  ASSERT_TRUE(found.ok());
  EXPECT_EQ(found->name, "a");
  auto wrong_type = store::GetApp(conn_, a, std::string("api"), DeadlineIn(kTimeout));
  ASSERT_FALSE(wrong_type.ok());
  EXPECT_EQ(wrong_type.error().code, ErrorCode::kNotFound);
  EXPECT_EQ(wrong_type.error().message, "api " + a + " not found");
}

TEST_F(StoreReadsTest, GroupsCarryCountsAndTasksInOrder) {
  auto g1 = store::CreateTaskGroup(conn_, "one", DeadlineIn(kTimeout));
  auto g2 = store::CreateTaskGroup(conn_, "two", DeadlineIn(kTimeout));
  ASSERT_TRUE(g1.ok() && g2.ok());
  std::string t1 = Dispatch("taskmill.noop", {"r"}, *g1);
  std::string t2 = Dispatch("taskmill.noop", {"r"}, *g1);
  ASSERT_TRUE(store::CancelTask(conn_, t2, DeadlineIn(kTimeout)).ok());

  auto one = store::GetGroup(conn_, *g1, DeadlineIn(kTimeout));
  ASSERT_TRUE(one.ok()) << one.error().message;
  EXPECT_EQ(one->description, "one");
  EXPECT_EQ(one->waiting, 1);
  EXPECT_EQ(one->canceled, 1);
  ASSERT_EQ(one->tasks.size(), 2u);
  EXPECT_EQ(one->tasks[0].id, t1);
  EXPECT_EQ(one->tasks[1].id, t2);

  auto page = store::ListGroups(conn_, 1, 0, DeadlineIn(kTimeout));
  EXPECT_EQ(page.count, 2);
  ASSERT_EQ(page.groups.size(), 1u);
  EXPECT_EQ(page.groups[0].id, *g2);  // newest first
  EXPECT_TRUE(page.groups[0].tasks.empty());
  auto second = store::ListGroups(conn_, 1, 1, DeadlineIn(kTimeout));
  ASSERT_EQ(second.groups.size(), 1u);
  EXPECT_EQ(second.groups[0].tasks.size(), 2u);

  auto missing =
      store::GetGroup(conn_, "6f1d1a52-0000-4000-8000-000000000000", DeadlineIn(kTimeout));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, ErrorCode::kNotFound);
}

TEST_F(StoreReadsTest, OwnedTasksOlderThanFindsOnlyOldOnesOfTheOwner) {
  std::string app = Register("api-1", "api");
  auto st = conn_.ExecPipeline({store::ImmediateNoopDispatchStatement("r", "c", app)},
                               DeadlineIn(kTimeout));
  std::string id = st[0].GetString(0, 0);
  EXPECT_TRUE(store::OwnedTasksOlderThan(conn_, app, 3600, 10, DeadlineIn(kTimeout)).empty());
  conn_.Exec("UPDATE taskmill.task SET started_at = now() - interval '2 hours' WHERE id = $1",
             pg::Params().Add(id), DeadlineIn(kTimeout));
  EXPECT_EQ(store::OwnedTasksOlderThan(conn_, app, 3600, 10, DeadlineIn(kTimeout)),
            std::vector<std::string>{id});
  EXPECT_TRUE(
      store::OwnedTasksOlderThan(conn_, Register("w"), 3600, 10, DeadlineIn(kTimeout)).empty());
}

}  // namespace
}  // namespace taskmill
