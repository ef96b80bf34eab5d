#!/usr/bin/env bash
# The daemon soak of tests/e2e/soak.rs for as long as asked (issue 32):
# backupd with a files job run over and over and a Redis job under
# continuous capture, into an S3 repository whose server fails every 11th
# request, with memory and open files sampled every second. CI runs the
# same test for 40 seconds.
#
# Usage: scripts/soak.sh [SECONDS] [REPORT_FILE]   (default 3600 and
# target/soak.txt). Needs what scripts/test.sh sets up.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-3600}"
report="${2:-target/soak.txt}"
mkdir -p "$(dirname "$report")"
export CARGO_INCREMENTAL=0
JEMALLOC_OVERRIDE="${JEMALLOC_OVERRIDE:-/usr/lib/$(gcc -print-multiarch)/libjemalloc_pic.a}"
export JEMALLOC_OVERRIDE
case "$report" in /*) ;; *) report="$PWD/$report" ;; esac
export BACKUP_SOAK_SECONDS="$seconds" BACKUP_SOAK_REPORT="$report"
cargo build --workspace --all-features
cargo nextest run -p backup-cli --all-features --test e2e \
  -E 'test(/soak::daemon_soak_with_s3_faults/)' --no-capture
tail -n 1 "$report"
