#include "taskmill/errors.h"

#include <cerrno>

namespace taskmill {

bool DatabaseError::IsRetryableSqlState(std::string_view s) {
  if (s.size() != 5) return false;
  std::string_view cls = s.substr(0, 2);
  if (cls == "08" || cls == "40" || cls == "53") return true;
  return s == "57P01" || s == "57P02" || s == "57P03" || s == "55P03";
}

namespace {
bool IsRetryableErrno(int e) {
  return e == EAGAIN || e == EWOULDBLOCK || e == EINTR || e == ENOMEM || e == EMFILE || e == ENFILE;
}
}  // namespace

SystemError::SystemError(const std::string& what_failed, int errno_value)
    : Exception(what_failed + ": " + std::generic_category().message(errno_value),
                IsRetryableErrno(errno_value)),
      code_(errno_value, std::generic_category()) {}

}  // namespace taskmill
