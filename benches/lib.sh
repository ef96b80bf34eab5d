# shellcheck shell=bash
# Setup shared by the benches/*.sh scripts. Sourced, not executed:
#
#   SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
#   source "$SCRIPT_DIR/lib.sh"
#
# Sets REPO_ROOT (the workspace) and BENCH_DIR (benches/). Functions that
# write logs put them in $LOGS when the script has set it. Nothing here
# runs at source time but those two assignments: a script with a prebuilt
# BACKUP_BIN needs no cargo.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$BENCH_DIR/.." && pwd)
BENCH_TARGET_DIR=${BENCH_TARGET_DIR:-}

# say MESSAGE...: one time-stamped progress line on standard error.
say() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# die MESSAGE...: says "error: MESSAGE" and exits 1.
die() {
    say "error: $*"
    exit 1
}

# positive_int LABEL VALUE: dies with "LABEL must be a positive integer" unless VALUE is one.
positive_int() { [[ "$2" =~ ^[1-9][0-9]*$ ]] || die "$1 must be a positive integer"; }

# require_root WHY: dies unless running as root, saying why root is needed.
require_root() { [ "$(id -u)" -eq 0 ] || die "run as root ($1)"; }

# apt_install PACKAGE...: installs Debian packages (apt-get update once if the first try fails); as non-root dies naming the command to run.
apt_install() {
    [ "$(id -u)" -eq 0 ] || die "$* missing; install with: sudo apt-get install -y $*"
    say "installing $* (apt-get install -y $*)"
    local log
    log=$(mktemp)
    DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" >"$log" 2>&1 ||
        { apt-get update >>"$log" 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" >>"$log" 2>&1; } ||
        { tail -n 20 "$log" >&2; rm -f "$log"; die "could not install $*"; }
    rm -f "$log"
}

# need COMMAND [PACKAGE]: installs PACKAGE (default COMMAND) unless COMMAND is on PATH.
need() { command -v "$1" >/dev/null || apt_install "${2:-$1}"; }

# need_gnu_time: makes sure /usr/bin/time (GNU time, for wall time and peak RSS) exists.
need_gnu_time() { [ -x /usr/bin/time ] || apt_install time; }

# free_port: prints a TCP port of 127.0.0.1 that was free a moment ago.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# stop_pid PID: sends SIGINT to PID (if set and alive) and waits up to 60 s for it to go.
stop_pid() {
    local pid=${1:-}
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -INT "$pid" 2>/dev/null || true
        for _ in $(seq 1 300); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
    fi
}

# drop_page_cache: syncs and drops the page cache; returns 1 where that is not allowed (not root, read-only /proc).
drop_page_cache() {
    sync
    (echo 3 >/proc/sys/vm/drop_caches) 2>/dev/null
}

# time_run FORMAT TIMEFILE LOG CMD...: runs CMD under GNU time -f FORMAT -o TIMEFILE, output to LOG; on failure shows LOG's tail and returns 1.
time_run() {
    local format=$1 timefile=$2 log=$3
    shift 3
    /usr/bin/time -f "$format" -o "$timefile" "$@" >"$log" 2>&1 || {
        tail -n 20 "$log" >&2
        return 1
    }
}

# --- building ---------------------------------------------------------------

# target_dir: sets BENCH_TARGET_DIR, once, to cargo's target directory (CARGO_TARGET_DIR, .cargo/config.toml, or target/).
target_dir() {
    [ -n "$BENCH_TARGET_DIR" ] && return 0
    command -v cargo >/dev/null || die "cargo is needed to build the binaries (or set BACKUP_BIN)"
    BENCH_TARGET_DIR=$(cd "$REPO_ROOT" && cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])') ||
        die "cargo metadata failed in $REPO_ROOT"
    [ -n "$BENCH_TARGET_DIR" ] || die "cargo metadata named no target directory"
}

