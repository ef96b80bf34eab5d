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
# Needs GNU time for the peak RSS; installs it (apt-get install -y time) as root.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$SCRIPT_DIR/lib.sh"
DOCS=${1:-${DOCS:-2000000}}
cd "$REPO_ROOT"

[ -n "${BENCH_MONGO_URL:-}" ] || secantus
need_gnu_time
backup_bin
build_release MONGO_RATIO backup-benches mongo_ratio
exec "$MONGO_RATIO" "$BACKUP_BIN" "$DOCS"
