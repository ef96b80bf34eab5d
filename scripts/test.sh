#!/usr/bin/env bash
# Installs what the tests need and runs every check and test of the project.
# Used by CI (.ci/run) and by developers; safe to run repeatedly.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# System packages the tests and builds need. S3 and GCS test servers run
# in-process; PostgreSQL tests start throwaway clusters from the postgresql
# package (initdb, postgres, pg_dump, psql, pgbench); util-linux provides
# setpriv, which runs them as the postgres user when the tests run as root;
# openssl makes the certificate of the PostgreSQL TLS test.
APT_PACKAGES=(build-essential pkg-config postgresql redis-server redis-tools util-linux openssl)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  step "Installing system packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

step "Formatting"
cargo fmt --all -- --check

step "Dependency rule: backup-core has no driver, object_store or clap"
if cargo tree -p backup-core -e normal --prefix none | grep -E '^(object_store|tokio-postgres|mongodb|redis|clap) '; then
  echo "backup-core must not depend on the crates listed above" >&2
  exit 1
fi

step "Clippy"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

step "Documentation"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features --locked

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

step "Building backupd (the daemon's end-to-end tests run it)"
# The e2e tests live in backup-cli and cannot name another package's
# binary; they run this same build, which is then a no-op.
cargo build -p backup-daemon --bin backupd --locked

step "Tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --all-features --locked --no-fail-fast --failure-output final
  cargo test --workspace --all-features --locked --doc
else
  cargo test --workspace --all-features --locked --no-fail-fast
fi

step "All checks passed"
