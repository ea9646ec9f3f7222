#!/bin/bash
# The main job on a bundled default: build, record a guest, replay it, print the replay summary.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --quiet
EMU=target/release/ailuro-system-i386
GUEST=$(target/release/ailuro-guest-path clock)
WORK=$(mktemp -d /tmp/ailuro-demo.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

echo "== recording the bundled 'clock' guest (RDTSC, CMOS clock, RTC interrupts: non-deterministic)" >&2
set +e
"$EMU" -m 64 -kernel "$GUEST" -display none -no-reboot -record "$WORK/demo" > "$WORK/record.out"
status=$?
set -e
cat "$WORK/record.out"
echo "== guest exited with status $status (isa-debug-exit)" >&2

echo "== replaying from $WORK/demo-rr-snp + demo-rr-nondet.log (no kernel, no devices)," >&2
echo "   with the 'count' and 'console' analysis plugins and a plugin log" >&2
"$EMU" -replay "$WORK/demo" -panda count -panda "console:file=$WORK/console.txt" \
    -pandalog "$WORK/demo.plog" > "$WORK/replay.out"
if cmp -s "$WORK/record.out" "$WORK/replay.out"; then
    echo "== replay console is identical to the recorded console" >&2
else
    echo "== replay console DIFFERS from the recorded console" >&2
    diff "$WORK/record.out" "$WORK/replay.out" >&2 || true
    exit 1
fi
echo "== the console plugin's first lines (instruction count, text):" >&2
head -3 "$WORK/console.txt" >&2
echo "== plugin log summary:" >&2
target/release/ailuro-plog info "$WORK/demo.plog" >&2
target/release/rrpack "$WORK/demo" >&2
ls -l "$WORK"/demo* >&2
