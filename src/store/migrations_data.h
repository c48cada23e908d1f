// The SQL migrations compiled into the program (generated from migrations/).
#pragma once

#include <string_view>
#include <vector>

namespace taskmill::store {

struct EmbeddedMigration {
  int version;            // the number the file name starts with
  std::string_view name;  // the file name without extension
  std::string_view sql;
};

// In ascending version order.
const std::vector<EmbeddedMigration>& EmbeddedMigrations();

}  // namespace taskmill::store
