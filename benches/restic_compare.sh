#!/usr/bin/env bash
# Side-by-side comparison of `backup` (this workspace) and restic on the same
# generated file tree, in one run: initial backup, unchanged re-backup, full
# restore (checked with diff -r), repository size and peak RSS.
#
# Usage: benches/restic_compare.sh [SIZE_GB...]
#   benches/restic_compare.sh            # 1 GiB (or $SIZE_GB)
#   benches/restic_compare.sh 1 4        # 1 GiB, then 4 GiB
#
# Environment:
#   SIZE_GB     input size(s) in GiB when no argument is given (default 1;
#               fractions such as 0.1 work for a quick check)
#   WORK_DIR    where trees, repositories, restores and logs go
#               (default /tmp/backup-bench)
#   ROUNDS      repetitions per size; ratios are medians (default 1)
#   SEED        generator seed (default 20240601)
#   BACKUP_BIN  use this `backup` binary instead of building one
#   OUR_LABEL   how to name our binary in the report (default: git commit)
#   KEEP_DATA   1 (default) keeps generated trees for the next run
#   KEEP_REPOS  1 keeps the last repositories (default 0: removed)
#
# Results are ratios ours/restic; absolute numbers are in the details.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$SCRIPT_DIR/lib.sh"
WORK_DIR=${WORK_DIR:-/tmp/backup-bench}
ROUNDS=${ROUNDS:-1}
SEED=${SEED:-20240601}
KEEP_DATA=${KEEP_DATA:-1}
KEEP_REPOS=${KEEP_REPOS:-0}
if [ "$#" -gt 0 ]; then SIZES=("$@"); else read -r -a SIZES <<<"${SIZE_GB:-1}"; fi

PASSWORD=bench-password-not-secret
RESULTS="$WORK_DIR/results.tsv"
LOGS="$WORK_DIR/logs"

