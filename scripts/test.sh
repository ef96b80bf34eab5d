#!/usr/bin/env bash
# Installs what the tests need and runs every check and test of the project.
# Used by CI (.ci/run) and by developers; safe to run repeatedly.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step says how long the script has run so far (for the CI budget).
step() { printf '\n==> [%dm%02ds] %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*"; }

# System packages the tests and builds need. S3 and GCS test servers run
# in-process; PostgreSQL tests start throwaway clusters from the postgresql
# package (initdb, postgres, pg_dump, psql, pgbench); util-linux provides
# setpriv, which runs them as the postgres user when the tests run as root;
# openssl makes the certificate of the PostgreSQL TLS test; chromium loads
# the daemon's status page in the browser test; prometheus provides promtool,
# which checks dist/prometheus-alerts.yml; attr, acl and e2fsprogs give
# getfattr, getfacl, setfacl, chattr and lsattr, the file fidelity test's
# independent checkers; systemd gives systemd-analyze and adduser the
# backupd user for the Debian package test; libjemalloc-dev is the
# prebuilt jemalloc the test builds link (below).
APT_PACKAGES=(build-essential pkg-config postgresql redis-server redis-tools util-linux openssl chromium prometheus attr acl e2fsprogs systemd adduser libjemalloc-dev)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
# `backup mount` (its end-to-end test mounts through /dev/fuse) needs
# fusermount3 from fuse3, or fusermount from Debian's older fuse package
# (fuse3 replaces it; either serves, so an installed one is kept).
if ! dpkg -s fuse3 >/dev/null 2>&1 && ! dpkg -s fuse >/dev/null 2>&1; then
  missing+=(fuse3)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  step "Installing system packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

# A one-shot build: incremental compilation would only write caches that
# are never read (gigabytes of them).
export CARGO_INCREMENTAL=0
# Link Debian's jemalloc (the same 5.3 release) instead of building it from
# source in each of the clippy and test builds (two minutes of both cores
# each). Release builds (scripts/package.sh, cargo install) still build the
# bundled one with the settings of .cargo/config.toml.
JEMALLOC_OVERRIDE="/usr/lib/$(gcc -print-multiarch)/libjemalloc_pic.a"
export JEMALLOC_OVERRIDE

# cargo-deb, for the package test at the end, builds meanwhile at the
# lowest priority: it takes only the CPU the builds below leave idle.
mkdir -p target
nice -n 19 scripts/package.sh --tool-only >target/cargo-deb-install.log 2>&1 &
CARGO_DEB_PID=$!
trap 'kill "$CARGO_DEB_PID" ${DOC_PID:+"$DOC_PID"} 2>/dev/null || true' EXIT

step "Formatting"
cargo fmt --all -- --check
# The libFuzzer targets (fuzz/, a workspace of their own: docs/FUZZING.md).
# Their entry points are built and run by the tests (backup-fuzz); here,
# their sources are formatted (with the workspace's versions, as
# scripts/fuzz.sh builds them).
cp Cargo.lock fuzz/Cargo.lock
cargo fmt --manifest-path fuzz/Cargo.toml -- --check

step "Library crates package for crates.io (cargo package, issue 36)"
# The four library crates are published (docs/decisions/0053): their
# manifests and file lists must package, in dependency order, with the
# workspace's lock. --no-verify: the build is the test steps' job.
cargo package -p backup-core -p backup-storage -p backup-sources -p backup-ops \
  --no-verify --locked --allow-dirty --quiet

step "Dependency rules (docs/ARCHITECTURE.md, Crates)"
# deps PACKAGE: the crates PACKAGE compiles (normal dependencies, every
# feature, as the binaries are built).
deps() { cargo tree -p "$1" -e normal --all-features --prefix none --locked | sed 's/ .*//' | sort -u; }
forbid() { # PACKAGE REGEX WHY
  local found
  found=$(deps "$1" | grep -xE "$2" || true)
  if [ -n "$found" ]; then
    echo "$1 must not depend on: $(echo "$found" | tr '\n' ' ')($3)" >&2
    exit 1
  fi
}
forbid backup-core 'object_store|tokio-postgres|postgres-protocol|mongodb|redis|clap|backup-(storage|sources|ops|cli|daemon)' \
  "the core has no driver, storage client or command-line parser"
forbid backup-ops 'clap|axum|lettre|reqwest-middleware|prometheus-client|backup-(cli|daemon)' \
  "the operations layer has no front-end"
forbid backup-cli 'backup-daemon|axum|axum-core|lettre|prometheus-client|matchit' \
  "the backup binary compiles neither the daemon nor its HTTP server, mail or metrics stack"
forbid backup-daemon 'backup-cli|indicatif|rpassword' \
  "no front-end depends on the other"
forbid backup-cli 'aws-lc-rs|aws-lc-sys' "one TLS crypto provider (ring), chosen by the binary"
forbid backup-daemon 'aws-lc-rs|aws-lc-sys' "one TLS crypto provider (ring), chosen by the binary"

# Inside a crate: no two source files import each other, directly or in a
# loop (a module and its own submodules count as one).
python3 scripts/module_cycles.py

step "Build every target, linted by clippy (issue 36: examples included)"
# One build serves clippy and the tests: clippy-driver, as cargo's wrapper
# for the workspace's own crates, lints them (--all-targets, -D warnings,
# as `cargo clippy` would) while it compiles them, and the dependencies
# compile once, with plain rustc. A separate `cargo clippy` (a check build
# of every dependency) took a quarter of this script's time. The variables
# stay set for the test run below, so nothing is built twice; the example
# programs are built here as the programs users run, and their test
# (crates/backup-ops/tests/examples.rs) compiles each one's code into itself.
RUSTC_WORKSPACE_WRAPPER="$(rustc --print sysroot)/bin/clippy-driver"
CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
export RUSTC_WORKSPACE_WRAPPER CLIPPY_ARGS
cargo build --workspace --all-targets --all-features --locked

step "Python environment for the format reader test (.venv)"
if [ ! -x .venv/bin/python3 ]; then
  python3 -m venv .venv || {
    echo "could not create .venv: install Python 3.11+ with the venv module (Debian: python3-venv)" >&2
    exit 1
  }
fi
.venv/bin/python3 -m pip install --quiet --disable-pip-version-check -r tests/format_reader/requirements.txt
export BACKUP_TEST_PYTHON="$PWD/.venv/bin/python3"

step "MongoDB-protocol test server (SecantusDB in .venv)"
# No real mongod can be installed here; SecantusDB speaks the wire protocol
# and runs as a one-node replica set (see docs/ARCHITECTURE.md, MongoDB).
.venv/bin/python3 -m pip install --quiet --disable-pip-version-check 'SecantusDB==0.7.0b3'
export BACKUP_TEST_SECANTUSD="$PWD/.venv/bin/secantusd-py"

step "S3 test server with storage classes (moto in .venv)"
# The cold storage tests (tests/e2e/cold.rs) need storage classes and
# RestoreObject, which the in-process S3 server lacks. pip skips the
# install when the pinned version is already there.
.venv/bin/python3 -m pip install --quiet --disable-pip-version-check 'moto[server]==5.2.5'
export BACKUP_TEST_MOTO="$PWD/.venv/bin/moto_server"

step "Tests"
# One feature set for every build (--all-features, as the build and the docs
# above), so each crate is compiled once; the e2e tests run the `backup`
# and `backupd` binaries this build makes (backupd next to backup: the
# daemon package has integration tests, so the workspace build includes
# it). One test runs cargo: crates/backup-ops/tests/external_project.rs
# builds the README's program as a project of its own.
#
# The documentation builds meanwhile (a check build of the dependencies
# and rustdoc, about two minutes of one core, while many tests wait on the
# servers they start): started a few seconds after the test runner, whose
# own cargo call (nothing left to build) takes the build directory's lock
# first; cargo doc waits for that lock, then runs beside the tests. Its
# output goes to target/doc-build.log, shown when it fails.
doc_build() {
  sleep 5
  RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features --locked
}
doc_build >target/doc-build.log 2>&1 &
DOC_PID=$!
tests_ok=1
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --all-features --locked --no-fail-fast --failure-output final || tests_ok=0
else
  cargo test --workspace --all-features --locked --no-fail-fast || tests_ok=0
fi

step "Documentation (built during the tests; cargo doc, -D warnings)"
if ! wait "$DOC_PID"; then
  cat target/doc-build.log >&2
  echo "cargo doc failed" >&2
  exit 1
fi
[ "$tests_ok" = 1 ] || { echo "tests failed" >&2; exit 1; }
if cargo nextest --version >/dev/null 2>&1; then
  cargo test --workspace --all-features --locked --doc
fi

step "Debian package (cargo-deb; dpkg -i, checks, dpkg -P)"
# Packs the binaries the tests ran (scripts/package.sh --profile dev
# --no-build), installs the package into this machine and purges it.
wait "$CARGO_DEB_PID" || {
  cat target/cargo-deb-install.log >&2
  echo "installing cargo-deb failed" >&2
  exit 1
}
tests/package/deb.sh

step "All checks passed"
