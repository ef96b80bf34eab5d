#!/usr/bin/env bash
# MongoDB dump and restore throughput of `backup` against bare driver
# baselines, in one run, on a throwaway SecantusDB server (or BENCH_MONGO_URL):
#
#   dump throughput     ours / bare find() scan of the same collections   target >= 0.8
#   restore throughput  ours / bare unordered insert_many, same batches   target >= 1.0
#   our peak RSS        backup create and backup restore                  target < 300 MB
#
# Usage: benches/mongo_compare.sh [DOCS]    (default 2000000, about 2 GB of BSON)
#
# Environment:
#   BACKUP_BIN       use this `backup` binary instead of building one
#   BENCH_MONGO_URL  a server to use instead of starting SecantusDB
#   BACKUP_TEST_SECANTUSD  the secantusd-py to start (default: .venv, as scripts/test.sh installs it)
#
# Needs GNU time (apt-get install -y time) for the peak RSS.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
DOCS=${1:-${DOCS:-2000000}}
cd "$REPO_ROOT"

if [ ! -x .venv/bin/secantusd-py ] && [ -z "${BENCH_MONGO_URL:-}" ] && [ -z "${BACKUP_TEST_SECANTUSD:-}" ]; then
  python3 -m venv .venv
  .venv/bin/python3 -m pip install --quiet --disable-pip-version-check 'SecantusDB==0.7.0b3'
fi
command -v /usr/bin/time >/dev/null || { echo "GNU time is needed: apt-get install -y time" >&2; exit 1; }

if [ -z "${BACKUP_BIN:-}" ]; then
  cargo build --release -p backup-cli --bin backup >&2
  BACKUP_BIN="$REPO_ROOT/target/release/backup"
fi
cargo build --release -p backup-benches --bin mongo_ratio >&2
exec "$REPO_ROOT/target/release/mongo_ratio" "$BACKUP_BIN" "$DOCS"
