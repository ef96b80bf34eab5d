#!/usr/bin/env bash
# Browsing without restoring, side by side with restic on the same data, in
# one run: `ls -R` of a large files snapshot, `diff` of two snapshots and
# `find` over many snapshots (issue 33).
#
# Usage: benches/browse_compare.sh
# Environment:
#   FILES       files in the tree, 100 per directory (default 100000;
#               the issue's size is 1000000)
#   SNAPSHOTS   snapshots taken by each tool (default 20; the issue's is 100)
#   CHANGED     files rewritten before each snapshot after the first
#               (default 100)
#   WORK_DIR    scratch directory (default /tmp/browse-bench)
#   BACKUP_BIN  our binary (default: release build of this checkout)
#
# Installs restic and GNU time (apt-get install -y) when missing, as root.
# Prints ratios ours/restic of wall time (lower is better for us; the
# issue's targets are <= 1.0); absolute times are details only.
set -euo pipefail
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$SCRIPT_DIR/lib.sh"
FILES=${FILES:-100000}
SNAPSHOTS=${SNAPSHOTS:-20}
CHANGED=${CHANGED:-100}
WORK=${WORK_DIR:-/tmp/browse-bench}
LOGS=$WORK/logs
positive_int FILES "$FILES"
positive_int SNAPSHOTS "$SNAPSHOTS"
positive_int CHANGED "$CHANGED"
need restic
need_gnu_time
rm -rf "$WORK" && mkdir -p "$WORK/src" "$LOGS"
backup_bin
export BACKUP_REPOSITORY=$WORK/ours BACKUP_PASSWORD=bench RESTIC_REPOSITORY=$WORK/restic RESTIC_PASSWORD=bench
export RESTIC_CACHE_DIR=$WORK/restic-cache
"$BACKUP_BIN" init -q
restic init -q

# gen N SEED: rewrites N files picked with SEED (all files for N = FILES).
gen() {
    python3 - "$WORK/src" "$FILES" "$1" "$2" <<'PY'
import os, random, sys
root, files, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
r = random.Random(seed)
picked = range(files) if n >= files else r.sample(range(files), n)
for i in picked:
    d = os.path.join(root, f"d{i // 100:05d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:07d}.txt"), "w") as f:
        f.write(f"file {i} version {seed}\n" * (1 + i % 7))
PY
}
say "generating $FILES files, then $SNAPSHOTS snapshots with each tool ($CHANGED files rewritten between them)"
gen "$FILES" 0
for s in $(seq 1 "$SNAPSHOTS"); do
    [ "$s" -eq 1 ] || gen "$CHANGED" "$s"
    t=$(date -u -d "2024-01-01 + $s hours" +%Y-%m-%dT%H:%M:%SZ)
    "$BACKUP_BIN" create -q "$WORK/src" --time "$t" >/dev/null
    restic backup -q --time "$(date -u -d "2024-01-01 + $s hours" '+%Y-%m-%d %H:%M:%S')" "$WORK/src" >/dev/null
done
ours_ids=$("$BACKUP_BIN" --json list | python3 -c 'import json,sys; l=json.load(sys.stdin); print(l[0]["id"], l[-1]["id"])')
restic_ids=$(restic snapshots --json | python3 -c 'import json,sys; l=sorted(json.load(sys.stdin), key=lambda s: s["time"]); print(l[0]["id"], l[-1]["id"])')
read -r o1 o2 <<<"$ours_ids"
read -r r1 r2 <<<"$restic_ids"
# A name present in every snapshot, rewritten in some.
pattern="f00000*7.txt"

# timed NAME TOOL CMD...: wall time and peak RSS of CMD into $WORK/NAME-TOOL.time, output to a log.
timed() {
    local name=$1 tool=$2
    shift 2
    drop_page_cache || true
    time_run '%e %M' "$WORK/$name-$tool.time" "$LOGS/$name-$tool.log" "$@" || die "$tool $name failed"
}
# Alternate who goes first, as restic_compare.sh does.
timed ls ours "$BACKUP_BIN" ls latest -R
timed ls restic restic ls latest
timed diff restic restic diff "$r1" "$r2"
timed diff ours "$BACKUP_BIN" diff "$o1" "$o2"
timed find ours "$BACKUP_BIN" find "$pattern"
timed find restic restic find "$pattern"
# Sanity: the same number of entries listed and found.
ours_ls=$(grep -c . "$LOGS/ls-ours.log")
restic_ls=$(grep -c '^/' "$LOGS/ls-restic.log")
python3 - "$WORK" "$FILES" "$SNAPSHOTS" "$ours_ls" "$restic_ls" "$("$BACKUP_BIN" --version)" "$(restic version)" <<'PY'
import sys
work, files, snaps, ours_ls, restic_ls, ours_v, restic_v = sys.argv[1:8]
def t(name, tool):
    w, m = open(f"{work}/{name}-{tool}.time").read().split()
    return float(w), int(m)
print(f"browse: {files} files, {snaps} snapshots; ours {ours_v}; {restic_v}")
print(f"  {'measure':<34}{'ours/restic':>12}  target")
for name, label in (("ls", "ls -R of the latest snapshot"), ("diff", "diff of first and last"), ("find", f"find over {snaps} snapshots")):
    (ow, om), (rw, rm) = t(name, "ours"), t(name, "restic")
    ratio = ow / rw if rw > 0 else float("inf")
    print(f"  {label + ', wall':<34}{ratio:>12.2f}  <= 1.0 {'PASS' if ratio <= 1.0 else 'FAIL'}")
    print(f"  {label + ', peak RSS':<34}{om / rm:>12.2f}")
print(f"  entries listed: ours {ours_ls}, restic {restic_ls}")
print("details (absolute, shared machine): " + ", ".join(
    f"{n} ours {t(n, 'ours')[0]:.2f} s / restic {t(n, 'restic')[0]:.2f} s" for n in ("ls", "diff", "find")))
PY
