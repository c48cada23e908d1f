// The API's HTTP front under hostile or odd clients (issue 8): each test
// drives the real server process over real sockets, raw where httplib's
// client would not send what a hostile client does.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <thread>

#include <fmt/format.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "api/http/http_server.h"
#include "support/taskmill_fixture.h"
#include "support/test_postgres.h"

namespace taskmill {
namespace {

using nlohmann::json;
using testing::RunTaskmill;
using testing::StartTaskmill;
using testing::WaitFor;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

using testing::FreePort;

// A raw client connection (blocking, with a receive timeout).
class Raw {
 public:
  explicit Raw(int port, const char* source = nullptr) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (source != nullptr) {
      sockaddr_in s{};
      s.sin_family = AF_INET;
      inet_pton(AF_INET, source, &s.sin_addr);
      bind(fd_, reinterpret_cast<sockaddr*>(&s), sizeof(s));
    }
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  }
  ~Raw() {
    if (fd_ >= 0) close(fd_);
  }
  Raw(const Raw&) = delete;
  Raw& operator=(const Raw&) = delete;

  bool connected() const { return connected_; }
  int fd() const { return fd_; }
  bool Send(const std::string& s) {
    size_t off = 0;
    while (off < s.size()) {
      ssize_t n = send(fd_, s.data() + off, s.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return false;
      off += static_cast<size_t>(n);
    }
    return true;
  }
  // Reads one response (head and Content-Length body), or until the
  // connection ends or `limit` passes. `reset` tells if it was reset.
  std::string ReadResponse(std::chrono::milliseconds limit = 10s, bool* reset = nullptr) {
    auto end = std::chrono::steady_clock::now() + limit;
    for (;;) {
      auto head_end = buf_.find("\r\n\r\n");
      if (head_end != std::string::npos) {
        size_t length = 0;
        std::string lower = buf_.substr(0, head_end);
        std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
        auto cl = lower.find("content-length:");
        if (cl != std::string::npos) length = std::stoul(lower.substr(cl + 15));
        if (buf_.size() >= head_end + 4 + length) {
          std::string out = buf_.substr(0, head_end + 4 + length);
          buf_.erase(0, out.size());
          return out;
        }
      }
      int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                      end - std::chrono::steady_clock::now())
                                      .count());
      if (left <= 0) break;
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, left) <= 0) break;
      char tmp[65536];
      ssize_t n = recv(fd_, tmp, sizeof(tmp), 0);
      if (n < 0 && errno == ECONNRESET && reset) *reset = true;
      if (n <= 0) break;
      buf_.append(tmp, static_cast<size_t>(n));
    }
    std::string out = buf_;
    buf_.clear();
    return out;
  }
  // True if the server closed the connection within `limit`.
  bool ClosedWithin(std::chrono::milliseconds limit) {
    auto end = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < end) {
      pollfd p{fd_, POLLIN, 100};
      if (poll(&p, 1, 100) <= 0) continue;
      char tmp[4096];
      ssize_t n = recv(fd_, tmp, sizeof(tmp), 0);
      if (n <= 0) return true;
    }
    return false;
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
  std::string buf_;
};

int StatusOf(const std::string& response) {
  if (response.rfind("HTTP/1.1 ", 0) != 0 || response.size() < 12) return -1;
  return std::stoi(response.substr(9, 3));
}
json BodyOf(const std::string& response) {
  auto p = response.find("\r\n\r\n");
  if (p == std::string::npos) return json();
  return json::parse(response.substr(p + 4), nullptr, false);
}

