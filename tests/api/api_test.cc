// The REST API, driven over HTTP against the real server process (and real
// workers where a test needs tasks to run). Ports Pulp's observable tasking
// API contract (pulp-tasking.md section 10.1) where it applies.
#include <gtest/gtest.h>

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <optional>
#include <thread>

#include <fmt/format.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "store/task_store.h"
#include "support/taskmill_fixture.h"
#include "support/test_postgres.h"

namespace taskmill {
namespace {

using nlohmann::json;
using testing::StartTaskmill;
using testing::WaitFor;
using namespace std::chrono_literals;

using testing::FreePort;

class ApiTest : public ::testing::Test {
 protected:
  void SetUp() override { db_ = testing::MigratedTestDatabase(); }
  void TearDown() override {
    if (HasFailure()) testing::PrintLogs(logs_);
  }

  // Starts the API server with extra flags and waits until it answers.
  void StartApi(std::vector<std::string> extra = {}) {
    port_ = FreePort();
    std::vector<std::string> args = {"--database-url", db_, "api", "--listen",
                                     fmt::format("127.0.0.1:{}", port_)};
    if (std::find(extra.begin(), extra.end(), "--threads") == extra.end()) {
      args.insert(args.end(), {"--threads", "4"});
    }
    args.insert(args.end(), extra.begin(), extra.end());
    std::string log;
    api_ = StartTaskmill(args, &log);
    logs_.push_back(log);
    client_ = std::make_unique<httplib::Client>("127.0.0.1", port_);
    client_->set_read_timeout(60, 0);
    ASSERT_TRUE(WaitFor(
        [&] {
          auto r = client_->Get("/pulp/api/v3/status/", headers_);
          return r && (r->status == 200 || r->status == 401);
        },
        30s))
        << testing::ReadFile(log);
  }

  void StartWorker(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"--database-url", db_, "worker"};
    args.insert(args.end(), extra.begin(), extra.end());
    std::string log;
    workers_.push_back(StartTaskmill(args, &log));
    logs_.push_back(log);
  }

  httplib::Result Post(const std::string& path, const json& body) {
    return client_->Post(path.c_str(), headers_, body.dump(), "application/json");
  }
  httplib::Result Patch(const std::string& path, const json& body) {
    return client_->Patch(path.c_str(), headers_, body.dump(), "application/json");
  }
  json GetJson(const std::string& path, int expect = 200) {
    auto r = client_->Get(path.c_str(), headers_);
    EXPECT_TRUE(r) << path;
    if (!r) return nullptr;
    EXPECT_EQ(r->status, expect) << path << " " << r->body;
    return json::parse(r->body, nullptr, false);
  }
  // Dispatches and returns the task href.
  std::string Dispatch(const json& body) {
    auto r = Post("/pulp/api/v3/tasks/", body);
    EXPECT_TRUE(r);
    if (!r) return "";
    EXPECT_EQ(r->status, 202) << r->body;
    return json::parse(r->body).value("task", "");
  }
  std::string State(const std::string& href) { return GetJson(href)["state"]; }
  bool WaitState(const std::string& href, const std::string& state,
                 std::chrono::milliseconds t = 30s) {
    return WaitFor([&] { return State(href) == state; }, t);
  }
  // Asserts an error status with a JSON {"detail": ...} body.
  void ExpectError(const httplib::Result& r, int status, const std::string& contains = "") {
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, status) << r->body;
    auto j = json::parse(r->body, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << r->body;
    ASSERT_TRUE(j.contains("detail")) << r->body;
    if (!contains.empty()) {
      EXPECT_NE(j["detail"].get<std::string>().find(contains), std::string::npos) << r->body;
    }
  }

  std::string db_;
  int port_ = 0;
  Subprocess api_;
  std::vector<Subprocess> workers_;
  std::vector<std::string> logs_;
  std::unique_ptr<httplib::Client> client_;
  httplib::Headers headers_;
};

TEST_F(ApiTest, ABurstOfConnectsWaitsInTheListenQueue) {
  // With the server stopped, connections complete only while the kernel can
  // queue them for accept(): httplib's own backlog of 5 let through 6, and
  // the rest of a burst waited for a SYN retry a second later.
  StartApi();
  ASSERT_EQ(kill(api_.pid(), SIGSTOP), 0);
  struct Resume {
    pid_t pid;
    ~Resume() { kill(pid, SIGCONT); }
  } resume{api_.pid()};
  constexpr int kBurst = 24;
  std::vector<int> fds;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port_));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  for (int i = 0; i < kBurst; ++i) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    fds.push_back(fd);
    connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  }
  std::this_thread::sleep_for(500ms);
  int connected = 0;
  for (int fd : fds) {
    pollfd p{fd, POLLOUT, 0};
    int err = 0;
    socklen_t len = sizeof(err);
    if (poll(&p, 1, 0) == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0 &&
        (p.revents & POLLOUT)) {
      ++connected;
    }
  }
  for (int fd : fds) close(fd);
  EXPECT_EQ(connected, kBurst);
}

