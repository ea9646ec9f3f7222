#!/bin/bash
# Check the deterministic part of a Linux guest console log against the expected output.
#
#   scripts/check-linux-output.sh CONSOLE_FILE [EXPECTED_FILE]
#
# Takes the lines strictly between "=== AILURO DETERMINISTIC BEGIN ===" and
# "=== AILURO DETERMINISTIC END ===" in CONSOLE_FILE (serial console output of guests/linux/init;
# CR line ends and kernel printk lines like "[   12.345678] ..." are dropped) and diffs them with
# EXPECTED_FILE (default guests/linux/expected-deterministic.txt). Exit 0 if identical, 1 with a
# diff if not, 2 if the section is missing or incomplete.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
console=${1:?usage: $0 CONSOLE_FILE [EXPECTED_FILE]}
expected=${2:-$repo/guests/linux/expected-deterministic.txt}
[ -r "$console" ] || { echo "check-linux-output: cannot read $console" >&2; exit 2; }
[ -r "$expected" ] || { echo "check-linux-output: cannot read $expected" >&2; exit 2; }

begin='=== AILURO DETERMINISTIC BEGIN ==='
end='=== AILURO DETERMINISTIC END ==='
clean=$(tr -d '\r' < "$console")
grep -qxF "$begin" <<< "$clean" || { echo "check-linux-output: no '$begin' line in $console" >&2; exit 2; }
grep -qxF "$end" <<< "$clean" || { echo "check-linux-output: no '$end' line in $console (guest stopped early?)" >&2; exit 2; }

actual=$(awk -v b="$begin" -v e="$end" '
    $0 == b { inside = 1; seen++; next }
    $0 == e { inside = 0; next }
    inside && $0 !~ /^\[ *[0-9]+\.[0-9]+\] / { print }
' <<< "$clean")

if diff -u --label expected --label "$console" "$expected" - <<< "$actual"; then
    echo "check-linux-output: deterministic section matches ($(wc -l < "$expected") lines)"
else
    echo "check-linux-output: deterministic section differs from $expected" >&2
    exit 1
fi
