#!/usr/bin/env bash
# The daemon soak (issue 32): the test tests/e2e/soak.rs for as long as
# asked. backupd runs four scheduled jobs, files, PostgreSQL (physical,
# its WAL streamed), MongoDB (its oplog followed) and Redis (its stream
# followed), each with retention and prune after every run and a scheduled
# drill (a random point of the window for PostgreSQL and MongoDB), into an
# S3 repository whose server fails every 11th request, while writers
# change every source; the daemon's memory, open files and threads are
# sampled every second. CI runs the same test for 60 seconds with backups
# every 20 s and drills every minute.
#
# Usage: benches/soak.sh [SECONDS] [REPORT_FILE]
#   SECONDS      how long the writers run (default 1800)
#   REPORT_FILE  where the report line is appended (default target/soak.txt)
# Environment: JOB_EVERY (seconds between backups of each job, default 60)
# and DRILL_EVERY (between drills, default 300); each divides a minute or
# is whole minutes dividing an hour. Needs what scripts/test.sh sets up
# (the servers and the Python tools).
#
# Prints the report line: runs per job (ok/failed/missed and the longest
# busy stretch; the test fails unless every job's last run succeeded and
# no slot was skipped, or missed without a run outlasting the interval),
# drills (all must
# pass), S3 faults, and memory, open files and threads after the warm-up
# against the last half, with a series over time.
set -euo pipefail
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$SCRIPT_DIR/lib.sh"
cd "$REPO_ROOT"
seconds="${1:-1800}"
report="${2:-target/soak.txt}"
positive_int SECONDS "$seconds"
positive_int JOB_EVERY "${JOB_EVERY:-60}"
positive_int DRILL_EVERY "${DRILL_EVERY:-300}"
mkdir -p "$(dirname "$report")"
case "$report" in /*) ;; *) report="$PWD/$report" ;; esac
export CARGO_INCREMENTAL=0
JEMALLOC_OVERRIDE="${JEMALLOC_OVERRIDE:-/usr/lib/$(gcc -print-multiarch)/libjemalloc_pic.a}"
export JEMALLOC_OVERRIDE
export BACKUP_SOAK_SECONDS="$seconds" BACKUP_SOAK_REPORT="$report"
export BACKUP_SOAK_JOB_EVERY="${JOB_EVERY:-60}" BACKUP_SOAK_DRILL_EVERY="${DRILL_EVERY:-300}"
say "soak of $seconds s: backups every $BACKUP_SOAK_JOB_EVERY s, drills every $BACKUP_SOAK_DRILL_EVERY s"
cargo build --workspace --all-features
cargo nextest run -p backup-cli --all-features --test e2e \
    -E 'test(/soak::daemon_soak_with_s3_faults/)' --no-capture
tail -n 1 "$report"