TEST_F(ApiTest, DispatchOverHttpAndRead) {
  StartApi();
  auto href = Dispatch({{"name", "taskmill.echo"},
                        {"args", {1, 2}},
                        {"kwargs", {{"k", "v"}}},
                        {"exclusive_resources", {"repo-1"}},
                        {"shared_resources", {"remote-1"}}});
  ASSERT_FALSE(href.empty());
  auto t = GetJson(href);
  EXPECT_EQ(t["state"], "waiting");
  EXPECT_EQ(t["name"], "taskmill.echo");
  EXPECT_EQ(t["pulp_href"], href);
  EXPECT_EQ(t["reserved_resources_record"], json({"repo-1", "shared:remote-1"}));
  for (const char* k : {"pulp_created", "logging_cid", "unblocked_at", "started_at", "finished_at",
                        "error", "worker", "parent_task", "task_group", "result"}) {
    EXPECT_TRUE(t.contains(k)) << k;
  }
  StartWorker();
  ASSERT_TRUE(WaitState(href, "completed"));
  EXPECT_EQ(GetJson(href)["result"]["args"], json({1, 2}));
  auto status = GetJson("/pulp/api/v3/status/");
  EXPECT_TRUE(status["database_connection"]["connected"]);
  EXPECT_EQ(status["online_api_apps"].size(), 1u);
  ASSERT_TRUE(
      WaitFor([&] { return GetJson("/pulp/api/v3/workers/?online=true")["count"] == 1; }, 10s));
  EXPECT_EQ(GetJson("/pulp/api/v3/workers/?missing=true")["count"], 0);
  auto metrics = client_->Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("taskmill_api_requests_total"), std::string::npos);
}

TEST_F(ApiTest, BadInputGetsJsonErrorsAndWritesNothing) {
  StartApi({"--max-body-bytes", "4096"});
  const std::string tasks = "/pulp/api/v3/tasks/";
  ExpectError(client_->Post(tasks.c_str(), headers_, "{not json", "application/json"), 400, "JSON");
  ExpectError(client_->Post(tasks.c_str(), headers_, "[1]", "application/json"), 400, "object");
  ExpectError(Post(tasks, {{"name", 5}}), 400, "name");
  ExpectError(Post(tasks, {{"name", "taskmill.noop"}, {"args", {{"a", 1}}}}), 400, "args");
  ExpectError(Post(tasks, {{"name", "taskmill.noop"}, {"kwargs", {1}}}), 400, "kwargs");
  ExpectError(Post(tasks, {{"name", "taskmill.noop"}, {"colour", "red"}}), 400, "unknown field");
  ExpectError(Post(tasks, {{"name", "no.such"}}), 400, "unknown task function");
  ExpectError(Post(tasks, {{"name", "taskmill.noop"}, {"exclusive_resources", {""}}}), 400,
              "empty");
  ExpectError(Post(tasks, {{"name", "taskmill.noop"}, {"exclusive_resources", {1}}}), 400);
  ExpectError(Post(tasks, {{"name", "taskmill.noop"}, {"immediate", "yes"}}), 400);
  ExpectError(Post(tasks, {{"args", json::array()}}), 400, "name is required");
  std::string big =
      json{{"name", "taskmill.noop"}, {"kwargs", {{"pad", std::string(8000, 'x')}}}}.dump();
  ExpectError(client_->Post(tasks.c_str(), headers_, big, "application/json"), 413);
  ExpectError(client_->Get("/pulp/api/v3/tasks/?colour=red", headers_), 400, "unknown filter");
  ExpectError(client_->Get("/pulp/api/v3/tasks/?pulp_created__gte=yesterday", headers_), 400,
              "date");
  ExpectError(client_->Get("/pulp/api/v3/tasks/?state=sleeping", headers_), 400, "state");
  ExpectError(client_->Get("/pulp/api/v3/tasks/?limit=-3", headers_), 400, "limit");
  ExpectError(client_->Get("/pulp/api/v3/tasks/not-a-uuid/", headers_), 400, "uuid");
  ExpectError(Patch("/pulp/api/v3/tasks/not-a-uuid/", {{"state", "canceled"}}), 400, "uuid");
  ExpectError(client_->Delete("/pulp/api/v3/tasks/not-a-uuid/", headers_), 400, "uuid");
  ExpectError(client_->Get("/pulp/api/v3/task-groups/12345/", headers_), 400, "uuid");
  ExpectError(client_->Get("/pulp/api/v3/workers/x/", headers_), 400, "uuid");
  // Dates that look right but are not.
  ExpectError(client_->Get("/pulp/api/v3/tasks/?pulp_created__gte=2026-13-01", headers_), 400,
              "date");
  ExpectError(client_->Get("/pulp/api/v3/tasks/?finished_at__lt=2026-02-30T10:00:00Z", headers_),
              400, "date");
  ExpectError(client_->Get("/pulp/api/v3/tasks/?started_at=2026-01-01T25:00:00", headers_), 400,
              "date");
  ExpectError(client_->Get("/pulp/api/v3/tasks/?task_group=nope", headers_), 400, "task_group");
  ExpectError(client_->Get("/pulp/api/v3/tasks/?minimal=maybe", headers_), 400, "minimal");
  ExpectError(client_->Get("/pulp/api/v3/tasks/?ordering=colour", headers_), 400, "order");
  ExpectError(client_->Get("/pulp/api/v3/workers/?online=perhaps", headers_), 400, "online");
  ExpectError(client_->Get("/pulp/api/v3/status/?x=1", headers_), 400, "unknown parameter");
  ExpectError(Post(tasks, {{"name", "taskmill.noop"},
                           {"task_group", "6f1d1a52-0000-4000-8000-000000000000"}}),
              400, "does not exist");
  ExpectError(Post(tasks, {{"name", "taskmill.noop"}, {"deferred", false}}), 400, "deferred");
  ExpectError(Post("/pulp/api/v3/tasks/purge/", {{"finished_before", "2026-02-30"}}), 400);
  ExpectError(client_->Patch("/pulp/api/v3/tasks/6f1d1a52-0000-4000-8000-000000000000/", headers_,
                             "{\"state\": ", "application/json"),
              400, "JSON");
  ExpectError(client_->Get("/pulp/api/v3/tasks/6f1d1a52-0000-4000-8000-000000000000/", headers_),
              404);
  ExpectError(client_->Get("/pulp/api/v3/nothing-here/", headers_), 404);
  auto put = client_->Put("/pulp/api/v3/tasks/", headers_, "{}", "application/json");
  ExpectError(put, 405);
  EXPECT_EQ(put->get_header_value("Allow"), "GET, POST");
  ExpectError(client_->Delete("/pulp/api/v3/workers/", headers_), 405);
  ExpectError(Post("/pulp/api/v3/tasks/purge/", {{"states", {"running"}}}), 400, "final state");
  ExpectError(Post("/pulp/api/v3/tasks/purge/", {{"finished_before", "soon"}}), 400);
  ExpectError(client_->Get("/api/pulp/test/tasks/", headers_), 404);  // not enabled
  EXPECT_EQ(GetJson("/pulp/api/v3/tasks/")["count"], 0);
  // The server is still fine.
  EXPECT_FALSE(Dispatch({{"name", "taskmill.noop"}}).empty());
  EXPECT_EQ(GetJson("/pulp/api/v3/tasks/")["count"], 1);
}

