#!/usr/bin/env bash
# One table out of a backup against the same table out of the live
# database, in one run (issue 33): `backup dump SNAPSHOT TABLE --format
# csv` (reads the repository: fetch, decrypt, decompress, parse COPY text,
# write CSV) beside `psql -c '\copy TABLE TO FILE (FORMAT csv, HEADER)'`
# from the running server, on pgbench_accounts.
#
#   throughput  psql \copy time / our dump time    target >= 0.8
#
# Both files must be byte for byte the same (PostgreSQL's CSV writer and
# ours quote the same way), which the script checks. Each tool runs
# ROUNDS times, taking turns; the ratio is of the medians.
#
# Usage: benches/dump_table_compare.sh [SCALE]     (default 20: 2 million rows)
#
# Environment:
#   WORK_DIR    cluster, repository, outputs and logs (default /tmp/dump-bench)
#   BACKUP_BIN  use this `backup` binary instead of building one
#   ROUNDS      runs of each tool (default 3)
#
# Needs the PostgreSQL server packages and GNU time; installs them when
# run as root.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$SCRIPT_DIR/lib.sh"
SCALE=${1:-${SCALE:-20}}
WORK_DIR=${WORK_DIR:-/tmp/dump-bench}
ROUNDS=${ROUNDS:-3}
PASSWORD=bench-password-not-secret
LOGS="$WORK_DIR/logs"
positive_int scale "$SCALE"
positive_int ROUNDS "$ROUNDS"
postgres_bindir
need_gnu_time
rm -rf "$WORK_DIR"
mkdir -p "$WORK_DIR" "$LOGS"
backup_bin

as_postgres
[ "$(id -u)" -ne 0 ] || chown postgres:postgres "$WORK_DIR"
PORT=$(free_port)
say "initdb and start PostgreSQL on 127.0.0.1:$PORT"
pg_initdb "$WORK_DIR/data" "$PASSWORD"
pg_start "$WORK_DIR/data" "-p $PORT -k $WORK_DIR -c listen_addresses=127.0.0.1 -c shared_buffers=256MB -c autovacuum=off"
cleanup() {
    stop_pid "${PG_PID:-}"
    rm -rf "$WORK_DIR/data" "$WORK_DIR/repo" "$WORK_DIR"/*.csv
}
trap cleanup EXIT

export PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres PGPASSWORD=$PASSWORD
URL="postgres://postgres:$PASSWORD@127.0.0.1:$PORT"
say "pgbench -i -s $SCALE"
"$BINDIR/psql" -X -q -d postgres -c "CREATE DATABASE bench" >/dev/null
"$BINDIR/pgbench" -i -q -s "$SCALE" bench >"$LOGS/pgbench.log" 2>&1 || die "pgbench -i failed"
"$BINDIR/psql" -X -q -d bench -c "VACUUM ANALYZE" -c "CHECKPOINT" >/dev/null

OURS=(env BACKUP_PASSWORD="$PASSWORD" BACKUP_REPOSITORY="$WORK_DIR/repo" "$BACKUP_BIN")
"${OURS[@]}" init >"$LOGS/init.log" 2>&1 || die "backup init failed"
say "backup create"
"${OURS[@]}" create "$URL/bench" >"$LOGS/create.log" 2>&1 || die "backup create failed"

declare -A WALL
timed() { # timed NAME CMD...
    local name=$1
    shift
    drop_page_cache || true
    time_run '%e' "$LOGS/time-$name" "$LOGS/$name.log" "$@" || die "$name failed (log: $LOGS/$name.log)"
    WALL[$name]="${WALL[$name]:-} $(cat "$LOGS/time-$name")"
}
for round in $(seq 1 "$ROUNDS"); do
    say "round $round of $ROUNDS"
    rm -f "$WORK_DIR"/*.csv
    if [ $((round % 2)) -eq 1 ]; then
        timed ours "${OURS[@]}" dump latest public.pgbench_accounts --format csv -O "$WORK_DIR/ours.csv"
        timed psql "$BINDIR/psql" -X -q -d bench -c "\\copy public.pgbench_accounts TO '$WORK_DIR/psql.csv' WITH (FORMAT csv, HEADER true)"
    else
        timed psql "$BINDIR/psql" -X -q -d bench -c "\\copy public.pgbench_accounts TO '$WORK_DIR/psql.csv' WITH (FORMAT csv, HEADER true)"
        timed ours "${OURS[@]}" dump latest public.pgbench_accounts --format csv -O "$WORK_DIR/ours.csv"
    fi
    cmp -s "$WORK_DIR/ours.csv" "$WORK_DIR/psql.csv" || die "the two CSV files differ"
done
BYTES=$(stat -c %s "$WORK_DIR/ours.csv")

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ours=$(median <<<"${WALL[ours]}")
theirs=$(median <<<"${WALL[psql]}")
python3 - "$ours" "$theirs" "$BYTES" "$SCALE" <<'PY'
import sys
ours, theirs, size, scale = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
print(f"pgbench_accounts, scale {scale}: {size / 1e6:.0f} MB of CSV, identical from both")
print(f"throughput  psql \\copy / backup dump = {theirs / ours:.2f}   (target >= 0.8)")
print(f"  details: median wall ours {ours:.2f} s, psql {theirs:.2f} s")
PY
