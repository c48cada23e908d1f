#!/usr/bin/env bash
# The README's run command: install what is missing, build, and run taskmill
# (embedded PostgreSQL under .taskmill/, schema, 2 workers, the API) until
# Ctrl-C. Extra arguments go to `taskmill up`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
exec build/taskmill up "$@"