// test_delete_cancel_waiting_task, test_delete_cancel_running_task,
// test_cancel_delete_finished_task, test_cancel_nonexistent_task.
TEST_F(ApiTest, CancelAndDeleteOfWaitingRunningFinishedAndUnknownTasks) {
  StartApi();
  StartWorker({"--cancel-grace", "2"});
  auto blocker = Dispatch(
      {{"name", "taskmill.sleep"}, {"kwargs", {{"seconds", 600}}}, {"exclusive_resources", {"R"}}});
  auto waiting = Dispatch({{"name", "taskmill.noop"}, {"exclusive_resources", {"R"}}});
  ASSERT_TRUE(WaitState(blocker, "running"));
  EXPECT_EQ(State(waiting), "waiting");

  ExpectError(client_->Delete(waiting.c_str(), headers_), 409);
  ExpectError(Patch(waiting, {{"state", "completed"}}), 400, "canceled");
  auto c = Patch(waiting, {{"state", "canceled"}});
  ASSERT_TRUE(c);
  EXPECT_EQ(c->status, 200);
  auto wt = json::parse(c->body);
  EXPECT_EQ(wt["state"], "canceled");
  EXPECT_TRUE(wt["started_at"].is_null());
  EXPECT_FALSE(wt["finished_at"].is_null());

  ExpectError(client_->Delete(blocker.c_str(), headers_), 409);
  auto rc = Patch(blocker, {{"state", "canceled"}});
  ASSERT_TRUE(rc);
  EXPECT_EQ(rc->status, 200);
  EXPECT_EQ(json::parse(rc->body)["state"], "canceling");
  ASSERT_TRUE(WaitState(blocker, "canceled", 15s));
  auto bt = GetJson(blocker);
  EXPECT_FALSE(bt["started_at"].is_null());
  EXPECT_FALSE(bt["finished_at"].is_null());

  auto done = Dispatch({{"name", "taskmill.noop"}, {"exclusive_resources", {"R"}}});
  ASSERT_TRUE(WaitState(done, "completed"));
  auto again = Patch(done, {{"state", "canceled"}});
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, 409);
  EXPECT_EQ(json::parse(again->body)["state"], "completed");
  auto del = client_->Delete(done.c_str(), headers_);
  ASSERT_TRUE(del);
  EXPECT_EQ(del->status, 204);
  GetJson(done, 404);
  ExpectError(
      Patch("/pulp/api/v3/tasks/6f1d1a52-0000-4000-8000-000000000000/", {{"state", "canceled"}}),
      404);
}

