#!/usr/bin/env bash
# Builds the Debian package of `backup` and `backupd` with cargo-deb:
#   scripts/package.sh                 # optimised build -> target/debian/backup_*.deb
#   scripts/package.sh --profile dev --no-build
#                                      # package the binaries a test build made
#                                      # (what scripts/test.sh checks; not for release)
#   scripts/package.sh --tool-only     # only install cargo-deb (when missing)
# The package holds both binaries, man pages for every command and shell
# completions (made by the binaries themselves), the systemd unit, the
# backupd user (created by its postinst) and /etc/backupd/backupd.toml.
# The metadata is [package.metadata.deb] in crates/backup-cli/Cargo.toml.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
profile=release
build=1
tool_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="${2:?--profile needs a name}"; shift 2 ;;
    --no-build) build=0; shift ;;
    --tool-only) tool_only=1; shift ;;
    *) echo "usage: scripts/package.sh [--profile NAME] [--no-build] [--tool-only]" >&2; exit 2 ;;
  esac
done

if ! cargo deb --version 2>/dev/null | grep -qF "$CARGO_DEB_VERSION"; then
  # gzip instead of xz: no C liblzma to build; the package is larger, not
  # different.
  cargo install --locked --quiet cargo-deb --version "$CARGO_DEB_VERSION" \
    --no-default-features --features gzip
fi
[ "$tool_only" = 0 ] || exit 0
# A package ships the allocator settings of .cargo/config.toml, which a
# prebuilt jemalloc (JEMALLOC_OVERRIDE, set by scripts/test.sh) lacks; the
# packaging test's dev build may keep it.
[ "$profile" = dev ] || unset JEMALLOC_OVERRIDE
if [ "$build" = 1 ]; then
  cargo build --locked --profile "$profile" -p backup-cli -p backup-daemon
fi
case "$profile" in dev) dir=target/debug ;; *) dir="target/$profile" ;; esac
for bin in backup backupd; do
  [ -x "$dir/$bin" ] || { echo "no $dir/$bin: build it first (or drop --no-build)" >&2; exit 1; }
done

assets=target/package-assets
rm -rf "$assets"
mkdir -p "$assets/man1" "$assets/man8" "$assets/completions"
"$dir/backup" generate man "$assets/man1" 2>/dev/null
"$dir/backupd" --man "$assets/man8" 2>/dev/null
for bin in backup backupd; do
  gen() { if [ "$bin" = backup ]; then "$dir/backup" generate completions "$1"; else "$dir/backupd" --completions "$1"; fi; }
  gen bash >"$assets/completions/$bin.bash"
  gen zsh >"$assets/completions/_$bin"
  gen fish >"$assets/completions/$bin.fish"
done

# Release packages are stripped (the release profile keeps line tables,
# which made the package 71 MB) and compressed by the xz command (cargo-deb
# is built without liblzma); the dev profile is for the packaging test: quick gzip,
# and cargo-deb's warning that dev builds are not for release is expected.
extra=(--compress-type xz --compress-system --strip)
[ "$profile" = dev ] && extra=(--compress-type gz --fast --quiet)
cargo deb --locked -p backup-cli --no-build --profile "$profile" --output target/debian/ "${extra[@]}"