long RssKb(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/status", pid));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

class HttpLimitsTest : public ::testing::Test {
 protected:
  void SetUp() override { db_ = testing::MigratedTestDatabase(); }
  void TearDown() override {
    if (HasFailure()) testing::PrintLogs(logs_);
  }

  std::vector<std::string> ApiArgs(int port, const std::vector<std::string>& extra) {
    std::vector<std::string> args = {
        "--database-url", db_, "api", "--listen", fmt::format("127.0.0.1:{}", port),
        "--threads",      "4"};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  }

  // Starts the API server and waits until it answers.
  void StartApi(std::vector<std::string> extra = {}, bool tls = false) {
    port_ = FreePort();
    std::string log;
    api_ = StartTaskmill(ApiArgs(port_, extra), &log);
    logs_.push_back(log);
    if (tls) {
      auto c = std::make_unique<httplib::SSLClient>("127.0.0.1", port_);
      c->enable_server_certificate_verification(false);
      client_ = std::move(c);
    } else {
      client_ = std::make_unique<httplib::ClientImpl>("127.0.0.1", port_);
    }
    client_->set_read_timeout(30, 0);
    ASSERT_TRUE(WaitFor(
        [&] {
          auto r = client_->Get("/pulp/api/v3/status/", headers_);
          return r && (r->status == 200 || r->status == 401);
        },
        30s))
        << testing::ReadFile(log);
  }

  // The server process is alive and answers.
  void ExpectAlive() {
    EXPECT_TRUE(api_.running());
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(10, 0);
    auto r = c.Get("/pulp/api/v3/status/", headers_);
    ASSERT_TRUE(r) << "the server does not answer";
    EXPECT_EQ(r->status, 200);
  }

  // Status and JSON body of one raw request on a new connection.
  std::pair<int, json> RawExchange(const std::string& request) {
    Raw raw(port_);
    EXPECT_TRUE(raw.connected());
    raw.Send(request);
    std::string resp = raw.ReadResponse();
    return {StatusOf(resp), BodyOf(resp)};
  }

  // Asserts an error status with a JSON {"detail": ...} body (and the limit
  // named, if given).
  void ExpectError(int status, const json& body, int expect, const std::string& limit = "") {
    EXPECT_EQ(status, expect) << body.dump();
    ASSERT_TRUE(body.is_object()) << body.dump();
    EXPECT_TRUE(body.contains("detail")) << body.dump();
    if (!limit.empty()) {
      EXPECT_EQ(body.value("limit", ""), limit) << body.dump();
    }
  }

  // requests_total summed over the lines of /metrics that hold `needle`.
  double MetricSum(const std::string& needle) {
    auto r = client_->Get("/metrics", headers_);
    if (!r) return -1;
    double sum = 0;
    std::istringstream in(r->body);
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("taskmill_api_requests_total{", 0) == 0 &&
          line.find(needle) != std::string::npos) {
        sum += std::stod(line.substr(line.rfind(' ') + 1));
      }
    }
    return sum;
  }

  int64_t TaskCount() {
    auto conn = testing::Connect(db_);
    return conn.Exec("SELECT count(*) FROM taskmill.task", DeadlineIn(10s)).GetInt(0, 0);
  }

  std::string TempFile(const std::string& name, const std::string& content) {
    std::string path = fmt::format("{}/http-limits-{}-{}", ::testing::TempDir(), getpid(), name);
    std::ofstream(path) << content;
    return path;
  }

  std::string db_;
  int port_ = 0;
  Subprocess api_;
  std::vector<std::string> logs_;
  std::unique_ptr<httplib::ClientImpl> client_;
  httplib::Headers headers_;
};

const std::string kTasks = "/pulp/api/v3/tasks/";

// Finding 2: std::regex recursed once per character (UuidFromRef's ".*/"
// and the router's "([^/]+)") and overflowed the stack.
TEST_F(HttpLimitsTest, LongTaskGroupOrPathSegmentIsA400NotACrash) {
  StartApi({"--max-request-line", "200000", "--max-head-bytes", "300000"});
  for (size_t n : {30000, 60000}) {
    std::string group(n, 'a');
    group += "/00000000-0000-0000-0000-00000000000/";  // one digit short
    auto r = client_->Post(kTasks, json{{"name", "taskmill.noop"}, {"task_group", group}}.dump(),
                           "application/json");
    ASSERT_TRUE(r) << "no answer for a task_group of " << n << " characters";
    EXPECT_EQ(r->status, 400) << r->body;
  }
  auto r = client_->Get(kTasks + std::string(100000, 'b') + "/");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400) << r->body.substr(0, 200);
  // Over the string limit: named.
  r = client_->Post(kTasks,
                    json{{"name", "taskmill.noop"}, {"task_group", std::string(70000, 'c')}}.dump(),
                    "application/json");
  ASSERT_TRUE(r);
  ExpectError(r->status, json::parse(r->body), 400, "max-json-string-bytes");
  ExpectAlive();
  EXPECT_EQ(TaskCount(), 0);
}

