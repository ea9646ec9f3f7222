#!/bin/bash
# Build the Linux guest's initramfs reproducibly: busybox-static + guests/linux/init.
#
#   scripts/build-initramfs.sh ARCH          ARCH = i386 | amd64 | armhf
#
# Input:  ${AILURO_CACHE:-$HOME/.cache/ailuro}/linux/ARCH/busybox (put there by
#         scripts/fetch-linux-guest.sh) and guests/linux/init; if the same directory has busybox32
#         (i386's static busybox, fetched for amd64), it goes in as /bin/busybox32: a 32-bit
#         (compat) process for the workload.
# Output: the same directory's initramfs.cpio.gz (newc cpio, gzip -n -9), path printed on stdout.
#
# The archive is written by scripts/newc-cpio.py: entries sorted, inodes numbered in order,
# mtimes = SOURCE_DATE_EPOCH (default 0), uid/gid 0, device nodes /dev/console, /dev/null and
# /dev/ttyS0 made in the archive (no root needed). It is built twice and the two results must be
# byte-identical. Skipped when the inputs are unchanged (stamp file beside the output);
# AILURO_FORCE=1 rebuilds.
set -euo pipefail

die() { echo "build-initramfs: error: $*" >&2; exit 1; }
log() { echo "build-initramfs: $*" >&2; }

arch=${1:-}
case "$arch" in
    i386 | amd64 | armhf) ;;
    *) die "usage: $0 ARCH   (ARCH = i386, amd64 or armhf)" ;;
esac

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${AILURO_CACHE:-$HOME/.cache/ailuro}/linux/$arch
init=$repo/guests/linux/init
writer=$repo/scripts/newc-cpio.py
busybox=$cache/busybox
busybox32=$cache/busybox32
out=$cache/initramfs.cpio.gz
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-0}

[ -f "$busybox" ] || die "$busybox is missing: run scripts/fetch-linux-guest.sh $arch first"
[ -f "$init" ] || die "$init is missing"
[ -f "$writer" ] || die "$writer is missing"

if ! command -v python3 >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || die "python3 is needed (apt-get install python3-minimal)"
    log "installing python3-minimal"
    apt-get update -qq || log "warning: apt-get update reported errors; trying to install anyway"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-minimal >/dev/null
fi
command -v gzip >/dev/null 2>&1 || die "gzip is missing"

# skip when nothing changed
stamp=$cache/initramfs.stamp
inputs=$( (sha256sum "$busybox" "$init" "$writer" "${BASH_SOURCE[0]}" | cut -d' ' -f1
    if [ -f "$busybox32" ]; then echo "busybox32=$(sha256sum < "$busybox32" | cut -d' ' -f1)"; fi
    echo "SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH"; gzip --version | head -1) | sha256sum | cut -d' ' -f1)
if [ "${AILURO_FORCE:-0}" != 1 ] && [ -f "$out" ] && [ -f "$stamp" ] &&
    [ "$(cat "$stamp")" = "$inputs $(sha256sum < "$out" | cut -d' ' -f1)" ]; then
    log "up to date: $out"
    echo "$out"
    exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/ailuro-initramfs.XXXXXX")
trap 'rm -rf "$work"' EXIT

cat > "$work/spec" <<EOF
# Ailuro Linux guest initramfs ($arch)
dir   /bin        755 0 0
dir   /dev        755 0 0
dir   /etc        755 0 0
dir   /proc       755 0 0
dir   /root       700 0 0
dir   /sbin       755 0 0
dir   /sys        755 0 0
dir   /tmp       1777 0 0
dir   /usr        755 0 0
dir   /usr/bin    755 0 0
dir   /usr/sbin   755 0 0
nod   /dev/console 600 0 0 c 5 1
nod   /dev/null    666 0 0 c 1 3
nod   /dev/ttyS0   600 0 0 c 4 64
file  /bin/busybox $busybox 755 0 0
slink /bin/sh      busybox 777 0 0
file  /init        $init 755 0 0
EOF
[ ! -f "$busybox32" ] || echo "file  /bin/busybox32 $busybox32 755 0 0" >> "$work/spec"

for n in 1 2; do
    python3 "$writer" --mtime "$SOURCE_DATE_EPOCH" "$work/spec" "$work/initramfs$n.cpio"
    gzip -n -9 -c "$work/initramfs$n.cpio" > "$work/initramfs$n.cpio.gz"
done
cmp -s "$work/initramfs1.cpio.gz" "$work/initramfs2.cpio.gz" ||
    die "two builds differ: the initramfs build is not reproducible"

# sanity check of the archive, if GNU cpio is installed (not required)
if command -v cpio >/dev/null 2>&1; then
    listing=$(cpio -it --quiet < "$work/initramfs1.cpio") || die "cpio cannot read the archive"
    for want in init bin/busybox dev/console; do
        grep -qx "$want" <<< "$listing" || die "archive lacks $want"
    done
fi

mkdir -p "$cache"
mv "$work/initramfs1.cpio.gz" "$out.tmp"
mv "$out.tmp" "$out"
echo "$inputs $(sha256sum < "$out" | cut -d' ' -f1)" > "$stamp"
log "built $out ($(wc -c < "$out") bytes, sha256 $(sha256sum < "$out" | cut -d' ' -f1), reproducible: 2 builds identical)"
echo "$out"