TEST_F(ApiTest, FieldsExcludeFieldsMinimalFiltersAndPagination) {
  StartApi();
  StartWorker();
  auto t1 = Dispatch({{"name", "taskmill.echo"},
                      {"exclusive_resources", {"a", "b"}},
                      {"shared_resources", {"c"}}});
  ASSERT_TRUE(WaitState(t1, "completed"));
  std::this_thread::sleep_for(1100ms);
  std::string middle = GetJson(t1)["finished_at"];
  std::this_thread::sleep_for(1100ms);
  auto probe = GetJson("/pulp/api/v3/status/");  // nothing
  auto t2 = Dispatch({{"name", "taskmill.noop"}, {"exclusive_resources", {"a"}}});
  auto t3 = Dispatch({{"name", "taskmill.noop"}, {"shared_resources", {"a", "c"}}});
  ASSERT_TRUE(WaitState(t3, "completed"));

  auto f = GetJson(t1 + "?fields=pulp_href,state,worker");
  EXPECT_EQ(f.size(), 3u);
  EXPECT_TRUE(f.contains("pulp_href") && f.contains("state") && f.contains("worker"));
  auto ex = GetJson(t1 + "?exclude_fields=state,worker");
  EXPECT_FALSE(ex.contains("state"));
  EXPECT_FALSE(ex.contains("worker"));
  EXPECT_TRUE(ex.contains("name"));
  auto min = GetJson(t1 + "?minimal=true");
  EXPECT_FALSE(min.contains("progress_reports"));
  EXPECT_FALSE(min.contains("parent_task"));
  EXPECT_FALSE(min.contains("error"));
  EXPECT_TRUE(min.contains("state"));

  EXPECT_EQ(GetJson("/pulp/api/v3/tasks/?name=taskmill.noop")["count"], 2);
  EXPECT_EQ(GetJson("/pulp/api/v3/tasks/?name=nothing.like.this")["count"], 0);
  EXPECT_EQ(GetJson("/pulp/api/v3/tasks/?name__contains=echo")["count"], 1);
  EXPECT_EQ(GetJson("/pulp/api/v3/tasks/?state__in=completed,failed")["count"], 3);
  std::string started = GetJson(t1)["started_at"];
  auto by_start =
      GetJson("/pulp/api/v3/tasks/?started_at=" + httplib::detail::encode_query_param(started));
  EXPECT_GE(by_start["count"].get<int>(), 1);
  auto enc = httplib::detail::encode_query_param(middle);
  EXPECT_EQ(GetJson("/pulp/api/v3/tasks/?pulp_created__gte=" + enc)["count"], 2);
  EXPECT_EQ(GetJson("/pulp/api/v3/tasks/?pulp_created__lte=" + enc)["count"], 1);
  // A date without a zone is UTC; a zone offset is honoured.
  std::string naive = middle.substr(0, middle.size() - 1);  // drop the "Z"
  EXPECT_EQ(GetJson("/pulp/api/v3/tasks/?pulp_created__gte=" +
                    httplib::detail::encode_query_param(naive))["count"],
            2);
  EXPECT_EQ(GetJson("/pulp/api/v3/tasks/?pulp_created__gte=" +
                    httplib::detail::encode_query_param(naive + "+01:00"))["count"],
            3);
  EXPECT_EQ(GetJson("/pulp/api/v3/tasks/?finished_at__gte=2000-01-01")["count"], 3);
  // Resources, with Pulp's AND semantics for __in.
  EXPECT_EQ(GetJson("/pulp/api/v3/tasks/?reserved_resources=a")["count"], 3);
  EXPECT_EQ(GetJson("/pulp/api/v3/tasks/?reserved_resources__in=a,c")["count"], 2);
  EXPECT_EQ(GetJson("/pulp/api/v3/tasks/?exclusive_resources=a")["count"], 2);
  EXPECT_EQ(GetJson("/pulp/api/v3/tasks/?exclusive_resources__in=a,b")["count"], 1);
  EXPECT_EQ(GetJson("/pulp/api/v3/tasks/?shared_resources=c")["count"], 2);
  EXPECT_EQ(GetJson("/pulp/api/v3/tasks/?shared_resources__in=a,c")["count"], 1);
  // Pagination, newest first by default.
  auto page = GetJson("/pulp/api/v3/tasks/?limit=2");
  EXPECT_EQ(page["count"], 3);
  EXPECT_EQ(page["results"].size(), 2u);
  EXPECT_EQ(page["results"][0]["pulp_href"], t3);
  EXPECT_TRUE(page["previous"].is_null());
  ASSERT_TRUE(page["next"].is_string());
  auto page2 = GetJson("/pulp/api/v3/tasks/?limit=2&offset=2");
  EXPECT_EQ(page2["results"].size(), 1u);
  EXPECT_EQ(page2["results"][0]["pulp_href"], t1);
  EXPECT_TRUE(page2["next"].is_null());
  auto oldest = GetJson("/pulp/api/v3/tasks/?ordering=pulp_created&limit=1");
  EXPECT_EQ(oldest["results"][0]["pulp_href"], t1);
  auto minimal_list = GetJson("/pulp/api/v3/tasks/?minimal=true");
  EXPECT_FALSE(minimal_list["results"][0].contains("error"));
  (void)t2;
  (void)probe;
}