for s in "${SIZES[@]}"; do
    [[ "$s" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "size '$s' is not a number of GiB"
done
positive_int ROUNDS "$ROUNDS"

# --- tools ------------------------------------------------------------------

mkdir -p "$WORK_DIR" "$LOGS"
need restic
need_gnu_time
diff --no-dereference /dev/null /dev/null 2>/dev/null || die "GNU diff with --no-dereference is needed"
backup_bin

RESTIC_VERSION=$(restic version)
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

# --- helpers ----------------------------------------------------------------

CACHE_NOTE=""
drop_caches() {
    if drop_page_cache; then
        CACHE_NOTE=${CACHE_NOTE:-"page cache dropped before every timed step"}
    else
        CACHE_NOTE=${CACHE_NOTE:-"page cache NOT dropped (needs root and a writable /proc/sys/vm/drop_caches): warm-cache numbers"}
    fi
}

# Command prefixes of each tool (through `env`, which execs the tool, so
# /usr/bin/time measures the tool itself and nothing leaks between them).
OURS=(env BACKUP_PASSWORD="$PASSWORD" BACKUP_REPOSITORY="$WORK_DIR/repos/ours" "$BACKUP_BIN")
THEIRS=(env RESTIC_PASSWORD="$PASSWORD" RESTIC_REPOSITORY="$WORK_DIR/repos/restic"
    RESTIC_CACHE_DIR="$WORK_DIR/restic-cache" restic)

FAILED=0
# timed SIZE ROUND TOOL PHASE CMD...: runs CMD in the source's parent
# directory under /usr/bin/time and appends one line to $RESULTS.
timed() {
    local size=$1 round=$2 tool=$3 phase=$4
    shift 4
    local tf="$LOGS/time-$size-$round-$tool-$phase" log="$LOGS/$size-$round-$tool-$phase.log"
    drop_caches
    say "  $tool: $phase"
    if (cd "$SRC_PARENT" && time_run '%e %U %S %M %P' "$tf" "$log" "$@"); then
        read -r wall user sys rss cpu <"$tf"
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
            "$size" "$round" "$tool" "$phase" "$wall" "$user" "$sys" "$rss" "${cpu%\%}" >>"$RESULTS"
    else
        FAILED=1
        say "  FAILED: $tool $phase (log: $log)"
        printf '%s\t%s\t%s\t%s\tFAIL\t\t\t\t\n' "$size" "$round" "$tool" "$phase" >>"$RESULTS"
        return 1
    fi
}

record() { # record SIZE ROUND TOOL KEY VALUE
    printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$WORK_DIR/facts.tsv"
}

# Where a restore put the tree root: the directory holding README.bench.
restored_root() {
    local f
    f=$(find "$1" -maxdepth 8 -name README.bench -print -quit)
    [ -n "$f" ] && dirname "$f"
}

# Metadata fingerprint: type, mode, size, mtime, symlink target (not the
# top directory itself).
fingerprint() {
    (cd "$1" && find . -mindepth 1 -printf '%p %y %m %s %T@ %l\n' | LC_ALL=C sort)
}

verify_restore() { # verify_restore SIZE ROUND TOOL DEST
    local size=$1 round=$2 tool=$3 dest=$4 root
    if ! root=$(restored_root "$dest"); then
        say "  FAILED: $tool restore: no README.bench under $dest"
        record "$size" "$round" "$tool" diff "no tree found"
        FAILED=1
        return
    fi
    if diff -r --no-dereference "$SRC" "$root" >"$LOGS/$size-$round-$tool-diff.log" 2>&1; then
        record "$size" "$round" "$tool" diff "identical"
    else
        record "$size" "$round" "$tool" diff "DIFFERS ($(wc -l <"$LOGS/$size-$round-$tool-diff.log") lines in $LOGS/$size-$round-$tool-diff.log)"
        say "  FAILED: $tool restore differs from the source (diff -r), see $LOGS/$size-$round-$tool-diff.log"
        head -n 10 "$LOGS/$size-$round-$tool-diff.log" >&2
        FAILED=1
    fi
    if diff <(fingerprint "$SRC") <(fingerprint "$root") >"$LOGS/$size-$round-$tool-meta.log"; then
        record "$size" "$round" "$tool" meta "identical"
    else
        record "$size" "$round" "$tool" meta "differs ($(grep -c '^<' "$LOGS/$size-$round-$tool-meta.log") entries, see $LOGS/$size-$round-$tool-meta.log)"
    fi
}

# --- the run ----------------------------------------------------------------

: >"$RESULTS"
: >"$WORK_DIR/facts.tsv"
mkdir -p "$WORK_DIR/data"
GEN_HASH=$(md5sum "$SCRIPT_DIR/gen_tree.py" | cut -c1-12)

for size in "${SIZES[@]}"; do
    SRC="$WORK_DIR/data/tree-${size}g"
    SRC_PARENT=$(dirname "$SRC")
    stamp="$SRC.done"
    want="size=$size seed=$SEED gen=$GEN_HASH"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        say "generating a $size GiB tree in $SRC"
        rm -rf "$SRC" "$stamp"
        python3 "$SCRIPT_DIR/gen_tree.py" --out "$SRC" --size-gb "$size" --seed "$SEED" >"$LOGS/gen-$size.log"
        echo "$want" >"$stamp"
    fi
    record "$size" 0 tree bytes "$(du -sb "$SRC" | cut -f1)"
    record "$size" 0 tree files "$(find "$SRC" -type f | wc -l)"
    record "$size" 0 tree dirs "$(find "$SRC" -type d | wc -l)"

    for round in $(seq 1 "$ROUNDS"); do
        say "size $size GiB, round $round/$ROUNDS"
        record "$size" "$round" machine load "$(cut -d' ' -f1-3 /proc/loadavg)"
        rm -rf "$WORK_DIR/repos" "$WORK_DIR/restore" "$WORK_DIR/restic-cache"
        mkdir -p "$WORK_DIR/repos" "$WORK_DIR/restore"
        "${OURS[@]}" init >"$LOGS/$size-$round-ours-init.log" 2>&1 || die "backup init failed, see $LOGS/$size-$round-ours-init.log"
        "${THEIRS[@]}" init >"$LOGS/$size-$round-restic-init.log" 2>&1 || die "restic init failed, see $LOGS/$size-$round-restic-init.log"
        # Alternate which tool goes first so neither always gets the
        # quieter moment.
        if [ $((round % 2)) -eq 1 ]; then order=(ours restic); else order=(restic ours); fi
        base=$(basename "$SRC")
        for phase in backup rebackup restore; do
            for tool in "${order[@]}"; do
                dest="$WORK_DIR/restore/$tool"
                case "$tool/$phase" in
                    ours/backup | ours/rebackup) timed "$size" "$round" ours "$phase" "${OURS[@]}" create "$SRC" || true ;;
                    restic/backup | restic/rebackup) timed "$size" "$round" restic "$phase" "${THEIRS[@]}" backup "$base" || true ;;
                    ours/restore) mkdir -p "$dest"; timed "$size" "$round" ours restore "${OURS[@]}" restore latest --to "$dest" || true ;;
                    restic/restore) mkdir -p "$dest"; timed "$size" "$round" restic restore "${THEIRS[@]}" restore latest --target "$dest" || true ;;
                esac
            done
        done
        for tool in ours restic; do
            record "$size" "$round" "$tool" repo_bytes "$(du -sb "$WORK_DIR/repos/$tool" | cut -f1)"
            verify_restore "$size" "$round" "$tool" "$WORK_DIR/restore/$tool"
            rm -rf "${WORK_DIR:?}/restore/$tool"
        done
        record "$size" "$round" restic cache_bytes "$(du -sb "$WORK_DIR/restic-cache" 2>/dev/null | cut -f1 || echo 0)"
    done
    if [ "$KEEP_REPOS" != 1 ]; then rm -rf "$WORK_DIR/repos" "$WORK_DIR/restic-cache"; fi
    if [ "$KEEP_DATA" != 1 ]; then rm -rf "$SRC" "$stamp"; fi
