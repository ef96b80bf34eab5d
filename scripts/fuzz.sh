#!/usr/bin/env bash
# Builds the coverage-guided fuzz targets of fuzz/ (libFuzzer, stable
# toolchain) and runs each for SECONDS_PER_TARGET (default 3600: a
# ten-target run takes about ten hours). See docs/FUZZING.md.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#   scripts/fuzz.sh --build-only
#
# Environment: FUZZ_TARGET_DIR (build and working directory, default
# target/fuzz), FUZZ_JOBS (parallel fuzzing processes per target,
# default 1), FUZZ_MAX_LEN (largest input, default 65536).
#
# New interesting inputs go to $FUZZ_TARGET_DIR/corpus/TARGET (the
# checked-in seeds in fuzz/corpus/TARGET are only read), crashes to
# $FUZZ_TARGET_DIR/artifacts/TARGET/. Exits non-zero when a target
# crashed, naming the input and the command that reproduces it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

build_only=false
if [ "${1:-}" = "--build-only" ]; then
  build_only=true
  shift
fi
SECONDS_PER_TARGET=${1:-3600}
[ $# -gt 0 ] && shift
WORK=${FUZZ_TARGET_DIR:-$ROOT/target/fuzz}
JOBS=${FUZZ_JOBS:-1}
MAX_LEN=${FUZZ_MAX_LEN:-65536}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)

# Every target of fuzz/Cargo.toml (the [[bin]] names), or those named.
if [ $# -gt 0 ]; then
  TARGETS=("$@")
else
  mapfile -t TARGETS < <(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^backup-fuzz-targets$')
fi

# libfuzzer-sys compiles libFuzzer (C++) with the system compiler.
if ! command -v c++ >/dev/null 2>&1; then
  echo "fuzz.sh: no C++ compiler: apt-get install -y build-essential" >&2
  exit 1
fi

# Coverage instrumentation with stable codegen options only (what
# cargo-fuzz passes, minus the sanitizer, which needs nightly). An
# explicit --target keeps the flags off build scripts and proc macros.
HOST=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares"
export CARGO_TARGET_DIR="$WORK/build"
export CARGO_INCREMENTAL=0
start=$SECONDS
# The workspace's lock file, so the crates under test are built with the
# versions the tests use; cargo adds libFuzzer's few crates to it.
cp Cargo.lock fuzz/Cargo.lock
cargo build --manifest-path fuzz/Cargo.toml --release --target "$HOST" --bins
echo "fuzz.sh: build took $((SECONDS - start)) s"
$build_only && exit 0
BIN="$CARGO_TARGET_DIR/$HOST/release"

crashed=()
summary=()
for t in "${TARGETS[@]}"; do
  [ -x "$BIN/$t" ] || { echo "fuzz.sh: no target $t" >&2; exit 2; }
  mkdir -p "$WORK/corpus/$t" "$WORK/artifacts/$t"
  log="$WORK/$t.log"
  echo "==> $t: ${SECONDS_PER_TARGET} s"
  before=$(find "$WORK/artifacts/$t" -type f | wc -l)
  status=0
  # -timeout: one input running longer is a hang (reported as a crash);
  # -rss_limit_mb: memory growth is one too.
  # Pack inputs stay small: zstd may expand data 32768-fold, and what a
  # small pack really holds must stay under the allocation limit.
  max_len=$MAX_LEN
  [ "$t" = pack ] && max_len=4096
  parallel=()
  [ "$JOBS" -gt 1 ] && parallel=(-jobs="$JOBS" -workers="$JOBS")
  # With -jobs, each worker logs to fuzz-N.log in the current directory:
  # run in a directory of the target's own.
  rm -rf "$WORK/jobs/$t" && mkdir -p "$WORK/jobs/$t"
  (cd "$WORK/jobs/$t" && "$BIN/$t" -max_total_time="$SECONDS_PER_TARGET" -timeout=10 \
    -rss_limit_mb=2048 -max_len="$max_len" "${parallel[@]}" -print_final_stats=1 \
    -artifact_prefix="$WORK/artifacts/$t/" \
    "$WORK/corpus/$t" "$ROOT/fuzz/corpus/$t") >"$log" 2>&1 || status=$?
  # (The per-worker logs exist only with FUZZ_JOBS > 1.)
  execs=$(shopt -s nullglob; cat "$log" "$WORK/jobs/$t"/fuzz-*.log \
    | grep -o 'stat::number_of_executed_units: *[0-9]*' | awk '{s += $2} END {print s + 0}')
  found=""
  if [ "$(find "$WORK/artifacts/$t" -type f | wc -l)" -gt "$before" ]; then
    found=$(ls -t "$WORK/artifacts/$t" | head -1)
    found="$WORK/artifacts/$t/$found"
  fi
  if [ "$status" -ne 0 ] || [ -n "$found" ]; then
    crashed+=("$t")
    tail -40 "$log" >&2
    summary+=("$(printf '%-12s %12s executions  CRASH (exit %s) %s' "$t" "$execs" "$status" "$found")")
  else
    summary+=("$(printf '%-12s %12s executions  ok' "$t" "$execs")")
  fi
done

echo
echo "fuzz.sh: ${SECONDS_PER_TARGET} s per target"
printf '  %s\n' "${summary[@]}"
if [ "${#crashed[@]}" -gt 0 ]; then
  echo "fuzz.sh: crashed: ${crashed[*]}; logs in $WORK/TARGET.log; reproduce with" >&2
  echo "  $BIN/TARGET $WORK/artifacts/TARGET/crash-..." >&2
  exit 1
fi
