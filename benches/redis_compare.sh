#!/usr/bin/env bash
# Side-by-side comparison of `backup` (this workspace) with Redis's own tools
# on one million keys of mixed types, in one run:
#
#   (a) capture: `backup create redis://...` (RDB over replication, into an
#       encrypted repository) vs `redis-cli --rdb FILE`        target <= 1.0
#   (b) restore: `backup restore ... --to redis://...` into a live, empty
#       server vs the time `redis-server` takes to load the same dump.rdb at
#       start-up (from exec until PING answers PONG)            target <= 2.0
#   (c) our peak RSS (max of capture and restore, /usr/bin/time) < 300 MB
#
# The restored server is checked against the source with DEBUG DIGEST.
#
# Usage: benches/redis_compare.sh
# Environment:
#   NKEYS       number of keys (default 1000000)
#   ROUNDS      repetitions; ratios are medians (default 1)
#   WORK_DIR    scratch directory (default /tmp/backup-bench-redis)
#   BACKUP_BIN  use this `backup` binary instead of building one
#   SEED        data generator seed (default 1)
#
# Needs redis-server, redis-cli (redis-tools) and GNU time; installs them
# (apt-get install -y) when missing, as root.
#
# Results are ratios ours/peer; absolute numbers are in the details.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$SCRIPT_DIR/lib.sh"
WORK_DIR=${WORK_DIR:-/tmp/backup-bench-redis}
NKEYS=${NKEYS:-1000000}
ROUNDS=${ROUNDS:-1}
SEED=${SEED:-1}
PASSWORD=bench-password-not-secret
LOGS="$WORK_DIR/logs"

positive_int NKEYS "$NKEYS"
positive_int ROUNDS "$ROUNDS"
need redis-server redis-server
need redis-cli redis-tools
need_gnu_time

mkdir -p "$WORK_DIR" "$LOGS"
backup_bin

# --- servers ----------------------------------------------------------------

PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

# start_server NAME DIR: starts redis-server on a free port with DIR as its
# directory (loading DIR/dump.rdb if present); sets PORT and PID, and
# LOAD_SECONDS to the wall time from exec until PING answers PONG.
start_server() {
    local name=$1 dir=$2
    PORT=$(free_port)
    mkdir -p "$dir"
    local t0 t1
    t0=$(date +%s.%N)
    redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$dir" --dbfilename dump.rdb --logfile "$LOGS/redis-$name.log" \
        --enable-debug-command yes --repl-diskless-sync-delay 0 &
    PID=$!
    PIDS+=("$PID")
    until [ "$(redis-cli -p "$PORT" ping 2>/dev/null)" = PONG ]; do
        kill -0 "$PID" 2>/dev/null || die "redis-server $name exited, see $LOGS/redis-$name.log"
        sleep 0.005
    done
    t1=$(date +%s.%N)
    LOAD_SECONDS=$(python3 -c "print($t1 - $t0)")
}

stop_server() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# timed NAME CMD...: runs CMD under /usr/bin/time; sets SECONDS_TAKEN and
# RSS_KB.
timed() {
    local name=$1
    shift
    time_run '%e %M' "$LOGS/time-$name" "$LOGS/$name.log" "$@" || die "$name failed, see $LOGS/$name.log"
    read -r SECONDS_TAKEN RSS_KB <"$LOGS/time-$name"
}

# --- data -------------------------------------------------------------------

say "starting the source server and loading $NKEYS keys"
start_server source "$WORK_DIR/source"
SRC_PORT=$PORT
RESP="$WORK_DIR/data-$NKEYS-$SEED.resp"
if [ ! -s "$RESP" ]; then
    python3 "$SCRIPT_DIR/redis_gen.py" "$NKEYS" "$SEED" >"$RESP.tmp"
    mv "$RESP.tmp" "$RESP"
fi
redis-cli -p "$SRC_PORT" --pipe <"$RESP" >"$LOGS/load.log" 2>&1 ||
    die "loading failed, see $LOGS/load.log"
have=$(redis-cli -p "$SRC_PORT" dbsize)
if [ "$have" -lt "$NKEYS" ]; then
    redis-cli -p "$SRC_PORT" debug populate "$((NKEYS - have))" str 100 >/dev/null
fi
SRC_KEYS=$(redis-cli -p "$SRC_PORT" dbsize)
SRC_DIGEST=$(redis-cli -p "$SRC_PORT" debug digest)
SRC_MEM=$(redis-cli -p "$SRC_PORT" info memory | sed -n 's/^used_memory_human:\(.*\)\r$/\1/p')
say "source: $SRC_KEYS keys, $SRC_MEM"

