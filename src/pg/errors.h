// The pg layer's names for taskmill's exceptions (taskmill/errors.h).
//
// The driver throws only those: DatabaseError for what the server reports,
// ConnectionError and TimeoutError (subclasses) when it cannot be reached or
// does not answer in time, DriverError when an answer is not what the caller
// expects (a missing column, an unparsable value), SystemError for a failed
// operating-system call.
#pragma once

#include "taskmill/errors.h"

namespace taskmill::pg {

// Older names, kept while callers move to the taskmill:: ones.
using Error = DatabaseError;
using QueryError = DatabaseError;
using ConnectionError = taskmill::ConnectionError;
using TimeoutError = taskmill::TimeoutError;
using DriverError = taskmill::DriverError;

}  // namespace taskmill::pg