# build_release VAR PACKAGE BIN: cargo build --release of binary BIN of PACKAGE (log: $LOGS/build.log, else stderr); sets VAR to its path.
build_release() {
    local var=$1 package=$2 bin=$3
    target_dir
    say "building the release binary (cargo build --release -p $package --bin $bin)"
    # Without JEMALLOC_OVERRIDE (which scripts/test.sh sets to link Debian's
    # prebuilt jemalloc): the binary measured is the one shipped, with the
    # allocator settings of .cargo/config.toml.
    if [ -n "${LOGS:-}" ]; then
        mkdir -p "$LOGS"
        (cd "$REPO_ROOT" && env -u JEMALLOC_OVERRIDE cargo build --release -p "$package" --bin "$bin") >"$LOGS/build.log" 2>&1 ||
            { tail -n 30 "$LOGS/build.log" >&2; die "build failed, see $LOGS/build.log"; }
    else
        (cd "$REPO_ROOT" && env -u JEMALLOC_OVERRIDE cargo build --release -p "$package" --bin "$bin") >&2 || die "build failed"
    fi
    [ -x "$BENCH_TARGET_DIR/release/$bin" ] || die "cargo built no $BENCH_TARGET_DIR/release/$bin"
    printf -v "$var" '%s' "$BENCH_TARGET_DIR/release/$bin"
}

# backup_bin: unless BACKUP_BIN is set, builds `backup` and sets BACKUP_BIN (and BACKUP_BUILT_HERE=1); dies if BACKUP_BIN is not executable.
backup_bin() {
    BACKUP_BUILT_HERE=
    if [ -z "${BACKUP_BIN:-}" ]; then
        build_release BACKUP_BIN backup-cli backup
        # shellcheck disable=SC2034 # read by the sourcing script
        BACKUP_BUILT_HERE=1
    fi
    [ -x "$BACKUP_BIN" ] || die "no backup binary at $BACKUP_BIN"
}

# allocator_note BIN: the jemalloc settings BIN was built with, or a warning
# when it has none (built with JEMALLOC_OVERRIDE, as scripts/test.sh builds):
# jemalloc's defaults then apply and memory figures are not the shipped ones.
allocator_note() {
    local conf
    conf=$(MALLOC_CONF=stats_print:true "$1" --version 2>&1 >/dev/null |
        sed -n 's/^ *config\.malloc_conf: "\(.*\)"$/\1/p')
    if [ -n "$conf" ]; then
        echo "jemalloc $conf"
    else
        echo "WARNING: jemalloc without the shipped settings (built with JEMALLOC_OVERRIDE?): memory is not the shipped binary's"
    fi
}

# --- MongoDB ----------------------------------------------------------------

# secantus: unless BACKUP_TEST_SECANTUSD is set, installs SecantusDB (the MongoDB-protocol test server) into .venv as scripts/test.sh does, and exports BACKUP_TEST_SECANTUSD.
secantus() {
    if [ -z "${BACKUP_TEST_SECANTUSD:-}" ]; then
        if [ ! -x "$REPO_ROOT/.venv/bin/secantusd-py" ]; then
            say "installing SecantusDB==0.7.0b3 into $REPO_ROOT/.venv"
            [ -x "$REPO_ROOT/.venv/bin/python3" ] || python3 -m venv "$REPO_ROOT/.venv" ||
                die "could not create .venv (Debian: apt-get install -y python3-venv)"
            "$REPO_ROOT/.venv/bin/python3" -m pip install --quiet --disable-pip-version-check 'SecantusDB==0.7.0b3' ||
                die "could not install SecantusDB"
        fi
        BACKUP_TEST_SECANTUSD=$REPO_ROOT/.venv/bin/secantusd-py
    fi
    export BACKUP_TEST_SECANTUSD
}

# --- PostgreSQL -------------------------------------------------------------

