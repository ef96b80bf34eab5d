#!/usr/bin/env bash
# Prune benchmark: a repository of many snapshots with a share of garbage,
# pruned by `backup` and by restic side by side on the same data.
#
# Usage: benches/prune_compare.sh
# Environment:
#   SNAPSHOTS   number of snapshots (default 200)
#   FILES       files in the tree (default 50)
#   CHANGED     files rewritten before each snapshot, picked at random with a
#               fixed seed (default 5); so a pack mixes data that stays live
#               with data that becomes garbage, and prune has to repack
#   FILE_MB     size of each file in MiB (default 1); logical data is
#               SNAPSHOTS x FILES x FILE_MB (default about 10 GB)
#   KEEP        snapshots kept by `forget --keep-last` (default 140), which
#               leaves about 30% of the stored data as garbage
#   WORK_DIR    scratch directory (default /tmp/prune-bench)
#   BACKUP_BIN  our binary (default: release build of this checkout)
#
# Installs restic and GNU time (apt-get install -y) when missing, as root.
#
# Prints ratios ours/restic (prune wall time, peak RSS), our absolute peak
# RSS, and our bytes rewritten / bytes freed. Absolute times are details.
set -euo pipefail
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$SCRIPT_DIR/lib.sh"
cd "$REPO_ROOT"
SNAPSHOTS=${SNAPSHOTS:-200}
FILES=${FILES:-50}
FILE_MB=${FILE_MB:-1}
CHANGED=${CHANGED:-5}
KEEP=${KEEP:-140}
WORK=${WORK_DIR:-/tmp/prune-bench}
LOGS=$WORK/logs
need restic
need_gnu_time
rm -rf "$WORK" && mkdir -p "$WORK/src" "$LOGS"
backup_bin
export BACKUP_REPOSITORY=$WORK/ours BACKUP_PASSWORD=bench RESTIC_REPOSITORY=$WORK/restic RESTIC_PASSWORD=bench
export RESTIC_CACHE_DIR=$WORK/restic-cache
"$BACKUP_BIN" init -q
restic init -q
# Deterministic content: file i of version v.
gen() { python3 - "$1" "$2" "$3" <<'PY'
import random, sys
path, seed, mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = random.Random(seed)
with open(path, "wb") as f:
    f.write(r.randbytes(mb * 1024 * 1024))
PY
}
for i in $(seq 1 "$FILES"); do gen "$WORK/src/f$i" "$i" "$FILE_MB"; done
echo "creating $SNAPSHOTS snapshots of $FILES x ${FILE_MB} MiB ($CHANGED rewritten each time) with each tool..."
for s in $(seq 1 "$SNAPSHOTS"); do
  for f in $(python3 -c "import random,sys; print(*random.Random($s).sample(range(1, $FILES + 1), $CHANGED))"); do
    gen "$WORK/src/f$f" $(( 100000 + s * 1000 + f )) "$FILE_MB"
  done
  t=$(date -u -d "2024-01-01 + $s hours" +%Y-%m-%dT%H:%M:%SZ)
  "$BACKUP_BIN" create -q "$WORK/src" --time "$t" >/dev/null
  restic backup -q --time "$(date -u -d "2024-01-01 + $s hours" '+%Y-%m-%d %H:%M:%S')" "$WORK/src" >/dev/null
done
"$BACKUP_BIN" forget -q --keep-last "$KEEP" >/dev/null
restic forget -q --keep-last "$KEEP" >/dev/null
ours_before=$(du -sb "$WORK/ours/data" | cut -f1)
restic_before=$(du -sb "$WORK/restic/data" | cut -f1)
drop_page_cache || true
/usr/bin/time -f "%e %M" -o "$WORK/ours.time" "$BACKUP_BIN" --json prune > "$WORK/ours.json"
drop_page_cache || true
/usr/bin/time -f "%e %M" -o "$WORK/restic.time" restic prune -q >/dev/null
ours_after=$(du -sb "$WORK/ours/data" | cut -f1)
restic_after=$(du -sb "$WORK/restic/data" | cut -f1)
"$BACKUP_BIN" check --read-data -q || die "our repository fails its check after prune"
restic check -q --read-data >/dev/null || die "restic's repository fails its check after prune"
read -r ow om < "$WORK/ours.time"
read -r rw rm_ < "$WORK/restic.time"
python3 - "$ow" "$om" "$rw" "$rm_" "$WORK/ours.json" "$ours_before" "$ours_after" "$restic_before" "$restic_after" "$SNAPSHOTS" "$FILES" "$FILE_MB" <<'PY'
import json, sys
ow, om, rw, rm = float(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
rep = json.load(open(sys.argv[5]))
ob, oa, rb, ra = (int(x) for x in sys.argv[6:10])
snaps, files, mb = (int(x) for x in sys.argv[10:13])
freed = rep["bytes_freed"]; rewritten = rep["bytes_rewritten"]
print(f"prune of {snaps} snapshots, {snaps*files*mb/1024:.1f} GiB logical; garbage share before prune: ours {(ob-oa)/ob:.0%}, restic {(rb-ra)/rb:.0%}")
print(f"  measure                         value    target")
print(f"  prune wall time ours/restic     {ow/rw:6.2f}")
print(f"  peak RSS ours/restic            {om/rm:6.2f}")
print(f"  our peak RSS                  {om/1024:6.0f} MB  < 300 MB  {'PASS' if om/1024 < 300 else 'FAIL'}")
print(f"  bytes rewritten / bytes freed   {rewritten/max(freed,1):6.3f}")
print(f"  space freed ours/restic         {(ob-oa)/max(rb-ra,1):6.2f}")
print(f"details: ours {ow:.2f} s, {om/1024:.0f} MB, freed {freed} B, rewritten {rewritten} B, {rep['packs_deleted']} packs deleted, {rep['packs_repacked']} repacked; restic {rw:.2f} s, {rm/1024:.0f} MB")
PY
