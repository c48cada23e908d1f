#!/usr/bin/env bash
# Regenerates schema/current.sql: the schema `taskmill` exactly as the
# migrations of this checkout leave it (every table, index, view and function
# body), for reading and for review (each migration shows up as a diff of it).
# tests/store/schema_test.cc fails when the file is out of date.
#
#   scripts/dump-schema.sh             start a throwaway PostgreSQL, migrate it,
#                                      write schema/current.sql, remove the server
#   scripts/dump-schema.sh --url URL   use the database at URL instead (it is
#                                      migrated first: give one you may change)
#   ... --stdout                       print the dump instead of writing the file
#
# Needs a build (build/taskmill, or $TASKMILL_BINARY) and PostgreSQL's
# programs (the newest /usr/lib/postgresql/N/bin, or $TASKMILL_PG_BINDIR).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
url=""
out="$root/schema/current.sql"
while [ $# -gt 0 ]; do
  case "$1" in
    --url) url="$2"; shift 2 ;;
    --stdout) out="-"; shift ;;
    *) echo "usage: $0 [--url URL] [--stdout]" >&2; exit 2 ;;
  esac
done

taskmill="${TASKMILL_BINARY:-$root/build/taskmill}"
if [ ! -x "$taskmill" ]; then
  echo "$0: no $taskmill: build first (scripts/build.sh)" >&2
  exit 1
fi
bindir="${TASKMILL_PG_BINDIR:-}"
if [ -z "$bindir" ]; then
  bindir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4 -n | tail -n 1)"
fi
if [ ! -x "$bindir/pg_dump" ]; then
  echo "$0: no pg_dump under '$bindir' (install postgresql, or set TASKMILL_PG_BINDIR)" >&2
  exit 1
fi

if [ -z "$url" ]; then
  # A server of our own, on a Unix socket only, gone when we exit.
  tmp="$(mktemp -d /tmp/tmschema-XXXXXX)"
  chmod 755 "$tmp"
  as_pg=()
  if [ "$(id -u)" = 0 ]; then
    as_pg=(runuser -u postgres --)
    mkdir "$tmp/sock"
    chown postgres "$tmp" "$tmp/sock"
  else
    mkdir "$tmp/sock"
  fi
  cleanup() {
    "${as_pg[@]}" "$bindir/pg_ctl" stop -D "$tmp/data" -m immediate >/dev/null 2>&1 || true
    rm -rf "$tmp"
  }
  trap cleanup EXIT
  "${as_pg[@]}" "$bindir/initdb" -D "$tmp/data" -A trust -U postgres -E UTF8 --locale=C \
    --no-sync >"$tmp/initdb.log" 2>&1 || { cat "$tmp/initdb.log" >&2; exit 1; }
  "${as_pg[@]}" "$bindir/pg_ctl" start -D "$tmp/data" -l "$tmp/server.log" -w \
    -o "-c listen_addresses= -c unix_socket_directories=$tmp/sock -c port=5432 -c fsync=off" \
    >/dev/null || { cat "$tmp/server.log" >&2; exit 1; }
  url="host=$tmp/sock port=5432 user=postgres dbname=postgres"
fi

"$taskmill" --log-level warn --database-url "$url" migrate >/dev/null

# What makes the output depend on the pg_dump version or the installation
# rather than the schema goes: the version header, the session SET lines,
# the \restrict lines of newer pg_dump releases (a random key), owners,
# privileges and tablespaces. Runs of blank lines become one.
dump() {
  "$bindir/pg_dump" --schema-only --schema=taskmill --no-owner --no-privileges \
    --no-tablespaces --no-security-labels --no-publications --no-subscriptions "$url" |
    sed -e '/^-- Dumped from database version/d' -e '/^-- Dumped by pg_dump version/d' \
      -e '/^SET /d' -e '/^SELECT pg_catalog.set_config/d' -e '/^\\restrict /d' \
      -e '/^\\unrestrict /d' |
    cat -s
}
if [ "$out" = "-" ]; then
  dump
else
  dump >"$out.tmp"
  mv "$out.tmp" "$out"
  echo "wrote $out" >&2
fi
