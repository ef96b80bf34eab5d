#!/usr/bin/env bash
# The Debian package, installed as an operator installs it: build it from
# the binaries of the test build (scripts/package.sh --profile dev
# --no-build), `dpkg -i` it into this machine, check what it put there,
# then purge it and check it is gone. Needs root (or sudo) and a machine
# where no other package named `backup` is installed. Run by
# scripts/test.sh after the tests, which built the binaries.
set -euo pipefail
cd "$(dirname "$0")/../.."

SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
fail() { echo "package test: $*" >&2; exit 1; }

if dpkg-query -W -f '${Status}' backup 2>/dev/null | grep -q "ok installed"; then
  fail "a package named backup is installed on this machine already: remove it (dpkg -P backup) to run this test"
fi

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
deb="target/debian/backup_${version}-1_$(dpkg --print-architecture).deb"
rm -f "$deb"
scripts/package.sh --profile dev --no-build
[ -f "$deb" ] || fail "scripts/package.sh made no $deb"

installed=0
cleanup() {
  if [ "$installed" = 1 ]; then $SUDO dpkg -P backup >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT
$SUDO dpkg -i "$deb" >/dev/null
installed=1

# The binaries, on PATH, with the version of this checkout.
[ "$(/usr/bin/backup --version)" = "backup $version" ] || fail "backup --version says: $(/usr/bin/backup --version)"
[ "$(/usr/bin/backupd --version)" = "backupd $version" ] || fail "backupd --version says: $(/usr/bin/backupd --version)"

# Man pages: one per command, in roff, compressed as Debian wants them.
for page in man1/backup.1 man1/backup-create.1 man1/backup-restore.1 man1/backup-wal-receive.1 man8/backupd.8; do
  f="/usr/share/man/$page.gz"
  [ -f "$f" ] || fail "no man page $f"
  zcat "$f" | grep -q '^\.TH' || fail "$f is not a roff man page"
done
zcat /usr/share/man/man1/backup-restore.1.gz | grep -q -- 'numeric\\-owner' || fail "backup-restore(1) does not describe --numeric-owner"

# Completions where bash, zsh and fish look for them.
grep -q 'complete -F _backup' /usr/share/bash-completion/completions/backup || fail "no bash completion for backup"
grep -q '#compdef backupd' /usr/share/zsh/vendor-completions/_backupd || fail "no zsh completion for backupd"
grep -q 'complete -c backup' /usr/share/fish/vendor_completions.d/backup.fish || fail "no fish completion for backup"

# The system user, and a configuration only root and its group can read.
getent passwd backupd >/dev/null || fail "postinst made no backupd user"
[ "$(stat -c '%U:%G %a' /etc/backupd/backupd.toml)" = "root:backupd 640" ] \
  || fail "/etc/backupd/backupd.toml is $(stat -c '%U:%G %a' /etc/backupd/backupd.toml), not root:backupd 640"
[ "$(stat -c '%U:%G %a' /etc/backupd)" = "root:backupd 750" ] || fail "/etc/backupd is $(stat -c '%U:%G %a' /etc/backupd)"
dpkg-query -W -f '${Conffiles}' backup | grep -q /etc/backupd/backupd.toml || fail "/etc/backupd/backupd.toml is not a conffile"

# The daemon, as its user, accepts the configuration the package installed.
$SUDO setpriv --reuid=backupd --regid=backupd --init-groups \
  /usr/bin/backupd --config /etc/backupd/backupd.toml --check-config >/dev/null \
  || fail "backupd --check-config as the backupd user refuses /etc/backupd/backupd.toml"

# The unit: systemd's own checker, and enabled for the next boot.
unit=/usr/lib/systemd/system/backupd.service
[ -f "$unit" ] || fail "no $unit"
out=$(systemd-analyze verify "$unit" 2>&1) || fail "systemd-analyze verify $unit: $out"
[ -L /etc/systemd/system/multi-user.target.wants/backupd.service ] || fail "backupd.service is not enabled"

# Purge: files, unit link and state go; the user stays (Debian policy).
$SUDO dpkg -P backup >/dev/null
installed=0
for f in /usr/bin/backup /usr/bin/backupd "$unit" /etc/backupd/backupd.toml \
  /etc/systemd/system/multi-user.target.wants/backupd.service; do
  [ ! -e "$f" ] || fail "$f is still there after dpkg -P backup"
done
echo "package test: $deb installs, checks and purges cleanly"
