// Task functions for tests only: they crash, stop, ignore cancellation or
// write files on purpose, which no shipped program may offer a client. They
// are registered by the test worker program (build/taskmill-test-worker, all
// of `taskmill`'s subcommands plus these) and by the tests' databases.
//
//   test.sleep   kwarg `seconds` (default 1). `journal`: a file that gets
//                "<task id> <pid>\n" when the function starts. `times`: a
//                file that gets "<task id> start <µs>\n" at the start and
//                "<task id> end <µs>\n" just before it returns (µs since the
//                Unix epoch, system clock). `ignore_cancel`: pays no
//                attention to cancellation or SIGUSR1, as badly written
//                functions do. Declared inline_ok (so that tests can run it
//                inside the API process and see what a stubborn function
//                does there).
//   test.crash   kills its own process with kwarg `signal` (default
//                SIGSEGV); not inline_ok.
#pragma once

#include "taskmill/registry.h"

namespace taskmill::testing {

void RegisterTestFunctions(TaskRegistry& registry);

}  // namespace taskmill::testing
