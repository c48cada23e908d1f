// The property-based fuzzer (tests/api/fuzz_api.py, python3-hypothesis) as a
// test program: starts PostgreSQL and the real API server, runs the fuzzer
// against it for about a minute, and checks the server is still the same
// process and still answers.
#include <gtest/gtest.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>

#include <fmt/format.h>
#include <httplib.h>

#include "support/taskmill_fixture.h"
#include "support/test_postgres.h"

namespace taskmill {
namespace {

using namespace std::chrono_literals;

using testing::FreePort;

TEST(ApiFuzz, NoFiveHundredsNoCrashNoHangJsonErrors) {
  std::string db = testing::MigratedTestDatabase();
  int port = FreePort();
  std::string log;
  auto api = testing::StartTaskmill({"--database-url", db, "api", "--listen",
                                     fmt::format("127.0.0.1:{}", port), "--threads", "4"},
                                    &log);
  httplib::Client client("127.0.0.1", port);
  ASSERT_TRUE(testing::WaitFor(
      [&] {
        auto r = client.Get("/pulp/api/v3/status/");
        return r && r->status == 200;
      },
      30s))
      << testing::ReadFile(log);
  const char* seconds = std::getenv("TASKMILL_FUZZ_SECONDS");
  std::string cmd = fmt::format(
      "/usr/bin/python3 {}/tests/api/fuzz_api.py --url http://127.0.0.1:{} "
      "--seconds {}",
      TASKMILL_SOURCE_DIR, port, seconds ? seconds : "60");
  int rc = std::system(cmd.c_str());
  EXPECT_TRUE(WIFEXITED(rc) && WEXITSTATUS(rc) == 0) << "fuzzer failed (see above)";
  EXPECT_TRUE(api.running()) << "the API process died\n" << testing::ReadFile(log);
  auto r = client.Get("/pulp/api/v3/status/");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  if (HasFailure()) testing::PrintLogs({log});
}

}  // namespace
}  // namespace taskmill
