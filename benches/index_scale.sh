#!/usr/bin/env bash
# Index at scale (issue 32): a repository of BLOBS data blobs (default ten
# million, the index of some 10 TB of 1 MiB chunks), made by
# benches/bin/synth_index.rs, beside an empty one. Each round backs up
# NEW_MIB of new random data into both, in alternating order.
#
# Usage: benches/index_scale.sh
# Environment:
#   BLOBS       blobs in the large repository (default 10000000)
#   NEW_MIB     new data per backup in MiB (default 1024)
#   ROUNDS      rounds (default 3)
#   WORK_DIR    scratch directory (default /tmp/index-scale-bench); the
#               large repository is kept there and reused when it has
#               BLOBS blobs (delete it to start over)
#   BACKUP_BIN  our binary (default: release build of this checkout)
#
# Prints ratios: backup into the large repository over the same backup into
# the empty one (median; target at most 1.3), the first backup after the
# large repository was made (no persisted index yet: every index file
# read) over the empty one, and the peak RSS of each operation over the
# 300 MB budget (target at most 1.0): backup, `list`, `check` (reads every
# index file), `check --read-data`, `prune --dry-run` and `prune` (no
# snapshot uses the synthetic blobs, so it deletes them all; the next run
# makes the repository again).
set -euo pipefail
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$SCRIPT_DIR/lib.sh"
cd "$REPO_ROOT"
BLOBS=${BLOBS:-10000000}
NEW_MIB=${NEW_MIB:-1024}
ROUNDS=${ROUNDS:-3}
WORK=${WORK_DIR:-/tmp/index-scale-bench}
positive_int BLOBS "$BLOBS"
positive_int NEW_MIB "$NEW_MIB"
positive_int ROUNDS "$ROUNDS"
need_gnu_time
backup_bin
say "building synth_index"
cargo build --release --quiet -p backup-benches --bin synth_index
SYNTH=$REPO_ROOT/target/release/synth_index
export BACKUP_PASSWORD=bench
export BACKUP_CACHE_DIR=$WORK/cache
LOGS=$WORK/logs
mkdir -p "$WORK" "$LOGS"
BIG=$WORK/big
if [ "$(cat "$WORK/big.blobs" 2>/dev/null)" != "$BLOBS" ]; then
    rm -rf "$BIG" "$WORK/big.blobs" "$BACKUP_CACHE_DIR"
    "$BACKUP_BIN" -r "$BIG" init >/dev/null
    say "making a repository of $BLOBS blobs"
    "$SYNTH" "$BIG" "$BLOBS" 2>"$LOGS/synth.log"
    echo "$BLOBS" >"$WORK/big.blobs"
fi
# Every run starts without a persisted index of the large repository, so
# that the first backup measures reading every index file.
rm -rf "$BACKUP_CACHE_DIR"

# timed NAME REPO ARGS...: runs backup with GNU time; appends "seconds kb" to $LOGS/NAME.
timed() {
    local name=$1 repo=$2
    shift 2
    /usr/bin/time -f "%e %M" -o "$LOGS/$name.last" "$BACKUP_BIN" -r "$repo" "$@" >"$LOGS/$name.out" 2>&1 ||
        { cat "$LOGS/$name.out" >&2; die "backup $* failed"; }
    cat "$LOGS/$name.last" >>"$LOGS/$name"
}

NEW=$WORK/new
rm -f "$LOGS"/big "$LOGS"/empty "$LOGS"/first "$LOGS"/list "$LOGS"/check "$LOGS"/read "$LOGS"/prune "$LOGS"/prune_run
for r in $(seq 1 "$ROUNDS"); do
    rm -rf "$NEW" "$WORK/empty"
    mkdir -p "$NEW"
    head -c $((NEW_MIB * 1024 * 1024)) /dev/urandom >"$NEW/new-$r.bin"
    "$BACKUP_BIN" -r "$WORK/empty" init >/dev/null
    if [ "$r" -eq 1 ]; then
        # No persisted index yet: every index file is read (and the
        # index persisted); measured apart.
        timed first "$BIG" create "$NEW"
        timed empty "$WORK/empty" create "$NEW"
        continue
    fi
    if [ $((r % 2)) -eq 0 ]; then
        timed empty "$WORK/empty" create "$NEW"
        timed big "$BIG" create "$NEW"
    else
        timed big "$BIG" create "$NEW"
        timed empty "$WORK/empty" create "$NEW"
    fi
    say "round $r: big $(tail -n 1 "$LOGS/big"), empty $(tail -n 1 "$LOGS/empty") (s, KB)"
done
[ "$ROUNDS" -ge 2 ] || die "ROUNDS must be at least 2 (round 1 measures the first load)"
timed list "$BIG" list
timed check "$BIG" check
timed read "$BIG" check --read-data
timed prune "$BIG" prune --dry-run
# A real prune deletes the synthetic blobs (no snapshot uses them): the
# next run makes the repository again.
timed prune_run "$BIG" prune
rm -f "$WORK/big.blobs"

python3 - "$LOGS" "$BLOBS" "$NEW_MIB" <<'EOF'
import statistics, sys
logs, blobs, mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def rows(name):
    return [tuple(float(x) for x in l.split()) for l in open(f"{logs}/{name}") if l.strip()]
big, empty, first = rows("big"), rows("empty"), rows("first")
# empty[0] pairs with the first backup, the rest with big (same rounds).
ratio = statistics.median(b[0] / e[0] for b, e in zip(big, empty[1:]))
print(f"index at scale: {blobs} blobs, {mib} MiB new per backup, {len(big)} rounds")
print(f"backup into it / into an empty repository (median): {ratio:.2f} (target <= 1.3)")
print(f"first backup (every index file read) / into an empty one: {first[0][0] / empty[0][0]:.2f}")
budget = 300 * 1000
peaks = {"backup": max(r[1] for r in big + first), "backup into empty": max(r[1] for r in empty)}
for op, name in (("list", "list"), ("check", "check"), ("check --read-data", "read"),
                 ("prune --dry-run", "prune"), ("prune", "prune_run")):
    peaks[op] = rows(name)[-1][1]
for op, kb in peaks.items():
    print(f"peak RSS {op} / 300 MB: {kb / budget:.2f} ({kb / 1000:.0f} MB)")
EOF
