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
# Needs GNU time for the peak RSS; installs it (apt-get install -y time) as root.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$SCRIPT_DIR/lib.sh"
OPS=${1:-${OPS:-1000000}}
cd "$REPO_ROOT"

secantus
need_gnu_time
backup_bin
build_release OPLOG_RATIO backup-benches oplog_ratio
exec "$OPLOG_RATIO" "$BACKUP_BIN" "$OPS"
