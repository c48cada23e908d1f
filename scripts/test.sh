#!/usr/bin/env bash
# The README's test command: install what is missing, build, and run the
# whole suite. The test cases share one throwaway PostgreSQL that
# ctest starts and removes (tests/CMakeLists.txt).
# Extra arguments go to ctest (e.g. -L fault, -R store).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
cd build
ctest --output-on-failure "$@"
