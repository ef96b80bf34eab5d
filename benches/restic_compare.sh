#!/usr/bin/env bash
# Side-by-side comparison of `backup` (this workspace), restic and rustic on
# the same generated file tree, in one run: initial backup, unchanged
# re-backup, full restore (checked with diff -r), repository size, peak
# RSS, CPU seconds per GiB, and the share of our CPU that zstd alone costs.
#
# Usage: benches/restic_compare.sh [TREE...]
#   benches/restic_compare.sh               # 1 GiB (or $SIZE_GB)
#   benches/restic_compare.sh 1 0.3 200k    # 1 GiB, 300 MiB, 200 000 small files
#   TREE is a size in GiB (the mixed tree of gen_tree.py) or N followed by
#   k (a tree of N thousand small files, gen_tree.py --small-files).
#
# Environment:
#   SIZE_GB     trees when no argument is given (default 1)
#   WORK_DIR    where trees, repositories, restores and logs go
#               (default /tmp/backup-bench)
#   ROUNDS      repetitions per tree; ratios are medians (default 1)
#   SEED        generator seed (default 20240601)
#   BACKUP_BIN  use this `backup` binary instead of building one
#   OUR_LABEL   how to name our binary in the report (default: git commit)
#   PEERS       the peers to run (default "restic rustic")
#   RUSTIC_VERSION  rustic-rs installed with cargo install when rustic is
#               missing (default 0.11.4, the pinned peer)
#   KEEP_DATA   1 (default) keeps generated trees for the next run
#   KEEP_REPOS  1 keeps the last repositories (default 0: removed)
#
# Results are ratios ours/peer; absolute numbers are in the details.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$SCRIPT_DIR/lib.sh"
WORK_DIR=${WORK_DIR:-/tmp/backup-bench}
ROUNDS=${ROUNDS:-1}
SEED=${SEED:-20240601}
KEEP_DATA=${KEEP_DATA:-1}
KEEP_REPOS=${KEEP_REPOS:-0}
RUSTIC_VERSION=${RUSTIC_VERSION:-0.11.4}
read -r -a PEERS <<<"${PEERS:-restic rustic}"
if [ "$#" -gt 0 ]; then TREES=("$@"); else read -r -a TREES <<<"${SIZE_GB:-1}"; fi

PASSWORD=bench-password-not-secret
RESULTS="$WORK_DIR/results.tsv"
LOGS="$WORK_DIR/logs"

for t in "${TREES[@]}"; do
    [[ "$t" =~ ^[0-9]+(\.[0-9]+)?$ || "$t" =~ ^[1-9][0-9]*k$ ]] ||
        die "tree '$t' is neither a number of GiB nor N thousand files (200k)"
done
positive_int ROUNDS "$ROUNDS"
for p in "${PEERS[@]}"; do
    case "$p" in restic | rustic) ;; *) die "unknown peer '$p' (restic, rustic)" ;; esac
done

# --- tools ------------------------------------------------------------------

mkdir -p "$WORK_DIR" "$LOGS"
need_gnu_time
need zstd
diff --no-dereference /dev/null /dev/null 2>/dev/null || die "GNU diff with --no-dereference is needed"
VERSIONS=()
for p in "${PEERS[@]}"; do
    case "$p" in
        restic)
            need restic
            VERSIONS+=("restic: $(restic version)")
            ;;
        rustic)
            if ! command -v rustic >/dev/null || ! rustic --version | grep -qF "$RUSTIC_VERSION"; then
                command -v cargo >/dev/null || die "rustic is missing and cargo is needed to install it"
                say "installing rustic-rs $RUSTIC_VERSION (cargo install --locked; takes a while, once)"
                cargo install --locked rustic-rs --version "$RUSTIC_VERSION" >"$LOGS/rustic-install.log" 2>&1 ||
                    die "cargo install rustic-rs failed, see $LOGS/rustic-install.log"
            fi
            VERSIONS+=("rustic: $(rustic --version)")
            ;;
    esac
done
backup_bin

if [ -n "${OUR_LABEL:-}" ]; then
    OUR_VERSION=$OUR_LABEL
elif [ -n "$BACKUP_BUILT_HERE" ]; then
    OUR_VERSION="$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    if [ -n "$(git -C "$REPO_ROOT" status --porcelain -- crates Cargo.toml Cargo.lock 2>/dev/null)" ]; then
        OUR_VERSION="$OUR_VERSION with uncommitted changes"
    fi
