#!/bin/sh
# Build one test guest with nasm + ld and run it under QEMU, the reference machine.
#
#   guests/run-qemu.sh NAME [APPEND]        e.g. guests/run-qemu.sh cpubound iters=1000
#   printf 'hello\nabc\nquit\n' | guests/run-qemu.sh serial
#
# Serial output goes to stdout, stdin feeds COM1. The exit status is QEMU's: 1 = PASS (the guest
# wrote 0 to isa-debug-exit), 3 = FAIL, 124 = timeout. OUT (default /tmp/ailuro-guests) holds the ELF.
set -eu
name=${1:?usage: $0 NAME [APPEND]}
append=${2:-}
here=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-/tmp/ailuro-guests}
mkdir -p "$out"
nasm -f elf32 -I "$here/" -o "$out/$name.o" "$here/$name.asm"
ld -m elf_i386 -nostdlib -T "$here/link.ld" -o "$out/$name.elf" "$out/$name.o" 2>/dev/null ||
    ld -m elf_i386 -nostdlib -T "$here/link.ld" -o "$out/$name.elf" "$out/$name.o"
set +e
if [ -n "$append" ]; then
    timeout "${TIMEOUT:-30}" qemu-system-i386 ${QEMU_EXTRA:-} -m 128 -kernel "$out/$name.elf" -append "$append" \
        -display none -serial stdio -monitor none -no-reboot -device isa-debug-exit,iobase=0xf4,iosize=0x04
else
    timeout "${TIMEOUT:-30}" qemu-system-i386 ${QEMU_EXTRA:-} -m 128 -kernel "$out/$name.elf" \
        -display none -serial stdio -monitor none -no-reboot -device isa-debug-exit,iobase=0xf4,iosize=0x04
fi
status=$?
echo "[qemu exit status $status]" >&2
exit $status
