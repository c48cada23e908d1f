// build/taskmill-test-postgres: the PostgreSQL server that the test cases
// share under ctest (the fixture test-server of tests/CMakeLists.txt).
//
//   taskmill-test-postgres start STATE   starts a throwaway server, writes
//                                        its directory to the file STATE
//   taskmill-test-postgres stop STATE    stops it and removes it and STATE
//
// A case finds the server through $TASKMILL_TEST_SERVER=STATE
// (support/test_postgres.h). If ctest dies before `stop` runs, a watchdog
// started by `start` stops and removes the server once ctest is gone.
#include <unistd.h>

#include <cstdio>
#include <exception>
#include <iostream>
#include <string>

#include "support/test_postgres.h"

int main(int argc, char** argv) {
  if (argc != 3 || (std::string(argv[1]) != "start" && std::string(argv[1]) != "stop")) {
    std::cerr << "usage: taskmill-test-postgres start|stop STATE_FILE\n";
    return 2;
  }
  try {
    if (std::string(argv[1]) == "start") {
      // The parent is ctest: the watchdog waits for it.
      taskmill::testing::StartSharedServer(argv[2], getppid());
    } else {
      taskmill::testing::StopSharedServer(argv[2]);
    }
  } catch (const std::exception& e) {
    std::cerr << "taskmill-test-postgres " << argv[1] << ": " << e.what() << "\n";
    return 1;
  }
  return 0;
}