# postgres_bindir: sets BINDIR to the newest /usr/lib/postgresql/*/bin, installing postgresql first if there is none.
postgres_bindir() {
    BINDIR=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
    if [ -z "$BINDIR" ] || [ ! -x "$BINDIR/initdb" ]; then
        apt_install postgresql
        BINDIR=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d | sort -V | tail -n 1)
    fi
    [ -x "$BINDIR/initdb" ] || die "no initdb under /usr/lib/postgresql"
}

# as_postgres: sets AS_PG to the command prefix that runs as the postgres user (empty when not root: the cluster is then the caller's).
as_postgres() {
    AS_PG=()
    if [ "$(id -u)" -eq 0 ]; then
        id postgres >/dev/null 2>&1 || die "the postgres user is missing (apt-get install -y postgresql creates it)"
        AS_PG=(setpriv --reuid=postgres --regid=postgres --init-groups)
    fi
}

# pg_initdb DATA PASSWORD: initdb of a cluster in DATA as AS_PG (superuser postgres with PASSWORD over TCP, trust on the socket, UTF8, C.UTF-8); log $LOGS/initdb.log.
pg_initdb() {
    local data=$1 password=$2 pw
    pw="$(dirname "$data")/pw"
    echo "$password" >"$pw"
    [ "$(id -u)" -ne 0 ] || chown postgres "$pw"
    "${AS_PG[@]}" "$BINDIR/initdb" -D "$data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
        --pwfile="$pw" --encoding=UTF8 --locale=C.UTF-8 >"$LOGS/initdb.log" 2>&1 ||
        die "initdb failed, see $LOGS/initdb.log"
}

# pg_start DATA [OPTIONS]: pg_ctl start of DATA as AS_PG with server OPTIONS (log: DATA/../server.log); sets PG_PID.
pg_start() {
    local data=$1 log
    log="$(dirname "$data")/server.log"
    local opts=()
    [ -z "${2:-}" ] || opts=(-o "$2")
    "${AS_PG[@]}" "$BINDIR/pg_ctl" -D "$data" -l "$log" -w -t 120 "${opts[@]}" start \
        >"$LOGS/pg_ctl.log" 2>&1 || die "postgres did not start, see $log"
    # shellcheck disable=SC2034 # read by the sourcing script (its cleanup)
    PG_PID=$(head -n 1 "$data/postmaster.pid")
}

# pgbackrest_config DATA PORT [LINE...]: writes $WORK_DIR/pgbackrest.conf (stanza bench; zst, process-max=2, start-fast; extra [global] LINEs) and sets PGBR_CONF and PGBR (the pgbackrest command as postgres).
pgbackrest_config() {
    local data=$1 port=$2
    shift 2
    PGBR_CONF="$WORK_DIR/pgbackrest.conf"
    {
        echo "[global]"
        echo "repo1-path=$WORK_DIR/pgbr"
        echo "compress-type=zst"
        echo "process-max=2"
        echo "start-fast=y"
        echo "log-level-console=warn"
        echo "log-level-file=off"
        echo "lock-path=$WORK_DIR/pgbr-lock"
        echo "spool-path=$WORK_DIR/pgbr-spool"
        local line
        for line in "$@"; do echo "$line"; done
        echo
        echo "[bench]"
        echo "pg1-path=$data"
        echo "pg1-port=$port"
        echo "pg1-socket-path=$WORK_DIR"
        echo "pg1-user=postgres"
    } >"$PGBR_CONF"
    chown postgres:postgres "$PGBR_CONF"
    PGBR=("${AS_PG[@]}" pgbackrest --config="$PGBR_CONF" --stanza=bench)
}

# pgbackrest_stanza_create: stanza-create of stanza bench (the cluster must be running); log $LOGS/stanza.log.
pgbackrest_stanza_create() {
    "${PGBR[@]}" stanza-create >"$LOGS/stanza.log" 2>&1 ||
        die "pgbackrest stanza-create failed (see $LOGS/stanza.log)"
}
