#!/usr/bin/env bash
# Lines of capture and point-in-time code at a revision (issue 31's
# measure): the non-test Rust files under crates/ whose path names
# capture, pitr, wal, oplog, follow, drill, replay or retention, without
# the walk.rs files and examples. Prints the files, all their lines, and
# their lines without an inline `#[cfg(test)] mod tests` at the end.
#
#   scripts/capture_lines.sh [REV]    (default HEAD)
set -euo pipefail
rev=${1:-HEAD}
files=0 total=0 code=0
while read -r f; do
    t=$(git show "$rev:$f" | wc -l)
    c=$(git show "$rev:$f" | awk '/^#\[cfg\(test\)\]/ { getline next_line; if (next_line ~ /^mod tests/) exit; print; print next_line; next } { print }' | wc -l)
    files=$((files + 1)) total=$((total + t)) code=$((code + c))
done < <(git ls-tree -r --name-only "$rev" crates |
    grep -E '\.rs$' |
    grep -v -E '/tests/|_test\.rs|tests\.rs|examples' |
    grep -E 'capture|pitr|wal|oplog|follow|drill|replay|retention' |
    grep -v 'walk\.rs')
echo "$rev: $files files, $total lines, $code without inline test modules"
