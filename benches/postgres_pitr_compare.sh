#!/usr/bin/env bash
# Side-by-side comparison of PostgreSQL WAL capture and point-in-time
# restores: `backup` (this workspace) against pgBackRest (archive-async=y,
# process-max=2), in one run, on one throwaway cluster loaded with
# pgbench -i -s SCALE and written by pgbench at full speed.
#
#   phase 1, DURATION s of pgbench: WAL archived by pgBackRest's
#            archive-push (async) and streamed by `backup wal receive` at
#            the same time. Sampled every second: our streaming lag
#            (pg_stat_replication.flush_lag of the receiver; target p99
#            <= 2 s) beside pgBackRest's archive lag in segments.
#   phase 2, DURATION s of pgbench: archive_command = `backup wal push`
#            (our archive mode); pg_stat_archiver's lag in segments
#            (target: p99 within 4 segments of the current one).
#   phase 3: a point-in-time restore to the end of phase 1 (both tools
#            from a full base backup taken before it), until the data
#            directory is recovered: ours `restore --at --start` (replayed
#            in a server it starts with shared buffers sized for replay,
#            then stopped); pgBackRest `restore --type=time`, then the
#            server started until the first query on the promoted server,
#            then stopped. Ratio ours / pgBackRest, median of ROUNDS
#            (target <= 0.8). Beside it, our restore followed by the same
#            server start as pgBackRest's (the cluster's own settings). Our
#            peak RSS (receiver, push, restore; target < 300 MB).
#
# Usage: benches/postgres_pitr_compare.sh [SCALE]   (default 100)
#
# Environment:
#   WORK_DIR    everything, under /tmp (default /tmp/pgpitr-bench)
#   BACKUP_BIN  use this `backup` binary instead of building one
#   DURATION    seconds of pgbench per phase (default 120)
#   ROUNDS      restores of each tool (default 2)
#   KEEP        1 keeps WORK_DIR afterwards
#
# Needs postgresql, pgbackrest and time from Debian; installs them as root.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$SCRIPT_DIR/lib.sh"
SCALE=${1:-${SCALE:-100}}
WORK_DIR=${WORK_DIR:-/tmp/pgpitr-bench}
DURATION=${DURATION:-120}
ROUNDS=${ROUNDS:-2}
KEEP=${KEEP:-0}
PASSWORD=bench-password-not-secret
LOGS="$WORK_DIR/logs"
RESULTS="$WORK_DIR/results.tsv"

positive_int scale "$SCALE"
positive_int DURATION "$DURATION"
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
# The postgres user runs archive_command and restore_command.
install -m 755 "$BACKUP_BIN" "$WORK_DIR/backup"
BACKUP_BIN="$WORK_DIR/backup"

as_postgres
PORT=$(free_port)
DATA="$WORK_DIR/data"
pgbackrest_config "$DATA" "$PORT" archive-async=y

say "initdb and start PostgreSQL on 127.0.0.1:$PORT"
pg_initdb "$DATA" "$PASSWORD"
cat >>"$DATA/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$WORK_DIR'
shared_buffers = 256MB
max_wal_size = 4GB
checkpoint_timeout = 30min
autovacuum = off
archive_mode = on
archive_command = 'pgbackrest --config=$PGBR_CONF --stanza=bench archive-push %p'
CONF
pg_start "$DATA"
RECEIVER_PID=
cleanup() {
    stop_pid "${RECEIVER_PID:-}"
    stop_pid "${PG_PID:-}"
    [ "$KEEP" = 1 ] || rm -rf "$DATA" "$WORK_DIR"/repo* "$WORK_DIR/pgbr" "$WORK_DIR/restore"
}
trap cleanup EXIT

export PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres PGPASSWORD=$PASSWORD
psql_() { "$BINDIR/psql" -X -q -A -t -d postgres "$@"; }
psql_ -c "CREATE ROLE repl LOGIN REPLICATION PASSWORD '$PASSWORD'" >/dev/null
pgbackrest_stanza_create

say "pgbench -i -s $SCALE"
"$BINDIR/pgbench" -i -q -s "$SCALE" postgres >"$LOGS/load.log" 2>&1 || die "pgbench -i failed"
psql_ -c "CHECKPOINT" >/dev/null

