#include "pg/errors.h"

namespace taskmill::pg {

bool QueryError::IsRetryableSqlState(const std::string& s) {
  if (s.size() != 5) return false;
  std::string cls = s.substr(0, 2);
  if (cls == "08" || cls == "40" || cls == "53") return true;
  return s == "57P01" || s == "57P02" || s == "57P03" || s == "55P03";
}

}  // namespace taskmill::pg