// TestImmediateTask...: free and busy resources, deferred and not, the
// timeout, failing immediate and worker tasks.
TEST_F(ApiTest, ImmediateTasks) {
  StartApi({"--immediate-timeout", "1"});
  // Free resources: completed by the time the answer comes.
  auto free_task = Dispatch({{"name", "taskmill.echo"},
                             {"immediate", true},
                             {"deferred", false},
                             {"exclusive_resources", {"u1"}},
                             {"shared_resources", {"u2"}}});
  auto ft = GetJson(free_task);
  EXPECT_EQ(ft["state"], "completed");
  EXPECT_FALSE(ft["finished_at"].is_null());
  EXPECT_TRUE(ft["error"].is_null());
  // No resources at all.
  EXPECT_EQ(State(Dispatch({{"name", "taskmill.noop"}, {"immediate", true}})), "completed");
  // Timeout.
  auto slow =
      Dispatch({{"name", "taskmill.sleep"}, {"kwargs", {{"seconds", 3}}}, {"immediate", true}});
  auto st = GetJson(slow);
  EXPECT_EQ(st["state"], "failed");
  EXPECT_NE(st["error"]["description"].get<std::string>().find("timed out after"),
            std::string::npos);
  // Failing immediate task.
  auto failing = Dispatch({{"name", "taskmill.fail"},
                           {"kwargs", {{"message", "immediate oops"}}},
                           {"immediate", true}});
  EXPECT_EQ(GetJson(failing)["state"], "failed");
  EXPECT_NE(GetJson(failing)["error"]["description"].get<std::string>().find("immediate oops"),
            std::string::npos);

  // Busy resource: a waiting task holds it (no worker yet).
  auto holder = Dispatch({{"name", "taskmill.sleep"},
                          {"kwargs", {{"seconds", 1}}},
                          {"exclusive_resources", {"busy"}}});
  auto refused = Dispatch({{"name", "taskmill.noop"},
                           {"immediate", true},
                           {"deferred", false},
                           {"exclusive_resources", {"busy"}}});
  auto rt = GetJson(refused);
  EXPECT_EQ(rt["state"], "canceled");
  EXPECT_NE(rt["error"]["reason"].get<std::string>().find("Resources temporarily unavailable."),
            std::string::npos);
  auto deferred = Dispatch({{"name", "taskmill.echo"},
                            {"immediate", true},
                            {"deferred", true},
                            {"exclusive_resources", {"busy"}}});
  EXPECT_EQ(State(deferred), "waiting");
  auto deferred_slow = Dispatch({{"name", "taskmill.sleep"},
                                 {"kwargs", {{"seconds", 3}}},
                                 {"immediate", true},
                                 {"exclusive_resources", {"busy"}}});
  auto worker_fail =
      Dispatch({{"name", "taskmill.fail"}, {"kwargs", {{"message", "worker oops"}}}});
  StartWorker({"--immediate-timeout", "1"});
  ASSERT_TRUE(WaitState(deferred, "completed"));
  ASSERT_TRUE(WaitState(deferred_slow, "failed"));
  EXPECT_NE(
      GetJson(deferred_slow)["error"]["description"].get<std::string>().find("timed out after"),
      std::string::npos);
  ASSERT_TRUE(WaitState(worker_fail, "failed"));
  EXPECT_NE(GetJson(worker_fail)["error"]["description"].get<std::string>().find("worker oops"),
            std::string::npos);
  ASSERT_TRUE(WaitState(holder, "completed"));
}

TEST_F(ApiTest, TaskGroups) {
  StartApi();
  auto g = Post("/pulp/api/v3/task-groups/", {{"description", "my group"}});
  ASSERT_TRUE(g);
  ASSERT_EQ(g->status, 201) << g->body;
  std::string group = json::parse(g->body)["pulp_href"];
  for (int i = 0; i < 3; ++i) {
    Dispatch({{"name", "taskmill.noop"}, {"exclusive_resources", {"G"}}, {"task_group", group}});
  }
  auto gj = GetJson(group);
  EXPECT_EQ(gj["waiting"], 3);
  EXPECT_EQ(gj["tasks"].size(), 3u);
  EXPECT_EQ(GetJson("/pulp/api/v3/task-groups/")["count"], 1);
  EXPECT_EQ(GetJson("/pulp/api/v3/tasks/?task_group=" +
                    httplib::detail::encode_query_param(group))["count"],
            3);
  auto c = Patch(group, {{"state", "canceled"}});
  ASSERT_TRUE(c);
  EXPECT_EQ(c->status, 200) << c->body;
  EXPECT_EQ(json::parse(c->body)["canceled"], 3);
  ExpectError(Patch(group, {{"state", "running"}}), 400);
}

TEST_F(ApiTest, CredentialsAreRequiredWhenConfigured) {
  StartApi({"--token", "s3cret", "--basic-user", "admin", "--basic-password", "pw"});
  ExpectError(client_->Get("/pulp/api/v3/tasks/"), 401);
  auto denied =
      client_->Post("/pulp/api/v3/tasks/", R"({"name": "taskmill.noop"})", "application/json");
  ExpectError(denied, 401);
  EXPECT_FALSE(denied->get_header_value("WWW-Authenticate").empty());
  ExpectError(client_->Get("/pulp/api/v3/tasks/", {{"Authorization", "Bearer wrong"}}), 401);
  headers_ = {{"Authorization", "Bearer s3cret"}};
  EXPECT_FALSE(Dispatch({{"name", "taskmill.noop"}}).empty());
  headers_ = {httplib::make_basic_authentication_header("admin", "pw")};
  EXPECT_EQ(GetJson("/pulp/api/v3/tasks/")["count"], 1);
  headers_ = {httplib::make_basic_authentication_header("admin", "nope")};
  ExpectError(client_->Get("/pulp/api/v3/tasks/", headers_), 401);
}

TEST_F(ApiTest, ReadOpenAndRefusalToListenOpenlyWithoutCredentials) {
  StartApi({"--token", "t", "--read-open"});
  EXPECT_EQ(GetJson("/pulp/api/v3/tasks/")["count"], 0);
  ExpectError(Post("/pulp/api/v3/tasks/", {{"name", "taskmill.noop"}}), 401);
  auto r = testing::RunTaskmill(
      {"--database-url", db_, "api", "--listen", fmt::format("0.0.0.0:{}", FreePort())});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("without credentials"), std::string::npos) << r.err;
}

