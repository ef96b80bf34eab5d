#!/usr/bin/env bash
# Side-by-side comparison of `backup` (this workspace) with pg_dump and
# pg_restore on pgbench data, in one run, on a throwaway PostgreSQL cluster:
#
#   backup wall time   ours / pg_dump -Fc            target <= 0.5
#   backup wall time   ours / pg_dump -Fd -j 2       target <= 1.0
#   restore wall time  ours / pg_restore -j 2 (-Fd)  target <= 0.8
#   stored size        our repository / -Fc file     target <= 1.0
#   our peak RSS       backup and restore            target < 300 MB
#
# and, without a target, ours / JOBS bare parallel COPY streams of the big
# table into /dev/null: the server's own time to produce the rows, the
# floor of any logical backup on this machine.
#
# Each tool runs ROUNDS times, the tools taking turns, and each ratio is
# of the medians: the machines are shared and one run can be off by 20 %.
#
# Usage: benches/postgres_compare.sh [SCALE]      (default 50, about 750 MB)
#
# Environment:
#   WORK_DIR    cluster, dumps, repository and logs (default /tmp/pg-bench)
#   BACKUP_BIN  use this `backup` binary instead of building one
#   JOBS        parallel jobs of pg_dump -Fd / pg_restore (default 2)
#   KEEP        1 keeps WORK_DIR afterwards (default: removed except logs)
#   ROUNDS      runs of each tool (default 3)
#
# Needs the PostgreSQL server packages (apt-get install -y postgresql) and
# GNU time (apt-get install -y time); installs them when run as root.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$SCRIPT_DIR/lib.sh"
SCALE=${1:-${SCALE:-50}}
WORK_DIR=${WORK_DIR:-/tmp/pg-bench}
JOBS=${JOBS:-2}
KEEP=${KEEP:-0}
ROUNDS=${ROUNDS:-3}
PASSWORD=bench-password-not-secret
LOGS="$WORK_DIR/logs"
RESULTS="$WORK_DIR/results.tsv"

positive_int scale "$SCALE"
positive_int ROUNDS "$ROUNDS"

postgres_bindir
need_gnu_time

rm -rf "$WORK_DIR"
mkdir -p "$WORK_DIR" "$LOGS"
: >"$RESULTS"

backup_bin

# --- the cluster ------------------------------------------------------------

as_postgres
[ "$(id -u)" -ne 0 ] || chown postgres:postgres "$WORK_DIR"
PORT=$(free_port)
say "initdb and start PostgreSQL on 127.0.0.1:$PORT"
pg_initdb "$WORK_DIR/data" "$PASSWORD"
pg_start "$WORK_DIR/data" \
    "-p $PORT -k $WORK_DIR -c listen_addresses=127.0.0.1 -c shared_buffers=256MB -c max_wal_size=4GB -c checkpoint_timeout=30min -c autovacuum=off"
cleanup() {
    stop_pid "${PG_PID:-}"
    if [ "$KEEP" != 1 ]; then
        rm -rf "$WORK_DIR/data" "$WORK_DIR/repo" "$WORK_DIR/dump.fc" "$WORK_DIR/dump.dir"
    fi
}
trap cleanup EXIT

export PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres PGPASSWORD=$PASSWORD
URL="postgres://postgres:$PASSWORD@127.0.0.1:$PORT"
say "pgbench -i -s $SCALE"
"$BINDIR/psql" -X -q -d postgres -c "CREATE DATABASE bench" >/dev/null
"$BINDIR/pgbench" -i -q -s "$SCALE" bench >"$LOGS/pgbench.log" 2>&1 || die "pgbench -i failed"
"$BINDIR/psql" -X -q -d bench -c "VACUUM ANALYZE" >/dev/null
# Flush the load's dirty buffers now rather than during the first timing.
"$BINDIR/psql" -X -q -d bench -c "CHECKPOINT" >/dev/null
DB_BYTES=$("$BINDIR/psql" -X -A -t -d bench -c "SELECT pg_database_size('bench')")

# Before every timing: no dirty buffers from the previous step left to
# write (restores load a lot), no page cache. Autovacuum is off, so no
# background work runs into a timing either.
drop_caches() {
    "$BINDIR/psql" -X -q -d postgres -c "CHECKPOINT" >/dev/null
    drop_page_cache || true
}

timed() { # timed NAME CMD...
    local name=$1
    shift
    drop_caches
    say "  $name"
    time_run '%e %M' "$LOGS/time-$name" "$LOGS/$name.log" "$@" || die "$name failed (log: $LOGS/$name.log)"
    read -r wall rss <"$LOGS/time-$name"
    printf '%s\t%s\t%s\n' "$name" "$wall" "$rss" >>"$RESULTS"
}

OURS=(env BACKUP_PASSWORD="$PASSWORD" BACKUP_REPOSITORY="$WORK_DIR/repo" "$BACKUP_BIN")

# The server-bound floor of a backup on this machine: the big table read
# by JOBS parallel COPY streams (TID ranges, as ours) into /dev/null.
PAGES=$("$BINDIR/psql" -X -A -t -d bench -c "SELECT relpages FROM pg_class WHERE relname = 'pgbench_accounts'")
PER=$(((PAGES + JOBS) / JOBS))
{
    for j in $(seq 0 $((JOBS - 1))); do
        printf '"%s" -X -q -d bench -c "COPY (SELECT * FROM pgbench_accounts WHERE ctid >= '"'"'(%d,0)'"'"'::tid AND ctid < '"'"'(%d,0)'"'"'::tid) TO STDOUT" >/dev/null &\n' \
            "$BINDIR/psql" $((j * PER)) $(((j + 1) * PER))
    done
    echo wait
} >"$WORK_DIR/bare_copy.sh"