else
    OUR_VERSION="prebuilt $BACKUP_BIN"
fi
OUR_VERSION="$OUR_VERSION, $(allocator_note "$BACKUP_BIN")"

# --- helpers ----------------------------------------------------------------

CACHE_NOTE=""
drop_caches() {
    if drop_page_cache; then
        CACHE_NOTE=${CACHE_NOTE:-"page cache dropped before every timed step"}
    else
        CACHE_NOTE=${CACHE_NOTE:-"page cache NOT dropped (needs root and a writable /proc/sys/vm/drop_caches): warm-cache numbers"}
    fi
}

# tool_cmd TOOL: sets CMD to the command prefix of TOOL (ours, restic,
# rustic) on its repository under WORK_DIR/repos, through `env` (which
# execs the tool, so /usr/bin/time measures the tool itself and nothing
# leaks between them).
tool_cmd() {
    case "$1" in
        ours) CMD=(env BACKUP_PASSWORD="$PASSWORD" BACKUP_REPOSITORY="$WORK_DIR/repos/ours" "$BACKUP_BIN") ;;
        restic) CMD=(env RESTIC_PASSWORD="$PASSWORD" RESTIC_REPOSITORY="$WORK_DIR/repos/restic"
            RESTIC_CACHE_DIR="$WORK_DIR/cache/restic" restic) ;;
        rustic) CMD=(env RUSTIC_PASSWORD="$PASSWORD" RUSTIC_REPOSITORY="$WORK_DIR/repos/rustic"
            RUSTIC_CACHE_DIR="$WORK_DIR/cache/rustic" rustic --no-progress) ;;
    esac
}

# step_args TOOL PHASE DEST: sets STEP to the arguments of `tool` for
# PHASE (init, backup, rebackup, restore); backups name the tree by its
# relative name $BASE from its parent directory (ours by its full path).
step_args() {
    case "$1/$2" in
        */init) STEP=(init) ;;
        ours/backup | ours/rebackup) STEP=(create "$SRC") ;;
        */backup | */rebackup) STEP=(backup "$BASE") ;;
        ours/restore) STEP=(restore latest --to "$3") ;;
        restic/restore) STEP=(restore latest --target "$3") ;;
        rustic/restore) STEP=(restore latest "$3") ;;
    esac
}

FAILED=0
# timed TREE ROUND TOOL PHASE CMD...: runs CMD in the source's parent
# directory under /usr/bin/time and appends one line to $RESULTS.
timed() {
    local size=$1 round=$2 t=$3 phase=$4
    shift 4
    local tf="$LOGS/time-$size-$round-$t-$phase" log="$LOGS/$size-$round-$t-$phase.log"
    drop_caches
    say "  $t: $phase"
    if (cd "$SRC_PARENT" && time_run '%e %U %S %M %P' "$tf" "$log" "$@"); then
        read -r wall user sys rss cpu <"$tf"
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
            "$size" "$round" "$t" "$phase" "$wall" "$user" "$sys" "$rss" "${cpu%\%}" >>"$RESULTS"
    else
        FAILED=1
        say "  FAILED: $t $phase (log: $log)"
        printf '%s\t%s\t%s\t%s\tFAIL\t\t\t\t\n' "$size" "$round" "$t" "$phase" >>"$RESULTS"
        return 1
    fi
}

# Restore targets. Creating a file on ext4 searches the inode bitmaps and
# skips inodes freed in the last minutes, reading each one's deletion
# time: restoring right after a large tree was deleted (the previous
# tool's restore, a regenerated tree) cost a third of the restore's CPU in
# `perf` here, and whichever tool came after a deletion paid it. So, as
# root with mkfs.ext4, every restore goes into an ext4 file system made
# for it on a loop device, made like the file system of a real disk:
# inode tables initialised at creation (no background zeroing during the
# step) and a 1 GiB journal, the default above 128 GiB (a small image's
# default of 32 MiB throttled the restore of 200 000 files to one core).
# The image is that size too, sparse (about 1.1 GiB of it is written): in
# an image of twice the tree plus 2 GiB the journal took a third of the
# space, and our restore of 200 000 files waited in the allocator, 7.2 s
# at 120 % CPU against 5.5 s at 155 % in 16 or 128 GiB (restic's 12.8 s
# either way). Otherwise into a directory of WORK_DIR, and the report
# says so.
if [ "$(id -u)" = 0 ] && command -v mkfs.ext4 >/dev/null && command -v losetup >/dev/null; then
    FRESH_FS=1
    TARGET_NOTE="each restore into a new ext4 file system (loop device)"
