// pg::ResultSet's accessors against results of a real PostgreSQL, and the
// exception family of taskmill/errors.h.
#include <gtest/gtest.h>

#include <cerrno>
#include <type_traits>

#include "pg/connection.h"
#include "support/test_postgres.h"
#include "taskmill/errors.h"

namespace taskmill::pg {
namespace {

constexpr auto kTimeout = std::chrono::seconds(30);

Connection Open() {
  return Connection::Open(testing::CreateTestDatabase("rs"), DeadlineIn(kTimeout));
}

TEST(ResultSetTest, TypedAccessorsByColumnName) {
  auto c = Open();
  auto r = c.Exec(
      "SELECT 42::bigint AS n, 'text' AS s, true AS b, 1.5::float8 AS d, NULL::text AS nothing, "
      "ARRAY['a', 'b c']::text[] AS arr, \"Mixed\" FROM (SELECT 'm' AS \"Mixed\") x",
      DeadlineIn(kTimeout));
  ASSERT_EQ(r.rows(), 1);
  EXPECT_EQ(r.GetInt(0, "n"), 42);
  EXPECT_EQ(r.GetString(0, "s"), "text");
  EXPECT_EQ(r.Get(0, "s"), "text");
  EXPECT_TRUE(r.GetBool(0, "b"));
  EXPECT_DOUBLE_EQ(r.GetDouble(0, "d"), 1.5);
  EXPECT_TRUE(r.IsNull(0, "nothing"));
  EXPECT_FALSE(r.GetOptional(0, "nothing").has_value());
  EXPECT_EQ(r.GetOptional(0, "s"), "text");
  EXPECT_EQ(r.GetTextArray(0, "arr"), (std::vector<std::string>{"a", "b c"}));
  // Names are matched exactly, as the select list gives them.
  EXPECT_EQ(r.GetString(0, "Mixed"), "m");
  EXPECT_FALSE(r.FindColumn("mixed").has_value());
  EXPECT_EQ(r.FindColumn("s"), 1);
  EXPECT_EQ(r.Column("arr"), 5);
}

TEST(ResultSetTest, AMissingColumnIsADriverErrorNotADatabaseError) {
  auto c = Open();
  auto r = c.Exec("SELECT 1 AS present", DeadlineIn(kTimeout));
  EXPECT_FALSE(r.FindColumn("absent").has_value());
  try {
    r.GetInt(0, "absent");
    FAIL() << "no exception";
  } catch (const DatabaseError& e) {
    FAIL() << "a driver fault reported as a server error: " << e.what();
  } catch (const DriverError& e) {
    EXPECT_FALSE(e.retryable());
    EXPECT_NE(std::string(e.what()).find("\"absent\""), std::string::npos) << e.what();
  }
  // A value that does not parse, and a malformed array: the same.
  auto bad = c.Exec("SELECT 'x' AS v", DeadlineIn(kTimeout));
  EXPECT_THROW(bad.GetInt(0, "v"), DriverError);
  EXPECT_THROW(bad.GetTextArray(0, "v"), DriverError);
  EXPECT_THROW(bad.Get(1, "v"), DriverError);
  // The connection is unaffected.
  EXPECT_EQ(c.Exec("SELECT 2", DeadlineIn(kTimeout)).GetInt(0, 0), 2);
}

TEST(ResultSetTest, EmptyAndMovedFromSetsHaveNoRows) {
  ResultSet empty;
  EXPECT_EQ(empty.rows(), 0);
  EXPECT_EQ(empty.columns(), 0);
  EXPECT_EQ(empty.affected(), 0);
  EXPECT_FALSE(empty.FindColumn("x").has_value());
  EXPECT_THROW(empty.Get(0, 0), DriverError);
  auto c = Open();
  auto r = c.Exec("SELECT 1 AS a", DeadlineIn(kTimeout));
  ResultSet moved = std::move(r);
  EXPECT_EQ(moved.GetInt(0, "a"), 1);
  EXPECT_EQ(r.rows(), 0);  // NOLINT: the moved-from state is specified
  // The old name still works while callers move.
  static_assert(std::is_same_v<Result, ResultSet>);
}

TEST(ErrorsTest, OneFamilyWithRetryable) {
  static_assert(std::is_base_of_v<Exception, DatabaseError>);
  static_assert(std::is_base_of_v<DatabaseError, ConnectionError>);
  static_assert(std::is_base_of_v<DatabaseError, TimeoutError>);
  static_assert(std::is_base_of_v<Exception, DriverError>);
  static_assert(!std::is_base_of_v<DatabaseError, DriverError>);
  static_assert(std::is_base_of_v<Exception, SystemError>);
  static_assert(std::is_base_of_v<std::runtime_error, Exception>);
  // The pg names are these types.
  static_assert(std::is_same_v<pg::Error, DatabaseError>);
  static_assert(std::is_same_v<pg::ConnectionError, taskmill::ConnectionError>);

  EXPECT_TRUE(DatabaseError("x", "40P01").retryable());   // deadlock
  EXPECT_TRUE(DatabaseError("x", "40001").retryable());   // serialization failure
  EXPECT_TRUE(DatabaseError("x", "57P01").retryable());   // admin shutdown
  EXPECT_FALSE(DatabaseError("x", "23505").retryable());  // unique violation
  EXPECT_FALSE(DatabaseError("x", "TM404").retryable());
  EXPECT_EQ(ConnectionError("x").sqlstate(), "08000");
  EXPECT_EQ(TimeoutError("x").sqlstate(), "57014");
  EXPECT_FALSE(DriverError("x").retryable());

  SystemError busy("fork", EAGAIN);
  EXPECT_TRUE(busy.retryable());
  EXPECT_EQ(busy.code().value(), EAGAIN);
  EXPECT_EQ(std::string(busy.what()).rfind("fork: ", 0), 0u) << busy.what();
  SystemError denied("open /x", EACCES);
  EXPECT_FALSE(denied.retryable());
  EXPECT_NE(std::string(denied.what()).find("ermission denied"), std::string::npos)
      << denied.what();
}

}  // namespace
}  // namespace taskmill::pg