# Our repository belongs to postgres, whose archive_command and
# restore_command write and read it with a password-less key file.
OURS=(env BACKUP_PASSWORD="$PASSWORD" BACKUP_REPOSITORY="$WORK_DIR/repo" "$BACKUP_BIN")
install -d -o postgres -g postgres "$WORK_DIR/repo"
"${OURS[@]}" init >"$LOGS/init.log" 2>&1 || die "backup init failed"
"${OURS[@]}" key export --no-password --to "$WORK_DIR/repo.key" >/dev/null
chown -R postgres:postgres "$WORK_DIR/repo" "$WORK_DIR/repo.key"

say "streaming receiver, then both base backups"
"${OURS[@]}" wal receive "postgres://repl:$PASSWORD@127.0.0.1:$PORT/" --flush-interval 1s \
    >"$LOGS/receiver.log" 2>&1 &
RECEIVER_PID=$!
sleep 2
kill -0 "$RECEIVER_PID" || die "the receiver did not start (see $LOGS/receiver.log)"
"${OURS[@]}" create "postgres://postgres:$PASSWORD@127.0.0.1:$PORT/postgres?mode=physical" --pgdata "$DATA" \
    >"$LOGS/ours-base.log" 2>&1 || die "our base backup failed"
"${PGBR[@]}" backup --type=full >"$LOGS/pgbr-base.log" 2>&1 || die "pgbackrest backup failed"

segno() { # WAL file name -> segment number (16 MiB segments)
    python3 -c 'import sys; n=sys.argv[1]; print(int(n[8:16],16)*256+int(n[16:],16)) if len(n)==24 else print(0)' "$1"
}
# sample PHASE: one line a second while pgbench runs: our flush lag (s),
# bytes behind, and the archiver's lag in segments.
sample() {
    local phase=$1
    while kill -0 "$PGBENCH_PID" 2>/dev/null; do
        local row cur arch
        row=$(psql_ -F ' ' -c "SELECT coalesce(extract(epoch FROM max(r.flush_lag)), 0), \
            coalesce(max(pg_wal_lsn_diff(pg_current_wal_lsn(), r.flush_lsn)), 0), \
            pg_walfile_name(pg_current_wal_lsn()), coalesce(a.last_archived_wal, '') \
            FROM pg_stat_archiver a LEFT JOIN pg_stat_replication r ON true GROUP BY a.last_archived_wal" 2>/dev/null || true)
        if [ -n "$row" ]; then
            read -r lag behind curname archname <<<"$row"
            cur=$(segno "$curname")
            arch=$(segno "${archname:-0}")
            printf '%s\tlag\t%s\t%s\t%s\n' "$phase" "$lag" "$behind" "$((cur - arch))" >>"$RESULTS"
        fi
        sleep 1
    done
}