else
    FRESH_FS=0
    TARGET_NOTE="restores into directories of $WORK_DIR (not root or no mkfs.ext4: a tool restoring after a large deletion may pay for it)"
fi
MOUNTED=()
unmount_all() {
    local m
    for m in "${MOUNTED[@]}"; do umount "$m" 2>/dev/null || true; done
}
trap unmount_all EXIT

restore_target() { # restore_target TOOL: an empty $WORK_DIR/restore/TOOL/tree
    local t=$1 mnt="$WORK_DIR/restore/$1" img="$WORK_DIR/restore/$1.img" bytes inodes
    release_target "$t"
    mkdir -p "$mnt"
    if [ "$FRESH_FS" = 1 ]; then
        bytes=$(du -sb --apparent-size "$SRC" | cut -f1)
        inodes=$(find "$SRC" | wc -l)
        truncate -s $((bytes * 2 + (128 << 30))) "$img"
        mkfs.ext4 -q -F -N $((inodes * 2 + 10000)) -J size=1024 \
            -E lazy_itable_init=0,lazy_journal_init=0 "$img" ||
            die "mkfs.ext4 of $img failed"
        mount -o loop "$img" "$mnt" || die "mounting $img on $mnt failed"
        MOUNTED+=("$mnt")
    fi
    mkdir -p "$mnt/tree"
}

release_target() { # release_target TOOL: removes what restore_target made
    local mnt="$WORK_DIR/restore/$1"
    if mountpoint -q "$mnt" 2>/dev/null; then umount "$mnt" || die "cannot unmount $mnt"; fi
    rm -rf "${mnt:?}" "$mnt.img"
}

record() { # record TREE ROUND TOOL KEY VALUE
    printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$WORK_DIR/facts.tsv"
}

# Where a restore put the tree root: the directory holding README.bench.
restored_root() {
    local f
    f=$(find "$1" -maxdepth 8 -name README.bench -print -quit)
    [ -n "$f" ] && dirname "$f"
}

# Metadata fingerprint: type, mode, size, mtime, symlink target (not the
# top directory itself). A directory's size is how its file system laid
# it out, not something a backup restores: left out.
fingerprint() {
    (cd "$1" && find . -mindepth 1 \( -type d -printf '%p %y %m - %T@ %l\n' \) \
        -o -printf '%p %y %m %s %T@ %l\n' | LC_ALL=C sort)
}

verify_restore() { # verify_restore TREE ROUND TOOL DEST
    local size=$1 round=$2 t=$3 dest=$4 root
    if ! root=$(restored_root "$dest"); then
        say "  FAILED: $t restore: no README.bench under $dest"
        record "$size" "$round" "$t" diff "no tree found"
        FAILED=1
        return
    fi
    if diff -r --no-dereference "$SRC" "$root" >"$LOGS/$size-$round-$t-diff.log" 2>&1; then
        record "$size" "$round" "$t" diff "identical"
    else
        record "$size" "$round" "$t" diff "DIFFERS ($(wc -l <"$LOGS/$size-$round-$t-diff.log") lines in $LOGS/$size-$round-$t-diff.log)"
        say "  FAILED: $t restore differs from the source (diff -r), see $LOGS/$size-$round-$t-diff.log"
        head -n 10 "$LOGS/$size-$round-$t-diff.log" >&2
        FAILED=1
    fi
    if diff <(fingerprint "$SRC") <(fingerprint "$root") >"$LOGS/$size-$round-$t-meta.log"; then
        record "$size" "$round" "$t" meta "identical"
    else
        record "$size" "$round" "$t" meta "differs ($(grep -c '^<' "$LOGS/$size-$round-$t-meta.log") entries, see $LOGS/$size-$round-$t-meta.log)"
    fi
}

