#!/usr/bin/env bash
# Installs the Debian 12 packages taskmill builds and tests with, if any is
# missing. Needs root (or sudo). Safe to run again.
# With --peers, also npm, which scripts/bench-peers.sh uses to fetch the
# benchmark's peers (and their Node) from the npm registry; taskmill itself
# never needs it.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config
  libpq-dev postgresql-15 postgresql-client-15 pgbouncer
  libcpp-httplib-dev nlohmann-json3-dev libspdlog-dev libfmt-dev libcli11-dev
  prometheus-cpp-dev libgtest-dev libgmock-dev libbenchmark-dev
  libssl-dev openssl
  python3 python3-requests python3-hypothesis util-linux procps
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
# Any npm will do (the machine may have one from another package than Debian's).
if [ "${1:-}" = "--peers" ] && ! command -v npm >/dev/null; then missing+=(npm); fi
[ ${#missing[@]} -eq 0 ] && exit 0

echo "setup: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup: need root or sudo to install packages" >&2; exit 1; }
  SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
