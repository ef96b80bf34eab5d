#!/usr/bin/env bash
# MongoDB point-in-time recovery against bare driver loops, in one run, on a
# throwaway SecantusDB server with a large oplog:
#
#   replay throughput   ours / a per-operation driver loop (the peers' replay)   target >= 1.5
#   replay throughput   ours / unordered bulk writes per namespace               target >= 1.0
#   capture lag         p99 from a write to its slice stored (1 s slices)        target <= 2 s
#   our peak RSS        the follower and the restore                             target < 300 MB
#
# plus operations per second of each beside the server's own write rate
# (the Python test server, not the tool, is the ceiling here).
#
# Usage: benches/mongo_pitr_compare.sh [OPS]    (default 1000000; the
# per-operation loop runs at a few hundred operations per second on the
# test server, so 1000000 takes hours: 40000 gives the ratios in minutes)
#
# Environment:
#   BACKUP_BIN              use this `backup` binary instead of building one
#   BACKUP_TEST_SECANTUSD   the secantusd-py to start (default: .venv, as scripts/test.sh installs it)
#   BENCH_VERBOSE=1         print each stored slice's delay
#   BENCH_SKIP_LOOP=1       leave the per-operation loop out (on the test server a lone
#                           write slows as the oplog grows: hours at 1000000)
#
# Needs GNU time (apt-get install -y time) for the peak RSS.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
OPS=${1:-${OPS:-1000000}}
cd "$REPO_ROOT"

if [ ! -x .venv/bin/secantusd-py ] && [ -z "${BACKUP_TEST_SECANTUSD:-}" ]; then
  python3 -m venv .venv
  .venv/bin/python3 -m pip install --quiet --disable-pip-version-check 'SecantusDB==0.7.0b3'
fi
export BACKUP_TEST_SECANTUSD=${BACKUP_TEST_SECANTUSD:-$REPO_ROOT/.venv/bin/secantusd-py}
command -v /usr/bin/time >/dev/null || { echo "GNU time is needed: apt-get install -y time" >&2; exit 1; }

if [ -z "${BACKUP_BIN:-}" ]; then
  cargo build --release -p backup-cli --bin backup >&2
  BACKUP_BIN="$REPO_ROOT/target/release/backup"
fi
cargo build --release -p backup-benches --bin oplog_ratio >&2
exec "$REPO_ROOT/target/release/oplog_ratio" "$BACKUP_BIN" "$OPS"