# zstd_cost TREE: user CPU seconds of zstd at our default level (2) on one
# thread over the tree's bytes, and of decompressing that again: the part
# of a backup and a restore no tool can avoid (the tar that feeds it is
# not timed).
zstd_cost() {
    local size=$1
    local tf="$LOGS/time-$size-zstd"
    tar -cf - -C "$SRC" . | /usr/bin/time -f '%U %S' -o "$tf.c" zstd -2 -T1 -q -c >"$WORK_DIR/tree.zst"
    /usr/bin/time -f '%U %S' -o "$tf.d" zstd -d -T1 -q -c "$WORK_DIR/tree.zst" >/dev/null
    local u s
    read -r u s <"$tf.c"
    record "$size" 0 zstd compress_cpu "$(python3 -c "print($u + $s)")"
    read -r u s <"$tf.d"
    record "$size" 0 zstd decompress_cpu "$(python3 -c "print($u + $s)")"
    rm -f "$WORK_DIR/tree.zst"
}

# --- the run ----------------------------------------------------------------

: >"$RESULTS"
: >"$WORK_DIR/facts.tsv"
mkdir -p "$WORK_DIR/data"
GEN_HASH=$(md5sum "$SCRIPT_DIR/gen_tree.py" | cut -c1-12)
TOOLS=(ours "${PEERS[@]}")

for size in "${TREES[@]}"; do
    if [[ "$size" == *k ]]; then
        SRC="$WORK_DIR/data/tree-${size}files"
        gen_args=(--small-files "$((${size%k} * 1000))")
        what="tree of ${size%k} thousand small files"
    else
        SRC="$WORK_DIR/data/tree-${size}g"
        gen_args=(--size-gb "$size")
        what="$size GiB tree"
    fi
    SRC_PARENT=$(dirname "$SRC")
    BASE=$(basename "$SRC")
    stamp="$SRC.done"
    want="tree=$size seed=$SEED gen=$GEN_HASH"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        say "generating a $what in $SRC"
        rm -rf "$SRC" "$stamp"
        python3 "$SCRIPT_DIR/gen_tree.py" --out "$SRC" "${gen_args[@]}" --seed "$SEED" >"$LOGS/gen-$size.log"
        echo "$want" >"$stamp"
    fi
    record "$size" 0 tree bytes "$(du -sb --apparent-size "$SRC" | cut -f1)"
    record "$size" 0 tree files "$(find "$SRC" -type f | wc -l)"
    record "$size" 0 tree dirs "$(find "$SRC" -type d | wc -l)"
    say "$what: zstd -2 alone over its bytes"
    zstd_cost "$size"

    for round in $(seq 1 "$ROUNDS"); do
        say "$what, round $round/$ROUNDS"
        record "$size" "$round" machine load "$(cut -d' ' -f1-3 /proc/loadavg)"
        rm -rf "$WORK_DIR/repos" "$WORK_DIR/restore" "$WORK_DIR/cache"
        mkdir -p "$WORK_DIR/repos" "$WORK_DIR/restore"
        for t in "${TOOLS[@]}"; do
            tool_cmd "$t"
            step_args "$t" init
            "${CMD[@]}" "${STEP[@]}" >"$LOGS/$size-$round-$t-init.log" 2>&1 ||
                die "$t init failed, see $LOGS/$size-$round-$t-init.log"
        done
        # Rotate which tool goes first so none always gets the quieter
        # moment.
        order=()
        for i in "${!TOOLS[@]}"; do order+=("${TOOLS[$(((i + round - 1) % ${#TOOLS[@]}))]}"); done
        for phase in backup rebackup restore; do
            for t in "${order[@]}"; do
                dest="$WORK_DIR/restore/$t/tree"
                [ "$phase" != restore ] || restore_target "$t"
                tool_cmd "$t"
                step_args "$t" "$phase" "$dest"
                timed "$size" "$round" "$t" "$phase" "${CMD[@]}" "${STEP[@]}" || true
            done
        done
        for t in "${TOOLS[@]}"; do
            record "$size" "$round" "$t" repo_bytes "$(du -sb "$WORK_DIR/repos/$t" | cut -f1)"
            verify_restore "$size" "$round" "$t" "$WORK_DIR/restore/$t/tree"
            release_target "$t"
            record "$size" "$round" "$t" cache_bytes "$(du -sb "$WORK_DIR/cache/$t" 2>/dev/null | cut -f1 || echo 0)"
        done
    done
    if [ "$KEEP_REPOS" != 1 ]; then rm -rf "$WORK_DIR/repos" "$WORK_DIR/cache"; fi
    if [ "$KEEP_DATA" != 1 ]; then rm -rf "$SRC" "$stamp"; fi
done

# --- the report -------------------------------------------------------------