TEST_F(ApiTest, IngestionEndpointsAndLoadClients) {
  StartApi({"--enable-test-endpoints"});
  for (const char* path :
       {"/api/pulp/test/tasks/?timeout=1", "/api/pulp/test/random_lock_tasks/?timeout=1",
        "/api/pulp/test/immediate_tasks/?timeout=1"}) {
    auto j = GetJson(path);
    ASSERT_TRUE(j.contains("tasks_executed")) << path;
    EXPECT_GT(j["tasks_executed"].get<int>(), 0) << path;
  }
  ExpectError(client_->Get("/api/pulp/test/tasks/?timeout=soon"), 400);
  // The immediate endpoint counted tasks that really completed.
  auto completed = GetJson("/pulp/api/v3/tasks/?state=completed&limit=1")["count"].get<int>();
  EXPECT_GT(completed, 0);

  std::string url = fmt::format("http://127.0.0.1:{}/api/pulp/test/tasks/", port_);
  auto bench = testing::RunTaskmill(
      {"bench", "ingest", "--url", url, "--timeout", "1", "--max-workers", "2"});
  EXPECT_EQ(bench.exit_code, 0) << bench.err;
  EXPECT_NE(bench.out.find("Total tasks processed:"), std::string::npos) << bench.out;
  EXPECT_EQ(bench.out.find("Total tasks processed: 0."), std::string::npos) << bench.out;

  // The seed's own Python client, unchanged.
  std::string python = access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "python3";
  std::string cmd = fmt::format(
      "{} {}/tests/api/seed_ingest_client.py --url {} --timeout 2 "
      "--max_workers 2 2>&1",
      python, TASKMILL_SOURCE_DIR, url);
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[512];
  while (fgets(buf, sizeof(buf), p)) out += buf;
  EXPECT_EQ(pclose(p), 0) << out;
  EXPECT_NE(out.find("Total tasks processed: "), std::string::npos) << out;
  EXPECT_EQ(out.find("Total tasks processed: 0."), std::string::npos) << out;
}

TEST_F(ApiTest, PurgeRemovesOnlyOldFinishedTasksOfTheGivenStates) {
  StartApi();
  StartWorker();
  auto ok = Dispatch({{"name", "taskmill.noop"}});
  auto bad = Dispatch({{"name", "taskmill.fail"}});
  auto waiting_behind = Dispatch({{"name", "taskmill.noop"}, {"exclusive_resources", {"Z"}}});
  ASSERT_TRUE(WaitState(ok, "completed"));
  ASSERT_TRUE(WaitState(bad, "failed"));
  ASSERT_TRUE(WaitState(waiting_behind, "completed"));
  // Default: completed tasks older than 30 days: none.
  auto r = Post("/pulp/api/v3/tasks/purge/", json::object());
  ASSERT_TRUE(r);
  EXPECT_EQ(json::parse(r->body)["deleted"], 0);
  r = Post("/pulp/api/v3/tasks/purge/",
           {{"finished_before", "2999-01-01T00:00:00Z"}, {"states", {"failed"}}});
  EXPECT_EQ(json::parse(r->body)["deleted"], 1);
  GetJson(bad, 404);
  EXPECT_EQ(State(ok), "completed");
}

// The ingestion endpoints write, so configured credentials guard them even
// with --read-open; the bench client can send a token.
TEST_F(ApiTest, IngestionEndpointsNeedCredentialsWhenConfigured) {
  StartApi({"--token", "tok", "--read-open", "--enable-test-endpoints"});
  ExpectError(client_->Get("/api/pulp/test/tasks/?timeout=0.2"), 401);
  headers_ = {{"Authorization", "Bearer tok"}};
  EXPECT_GT(GetJson("/api/pulp/test/tasks/?timeout=0.2")["tasks_executed"].get<int>(), 0);
  std::string url = fmt::format("http://127.0.0.1:{}/api/pulp/test/random_lock_tasks/", port_);
  auto bench = testing::RunTaskmill(
      {"bench", "ingest", "--url", url, "--timeout", "1", "--max-workers", "2", "--token", "tok"});
  EXPECT_EQ(bench.exit_code, 0) << bench.out << bench.err;
  EXPECT_NE(bench.out.find("Processed "), std::string::npos) << bench.out;
  EXPECT_EQ(bench.out.find("Total tasks processed: 0."), std::string::npos) << bench.out;
  auto refused = testing::RunTaskmill({"bench", "ingest", "--url", url, "--timeout", "1"});
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.out.find("401"), std::string::npos) << refused.out;
}

// SIGTERM: requests in flight are answered, the process deregisters and
// exits 0.
TEST_F(ApiTest, SigtermFinishesRequestsInFlightDeregistersAndExitsZero) {
  StartApi({"--enable-test-endpoints"});
  auto conn = testing::Connect(db_);
  auto apps = [&] {
    return conn.Exec("SELECT count(*) FROM taskmill.app WHERE app_type = 'api'", DeadlineIn(10s))
        .GetInt(0, 0);
  };
  EXPECT_EQ(apps(), 1);
  std::optional<httplib::Result> long_request;
  std::thread t([&] {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(60, 0);
    long_request = c.Get("/api/pulp/test/tasks/?timeout=3");
  });
  std::this_thread::sleep_for(1s);
  ASSERT_TRUE(api_.Signal(SIGTERM));
  auto status = api_.Wait(DeadlineIn(30s));
  t.join();
  ASSERT_TRUE(status.has_value()) << "still running 30 s after SIGTERM";
  EXPECT_EQ(ExitCodeOf(*status), 0);
  ASSERT_TRUE(long_request.has_value());
  ASSERT_TRUE(*long_request) << "the request in flight got no answer";
  EXPECT_EQ((*long_request)->status, 200) << (*long_request)->body;
  EXPECT_GT(json::parse((*long_request)->body)["tasks_executed"].get<int>(), 0);
  EXPECT_EQ(apps(), 0);
  // Nothing left half done: every task it dispatched exists whole.
  EXPECT_EQ(
      conn.Exec("SELECT count(*) FROM taskmill.task WHERE state <> 'waiting'", DeadlineIn(10s))
          .GetInt(0, 0),
      0);
}