say "phase 1: $DURATION s of pgbench; pgBackRest archives (async), we stream"
"$BINDIR/pgbench" -n -c 2 -j 2 -T "$DURATION" postgres >"$LOGS/pgbench1.log" 2>&1 &
PGBENCH_PID=$!
sample stream
wait "$PGBENCH_PID" || die "pgbench failed (see $LOGS/pgbench1.log)"
TARGET=$(psql_ -c "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
# The same instant as pgBackRest takes it.
TARGET_PGBR=$(echo "$TARGET" | sed 's/T/ /; s/Z$/+00/')
TARGET_TXNS=$(psql_ -c "SELECT count(*) FROM pgbench_history")
sleep 1
# Both tools hold WAL past the target before the restores: recovery to a
# time stops at the first commit after it, so one must follow.
psql_ -c "CREATE TABLE after_target ()" >/dev/null
LAST=$(psql_ -c "SELECT pg_walfile_name(pg_switch_wal())")
for _ in $(seq 1 600); do
    [ "$(psql_ -c "SELECT coalesce(last_archived_wal, '') >= '$LAST' FROM pg_stat_archiver")" = t ] && break
    sleep 0.5
done
sleep 3
RECEIVER_RSS=$(awk '/VmHWM/ { print $2 }' "/proc/$RECEIVER_PID/status")
printf 'all\treceiver-rss\t%s\n' "$RECEIVER_RSS" >>"$RESULTS"
stop_pid "$RECEIVER_PID"
RECEIVER_PID=

say "phase 2: $DURATION s of pgbench; archive_command = backup wal push"
psql_ -c "ALTER SYSTEM SET archive_command = '$BACKUP_BIN --repo $WORK_DIR/repo --key-file $WORK_DIR/repo.key --quiet wal push %p'" >/dev/null
psql_ -c "SELECT pg_reload_conf()" >/dev/null
sleep 1
"$BINDIR/pgbench" -n -c 2 -j 2 -T "$DURATION" postgres >"$LOGS/pgbench2.log" 2>&1 &
PGBENCH_PID=$!
sample archive
wait "$PGBENCH_PID" || die "pgbench failed (see $LOGS/pgbench2.log)"
# The peak RSS of one push, measured on the last segment.
LASTSEG=$(find "$DATA/pg_wal" -maxdepth 1 -regextype posix-extended -regex '.*/[0-9A-F]{24}' -printf '%f\n' |
    sort | tail -n 2 | head -n 1)
cp "$DATA/pg_wal/$LASTSEG" "$WORK_DIR/$LASTSEG" && chown postgres "$WORK_DIR/$LASTSEG"
SYSID=$(psql_ -c "SELECT system_identifier FROM pg_control_system()")
/usr/bin/time -f '%M' -o "$LOGS/push-rss" "${AS_PG[@]}" "$BACKUP_BIN" --repo "$WORK_DIR/repo" --key-file "$WORK_DIR/repo.key" \
    --quiet wal push "$WORK_DIR/$LASTSEG" --cluster "$SYSID" >/dev/null 2>&1 || true
printf 'all\tpush-rss\t%s\n' "$(cat "$LOGS/push-rss" 2>/dev/null || echo 0)" >>"$RESULTS"

say "phase 3: point-in-time restores to $TARGET ($ROUNDS rounds each)"
psql_ -c "ALTER SYSTEM RESET archive_command" >/dev/null
psql_ -c "SELECT pg_reload_conf()" >/dev/null
# hot_standby=off: no read-only connections while WAL is replayed, so
# the first query that succeeds is one on the promoted server.
start_ready_stop() {
    local dir=$1 port
    port=$(free_port)
    "${AS_PG[@]}" "$BINDIR/pg_ctl" -D "$dir" -l "$dir/../start.log" -w -t 3600 \
        -o "-p $port -k $WORK_DIR -c listen_addresses=127.0.0.1 -c archive_mode=off -c hot_standby=off" start >/dev/null
    for _ in $(seq 1 36000); do
        "${AS_PG[@]}" "$BINDIR/pg_ctl" -D "$dir" status >/dev/null 2>&1 || { : >"$dir/../count"; return 1; }
        if PGPORT=$port "$BINDIR/psql" -X -q -A -t -h 127.0.0.1 -d postgres \
            -c "SELECT count(*) FROM pgbench_history WHERE NOT pg_is_in_recovery()" >"$dir/../count" 2>/dev/null &&
            [ -s "$dir/../count" ]; then
            break
        fi
        sleep 0.1
    done
    "${AS_PG[@]}" "$BINDIR/pg_ctl" -D "$dir" -m fast -w stop >/dev/null
}
for round in $(seq 1 "$ROUNDS"); do
    for tool in ours ours-pgctl pgbackrest; do
        rm -rf "$WORK_DIR/restore"
        install -d -o postgres -g postgres "$WORK_DIR/restore"
        drop_page_cache || true
        say "  round $round: $tool"
        start=$(date +%s.%N)
        case $tool in
        ours)
            # restore --start: restores, replays to the target in a server
            # it starts (with shared buffers sized for replay) and stops.
            "${OURS[@]}" restore --at "$TARGET" --to "$WORK_DIR/restore/data" --start "$(free_port)" \
                >"$LOGS/restore-ours.log" 2>&1 || die "our restore failed (see $LOGS/restore-ours.log)"
            end=$(date +%s.%N)
            # The transactions it holds, read from a start after the timing.
            start_ready_stop "$WORK_DIR/restore/data" || die "our restored server did not come up (see $WORK_DIR/restore/start.log)"
            ;;
        ours-pgctl)
            # Our restore, then the same server start as pgBackRest's (the
            # cluster's own settings); also our process's peak RSS, which
            # the run above cannot tell apart from the server it starts.
            /usr/bin/time -f '%M' -o "$LOGS/restore-rss" "${OURS[@]}" restore --at "$TARGET" \
                --to "$WORK_DIR/restore/data" >"$LOGS/restore-ours-pgctl.log" 2>&1 || die "our restore failed (see $LOGS/restore-ours-pgctl.log)"
            start_ready_stop "$WORK_DIR/restore/data" || die "our restored server did not come up (see $WORK_DIR/restore/start.log)"
            end=$(date +%s.%N)
            printf 'all\trestore-rss\t%s\n' "$(cat "$LOGS/restore-rss")" >>"$RESULTS"
            ;;
        pgbackrest)
            install -d -m 700 -o postgres -g postgres "$WORK_DIR/restore/data"
            "${PGBR[@]}" restore --pg1-path="$WORK_DIR/restore/data" --type=time --target="$TARGET_PGBR" \
                --target-action=promote >"$LOGS/restore-pgbr.log" 2>&1 || die "pgbackrest restore failed"
            start_ready_stop "$WORK_DIR/restore/data" || die "pgBackRest's restored server did not come up (see $WORK_DIR/restore/start.log)"
            end=$(date +%s.%N)
            ;;
        esac
        got=$(cat "$WORK_DIR/restore/count")
        [ "$got" = "$TARGET_TXNS" ] || say "  warning: $tool restored $got pgbench transactions, the target had $TARGET_TXNS"
        printf 'restore\t%s\t%s\t%s\n' "$tool" "$(awk "BEGIN { print $end - $start }")" "$got" >>"$RESULTS"
    done
