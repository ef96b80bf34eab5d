#!/usr/bin/env bash
# Checks the public API of the published library crates (backup-core,
# backup-storage, backup-sources, backup-ops) for semver breaks against a
# baseline: the newest tag by default, or the git revision given.
#
#   scripts/semver.sh            # against the newest tag (git describe)
#   scripts/semver.sh v0.1.0     # against a tag, branch or commit
#
# Installs cargo-semver-checks from crates.io when missing. Not part of
# scripts/test.sh: it builds rustdoc JSON of every crate twice (baseline
# and current), several minutes on the CI machine. Run it before a
# release (docs/decisions/0053-library-crates-published.md).
set -euo pipefail
cd "$(dirname "$0")/.."

baseline="${1:-}"
if [ -z "$baseline" ]; then
  if ! baseline=$(git describe --tags --abbrev=0 2>/dev/null); then
    echo "semver.sh: no tag to compare with; give a revision: scripts/semver.sh REV" >&2
    exit 2
  fi
fi

if ! cargo semver-checks --version >/dev/null 2>&1; then
  cargo install --locked cargo-semver-checks
fi

echo "==> public API of the library crates against $baseline"
cargo semver-checks check-release --baseline-rev "$baseline" \
  -p backup-core -p backup-storage -p backup-sources -p backup-ops