// The pool replaces connections the server closed while they sat idle.
TEST_F(ApiTest, PoolReconnectsAfterTheServerClosedItsConnections) {
  StartApi();
  for (int i = 0; i < 4; ++i) GetJson("/pulp/api/v3/tasks/");
  auto conn = testing::Connect(db_);
  auto killed = conn.Exec(
      "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
      "WHERE datname = current_database() AND pid <> pg_backend_pid()",
      DeadlineIn(10s));
  EXPECT_GE(killed.GetInt(0, 0), 1);
  std::this_thread::sleep_for(200ms);
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(GetJson("/pulp/api/v3/tasks/")["count"], 0) << "request " << i;
  }
  EXPECT_EQ(State(Dispatch({{"name", "taskmill.noop"}, {"immediate", true}})), "completed");
  auto metrics = client_->Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("taskmill_api_db_connections_opened"), std::string::npos);
}

// Declared dead (its row deleted, as the janitor does): the API registers
// again, at the next heartbeat or at once when an immediate dispatch needs
// it.
TEST_F(ApiTest, ReRegistersWhenDeclaredDead) {
  StartApi({"--heartbeat-interval", "30", "--ttl", "120"});
  auto conn = testing::Connect(db_);
  auto api_ids = [&] {
    auto r = conn.Exec("SELECT id FROM taskmill.app WHERE app_type = 'api'", DeadlineIn(10s));
    std::vector<std::string> ids;
    for (int i = 0; i < r.rows(); ++i) ids.push_back(r.GetString(i, 0));
    return ids;
  };
  auto before = api_ids();
  ASSERT_EQ(before.size(), 1u);
  conn.Exec("SELECT taskmill.deregister_app($1::uuid)", pg::Params().Add(before[0]),
            DeadlineIn(10s));
  auto href = Dispatch({{"name", "taskmill.echo"}, {"immediate", true}, {"deferred", false}});
  EXPECT_EQ(State(href), "completed");
  auto after = api_ids();
  ASSERT_EQ(after.size(), 1u);
  EXPECT_NE(after[0], before[0]);
}

// An immediate task left running under this live API process (its outcome
// was never recorded) is finalised by the sweep instead of holding its
// resources forever.
TEST_F(ApiTest, SweepFinalisesLostImmediateTasks) {
  StartApi({"--heartbeat-interval", "0.2", "--ttl", "5"});
  auto conn = testing::Connect(db_);
  std::string app_id =
      conn.Exec("SELECT id FROM taskmill.app WHERE app_type = 'api'", DeadlineIn(10s))
          .GetString(0, 0);
  auto lost = Dispatch({{"name", "taskmill.noop"}, {"exclusive_resources", {"L"}}});
  auto behind = Dispatch({{"name", "taskmill.noop"}, {"exclusive_resources", {"L"}}});
  std::string lost_id = GetJson(lost)["pulp_href"].get<std::string>();
  lost_id = lost_id.substr(lost_id.size() - 37, 36);
  conn.Exec(
      "UPDATE taskmill.task SET state = 'running', app_lock = $1::uuid, immediate = true, "
      "started_at = now() - interval '1 hour' WHERE id = $2::uuid",
      pg::Params().Add(app_id).Add(lost_id), DeadlineIn(10s));
  ASSERT_TRUE(WaitState(lost, "failed", 10s));
  EXPECT_NE(GetJson(lost)["error"]["description"].get<std::string>().find("lost track"),
            std::string::npos);
  // Its resource passed on.
  EXPECT_TRUE(WaitFor([&] { return !GetJson(behind)["unblocked_at"].is_null(); }, 10s));
}

// With one HTTP thread there is no second connection for the immediate
// ingestion endpoint: it runs on one, and still counts exactly.
TEST_F(ApiTest, ImmediateIngestionOnASingleConnection) {
  StartApi({"--threads", "1", "--enable-test-endpoints"});
  int n = GetJson("/api/pulp/test/immediate_tasks/?timeout=0.5")["tasks_executed"].get<int>();
  EXPECT_GT(n, 0);
  EXPECT_EQ(GetJson("/pulp/api/v3/tasks/?state=completed&limit=1")["count"].get<int>(), n);
  EXPECT_EQ(GetJson("/pulp/api/v3/tasks/?limit=1")["count"].get<int>(), n);
}

// The counts are exact: every task counted exists, and no other.
TEST_F(ApiTest, IngestionCountsExactly) {
  StartApi({"--enable-test-endpoints"});
  int n = GetJson("/api/pulp/test/immediate_tasks/?timeout=0.5")["tasks_executed"].get<int>();
  EXPECT_GT(n, 0);
  EXPECT_EQ(GetJson("/pulp/api/v3/tasks/?state=completed&limit=1")["count"].get<int>(), n);
  EXPECT_EQ(GetJson("/pulp/api/v3/tasks/?limit=1")["count"].get<int>(), n);
  int d = GetJson("/api/pulp/test/tasks/?timeout=0.5")["tasks_executed"].get<int>();
  EXPECT_GT(d, 0);
  EXPECT_EQ(GetJson("/pulp/api/v3/tasks/?state=waiting&limit=1")["count"].get<int>(), d);
  auto metrics = client_->Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("taskmill_api_immediate_tasks_total{outcome=\"completed\"}"),
            std::string::npos)
      << metrics->body;
}