for round in $(seq 1 "$ROUNDS"); do
    say "round $round of $ROUNDS"
    rm -rf "$WORK_DIR/repo" "$WORK_DIR/dump.fc" "$WORK_DIR/dump.dir"
    "${OURS[@]}" init >"$LOGS/init.log" 2>&1 || die "backup init failed"
    timed ours-backup "${OURS[@]}" create "$URL/bench"
    timed pg_dump-Fc "$BINDIR/pg_dump" -Fc -f "$WORK_DIR/dump.fc" bench
    timed pg_dump-Fd "$BINDIR/pg_dump" -Fd -j "$JOBS" -f "$WORK_DIR/dump.dir" bench
    timed bare-copy bash "$WORK_DIR/bare_copy.sh"
    for db in restored_ours restored_theirs; do
        "$BINDIR/psql" -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null
    done
    timed ours-restore "${OURS[@]}" restore latest --to "$URL/restored_ours"
    "$BINDIR/psql" -X -q -d postgres -c "CREATE DATABASE restored_theirs" >/dev/null
    timed pg_restore-Fd "$BINDIR/pg_restore" -j "$JOBS" -d restored_theirs "$WORK_DIR/dump.dir"
done

# Both restores must hold the same data.
for db in restored_ours restored_theirs; do
    "$BINDIR/psql" -X -A -t -d "$db" -c "SELECT (SELECT count(*) FROM pgbench_accounts), (SELECT sum(abalance) FROM pgbench_accounts), (SELECT count(*) FROM pg_indexes WHERE schemaname = 'public')" >"$WORK_DIR/check-$db"
done
cmp -s "$WORK_DIR/check-restored_ours" "$WORK_DIR/check-restored_theirs" ||
    die "restores differ: $(cat "$WORK_DIR/check-restored_ours") vs $(cat "$WORK_DIR/check-restored_theirs")"

REPO_BYTES=$(du -sb "$WORK_DIR/repo" | cut -f1)
FC_BYTES=$(stat -c %s "$WORK_DIR/dump.fc")
FD_BYTES=$(du -sb "$WORK_DIR/dump.dir" | cut -f1)

python3 - "$RESULTS" "$REPO_BYTES" "$FC_BYTES" "$FD_BYTES" "$DB_BYTES" "$SCALE" "$JOBS" "$(nproc)" <<'PY' | tee "$WORK_DIR/report.txt"
import statistics
import sys
results, repo, fc, fd, db, scale, jobs, cores = sys.argv[1:9]
runs = {}
for line in open(results):
    name, wall, rss = line.split()
    runs.setdefault(name, []).append((float(wall), int(rss) * 1024))
# Median wall time per tool; the largest RSS of any run.
rows = {
    name: (statistics.median(w for w, _ in r), max(m for _, m in r))
    for name, r in runs.items()
}
repo, fc, fd, db = int(repo), int(fc), int(fd), int(db)
MB = 1e6
ok = True
def line(label, value, target, below=True):
    global ok
    res = "PASS" if (value <= target if below else value < target) else "FAIL"
    ok &= res == "PASS"
    print(f"  {label:<44}{value:>8.2f}  {'<= ' if below else '< '}{target:<6}{res}")
print()
rounds = len(runs["ours-backup"])
print(f"backup vs pg_dump/pg_restore on pgbench scale {scale} ({db / MB:.0f} MB database), {cores} cores, {jobs} jobs, median of {rounds} rounds")
print(f"  {'measure':<44}{'ratio':>8}  target")
line("backup wall: ours / pg_dump -Fc", rows["ours-backup"][0] / rows["pg_dump-Fc"][0], 0.5)
line(f"backup wall: ours / pg_dump -Fd -j {jobs}", rows["ours-backup"][0] / rows["pg_dump-Fd"][0], 1.0)
line(f"restore wall: ours / pg_restore -j {jobs} (-Fd)", rows["ours-restore"][0] / rows["pg_restore-Fd"][0], 0.8)
line("stored size: our repository / -Fc file", repo / fc, 1.0)
print(f"  {'backup wall: ours / bare parallel COPY':<44}{rows['ours-backup'][0] / rows['bare-copy'][0]:>8.2f}  (no target: the server's own floor)")
peak = max(rows["ours-backup"][1], rows["ours-restore"][1])
res = "PASS" if peak < 300 * MB else "FAIL"
ok &= res == "PASS"
print(f"  {'our peak RSS (MB)':<44}{peak / MB:>8.0f}  < 300   {res}")
print()
print("  details (absolute; shared machine, compare within one run only)")
for name in ("ours-backup", "pg_dump-Fc", "pg_dump-Fd", "bare-copy", "ours-restore", "pg_restore-Fd"):
    w, r = rows[name]
    each = " ".join(f"{x:.2f}" for x, _ in runs[name])
    print(f"    {name:<16}{w:>8.2f} s  {r / MB:>7.0f} MB RSS   (runs: {each})")
print(f"    sizes: repository {repo / MB:.0f} MB, -Fc {fc / MB:.0f} MB, -Fd {fd / MB:.0f} MB")
print()
print("overall: " + ("all targets met" if ok else "some targets missed"))
PY
