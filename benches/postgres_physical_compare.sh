#!/usr/bin/env bash
# Side-by-side comparison of physical PostgreSQL backups: `backup` (this
# workspace) against pgBackRest and pg_basebackup, in one run, on a
# throwaway cluster, for two data sets of about the same size:
#
#   pgbench     pgbench -i -s SCALE (rows of mostly blanks: compress ~40:1)
#   realistic   random text (md5 hex), numbers, timestamps and jsonb with two
#               indexes (compresses ~2:1), as many bytes as pgbench's
#
# Measured per data set, ratios of medians over ROUNDS (ours / peer):
#
#   local full base backup wall     / pgbackrest backup --type=full       target <= 0.5
#   remote full base backup wall    / pg_basebackup -Ft client-zstd:3     target <= 1.0
#   stored bytes of a full          / pgBackRest's                        target <= 1.0
#   after pgbench -T CHANGE_SECONDS (pgbench: its TPC-B script; realistic:
#   random single-row updates), one round:
#     second local base backup wall / pgbackrest backup --type=incr       target <= 0.4
#     bytes it added                / pgBackRest's incr                   target <= 0.5
#   restore + recovery to consistency (ours: restore --start; pgBackRest:
#   restore --type=immediate, then the server started to ready)           target <= 0.8
#   our peak RSS (the restore measured once more without --start, whose
#   server's shared buffers would count as ours)                          target < 300 MB
#   CPU-seconds per GB of database, ours beside pgBackRest's (client side)
#
# The cluster runs with wal_log_hints=on (as for pg_rewind; data checksums
# would do too): our second local backup stores page deltas only when every
# change of a page's bytes is WAL-logged (docs/ARCHITECTURE.md, "Page
# deltas"). Both tools back up the same cluster.
#
# pgBackRest runs as the postgres user with compress-type=zst, process-max=2,
# start-fast=y and WAL archived by archive-push (its backups need it); the
# WAL archiving runs during every measurement, ours included.
#
# Usage: benches/postgres_physical_compare.sh [SCALE]   (default 100, ~1.5 GB)
#
# Environment:
#   WORK_DIR        everything, under /tmp (postgres must read it; default /tmp/pgphys-bench)
#   BACKUP_BIN      use this `backup` binary instead of building one
#   DATASETS        "pgbench realistic" (default) or one of them
#   ROUNDS          runs of each full backup and restore (default 3)
#   CHANGE_SECONDS  pgbench run between the full and the second backup (default 60)
#   KEEP            1 keeps WORK_DIR afterwards
#
# Needs postgresql, pgbackrest and time from Debian; installs them as root.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$SCRIPT_DIR/lib.sh"
SCALE=${1:-${SCALE:-100}}
WORK_DIR=${WORK_DIR:-/tmp/pgphys-bench}
DATASETS=${DATASETS:-pgbench realistic}
ROUNDS=${ROUNDS:-3}
CHANGE_SECONDS=${CHANGE_SECONDS:-60}
KEEP=${KEEP:-0}
PASSWORD=bench-password-not-secret
LOGS="$WORK_DIR/logs"
RESULTS="$WORK_DIR/results.tsv"

