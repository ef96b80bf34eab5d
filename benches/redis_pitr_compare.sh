#!/usr/bin/env bash
# Redis point-in-time recovery, side by side with Redis's own tool, in one
# run:
#
#   (a) capture lag: `backup redis follow` while `redis-cli --pipe` writes
#       NCMD mixed commands (SET, HSET, RPUSH, SADD, ZADD, expiries) at full
#       speed; per stored piece, the time from its oldest command's arrival
#       to the moment the follower reported it stored. p99    target <= 1 s
#   (b) replay: `backup restore --at-offset END` into an empty server (the
#       base is empty, so this is the replay of the captured stream) vs
#       `redis-cli --pipe` sending the same commands to an empty server;
#       ratio of throughputs ours/peer                        target >= 0.8
#   (c) peak RSS of the follower and of the restore (/usr/bin/time) < 300 MB
#
# Ours is checked against the source with DEBUG DIGEST (expiry times
# included: the stream carries them absolute); the peer by key count.
#
# Usage: benches/redis_pitr_compare.sh
# Environment:
#   NCMD        commands written (default 1000000)
#   WORK_DIR    scratch directory (default /tmp/backup-bench-redis-pitr)
#   BACKUP_BIN  use this `backup` binary instead of building one
#   SEED        data generator seed (default 2)
#
# Needs redis-server, redis-cli (redis-tools) and GNU time; installs them
# (apt-get install -y) when missing, as root.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$SCRIPT_DIR/lib.sh"
WORK_DIR=${WORK_DIR:-/tmp/backup-bench-redis-pitr}
NCMD=${NCMD:-1000000}
SEED=${SEED:-2}
PASSWORD=bench-password-not-secret
LOGS="$WORK_DIR/logs"

positive_int NCMD "$NCMD"
need redis-server redis-server
need redis-cli redis-tools
need_gnu_time

rm -rf "$WORK_DIR/repo" "$WORK_DIR/source" "$WORK_DIR/peer" "$WORK_DIR/ours"
mkdir -p "$WORK_DIR" "$LOGS"
backup_bin

PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

# start_server NAME: redis-server on a free port in $WORK_DIR/NAME; sets PORT.
start_server() {
    local name=$1
    PORT=$(free_port)
    mkdir -p "$WORK_DIR/$name"
    redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$WORK_DIR/$name" --logfile "$LOGS/redis-$name.log" \
        --enable-debug-command yes --repl-diskless-sync-delay 0 &
    PIDS+=("$!")
    until [ "$(redis-cli -p "$PORT" ping 2>/dev/null)" = PONG ]; do sleep 0.01; done
}

RESP="$WORK_DIR/commands-$NCMD-$SEED.resp"
if [ ! -s "$RESP" ]; then
    say "generating $NCMD commands"
    python3 "$SCRIPT_DIR/redis_gen.py" "$NCMD" "$SEED" >"$RESP.tmp"
    mv "$RESP.tmp" "$RESP"
fi

OURS=(env BACKUP_PASSWORD="$PASSWORD" BACKUP_REPOSITORY="$WORK_DIR/repo" "$BACKUP_BIN")
"${OURS[@]}" init >"$LOGS/init.log" 2>&1 || die "init failed, see $LOGS/init.log"

# --- (a) capture while writing at full speed ---------------------------------

start_server source
SRC=$PORT
say "following the source, then writing $NCMD commands with redis-cli --pipe"
# Each JSON event line is stamped with the time it was read.
/usr/bin/time -f '%M' -o "$LOGS/follow.rss" "${OURS[@]}" --json redis follow "redis://127.0.0.1:$SRC" \
    2>"$LOGS/follow.err" |
    python3 -u -c 'import sys, time
for line in sys.stdin:
    print("%.6f %s" % (time.time(), line), end="", flush=True)' >"$LOGS/follow.events" &
