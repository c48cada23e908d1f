// schema/current.sql is what the migrations produce: the dump of a freshly
// migrated database, made by the script that writes the file, equals it.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <fmt/format.h>

#include "support/taskmill_fixture.h"
#include "support/test_postgres.h"

namespace taskmill {
namespace {

// Runs a shell command; returns its exit status and standard output.
int RunShell(const std::string& command, std::string* out) {
  FILE* p = popen(command.c_str(), "r");
  if (p == nullptr) return -1;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out->append(buf, n);
  int status = pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string Quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

TEST(SchemaTest, CheckedInSchemaIsWhatTheMigrationsProduce) {
  const std::string source = TASKMILL_SOURCE_DIR;
  const std::string checked_in_path = source + "/schema/current.sql";
  std::string db = testing::MigratedTestDatabase();
  std::string dumped;
  int rc = RunShell(fmt::format("TASKMILL_BINARY={} {}/scripts/dump-schema.sh --url {} --stdout",
                                Quote(TASKMILL_BINARY), Quote(source), Quote(db)),
                    &dumped);
  ASSERT_EQ(rc, 0) << "scripts/dump-schema.sh failed";
  ASSERT_NE(dumped.find("CREATE TABLE taskmill.task ("), std::string::npos) << dumped;
  std::string checked_in = testing::ReadFile(checked_in_path);
  if (dumped == checked_in) return;

  auto dir = std::filesystem::temp_directory_path() /
             fmt::format("tmschema-test-{}", static_cast<long>(getpid()));
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "migrated.sql") << dumped;
  std::string diff;
  RunShell(
      fmt::format("diff -u {} {}", Quote(checked_in_path), Quote((dir / "migrated.sql").string())),
      &diff);
  std::filesystem::remove_all(dir);
  ADD_FAILURE() << "schema/current.sql differs from what the migrations produce (- checked in, "
                   "+ migrated):\n"
                << diff
                << "\nIf the migrations are right, regenerate the file (after a build) with:\n"
                   "    scripts/dump-schema.sh\n"
                   "and commit it.";
}

}  // namespace
}  // namespace taskmill