TEST_F(HttpLimitsTest, DeepNestingAndHugeContainersAre400sNamingTheLimit) {
  StartApi();
  auto post = [&](const std::string& body) {
    auto r = client_->Post(kTasks, body, "application/json");
    EXPECT_TRUE(r);
    return r ? std::make_pair(r->status, json::parse(r->body, nullptr, false))
             : std::make_pair(-1, json());
  };
  for (int depth : {50000, 20000, 100}) {
    auto [st, body] = post(R"({"name": "taskmill.echo", "args": )" + std::string(depth, '[') +
                           std::string(depth, ']') + "}");
    ExpectError(st, body, 400, "max-json-depth");
    std::string kwargs;
    for (int i = 0; i < depth; ++i) kwargs += R"({"a": )";
    kwargs += "1" + std::string(depth, '}');
    std::tie(st, body) = post(R"({"name": "taskmill.echo", "kwargs": )" + kwargs + "}");
    ExpectError(st, body, 400, "max-json-depth");
  }
  // Brackets inside strings are not nesting.
  auto [st, body] =
      post(json{{"name", "taskmill.echo"}, {"args", {std::string(5000, '[')}}}.dump());
  EXPECT_EQ(st, 202) << body.dump();
  // The default limit (64) leaves room for ordinary arguments.
  std::tie(st, body) = post(R"({"name": "taskmill.echo", "args": )" + std::string(60, '[') +
                            std::string(60, ']') + "}");
  EXPECT_EQ(st, 202) << body.dump();
  std::tie(st, body) =
      post(json{{"name", "taskmill.echo"}, {"args", json(std::vector<int>(10001, 1))}}.dump());
  ExpectError(st, body, 400, "max-json-items");
  ExpectAlive();
}

// Finding 4: one reactor thread reads every connection; workers only get
// complete requests.
TEST_F(HttpLimitsTest, ThreeHundredSlowClientsDoNotStopNormalRequests) {
  StartApi({"--max-connections-per-address", "2000", "--head-timeout", "60"});
  std::vector<std::unique_ptr<Raw>> slow;
  for (int i = 0; i < 300; ++i) {
    slow.push_back(std::make_unique<Raw>(port_));
    ASSERT_TRUE(slow.back()->connected());
    slow.back()->Send("GET /pulp/api/v3/status/ HTTP/1.1\r\nHost: x\r\nX-Slow: ");
  }
  std::atomic<bool> stop{false};
  std::thread drip([&] {
    while (!stop) {
      for (auto& s : slow) s->Send("a");
      std::this_thread::sleep_for(500ms);
    }
  });
  int answered = 0;
  for (int i = 0; i < 8; ++i) {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(10, 0);
    c.set_connection_timeout(10, 0);
    auto r = c.Get("/pulp/api/v3/status/");
    if (r && r->status == 200) ++answered;
  }
  stop = true;
  drip.join();
  EXPECT_EQ(answered, 8);
}

TEST_F(HttpLimitsTest, ASlowHeadIsCutOffWith408) {
  StartApi({"--head-timeout", "1"});
  Raw raw(port_);
  raw.Send("GET /pulp/api/v3/status/ HTTP/1.1\r\nHost: x\r\n");
  // Trickle a byte now and then: the deadline is for the whole head.
  for (int i = 0; i < 4; ++i) {
    std::this_thread::sleep_for(300ms);
    raw.Send("X");
  }
  std::string resp = raw.ReadResponse(15s);
  ExpectError(StatusOf(resp), BodyOf(resp), 408, "head-timeout");
  EXPECT_TRUE(raw.ClosedWithin(10s));
}