FOLLOW_PIPE=$!
PIDS+=("$FOLLOW_PIPE")
until grep -q '"started"' "$LOGS/follow.events" 2>/dev/null; do sleep 0.1; done
t0=$(date +%s.%N)
redis-cli -p "$SRC" --pipe <"$RESP" >"$LOGS/write.log" 2>&1 || die "writing failed, see $LOGS/write.log"
t1=$(date +%s.%N)
END=$(redis-cli -p "$SRC" info replication | sed -n 's/^master_repl_offset:\([0-9]*\).*/\1/p')
SRC_DIGEST=$(redis-cli -p "$SRC" debug digest)
say "written in $(python3 -c "print(round($t1 - $t0, 2))") s; waiting for offset $END to be stored"
deadline=$((SECONDS + 600))
until python3 - "$LOGS/follow.events" "$END" <<'EOF'; do
import json, sys
end = int(sys.argv[2])
for line in open(sys.argv[1]):
    e = json.loads(line.split(" ", 1)[1])
    if e.get("event") == "stored" and int(e["last"], 16) > end:
        sys.exit(0)
sys.exit(1)
EOF
    [ "$SECONDS" -lt "$deadline" ] || die "the follower did not store offset $END, see $LOGS/follow.err"
    sleep 0.5
done
pkill -INT -f "redis follow redis://127.0.0.1:$SRC" || true
wait "$FOLLOW_PIPE" 2>/dev/null || true
FOLLOW_RSS=$(cat "$LOGS/follow.rss")
read -r LAG_P50 LAG_P99 LAG_MAX PIECES <<<"$(python3 - "$LOGS/follow.events" <<'EOF'
import json, sys
from datetime import datetime
lags = []
for line in open(sys.argv[1]):
    stamp, body = line.split(" ", 1)
    e = json.loads(body)
    if e.get("event") != "stored" or not e.get("time_first"):
        continue
    first = datetime.fromisoformat(e["time_first"].replace("Z", "+00:00")).timestamp()
    lags.append(float(stamp) - first)
lags.sort()
q = lambda p: lags[min(len(lags) - 1, int(p * len(lags)))]
print(f"{q(0.5):.3f} {q(0.99):.3f} {lags[-1]:.3f} {len(lags)}")
EOF
)"

# --- (b) replay vs redis-cli --pipe ------------------------------------------

start_server peer
PEER=$PORT
say "peer: redis-cli --pipe of the same commands into an empty server"
time_run '%e' "$LOGS/time-peer" "$LOGS/peer.log" redis-cli -p "$PEER" --pipe <"$RESP" || die "peer replay failed"
PEER_S=$(cat "$LOGS/time-peer")
# (Keys only: the commands' relative expiries make other absolute times.)
[ "$(redis-cli -p "$PEER" dbsize)" = "$(redis-cli -p "$SRC" dbsize)" ] || die "the peer's server differs from the source"

start_server ours
OURS_PORT=$PORT
say "ours: restore --at-offset $END (base, then the captured stream)"
time_run '%e %M' "$LOGS/time-ours" "$LOGS/restore.log" "${OURS[@]}" restore --at-offset "$END" \
    --to "redis://127.0.0.1:$OURS_PORT" || die "restore failed, see $LOGS/restore.log"
read -r OURS_S RESTORE_RSS <"$LOGS/time-ours"
[ "$(redis-cli -p "$OURS_PORT" debug digest)" = "$SRC_DIGEST" ] || die "the restored server differs from the source"

python3 - <<EOF
lag99, peer, ours = $LAG_P99, $PEER_S, $OURS_S
rss = max($FOLLOW_RSS, $RESTORE_RSS) / 1024
ratio = peer / ours if ours > 0 else float("inf")
print("Redis point-in-time recovery, $NCMD commands (redis_gen.py seed $SEED), one run")
print(f"  capture lag over $PIECES pieces: p50 $LAG_P50 s, p99 {lag99:.3f} s, max $LAG_MAX s   target p99 <= 1 s: {'ok' if lag99 <= 1 else 'MISSED'}")
print(f"  replay throughput ours/redis-cli --pipe: {ratio:.2f} (ours {ours:.2f} s incl. base and planning, peer {peer:.2f} s)   target >= 0.8: {'ok' if ratio >= 0.8 else 'MISSED'}")
print(f"  peak RSS: follower {$FOLLOW_RSS / 1024:.0f} MB, restore {$RESTORE_RSS / 1024:.0f} MB   target < 300 MB: {'ok' if rss < 300 else 'MISSED'}")
print("  ours matches the source (DEBUG DIGEST), the peer has its key count")
EOF
