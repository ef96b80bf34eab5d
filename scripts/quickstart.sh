#!/usr/bin/env bash
# Builds `backup` and runs the main job on an embedded default: backs up a
# local directory (default: this project's source tree) into a new local
# repository, lists it, verifies it and restores it to compare.
#
#   ./scripts/quickstart.sh [DIRECTORY] [REPOSITORY]
set -euo pipefail
cd "$(dirname "$0")/.."
SRC="${1:-$PWD/crates}"
REPO="${2:-$PWD/target/quickstart-repo}"
cargo build --release -p backup-cli
BIN="$PWD/target/release/backup"
export BACKUP_REPOSITORY="$REPO"
PWFILE="$PWD/target/quickstart-password"
if [ ! -f "$PWFILE" ]; then
  head -c 24 /dev/urandom | base64 > "$PWFILE"
  chmod 600 "$PWFILE"
fi
export BACKUP_PASSWORD_FILE="$PWFILE"
[ -f "$REPO/config" ] || "$BIN" init
"$BIN" create "$SRC" --tag quickstart
"$BIN" list
"$BIN" verify --read-data
OUT="$(mktemp -d)"
"$BIN" restore latest --to "$OUT/restored"
diff -r --no-dereference "$SRC" "$OUT/restored" && echo "restored copy is identical to $SRC"
rm -rf "$OUT"
echo "repository: $REPO (password in $PWFILE)"