# --- rounds -----------------------------------------------------------------

RESULTS="$WORK_DIR/results.tsv"
: >"$RESULTS"
OURS=(env BACKUP_PASSWORD="$PASSWORD" BACKUP_REPOSITORY="$WORK_DIR/repo" "$BACKUP_BIN")
for round in $(seq 1 "$ROUNDS"); do
    say "round $round"
    rm -rf "$WORK_DIR/repo" "$WORK_DIR/peer.rdb" "$WORK_DIR/loaded"
    "${OURS[@]}" init >"$LOGS/init.log" 2>&1 || die "init failed, see $LOGS/init.log"

    say "  capture: redis-cli --rdb"
    timed "peer-capture-$round" redis-cli -p "$SRC_PORT" --rdb "$WORK_DIR/peer.rdb"
    peer_capture=$SECONDS_TAKEN
    say "  capture: backup create"
    timed "our-capture-$round" "${OURS[@]}" --json create "redis://127.0.0.1:$SRC_PORT"
    our_capture=$SECONDS_TAKEN
    rss_capture=$RSS_KB

    say "  load: redis-server start-up on the dump.rdb"
    mkdir -p "$WORK_DIR/loaded"
    cp "$WORK_DIR/peer.rdb" "$WORK_DIR/loaded/dump.rdb"
    start_server "loaded-$round" "$WORK_DIR/loaded"
    peer_load=$LOAD_SECONDS
    [ "$(redis-cli -p "$PORT" debug digest)" = "$SRC_DIGEST" ] || die "the loaded dump.rdb differs from the source"
    stop_server "$PID"

    say "  restore: backup restore into a live empty server"
    start_server "target-$round" "$WORK_DIR/target-$round"
    TGT_PID=$PID
    timed "our-restore-$round" "${OURS[@]}" --json restore latest --to "redis://127.0.0.1:$PORT"
    our_restore=$SECONDS_TAKEN
    rss_restore=$RSS_KB
    [ "$(redis-cli -p "$PORT" debug digest)" = "$SRC_DIGEST" ] || die "the restored server differs from the source (DEBUG DIGEST)"
    stop_server "$TGT_PID"
    rm -rf "$WORK_DIR/target-$round"

    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$our_capture" "$peer_capture" \
        "$our_restore" "$peer_load" "$rss_capture" "$rss_restore" >>"$RESULTS"
done

# --- report -----------------------------------------------------------------

python3 - "$RESULTS" "$SRC_KEYS" "$SRC_MEM" "$(du -b "$WORK_DIR/peer.rdb" | cut -f1)" "$("$BACKUP_BIN" --version 2>/dev/null || echo backup)" "$(redis-server --version | cut -d' ' -f3)" <<'EOF'
import statistics, sys
path, keys, mem, rdb_bytes, ours, redis_ver = sys.argv[1:]
rows = [l.split("\t") for l in open(path).read().splitlines() if l]
col = lambda i: [float(r[i]) for r in rows]
med = statistics.median
cap = med([a / b for a, b in zip(col(1), col(2))])
res = med([a / b for a, b in zip(col(3), col(4))])
rss = max(col(5) + col(6)) / 1024
print(f"Redis benchmark: {keys} keys ({mem} in the server, dump.rdb {int(rdb_bytes) / 2**20:.0f} MiB), {ours}, {redis_ver}, {len(rows)} round(s)")
print()
print(f"{'measure':<52} {'ratio':>7}  target   ")
def line(name, value, target, ok):
    print(f"{name:<52} {value:>7.2f}  {target:<8} {'ok' if ok else 'MISSED'}")
line("capture: backup create / redis-cli --rdb", cap, "<= 1.0", cap <= 1.0)
line("restore: backup restore / redis-server load", res, "<= 2.0", res <= 2.0)
print(f"{'peak RSS of backup (MB)':<52} {rss:>7.0f}  {'< 300':<8} {'ok' if rss < 300 else 'MISSED'}")
print()
print("details (seconds; one line per round):")
print("  round  our-capture  redis-cli--rdb  our-restore  redis-server-load  rss-capture-MB  rss-restore-MB")
for r in rows:
    print(f"  {r[0]:>5}  {float(r[1]):>11.2f}  {float(r[2]):>14.2f}  {float(r[3]):>11.2f}  {float(r[4]):>17.2f}  {float(r[5])/1024:>14.0f}  {float(r[6])/1024:>14.0f}")
EOF
