// The one error policy: every ErrorCode has exactly one exit code and one
// HTTP status, each from its one table, and the SQLSTATEs of our SQL
// functions become codes in one place (store::MapSqlError).
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "api/http_status.h"
#include "cli/exit_codes.h"
#include "store/task_store.h"

namespace taskmill {
namespace {

template <typename Table>
void ExpectEveryCodeOnce(const Table& table, const char* name) {
  std::map<ErrorCode, int> seen;
  for (const auto& [code, value] : table) ++seen[code];
  for (ErrorCode code : kAllErrorCodes) {
    EXPECT_EQ(seen[code], 1) << name << " has " << ErrorCodeName(code) << " " << seen[code]
                             << " time(s)";
  }
  EXPECT_EQ(table.size(), std::size(kAllErrorCodes)) << name;
}

TEST(ErrorTablesTest, EveryCodeHasOneExitCode) {
  ExpectEveryCodeOnce(cli::kExitCodeTable, "kExitCodeTable");
}

TEST(ErrorTablesTest, EveryCodeHasOneHttpStatus) {
  ExpectEveryCodeOnce(api::kHttpStatusTable, "kHttpStatusTable");
}

// The exit codes README.md documents.
TEST(ErrorTablesTest, ExitCodesAreTheDocumentedOnes) {
  EXPECT_EQ(cli::ExitCodeFor(ErrorCode::kInvalidArgument), 2);
  EXPECT_EQ(cli::ExitCodeFor(ErrorCode::kNotFound), 3);
  EXPECT_EQ(cli::ExitCodeFor(ErrorCode::kConflict), 4);
  EXPECT_EQ(cli::ExitCodeFor(ErrorCode::kUnavailable), 5);
  EXPECT_EQ(cli::ExitCodeFor(ErrorCode::kSchemaMismatch), 5);
  EXPECT_EQ(cli::ExitCodeFor(ErrorCode::kFenced), 4);
  EXPECT_EQ(cli::ExitCodeFor(ErrorCode::kInternal), 1);
  for (ErrorCode code : kAllErrorCodes) EXPECT_NE(cli::ExitCodeFor(code), cli::kExitOk);
}

// The statuses docs/api.md documents; every one an error status.
TEST(ErrorTablesTest, HttpStatusesAreTheDocumentedOnes) {
  EXPECT_EQ(api::HttpStatusFor(ErrorCode::kInvalidArgument), 400);
  EXPECT_EQ(api::HttpStatusFor(ErrorCode::kNotFound), 404);
  EXPECT_EQ(api::HttpStatusFor(ErrorCode::kConflict), 409);
  EXPECT_EQ(api::HttpStatusFor(ErrorCode::kUnavailable), 503);
  EXPECT_EQ(api::HttpStatusFor(ErrorCode::kSchemaMismatch), 503);
  EXPECT_EQ(api::HttpStatusFor(ErrorCode::kFenced), 409);
  EXPECT_EQ(api::HttpStatusFor(ErrorCode::kInternal), 500);
  for (ErrorCode code : kAllErrorCodes) EXPECT_GE(api::HttpStatusFor(code), 400);
}

TEST(ErrorTablesTest, CodesHaveDistinctNames) {
  std::set<std::string> names;
  for (ErrorCode code : kAllErrorCodes) names.insert(ErrorCodeName(code));
  EXPECT_EQ(names.size(), std::size(kAllErrorCodes));
}

TEST(ErrorTablesTest, OurSqlStatesMapOnce) {
  auto map = [](const char* sqlstate) {
    return store::MapSqlError(DatabaseError("message", sqlstate));
  };
  EXPECT_EQ(map("TM400")->code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(map("TM404")->code, ErrorCode::kNotFound);
  EXPECT_EQ(map("TM409")->code, ErrorCode::kConflict);
  EXPECT_EQ(map("TM410")->code, ErrorCode::kFenced);
  EXPECT_EQ(map("TM410")->message, "message");
  EXPECT_EQ(map("22P02")->code, ErrorCode::kInvalidArgument);  // a malformed uuid
  EXPECT_FALSE(map("40001").has_value());                      // rethrown, retryable
  EXPECT_FALSE(map("XX000").has_value());
  EXPECT_TRUE(store::IsFenced(DatabaseError("gone", "TM410")));
  EXPECT_FALSE(store::IsFenced(DatabaseError("finished", "TM409")));
}

}  // namespace
}  // namespace taskmill
