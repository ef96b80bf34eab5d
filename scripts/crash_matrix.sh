#!/usr/bin/env bash
# The full crash matrix (docs/CRASH_TESTING.md): every operation of
# tests/e2e/crash_points.rs killed by the storage failpoint before each of
# its storage writes and after the last one, and each capture of
# tests/e2e/crash_capture.rs killed at three times CI's points
# (BACKUP_CRASH_ALL=1), then a table: operation x kill points x outcome.
# CI runs a sample (the same tests without BACKUP_CRASH_ALL).
#
# Usage: scripts/crash_matrix.sh [REPORT_FILE]
# Needs what scripts/test.sh sets up (JEMALLOC_OVERRIDE is set here).
set -euo pipefail
cd "$(dirname "$0")/.."

report="${1:-target/crash-matrix.tsv}"
mkdir -p "$(dirname "$report")"
: >"$report"
export CARGO_INCREMENTAL=0
JEMALLOC_OVERRIDE="${JEMALLOC_OVERRIDE:-/usr/lib/$(gcc -print-multiarch)/libjemalloc_pic.a}"
export JEMALLOC_OVERRIDE
export BACKUP_CRASH_ALL=1 BACKUP_CRASH_REPORT="$PWD/$report"

status=0
cargo nextest run -p backup-cli --all-features --test e2e \
  -E 'test(/crash_points::crash_|crash_capture::crash_|crash_backups::|crash_daemon::/)' --no-fail-fast --failure-output final || status=$?

# Per point: operation<TAB>point/writes<TAB>outcome.
echo
echo "| operation | kill points | outcome |"
echo "|---|---|---|"
awk -F'\t' '
  { split($2, p, "/"); op = $1; n[op]++; total[op] = p[2]; o[op, $3]++; outs[$3] = 1
    if (!(op in seen)) { seen[op] = 1; order[++k] = op } }
  END {
    for (i = 1; i <= k; i++) {
      op = order[i]; line = ""
      for (x in outs) if ((op, x) in o) line = line (line ? ", " : "") x " " o[op, x]
      if (total[op] == "run")
        printf "| %s | %d (run N killed before its Nth write, N = 1..%d) | %s |\n", op, n[op], n[op], line
      else
        printf "| %s | %d (%d writes, before each and after the last) | %s |\n", op, n[op], total[op], line
    }
  }' "$report"
echo
if grep -q $'\tFAILED' "$report"; then
  echo "FAILED points:"
  grep $'\tFAILED' "$report"
fi
exit "$status"