python3 - "$RESULTS" "$WORK_DIR/facts.tsv" "$OUR_VERSION" "$CACHE_NOTE; $TARGET_NOTE" "$ROUNDS" "$(nproc)" "${PEERS[*]}" "${VERSIONS[@]}" <<'PY' | tee "$WORK_DIR/report.txt"
import statistics
import sys

results_path, facts_path, our_version, cache_note, rounds, cores, peers = sys.argv[1:8]
versions = sys.argv[8:]
peers = peers.split()
cores = int(cores)
rows = [l.rstrip("\n").split("\t") for l in open(results_path) if l.strip()]
facts = [l.rstrip("\n").split("\t") for l in open(facts_path) if l.strip()]
MB = 1024 * 1024
GIB = 1024 * MB
PHASES = ("backup", "rebackup", "restore")
# Targets against restic (issue 34): byte trees and file-count trees.
TARGETS_BYTES = {"backup": 0.4, "rebackup": 0.25, "restore": 0.4, "repo": 1.0}
TARGETS_FILES = {"backup": 0.5, "restore": 0.5}

def fact(size, rnd, tool, key):
    vals = [f[4] for f in facts if f[0] == size and f[1] == str(rnd) and f[2] == tool and f[3] == key]
    return vals[-1] if vals else None

def meas(size, rnd, tool, phase):
    for r in rows:
        if r[0] == size and r[1] == str(rnd) and r[2] == tool and r[3] == phase and r[4] != "FAIL":
            return {"wall": float(r[4]), "user": float(r[5]), "sys": float(r[6]),
                    "rss": int(r[7]) * 1024, "cpu": r[8]}
    return None

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None

def fmt(x, spec=".2f"):
    return "n/a" if x is None else format(x, spec)

sizes = list(dict.fromkeys(r[0] for r in rows))
print()
print("backup (ours) vs " + " and ".join(peers) + ": ratios ours/peer (lower is better for us)")
print(f"  ours:   backup @ {our_version}, default settings")
for v in versions:
    print(f"  {v}, default settings")