done

python3 - "$RESULTS" "$SCALE" "$DURATION" "$(nproc)" "$TARGET_TXNS" <<'PY' | tee "$WORK_DIR/report.txt"
import statistics, sys
results, scale, duration, cores, txns = sys.argv[1:6]
lag = {"stream": [], "archive": []}
restore = {"ours": [], "ours-pgctl": [], "pgbackrest": []}
rss = {}
for line in open(results):
    f = line.rstrip("\n").split("\t")
    if f[1] == "lag":
        lag[f[0]].append((float(f[2]), int(float(f[3])), int(f[4])))
    elif f[0] == "restore":
        restore[f[1]].append((float(f[2]), f[3]))
    else:
        rss[f[1]] = max(rss.get(f[1], 0), int(f[2]))
def p(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))] if v else float("nan")
ok = True
def line(label, value, target, below=True):
    global ok
    res = "PASS" if (value <= target if below else value < target) else "FAIL"
    ok &= res == "PASS"
    print(f"  {label:<62}{value:>8.2f}  {'<=' if below else '<'} {target:<5} {res}")
print(f"pgbench scale {scale}, {duration} s per phase at full speed (2 clients), {cores} cores")
print(f"  {'measure':<62}{'value':>8}  target")
s = lag["stream"]
line("streaming lag p99 (s), ours", p([x[0] for x in s], 0.99), 2)
print(f"    ours: lag p50 {p([x[0] for x in s], 0.5):.2f} s, max {max(x[0] for x in s):.2f} s; "
      f"bytes behind p99 {p([x[1] for x in s], 0.99) / 1e6:.1f} MB")
print(f"    pgBackRest archive-async beside it: archive lag p50 {p([x[2] for x in s], 0.5)} segments, "
      f"p99 {p([x[2] for x in s], 0.99)}, max {max(x[2] for x in s)}")
a = lag["archive"]
line("archive mode (backup wal push) lag p99 (segments)", p([x[2] for x in a], 0.99), 4)
print(f"    max {max(x[2] for x in a)} segments over {len(a)} samples")
o = statistics.median(x[0] for x in restore["ours"])
g = statistics.median(x[0] for x in restore["ours-pgctl"])
r = statistics.median(x[0] for x in restore["pgbackrest"])
runs = lambda k: " ".join(f"{x[0]:.1f}" for x in restore[k])
line(f"PITR restore + recovery wall: ours (restore --start) / pgbackrest", o / r, 0.8)
print(f"    ours {o:.1f} s, pgBackRest {r:.1f} s (runs: ours {runs('ours')}; pgbackrest {runs('pgbackrest')}); "
      f"target had {txns} pgbench transactions, restored {sorted(set(x[1] for v in restore.values() for x in v))}")
print(f"    ours restored, then started like pgBackRest's (the cluster's own shared_buffers): {g:.1f} s, "
      f"{g / r:.2f} of pgBackRest (runs: {runs('ours-pgctl')})")
peak = max(rss.values()) / 1024
line("our peak RSS (MB): receiver, push, restore", peak, 300, below=False)
print(f"    receiver {rss.get('receiver-rss', 0) / 1024:.0f} MB, push {rss.get('push-rss', 0) / 1024:.0f} MB, "
      f"restore {rss.get('restore-rss', 0) / 1024:.0f} MB")
print()
print("overall: " + ("all targets met" if ok else "some targets missed"))
PY
