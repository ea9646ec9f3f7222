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

# The same guest on the 64-bit PC (x86_64 CPU model: long mode available, same board and format).
EMU64=target/release/ailuro-system-x86_64
echo "== the same guest recorded and replayed on $EMU64" >&2
set +e
"$EMU64" -m 64 -kernel "$GUEST" -display none -no-reboot -record "$WORK/demo64" > "$WORK/record64.out"
set -e
"$EMU64" -replay "$WORK/demo64" > "$WORK/replay64.out"
if cmp -s "$WORK/record64.out" "$WORK/replay64.out"; then
    echo "== x86_64: replay console is identical to the recorded console" >&2
else
    echo "== x86_64: replay console DIFFERS from the recorded console" >&2
    exit 1
fi
# A recording names its architecture: the i386 binary refuses the x86_64 recording.
if "$EMU" -replay "$WORK/demo64" > /dev/null 2> "$WORK/refused.txt"; then
    echo "== the i386 binary replayed an x86_64 recording" >&2
    exit 1
fi
echo "== the i386 binary refuses it: $(head -1 "$WORK/refused.txt")" >&2