done

# --- the report -------------------------------------------------------------

python3 - "$RESULTS" "$WORK_DIR/facts.tsv" "$RESTIC_VERSION" "$OUR_VERSION" "$CACHE_NOTE" "$ROUNDS" "$(nproc)" <<'PY' | tee "$WORK_DIR/report.txt"
import statistics
import sys

results_path, facts_path, restic_version, our_version, cache_note, rounds, cores = sys.argv[1:8]
rows = [l.rstrip("\n").split("\t") for l in open(results_path) if l.strip()]
facts = [l.rstrip("\n").split("\t") for l in open(facts_path) if l.strip()]
MB = 1024 * 1024

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
print("backup (ours) vs restic, ratios ours/restic (lower is better for us)")
print(f"  ours:   backup @ {our_version}, default settings")
print(f"  restic: {restic_version}, default settings (compression auto)")
print(f"  machine: {cores} cores; {cache_note}; {rounds} round(s), medians of per-round ratios")
all_ok = True
for size in sizes:
    rnds = sorted({int(r[1]) for r in rows if r[0] == size})
    tb, tf, td = fact(size, 0, "tree", "bytes"), fact(size, 0, "tree", "files"), fact(size, 0, "tree", "dirs")
    print()
    print(f"== input {size} GiB: {int(tb) / MB:.0f} MiB, {tf} files, {td} directories ==")
    print(f"  {'measure':<28}{'ours/restic':>12}  {'target':<10}{'result':<6}")

    def ratio_line(label, values, target, better_if_below=True):
        global all_ok
        r = med(values)
        res = "-" if target is None or r is None else ("PASS" if r <= target else "FAIL")
        if r is None:
            res = "FAIL"
        if res == "FAIL":
            all_ok = False
        t = "-" if target is None else f"<= {target}"
        print(f"  {label:<28}{fmt(r):>12}  {t:<10}{res:<6}")

    def time_ratios(phase):
        out = []
        for n in rnds:
            a, b = meas(size, n, "ours", phase), meas(size, n, "restic", phase)
            out.append(a["wall"] / b["wall"] if a and b and b["wall"] > 0 else None)
        return out

    def peak(tool, n):
        ms = [meas(size, n, tool, p) for p in ("backup", "rebackup", "restore")]
        ms = [m["rss"] for m in ms if m]
        return max(ms) if ms else None

    ratio_line("initial backup, wall time", time_ratios("backup"), 0.6)
    ratio_line("unchanged re-backup, wall", time_ratios("rebackup"), 0.5)
    ratio_line("full restore, wall time", time_ratios("restore"), 0.6)
    repo = []
    for n in rnds:
        a, b = fact(size, n, "ours", "repo_bytes"), fact(size, n, "restic", "repo_bytes")
        repo.append(int(a) / int(b) if a and b else None)
    ratio_line("repository size", repo, 1.0)
    rss = []
    for n in rnds:
        a, b = peak("ours", n), peak("restic", n)
        rss.append(a / b if a and b else None)
    ratio_line("peak RSS", rss, None)
    our_peak = max([p for p in (peak("ours", n) for n in rnds) if p] or [0])
    ok = 0 < our_peak < 300 * 1000 * 1000
    all_ok &= ok
    print(f"  {'our peak RSS (absolute)':<28}{our_peak / 1e6:>9.0f} MB  {'< 300 MB':<10}{'PASS' if ok else 'FAIL':<6}")
    for tool in ("ours", "restic"):
        checks = [(fact(size, n, tool, "diff"), fact(size, n, tool, "meta")) for n in rnds]
        d = "; ".join(sorted({c[0] or "not run" for c in checks}))
        m = "; ".join(sorted({c[1] or "not run" for c in checks}))
        if d != "identical":
            all_ok = False
        print(f"  restore check {tool:<7} diff -r: {d}; mode/mtime/symlinks: {m}")

    print()
    print(f"  details for {size} GiB (absolute; shared machine, compare within a row pair only)")
    for n in rnds:
        print(f"  load average (1, 5, 15 min) before round {n}: {fact(size, n, 'machine', 'load')} on {cores} cores")
    print(f"  {'round':<6}{'tool':<8}{'phase':<10}{'wall s':>8}{'user s':>8}{'sys s':>8}{'CPU':>6}{'RSS MB':>8}{'MiB/s':>8}")
    for n in rnds:
        for phase in ("backup", "rebackup", "restore"):
            for tool in ("ours", "restic"):
                m = meas(size, n, tool, phase)
                if m is None:
                    print(f"  {n:<6}{tool:<8}{phase:<10}{'FAILED':>8}")
                    continue
                rate = int(tb) / MB / m["wall"] if m["wall"] > 0 else float("inf")
                print(f"  {n:<6}{tool:<8}{phase:<10}{m['wall']:>8.2f}{m['user']:>8.2f}{m['sys']:>8.2f}"
                      f"{m['cpu'] + '%':>6}{m['rss'] / 1e6:>8.0f}{rate:>8.0f}")
        for tool in ("ours", "restic"):
            rb = fact(size, n, tool, "repo_bytes")
            extra = ""
            if tool == "restic":
                cb = fact(size, n, "restic", "cache_bytes")
                extra = f" (plus {int(cb or 0) / MB:.1f} MiB local cache outside the repository)"
            print(f"  {n:<6}{tool:<8}repo size {int(rb) / MB:>9.0f} MiB = {int(rb) / int(tb):.3f} of the input{extra}")
print()
print("overall: " + ("all targets met" if all_ok else "some targets missed or a step failed"))
PY

[ "$FAILED" -eq 0 ] || { say "some steps failed; logs in $LOGS"; exit 1; }