TEST_F(HttpLimitsTest, IdleKeepAliveConnectionsAreClosedAndDoNotDelayOthers) {
  StartApi({"--idle-timeout", "1"});
  std::vector<std::unique_ptr<Raw>> idle;
  for (int i = 0; i < 40; ++i) {
    idle.push_back(std::make_unique<Raw>(port_));
    idle.back()->Send("GET /pulp/api/v3/status/ HTTP/1.1\r\nHost: x\r\n\r\n");
    ASSERT_EQ(StatusOf(idle.back()->ReadResponse()), 200);
  }
  // Four threads, forty connections kept open: the next requests are still
  // answered.
  for (int i = 0; i < 4; ++i) {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(10, 0);
    auto r = c.Get("/pulp/api/v3/status/");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
  }
  for (auto& c : idle) EXPECT_TRUE(c->ClosedWithin(15s));
}

TEST_F(HttpLimitsTest, PostWithoutContentLengthIsAnsweredAtOnce) {
  StartApi();
  Raw raw(port_);
  raw.Send(
      "POST /pulp/api/v3/tasks/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\r\n");
  std::string resp = raw.ReadResponse(10s);
  ExpectError(StatusOf(resp), BodyOf(resp), 400);
  EXPECT_EQ(TaskCount(), 0);
}

// Finding 5: the body limit holds for chunked bodies, read chunk by chunk.
TEST_F(HttpLimitsTest, ChunkedBodyOverTheLimitIs413WithoutMemoryGrowth) {
  StartApi({"--max-body-bytes", "1048576"});
  // Within the limit, chunked works.
  {
    Raw raw(port_);
    std::string body = json{{"name", "taskmill.noop"}}.dump();
    raw.Send(
        fmt::format("POST /pulp/api/v3/tasks/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
                    "chunked\r\nContent-Type: application/json\r\n\r\n{:x}\r\n{}\r\n0\r\n\r\n",
                    body.size(), body));
    EXPECT_EQ(StatusOf(raw.ReadResponse()), 202);
  }
  long before = RssKb(api_.pid());
  Raw raw(port_);
  raw.Send(
      "POST /pulp/api/v3/tasks/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
      "Content-Type: application/json\r\n\r\n");
  std::string chunk = fmt::format("{:x}\r\n{}\r\n", 65536, std::string(65536, ' '));
  size_t sent = 0;
  std::string resp;
  while (sent < (50u << 20)) {
    pollfd p{raw.fd(), POLLIN, 0};
    if (poll(&p, 1, 0) > 0) break;  // the server answered
    if (!raw.Send(chunk)) break;
    sent += 65536;
  }
  resp = raw.ReadResponse(10s);
  EXPECT_LT(sent, 10u << 20) << "the server kept reading";
  ExpectError(StatusOf(resp), BodyOf(resp), 413, "max-body-bytes");
  long after = RssKb(api_.pid());
  EXPECT_LT(after - before, 20 * 1024) << before << " kB before, " << after << " kB after";
  EXPECT_EQ(TaskCount(), 1);
  ExpectAlive();
}

TEST_F(HttpLimitsTest, TooManyOrTooLargeHeadersAre431) {
  StartApi();
  std::string many = "GET /pulp/api/v3/status/ HTTP/1.1\r\nHost: x\r\n";
  for (int i = 0; i < 10000; ++i) many += fmt::format("X-H{}: v\r\n", i);
  auto [st, body] = RawExchange(many + "\r\n");
  ExpectError(st, body, 431, "max-headers");
  std::tie(st, body) = RawExchange("GET /pulp/api/v3/status/ HTTP/1.1\r\nHost: x\r\nX-Big: " +
                                   std::string(100000, 'v') + "\r\n\r\n");
  ExpectError(st, body, 431, "max-header-bytes");
  std::string large = "GET /pulp/api/v3/status/ HTTP/1.1\r\nHost: x\r\n";
  for (int i = 0; i < 50; ++i) large += fmt::format("X-H{}: {}\r\n", i, std::string(1000, 'v'));
  std::tie(st, body) = RawExchange(large + "\r\n");
  ExpectError(st, body, 431, "max-head-bytes");
  std::tie(st, body) =
      RawExchange("GET /pulp/api/v3/" + std::string(20000, 'p') + " HTTP/1.1\r\nHost: x\r\n\r\n");
  ExpectError(st, body, 414, "max-request-line");
  // Every one of them is counted.
  EXPECT_GE(MetricSum("route=\"rejected\""), 4);
  ExpectAlive();
}

