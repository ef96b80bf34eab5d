#!/usr/bin/env bash
# Write-only keys against full keys, side by side in one run, on the mixed
# tree of restic_compare.sh: the first backup, the unchanged re-backup and
# a restore with the full key, each into its own fresh repository (one
# opened with a full key, one with a write-only key), alternating which
# goes first each round. Prints the ratios write-only / full; issue 29's
# targets are 1.1 (backup), 1.2 (re-backup) and 1.05 (restore).
#
# Usage: benches/write_only_compare.sh
#
# Environment:
#   SIZE_GB     tree size in GiB (default 1)
#   ROUNDS      repetitions; ratios are medians (default 3)
#   WORK_DIR    where the tree, repositories and logs go
#               (default /tmp/backup-bench-write-only)
#   SEED        generator seed (default 20240601, as restic_compare.sh)
#   BACKUP_BIN  use this `backup` binary instead of building one
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$SCRIPT_DIR/lib.sh"
WORK_DIR=${WORK_DIR:-/tmp/backup-bench-write-only}
SIZE_GB=${SIZE_GB:-1}
ROUNDS=${ROUNDS:-3}
SEED=${SEED:-20240601}
positive_int ROUNDS "$ROUNDS"
[[ "$SIZE_GB" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "SIZE_GB must be a number of GiB"

LOGS="$WORK_DIR/logs"
RESULTS="$WORK_DIR/results.tsv"
mkdir -p "$LOGS"
need_gnu_time
backup_bin

SRC="$WORK_DIR/tree-$SIZE_GB"
if [ ! -f "$SRC/README.bench" ]; then
    rm -rf "$SRC"
    say "generating a $SIZE_GB GiB tree in $SRC"
    python3 "$SCRIPT_DIR/gen_tree.py" --out "$SRC" --size-gb "$SIZE_GB" --seed "$SEED" >"$LOGS/gen.log"
fi

FULL_PW=bench-full-password-not-secret
WRITER_PW=bench-writer-password-not-secret
: >"$RESULTS"

# run KIND ROUND PHASE ARGS...: `backup` on KIND's repository (full or
# write-only), timed, one line to $RESULTS.
run() {
    local kind=$1 round=$2 phase=$3 pw=$FULL_PW
    shift 3
    [ "$kind" = write-only ] && [ "$phase" != restore ] && pw=$WRITER_PW
    local tf="$LOGS/time-$round-$kind-$phase"
    drop_page_cache || true
    say "  $kind: $phase"
    time_run '%e %U %S %M' "$tf" "$LOGS/$round-$kind-$phase.log" \
        env BACKUP_PASSWORD="$pw" BACKUP_REPOSITORY="$WORK_DIR/repo-$kind" \
        BACKUP_CACHE_DIR="$WORK_DIR/cache-$kind" "$BACKUP_BIN" "$@" ||
        die "$kind $phase failed, see $LOGS/$round-$kind-$phase.log"
    read -r wall user sys rss <"$tf"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$kind" "$phase" "$wall" "$user" "$sys" "$rss" >>"$RESULTS"
}

fresh() { # fresh KIND: a new repository (and, for write-only, its key)
    local kind=$1
    rm -rf "$WORK_DIR/repo-$kind" "$WORK_DIR/cache-$kind" "$WORK_DIR/restored-$kind"
    env BACKUP_PASSWORD="$FULL_PW" "$BACKUP_BIN" -r "$WORK_DIR/repo-$kind" init >/dev/null
    if [ "$kind" = write-only ]; then
        env BACKUP_PASSWORD="$FULL_PW" BACKUP_NEW_PASSWORD="$WRITER_PW" "$BACKUP_BIN" \
            -r "$WORK_DIR/repo-$kind" key add --write-only --name bench >/dev/null
    fi
}

for round in $(seq 1 "$ROUNDS"); do
    say "round $round of $ROUNDS"
    if [ $((round % 2)) -eq 1 ]; then order=(full write-only); else order=(write-only full); fi
    for kind in "${order[@]}"; do fresh "$kind"; done
    for phase in backup rebackup; do
        for kind in "${order[@]}"; do run "$kind" "$round" "$phase" create "$SRC"; done
    done
    for kind in "${order[@]}"; do
        run "$kind" "$round" restore restore latest --to "$WORK_DIR/restored-$kind"
        diff -r --no-dereference "$SRC" "$WORK_DIR/restored-$kind/$(basename "$SRC")" >/dev/null 2>&1 ||
            diff -r --no-dereference "$SRC" "$WORK_DIR/restored-$kind" >/dev/null ||
            die "the $kind restore differs from the tree"
        rm -rf "$WORK_DIR/restored-$kind"
    done
done

python3 - "$RESULTS" "$SIZE_GB" "$ROUNDS" "$("$BACKUP_BIN" --version)" <<'EOF'
import statistics, sys
from collections import defaultdict
path, size, rounds, version = sys.argv[1:]
rows = [l.rstrip("\n").split("\t") for l in open(path) if l.strip()]
by = defaultdict(dict)
for rnd, kind, phase, wall, user, sys_, rss in rows:
    by[(phase, rnd)][kind] = (float(wall), float(user) + float(sys_), int(rss))
targets = {"backup": 1.1, "rebackup": 1.2, "restore": 1.05}
print(f"write-only / full key, {size} GiB tree, {rounds} round(s), {version}")
print(f"{'phase':<10} {'wall ratio':>10} {'cpu ratio':>10} {'target':>7}   full wall  write-only wall")
for phase in ("backup", "rebackup", "restore"):
    pairs = [by[(phase, r)] for r in sorted({r for (p, r) in by if p == phase})]
    wall = statistics.median(p["write-only"][0] / p["full"][0] for p in pairs)
    cpu = statistics.median(p["write-only"][1] / max(p["full"][1], 0.01) for p in pairs)
    fw = statistics.median(p["full"][0] for p in pairs)
    ww = statistics.median(p["write-only"][0] for p in pairs)
    ok = "ok" if wall <= targets[phase] else "MISSED"
    print(f"{phase:<10} {wall:>10.3f} {cpu:>10.3f} {targets[phase]:>7}   {fw:>8.2f}s  {ww:>8.2f}s  {ok}")
EOF
