#!/usr/bin/env bash
# Runs every benchmark of docs/benchmarks.md and prints the figures. Takes
# about 20 minutes on the 2-core machine. Run nothing else meanwhile.
# Usage: scripts/bench.sh [OUTPUT_FILE]
# The side-by-side run with the peers is scripts/bench-peers.sh (not run here).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh >/dev/null
out=${1:-/dev/stdout}
# Every taskmill-bench scenario also appends its runs and medians here as JSON
# lines (compare two with build/taskmill-bench compare OLD NEW).
json=docs/bench-results/$(date -u +%F).jsonl
mkdir -p docs/bench-results
B="build/taskmill-bench --json-out $json"
run() { echo "\$ $*"; "$@" 2>&1 | grep -v '\[info\]'; echo; }
{
  run $B --runs 3 dispatch --connections 1 --seconds 5
  run $B --runs 3 dispatch --connections 8 --seconds 5
  run $B --runs 3 dispatch --connections 1 --seconds 5 --pipeline 16
  run $B --runs 3 e2e --workers 2 --in-process --tasks 20000
  run $B --runs 3 e2e --workers 2 --tasks 5000
  run $B --runs 3 latency --workers 2 --tasks 500 --interval-ms 20
  run $B --runs 3 backlog --waiting 100000 --connections 8 --seconds 5 --tasks 300 --interval-ms 20
  run $B --runs 3 idle --workers 50 --tasks 200 --interval-ms 50
  run $B --runs 3 recovery --heartbeat-interval 0.5 --ttl 2
  run $B --runs 1 recovery

  # The seed's ingestion test against `taskmill up` (embedded PostgreSQL,
  # fsync on), 25 s per request as in the seed.
  home=$(mktemp -d /tmp/tm-bench-home-XXXXXX)
  chmod 755 "$home"
  TASKMILL_HOME=$home TASKMILL_TEST_ENDPOINTS=1 build/taskmill --log-level warn up --workers 0 \
    --api-listen 127.0.0.1:24818 >"$home/up.log" 2>&1 &
  up=$!
  for _ in $(seq 120); do curl -sf http://127.0.0.1:24818/pulp/api/v3/status/ >/dev/null && break; sleep 1; done
  U=http://127.0.0.1:24818/api/pulp/test
  for w in 1 10; do
    for r in 1 2 3; do run build/taskmill bench ingest --url $U/tasks/ --timeout 25 --max-workers $w; done
  done
  for r in 1 2 3; do run build/taskmill bench ingest --url $U/immediate_tasks/ --timeout 25 --max-workers 1; done
  run build/taskmill bench ingest --url $U/random_lock_tasks/ --timeout 25 --max-workers 10
  py=/usr/bin/python3; [ -x $py ] || py=python3
  run $py tests/api/seed_ingest_client.py --url $U/tasks/ --timeout 25 --max_workers 1
  run $py tests/api/seed_ingest_client.py --url $U/tasks/ --timeout 25 --max_workers 10
  kill -INT $up; wait $up || true
  rm -rf "$home"
} >"$out"