// Finding 6.
TEST_F(HttpLimitsTest, InvalidUtf8InPathOrParameterIs400AndCounted) {
  StartApi();
  double before = MetricSum("status=\"400\"");
  for (const std::string target :
       {"/pulp/api/v3/tasks/%FF%FE/", "/pulp/api/v3/tasks/?%FF=1", "/pulp/api/v3/tasks/?name=%C3",
        "/pulp/api/v3/\xff\xfe/", "/pulp/api/v3/tasks/?\xc3\x28=1"}) {
    Raw raw(port_);
    raw.Send("GET " + target + " HTTP/1.1\r\nHost: x\r\n\r\n");
    std::string resp = raw.ReadResponse();
    ExpectError(StatusOf(resp), BodyOf(resp), 400);
    EXPECT_EQ(resp.find("EXCEPTION_WHAT"), std::string::npos) << resp;
  }
  EXPECT_EQ(MetricSum("status=\"400\"") - before, 5);
  ExpectAlive();
}

// Finding 7.
TEST_F(HttpLimitsTest, ASecondServerOnAPortInUseExitsWithAnError) {
  StartApi();
  auto second = RunTaskmill(ApiArgs(port_, {}));
  EXPECT_NE(second.exit_code, 0);
  EXPECT_NE(second.err.find("already in use"), std::string::npos) << second.err;
  ExpectAlive();
}

// Finding 8.
TEST_F(HttpLimitsTest, MalformedCredentialSettingsStopTheStart) {
  int port = FreePort();
  for (const std::string bad : {"admin", ":pw", ":", "admin:", "ad min:pw"}) {
    auto r = RunTaskmill(ApiArgs(port, {}), {"TASKMILL_API_BASIC=" + bad});
    EXPECT_EQ(r.exit_code, 2) << "TASKMILL_API_BASIC=" << bad << ": " << r.err;
    EXPECT_NE(r.err.find("TASKMILL_API_BASIC"), std::string::npos) << r.err;
  }
  auto r = RunTaskmill(ApiArgs(port, {}), {"TASKMILL_API_TOKEN="});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  r = RunTaskmill(ApiArgs(port, {"--token-file", TempFile("empty-token", "\n")}));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  r = RunTaskmill(ApiArgs(port, {"--token-file", TempFile("spaced-token", "to ken\n")}));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  r = RunTaskmill(ApiArgs(port, {"--basic-file", TempFile("basic-nocolon", "admin\n")}));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  r = RunTaskmill(ApiArgs(port, {"--token-file", "/nonexistent/token"}));
  EXPECT_EQ(r.exit_code, 2) << r.err;
}

TEST_F(HttpLimitsTest, CredentialsFromFilesAndSchemesInAnyCase) {
  StartApi({"--token-file", TempFile("token", "s3cret\n"), "--basic-file",
            TempFile("basic", "admin:pw\n")});
  auto status = [&](const std::string& auth) {
    httplib::Headers h;
    if (!auth.empty()) h.emplace("Authorization", auth);
    auto r = client_->Get("/pulp/api/v3/status/", h);
    return r ? r->status : -1;
  };
  EXPECT_EQ(status(""), 401);
  EXPECT_EQ(status("Bearer s3cret"), 200);
  EXPECT_EQ(status("bearer s3cret"), 200);
  EXPECT_EQ(status("BEARER   s3cret "), 200);
  EXPECT_EQ(status("bearer wrong"), 401);
  EXPECT_EQ(status("basic YWRtaW46cHc="), 200);  // admin:pw
  EXPECT_EQ(status("BASIC YWRtaW46cHc="), 200);
  EXPECT_EQ(status("basic YWRtaW46bm9wZQ=="), 401);  // admin:nope
  EXPECT_EQ(status("s3cret"), 401);
  EXPECT_EQ(status("Bearer"), 401);
}