print(f"  machine: {cores} cores; {cache_note}; {rounds} round(s), medians of per-round ratios")
all_ok = True
for size in sizes:
    rnds = sorted({int(r[1]) for r in rows if r[0] == size and r[1] != "0"})
    tb, tf, td = fact(size, 0, "tree", "bytes"), fact(size, 0, "tree", "files"), fact(size, 0, "tree", "dirs")
    gib = int(tb) / GIB
    by_files = size.endswith("k")
    targets = TARGETS_FILES if by_files else TARGETS_BYTES
    label = f"{size[:-1]} thousand small files" if by_files else f"{size} GiB"
    print()
    print(f"== input {label}: {int(tb) / MB:.0f} MiB, {tf} files, {td} directories ==")
    print(f"  {'measure':<28}" + "".join(f"{'ours/' + p:>14}" for p in peers) + f"  {'target (restic)':<16}{'result':<6}")

    def ratio_line(label, per_peer, target):
        global all_ok
        values = {p: med(v) for p, v in per_peer.items()}
        r = values.get("restic")
        if target is None or "restic" not in peers:
            res = "-"
        elif r is None:
            res = "FAIL"
        else:
            res = "PASS" if r <= target else "FAIL"
        if res == "FAIL":
            all_ok = False
        t = "-" if target is None else f"<= {target}"
        print(f"  {label:<28}" + "".join(f"{fmt(values[p]):>14}" for p in peers) + f"  {t:<16}{res:<6}")

    def time_ratios(phase, peer):
        out = []
        for n in rnds:
            a, b = meas(size, n, "ours", phase), meas(size, n, peer, phase)
            out.append(a["wall"] / b["wall"] if a and b and b["wall"] > 0 else None)
        return out

    def peak(tool, n):
        ms = [meas(size, n, tool, p) for p in PHASES]
        ms = [m["rss"] for m in ms if m]
        return max(ms) if ms else None

    ratio_line("initial backup, wall time", {p: time_ratios("backup", p) for p in peers}, targets.get("backup"))
    ratio_line("unchanged re-backup, wall", {p: time_ratios("rebackup", p) for p in peers}, targets.get("rebackup"))
    ratio_line("full restore, wall time", {p: time_ratios("restore", p) for p in peers}, targets.get("restore"))
    repo = {}
    for p in peers:
        repo[p] = []
        for n in rnds:
            a, b = fact(size, n, "ours", "repo_bytes"), fact(size, n, p, "repo_bytes")
            repo[p].append(int(a) / int(b) if a and b else None)
    ratio_line("repository size", repo, targets.get("repo"))
    ratio_line("peak RSS", {p: [peak("ours", n) / peak(p, n) if peak("ours", n) and peak(p, n) else None
                                for n in rnds] for p in peers}, None)
    our_peak = max([p for p in (peak("ours", n) for n in rnds) if p] or [0])
    ok = 0 < our_peak < 300 * 1000 * 1000
    all_ok &= ok
    print(f"  {'our peak RSS (absolute)':<28}{our_peak / 1e6:>9.0f} MB  {'< 300 MB':<10}{'PASS' if ok else 'FAIL':<6}")
    for tool in ["ours"] + peers:
        checks = [(fact(size, n, tool, "diff"), fact(size, n, tool, "meta")) for n in rnds]
        d = "; ".join(sorted({c[0] or "not run" for c in checks}))
        m = "; ".join(sorted({c[1] or "not run" for c in checks}))
        if d != "identical":
            all_ok = False
        print(f"  restore check {tool:<7} diff -r: {d}; mode/mtime/symlinks: {m}")

    # CPU seconds (user + system) per GiB of input, medians over rounds,
    # and what zstd alone costs on the same bytes.
    zc = float(fact(size, 0, "zstd", "compress_cpu") or 0)
    zd = float(fact(size, 0, "zstd", "decompress_cpu") or 0)
    print()
    print(f"  CPU seconds per GiB of input (user + system; zstd -2 alone: compress {zc / gib:.2f}, decompress {zd / gib:.2f})")
    print(f"  {'phase':<12}" + "".join(f"{t:>10}" for t in ["ours"] + peers) + f"{'zstd share':>12}{'ours / limit':>14}")
    for phase in PHASES:
        cpu = {}
        for t in ["ours"] + peers:
            cpu[t] = med([(m["user"] + m["sys"]) / gib for m in (meas(size, n, t, phase) for n in rnds) if m])
        z = {"backup": zc, "restore": zd}.get(phase)
        share = "-" if z is None or not cpu["ours"] else f"{z / gib / cpu['ours']:.0%}"
        # The physical limit on this machine: zstd alone on every core.
        wall = med([m["wall"] for m in (meas(size, n, "ours", phase) for n in rnds) if m])
        limit = "-" if z is None or not wall or z == 0 else f"{wall / (z / cores):.1f}x"
        print(f"  {phase:<12}" + "".join(f"{fmt(cpu[t]):>10}" for t in ["ours"] + peers) + f"{share:>12}{limit:>14}")

    print()
    print(f"  details for {label} (absolute; shared machine, compare within a row group only)")
    for n in rnds:
        print(f"  load average (1, 5, 15 min) before round {n}: {fact(size, n, 'machine', 'load')} on {cores} cores")
    print(f"  {'round':<6}{'tool':<8}{'phase':<10}{'wall s':>8}{'user s':>8}{'sys s':>8}{'CPU':>6}{'RSS MB':>8}{'MiB/s':>8}")
    for n in rnds:
        for phase in PHASES:
            for tool in ["ours"] + peers:
                m = meas(size, n, tool, phase)
                if m is None:
                    print(f"  {n:<6}{tool:<8}{phase:<10}{'FAILED':>8}")
                    continue
                rate = int(tb) / MB / m["wall"] if m["wall"] > 0 else float("inf")
                print(f"  {n:<6}{tool:<8}{phase:<10}{m['wall']:>8.2f}{m['user']:>8.2f}{m['sys']:>8.2f}"
                      f"{m['cpu'] + '%':>6}{m['rss'] / 1e6:>8.0f}{rate:>8.0f}")
        for tool in ["ours"] + peers:
            rb = fact(size, n, tool, "repo_bytes")
            cb = int(fact(size, n, tool, "cache_bytes") or 0)
            extra = f" (plus {cb / MB:.1f} MiB local cache outside the repository)" if cb else ""
            print(f"  {n:<6}{tool:<8}repo size {int(rb) / MB:>9.0f} MiB = {int(rb) / int(tb):.3f} of the input{extra}")
print()
print("overall: " + ("all targets met" if all_ok else "some targets missed or a step failed"))
PY

[ "$FAILED" -eq 0 ] || { say "some steps failed; logs in $LOGS"; exit 1; }