positive_int scale "$SCALE"
positive_int ROUNDS "$ROUNDS"
require_root "the cluster and pgBackRest run as the postgres user"
case "$WORK_DIR" in /tmp/*) ;; *) die "WORK_DIR must be under /tmp (the postgres user must reach it)";; esac

postgres_bindir
need pgbackrest
need_gnu_time

rm -rf "$WORK_DIR"
mkdir -p "$WORK_DIR" "$LOGS"
chown postgres:postgres "$WORK_DIR"
: >"$RESULTS"

backup_bin

as_postgres
PORT=$(free_port)
DATA="$WORK_DIR/data"
pgbackrest_config "$DATA" "$PORT"

say "initdb and start PostgreSQL on 127.0.0.1:$PORT"
pg_initdb "$DATA" "$PASSWORD"
pg_start "$DATA" "-p $PORT -k $WORK_DIR -c listen_addresses=127.0.0.1 -c shared_buffers=256MB -c max_wal_size=4GB \
-c checkpoint_timeout=30min -c autovacuum=off -c wal_log_hints=on -c archive_mode=on \
-c archive_command='pgbackrest --config=$PGBR_CONF --stanza=bench archive-push %p'"
cleanup() {
    stop_pid "${PG_PID:-}"
    [ "$KEEP" = 1 ] || rm -rf "$DATA" "$WORK_DIR"/repo-* "$WORK_DIR/pgbr" "$WORK_DIR/restore" "$WORK_DIR/bb"
}
trap cleanup EXIT

export PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres PGPASSWORD=$PASSWORD
URL="postgres://postgres:$PASSWORD@127.0.0.1:$PORT/postgres"
psql_() { "$BINDIR/psql" -X -q -A -t "$@"; }
pgbackrest_stanza_create

drop_caches() {
    psql_ -d postgres -c "CHECKPOINT" >/dev/null
    drop_page_cache || true
}

# timed DATASET NAME CMD...: wall seconds, peak RSS (KiB), CPU seconds.
timed() {
    local set=$1 name=$2
    shift 2
    drop_caches
    say "  $set $name"
    time_run '%e %M %U %S' "$LOGS/time-$set-$name" "$LOGS/$set-$name.log" "$@" ||
        die "$set $name failed (log: $LOGS/$set-$name.log)"
    read -r wall rss user sys <"$LOGS/time-$set-$name"
    printf '%s\t%s\t%s\t%s\t%s\n' "$set" "$name" "$wall" "$rss" "$(awk "BEGIN { print $user + $sys }")" >>"$RESULTS"
}
record() { printf '%s\t%s\t%s\t0\t0\n' "$1" "$2" "$3" >>"$RESULTS"; }

# ours REPO ARGS... (a command /usr/bin/time can run)
LOCAL=(env BACKUP_PASSWORD="$PASSWORD" BACKUP_REPOSITORY="$WORK_DIR/repo-local" "$BACKUP_BIN")
REMOTE=(env BACKUP_PASSWORD="$PASSWORD" BACKUP_REPOSITORY="$WORK_DIR/repo-remote" "$BACKUP_BIN")
REPL_URL="postgres://repl:$PASSWORD@127.0.0.1:$PORT/postgres?mode=physical"
psql_ -d postgres -c "CREATE ROLE repl LOGIN REPLICATION PASSWORD '$PASSWORD'" >/dev/null

# Starts a restored data directory as postgres and stops it once it accepts
# connections (the same for both tools' restores).
start_ready_stop() {
    local dir=$1 port
    port=$(free_port)
    setpriv --reuid=postgres --regid=postgres --init-groups "$BINDIR/pg_ctl" -D "$dir" -l "$dir/../start.log" -w -t 3600 \
        -o "-p $port -k $WORK_DIR -c listen_addresses=127.0.0.1 -c archive_mode=off" start >/dev/null
    setpriv --reuid=postgres --regid=postgres --init-groups "$BINDIR/pg_ctl" -D "$dir" -m fast -w stop >/dev/null
}
export -f start_ready_stop free_port
export BINDIR WORK_DIR

load() { # load DATASET: creates database DATASET
    local set=$1
    psql_ -d postgres -c "CREATE DATABASE $set" >/dev/null
    case "$set" in
    pgbench)
        "$BINDIR/pgbench" -i -q -s "$SCALE" pgbench >"$LOGS/load-pgbench.log" 2>&1 || die "pgbench -i failed"
        ;;
    realistic)
        # As many bytes as pgbench at this scale: ~15 MB per scale unit.
        local rows=$((SCALE * 60000))
        psql_ -d realistic >"$LOGS/load-realistic.log" 2>&1 <<SQL || die "loading the realistic data failed"
CREATE TABLE orders (id bigserial PRIMARY KEY, customer int NOT NULL, placed timestamptz NOT NULL,
  amount numeric(12,2) NOT NULL, status text NOT NULL, note text, attrs jsonb);
INSERT INTO orders (customer, placed, amount, status, note, attrs)
SELECT (random() * 100000)::int, now() - random() * interval '3 years', (random() * 1000)::numeric(12,2),
  (ARRAY['new','paid','shipped','cancelled'])[1 + floor(random() * 4)::int],
  md5(random()::text) || ' ' || substr(md5(random()::text) || md5(random()::text), 1, (random() * 64)::int),
  jsonb_build_object('sku', md5(random()::text), 'qty', (random() * 10)::int,
                     'tags', jsonb_build_array(substr(md5(random()::text), 1, 6), (random() * 100)::int))
FROM generate_series(1, $rows);
CREATE INDEX ON orders (customer);
CREATE INDEX ON orders (placed);
SQL
        ;;
    esac
    psql_ -d "$set" -c "VACUUM ANALYZE" >/dev/null
    psql_ -d postgres -c "CHECKPOINT" >/dev/null
    # Files last modified well before a base backup are what the next one
    # may take unread (see ARCHITECTURE.md).
    sleep 3
}

change() { # change DATASET: CHANGE_SECONDS of writes
    local set=$1
    say "  $set: $CHANGE_SECONDS s of writes"
    case "$set" in
    pgbench) "$BINDIR/pgbench" -n -c 2 -T "$CHANGE_SECONDS" pgbench >"$LOGS/change-pgbench.log" 2>&1 ;;
    realistic)
        local rows
        rows=$(psql_ -d realistic -c "SELECT max(id) FROM orders")
        printf '\\set id random(1, %s)\nUPDATE orders SET amount = amount + 1, status = '"'"'paid'"'"' WHERE id = :id;\n' "$rows" >"$WORK_DIR/update.sql"
        "$BINDIR/pgbench" -n -c 2 -T "$CHANGE_SECONDS" -f "$WORK_DIR/update.sql" realistic >"$LOGS/change-realistic.log" 2>&1
        ;;
    esac
    psql_ -d postgres -c "CHECKPOINT" >/dev/null
}

pgbr_size() { du -sb "$WORK_DIR/pgbr" | cut -f1; }

for set in $DATASETS; do
    say "data set $set (scale $SCALE)"
    load "$set"
    DB_BYTES=$(psql_ -d postgres -c "SELECT sum(pg_database_size(oid)) FROM pg_database")
    record "$set" db-bytes "$DB_BYTES"
    for round in $(seq 1 "$ROUNDS"); do
        say " round $round of $ROUNDS"
        rm -rf "$WORK_DIR/repo-local" "$WORK_DIR/repo-remote" "$WORK_DIR/bb"
        "${LOCAL[@]}" init >/dev/null 2>&1
        "${REMOTE[@]}" init >/dev/null 2>&1
        timed "$set" ours-local "${LOCAL[@]}" create "$URL" --mode physical --pgdata "$DATA"
        timed "$set" ours-remote "${REMOTE[@]}" create "$REPL_URL"
        timed "$set" pg_basebackup "${AS_PG[@]}" "$BINDIR/pg_basebackup" -h "$WORK_DIR" -p "$PORT" -U postgres \
            -D "$WORK_DIR/bb" -Ft --compress=client-zstd:3 -X fetch -c fast
        before=$(pgbr_size)
        timed "$set" pgbackrest-full "${PGBR[@]}" backup --type=full
        record "$set" pgbackrest-full-bytes $(($(pgbr_size) - before))
        record "$set" ours-local-bytes "$(du -sb "$WORK_DIR/repo-local" | cut -f1)"
    done
    change "$set"
    before_ours=$(du -sb "$WORK_DIR/repo-local" | cut -f1)
    timed "$set" ours-incr "${LOCAL[@]}" create "$URL" --mode physical --pgdata "$DATA"
    record "$set" ours-incr-bytes $(($(du -sb "$WORK_DIR/repo-local" | cut -f1) - before_ours))
    before=$(pgbr_size)
    timed "$set" pgbackrest-incr "${PGBR[@]}" backup --type=incr
    record "$set" pgbackrest-incr-bytes $(($(pgbr_size) - before))
    for round in $(seq 1 "$ROUNDS"); do
        say " restore round $round of $ROUNDS"
        rm -rf "$WORK_DIR/restore"
        install -d -o postgres -g postgres "$WORK_DIR/restore"
        port=$(free_port)
        timed "$set" ours-restore "${LOCAL[@]}" restore latest --to "$WORK_DIR/restore/data" --start "$port"
        if [ "$round" = 1 ]; then
            # Our process's own peak RSS: the run above counts the server
            # it starts (and its shared buffers) too.
            rm -rf "$WORK_DIR/restore"
            install -d -o postgres -g postgres "$WORK_DIR/restore"
            timed "$set" ours-restore-files "${LOCAL[@]}" restore latest --to "$WORK_DIR/restore/data"
        fi
        rm -rf "$WORK_DIR/restore"
        install -d -o postgres -g postgres "$WORK_DIR/restore" "$WORK_DIR/restore/data"
        chmod 700 "$WORK_DIR/restore/data"
        timed "$set" pgbackrest-restore bash -c "$(printf '%q ' "${PGBR[@]}") restore --pg1-path=$WORK_DIR/restore/data --type=immediate --target-action=promote && start_ready_stop $WORK_DIR/restore/data"
    done
    rm -rf "$WORK_DIR/restore"
    psql_ -d postgres -c "DROP DATABASE $set" >/dev/null
    # The next data set starts from fresh repositories.
    "${PGBR[@]}" stop >/dev/null 2>&1 || true
    "${PGBR[@]}" stanza-delete --force >/dev/null 2>&1 || true
    rm -rf "$WORK_DIR/pgbr"
    "${PGBR[@]}" start >/dev/null 2>&1 || true
    pgbackrest_stanza_create
done

python3 - "$RESULTS" "$SCALE" "$(nproc)" "$CHANGE_SECONDS" <<'PY' | tee "$WORK_DIR/report.txt"
import statistics, sys
results, scale, cores, change = sys.argv[1:5]
data = {}
for line in open(results):
    s, name, wall, rss, cpu = line.rstrip("\n").split("\t")
    data.setdefault(s, {}).setdefault(name, []).append((float(wall), int(rss) * 1024, float(cpu)))
MB = 1e6
ok = True
def med(s, name, i=0):
    return statistics.median(x[i] for x in data[s][name])
def line(label, value, target, below=True):
    global ok
    res = "PASS" if (value <= target if below else value < target) else "FAIL"
    ok &= res == "PASS"
    print(f"  {label:<58}{value:>8.2f}  {'<=' if below else '<'} {target:<5} {res}")
for s, runs in data.items():
    db = med(s, "db-bytes")
    rounds = len(runs["ours-local"])
    print()
    print(f"{s}: {db / MB:.0f} MB of databases (pgbench scale {scale}), {cores} cores, median of {rounds} rounds")
    print(f"  {'measure':<58}{'ratio':>8}  target")
    line("local full wall: ours / pgbackrest full", med(s, "ours-local") / med(s, "pgbackrest-full"), 0.5)
    line("remote full wall: ours / pg_basebackup -Ft client-zstd:3", med(s, "ours-remote") / med(s, "pg_basebackup"), 1.0)
    line("stored size of a full: ours / pgbackrest", med(s, "ours-local-bytes") / med(s, "pgbackrest-full-bytes"), 1.0)
    line(f"second backup after {change} s of writes, wall: ours / pgbackrest incr", med(s, "ours-incr") / med(s, "pgbackrest-incr"), 0.4)
    line("  bytes added: ours / pgbackrest incr", med(s, "ours-incr-bytes") / med(s, "pgbackrest-incr-bytes"), 0.5)
    line("restore + recovery wall: ours / pgbackrest restore + start", med(s, "ours-restore") / med(s, "pgbackrest-restore"), 0.8)
    peak = max(x[1] for n in ("ours-local", "ours-remote", "ours-incr", "ours-restore-files") for x in runs[n])
    line("our peak RSS (MB)", peak / MB, 300, below=False)
    gb = db / 1e9
    print(f"  CPU-seconds per GB (client side): ours local {med(s, 'ours-local', 2) / gb:.1f}, "
          f"remote {med(s, 'ours-remote', 2) / gb:.1f}, pgbackrest {med(s, 'pgbackrest-full', 2) / gb:.1f}, "
          f"pg_basebackup {med(s, 'pg_basebackup', 2) / gb:.1f}")
    print("  details (absolute; shared machine, compare within one run only)")
    for n in ("ours-local", "ours-remote", "pg_basebackup", "pgbackrest-full", "ours-incr", "pgbackrest-incr", "ours-restore", "ours-restore-files", "pgbackrest-restore"):
        print(f"    {n:<20}{med(s, n):>8.2f} s  {max(x[1] for x in runs[n]) / MB:>6.0f} MB RSS  "
              f"{med(s, n, 2):>6.1f} CPU-s  (runs: {' '.join(f'{x[0]:.2f}' for x in runs[n])})")
    print(f"    bytes: ours full {med(s, 'ours-local-bytes') / MB:.0f} MB, pgbackrest full {med(s, 'pgbackrest-full-bytes') / MB:.0f} MB, "
          f"ours second {med(s, 'ours-incr-bytes') / MB:.0f} MB, pgbackrest incr {med(s, 'pgbackrest-incr-bytes') / MB:.0f} MB")
print()
print("overall: " + ("all targets met" if ok else "some targets missed"))
PY