// Finding 10.
TEST_F(HttpLimitsTest, RangeIsIgnoredAndHostIsNotTrustedIntoLinks) {
  StartApi();
  for (int i = 0; i < 3; ++i) {
    auto r = client_->Post(kTasks, json{{"name", "taskmill.noop"}}.dump(), "application/json");
    ASSERT_TRUE(r && r->status == 202);
  }
  auto r = client_->Get("/pulp/api/v3/status/", {{"Range", "bytes=0-10"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_FALSE(json::parse(r->body, nullptr, false).is_discarded()) << r->body;
  auto [st, body] = RawExchange(
      "GET /pulp/api/v3/tasks/?limit=1&offset=1 HTTP/1.1\r\nHost: evil.example\r\n\r\n");
  ASSERT_EQ(st, 200) << body.dump();
  for (const char* k : {"next", "previous"}) {
    ASSERT_TRUE(body[k].is_string()) << body.dump();
    std::string link = body[k];
    EXPECT_EQ(link.find("evil"), std::string::npos) << link;
    EXPECT_EQ(link.rfind("/pulp/api/v3/tasks/?", 0), 0u) << link;
  }
}

TEST_F(HttpLimitsTest, PublicUrlPrefixesLinks) {
  StartApi({"--public-url", "https://tasks.example.com/"});
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(client_->Post(kTasks, json{{"name", "taskmill.noop"}}.dump(), "application/json"));
  }
  auto [st, body] =
      RawExchange("GET /pulp/api/v3/tasks/?limit=1 HTTP/1.1\r\nHost: evil.example\r\n\r\n");
  ASSERT_EQ(st, 200);
  EXPECT_EQ(body["next"], "https://tasks.example.com/pulp/api/v3/tasks/?limit=1&offset=1");
}

TEST_F(HttpLimitsTest, GetWithABodyAndConnectionCloseIsAnswered) {
  StartApi();
  for (size_t n : {11000, 200000}) {
    Raw raw(port_);
    raw.Send(fmt::format(
        "GET /pulp/api/v3/status/ HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: "
        "close\r\n\r\n{}",
        n, std::string(n, 'x')));
    bool reset = false;
    std::string resp = raw.ReadResponse(10s, &reset);
    EXPECT_FALSE(reset);
    EXPECT_EQ(StatusOf(resp), 200) << resp.substr(0, 300);
    EXPECT_FALSE(BodyOf(resp).is_discarded());
  }
}

TEST_F(HttpLimitsTest, FormBodiesGetTheAnswersJsonWould) {
  StartApi({"--max-body-bytes", "65536"});
  std::string form = "name=taskmill.noop&x=" + std::string(9000, 'a');
  auto r = client_->Post(kTasks, form, "application/x-www-form-urlencoded");
  ASSERT_TRUE(r);
  ExpectError(r->status, json::parse(r->body, nullptr, false), 400);
  r = client_->Post(kTasks, form + std::string(70000, 'a'), "application/x-www-form-urlencoded");
  ASSERT_TRUE(r);
  ExpectError(r->status, json::parse(r->body, nullptr, false), 413, "max-body-bytes");
  EXPECT_EQ(TaskCount(), 0);
}

TEST_F(HttpLimitsTest, ConnectionsPerAddressAreCapped) {
  StartApi({"--max-connections-per-address", "5"});
  client_.reset();  // its keep-alive connection would count
  std::this_thread::sleep_for(500ms);
  std::vector<std::unique_ptr<Raw>> open;
  for (int i = 0; i < 5; ++i) {
    open.push_back(std::make_unique<Raw>(port_));
    open.back()->Send("GET /pulp/api/v3/status/ HTTP/1.1\r\nHost: x\r\n\r\n");
    ASSERT_EQ(StatusOf(open.back()->ReadResponse()), 200);
  }
  Raw extra(port_);
  std::string resp = extra.ReadResponse();
  ExpectError(StatusOf(resp), BodyOf(resp), 503, "max-connections-per-address");
  // Another address is not affected.
  Raw other(port_, "127.0.0.2");
  other.Send("GET /pulp/api/v3/status/ HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(StatusOf(other.ReadResponse()), 200);
  open.pop_back();
  ASSERT_TRUE(WaitFor(
      [&] {
        Raw again(port_);
        again.Send("GET /pulp/api/v3/status/ HTTP/1.1\r\nHost: x\r\n\r\n");
        return StatusOf(again.ReadResponse()) == 200;
      },
      10s));
}

TEST_F(HttpLimitsTest, TlsServesHttpsAndNotPlainText) {
  std::string dir = fmt::format("{}/http-limits-tls-{}", ::testing::TempDir(), getpid());
  fs::create_directories(dir);
  std::string cmd = fmt::format(
      "openssl req -x509 -newkey rsa:2048 -nodes -keyout {0}/key.pem -out {0}/cert.pem -days 1 "
      "-subj /CN=localhost >{0}/openssl.log 2>&1",
      dir);
  ASSERT_EQ(std::system(cmd.c_str()), 0) << testing::ReadFile(dir + "/openssl.log");
  StartApi({"--tls-cert", dir + "/cert.pem", "--tls-key", dir + "/key.pem", "--token-file",
            TempFile("tls-token", "tok")},
           /*tls=*/true);
  headers_ = {{"Authorization", "Bearer tok"}};
  auto r =
      client_->Post(kTasks, headers_, json{{"name", "taskmill.noop"}}.dump(), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 202) << r->body;
  r = client_->Get("/pulp/api/v3/tasks/", headers_);
  ASSERT_TRUE(r);
  EXPECT_EQ(json::parse(r->body)["count"], 1);
  // Keep-alive and a larger body over TLS.
  r = client_->Post(kTasks, headers_,
                    json{{"name", "taskmill.echo"}, {"args", {std::string(60000, 'x')}}}.dump(),
                    "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 202) << r->body;
  // Plain HTTP gets no answer from a TLS port.
  httplib::Client plain("127.0.0.1", port_);
  plain.set_read_timeout(5, 0);
  auto p = plain.Get("/pulp/api/v3/status/");
  EXPECT_TRUE(!p || p->status != 200);
  r = client_->Get("/pulp/api/v3/status/", headers_);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST_F(HttpLimitsTest, NonLoopbackNeedsCredentialsAndTls) {
  int port = FreePort();
  auto r = RunTaskmill({"--database-url", db_, "api", "--listen", fmt::format("0.0.0.0:{}", port)});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("refusing"), std::string::npos) << r.err;
  r = RunTaskmill({"--database-url", db_, "api", "--listen", fmt::format("[::]:{}", port),
                   "--token-file", TempFile("nl-token", "tok")});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("without TLS"), std::string::npos) << r.err;
  // A name is judged by the address it resolves to, not its text.
  r = RunTaskmill(
      {"--database-url", db_, "api", "--listen", fmt::format("127.0.0.1.invalid:{}", port)});
  EXPECT_EQ(r.exit_code, 2);
  api::http::ListenAddress a;
  ASSERT_EQ(api::http::ResolveListenAddress("localhost", 1, &a), "");
  EXPECT_TRUE(a.loopback);
  ASSERT_EQ(api::http::ResolveListenAddress("127.0.0.9", 1, &a), "");
  EXPECT_TRUE(a.loopback);
  ASSERT_EQ(api::http::ResolveListenAddress("::ffff:127.0.0.1", 1, &a), "");
  EXPECT_TRUE(a.loopback);
  ASSERT_EQ(api::http::ResolveListenAddress("::ffff:10.1.2.3", 1, &a), "");
  EXPECT_FALSE(a.loopback);
  ASSERT_EQ(api::http::ResolveListenAddress("0.0.0.0", 1, &a), "");
  EXPECT_FALSE(a.loopback);
  EXPECT_NE(api::http::ResolveListenAddress("127.0.0.1.invalid", 1, &a), "");
}

}  // namespace
}  // namespace taskmill