// A cancel of an immediate task running in the API process: 200
// "canceling" at once; the function is not interrupted, and the task ends
// "canceled" when it returns (in Pulp it stays canceling until the API
// process exits).
TEST_F(ApiTest, CancelOfAnImmediateTaskRunningInTheApiEndsCanceled) {
  StartApi({"--immediate-timeout", "10"});
  std::optional<httplib::Result> dispatched;
  std::thread t([&] {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(60, 0);
    dispatched =
        c.Post("/pulp/api/v3/tasks/",
               json{{"name", "taskmill.sleep"}, {"kwargs", {{"seconds", 1.5}}}, {"immediate", true}}
                   .dump(),
               "application/json");
  });
  std::string href;
  ASSERT_TRUE(WaitFor(
      [&] {
        auto page = GetJson("/pulp/api/v3/tasks/?state=running");
        if (page["count"] != 1) return false;
        href = page["results"][0]["pulp_href"];
        return true;
      },
      10s));
  auto c = Patch(href, {{"state", "canceled"}});
  ASSERT_TRUE(c);
  EXPECT_EQ(c->status, 200) << c->body;
  EXPECT_EQ(json::parse(c->body)["state"], "canceling");
  t.join();
  ASSERT_TRUE(dispatched.has_value() && *dispatched);
  EXPECT_EQ((*dispatched)->status, 202);
  EXPECT_EQ(json::parse((*dispatched)->body)["task"], href);
  auto task = GetJson(href);
  EXPECT_EQ(task["state"], "canceled");
  EXPECT_FALSE(task["started_at"].is_null());
  EXPECT_FALSE(task["finished_at"].is_null());
}

TEST_F(ApiTest, RefusesToStartWithoutAUsableDatabase) {
  auto r = testing::RunTaskmill(
      {"--database-url", "host=/nonexistent-taskmill-socket-dir dbname=none connect_timeout=2",
       "api", "--listen", fmt::format("127.0.0.1:{}", FreePort())});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("cannot use the database"), std::string::npos) << r.err;
  auto bad_listen = testing::RunTaskmill({"--database-url", db_, "api", "--listen", "nowhere"});
  EXPECT_NE(bad_listen.exit_code, 0);
  EXPECT_NE(bad_listen.err.find("ADDR:PORT"), std::string::npos) << bad_listen.err;
}

// POST /tasks/ with a JSON array: one transaction, the semantics of one POST
// per element in order, or nothing at all.
TEST_F(ApiTest, PostingAnArrayDispatchesABatchInOrderOrNothing) {
  StartApi();
  json batch = json::array();
  for (int i = 0; i < 300; ++i) {
    batch.push_back({{"name", "taskmill.echo"}, {"args", {i}}, {"exclusive_resources", {"repo"}}});
  }
  auto r = Post("/pulp/api/v3/tasks/", batch);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 202) << r->body;
  auto hrefs = json::parse(r->body)["tasks"];
  ASSERT_EQ(hrefs.size(), 300u);
  // Creation order is array order: the first is ready, the rest wait behind it.
  auto first = GetJson(hrefs[0].get<std::string>());
  EXPECT_FALSE(first["unblocked_at"].is_null());
  auto last = GetJson(hrefs[299].get<std::string>());
  EXPECT_TRUE(last["unblocked_at"].is_null());
  // (The API does not show args, as Pulp does not: read them from the table.)
  auto conn = testing::Connect(db_);
  auto rows = conn.Exec("SELECT id::text, args->>0 FROM taskmill.task ORDER BY seq",
                        DeadlineIn(std::chrono::seconds(30)));
  ASSERT_EQ(rows.rows(), 300);
  for (int i = 0; i < rows.rows(); ++i) {
    EXPECT_EQ("/pulp/api/v3/tasks/" + rows.GetString(i, 0) + "/", hrefs[i]);
    EXPECT_EQ(rows.GetString(i, 1), std::to_string(i));
  }

  auto count = [&] { return GetJson("/pulp/api/v3/tasks/?limit=1")["count"].get<int>(); };
  int before = count();
  batch[7]["kwargs"] = json::array();
  ExpectError(Post("/pulp/api/v3/tasks/", batch), 400, "tasks[7]: kwargs must be a JSON object");
  batch[7].erase("kwargs");
  batch[9]["name"] = "no.such.function";
  ExpectError(Post("/pulp/api/v3/tasks/", batch), 400, "tasks[9]: unknown task function");
  batch[9]["name"] = "taskmill.echo";
  batch[3]["deferred"] = false;
  ExpectError(Post("/pulp/api/v3/tasks/", batch), 400, "tasks[3]:");
  batch[3].erase("deferred");
  batch[4] = 5;
  ExpectError(Post("/pulp/api/v3/tasks/", batch), 400, "tasks[4]: a task must be a JSON object");
  EXPECT_EQ(count(), before);
  auto empty = Post("/pulp/api/v3/tasks/", json::array());
  ASSERT_TRUE(empty);
  EXPECT_EQ(empty->status, 202) << empty->body;
  EXPECT_EQ(json::parse(empty->body)["tasks"], json::array());
}

}  // namespace
}  // namespace taskmill
