#!/bin/bash
# Fetch the debug vmlinux (DWARF) of the Linux guest kernel, for deriving a kernel profile.
#
#   scripts/fetch-kernel-dbg.sh [--delete-deb] [ARCH]      ARCH = i386 (default) | amd64
#
# Downloads, with apt-get from Debian's archive, the -dbg package that belongs to exactly the
# kernel build used by scripts/fetch-linux-guest.sh (the version is read from that kernel's entry
# in guests/linux/SHA256SUMS, so the two can never drift apart):
#   i386   linux-image-6.1.0-50-686-dbg:i386      (about 760 MB)
#   amd64  linux-image-6.1.0-50-amd64-dbg:amd64   (about 900 MB)
# and extracts only usr/lib/debug/boot/vmlinux-KVER from it. Everything goes to
#   ${AILURO_CACHE:-$HOME/.cache/ailuro}/kdbg/ARCH/
#     vmlinux-KVER   debs/*.deb   apt-update.log
# and the vmlinux path is printed on stdout as `vmlinux=PATH`.
#
# Integrity: apt-get download checks the file against the (signed) archive index. If
# crates/ailuro-kprofile/profiles/SHA256SUMS has an entry for the file, the sha256 is checked
# against it as well and a mismatch is refused.
#
# Idempotent: a cached .deb is not downloaded again, and extraction is skipped when the vmlinux
# already comes from the same .deb (stamp file). --delete-deb removes the .deb after a successful
# extraction (saves ~0.8 GB; a later run with a different .deb will download it again).
#
# This is needed only to (re)generate a profile with `ailuro-kprofile derive`; no test runs it.
# Needs root only when the apt indexes lack the architecture (dpkg --add-architecture ARCH,
# apt-get update). apt-get update often fails for the security indexes of foreign architectures;
# that is tolerated: only the presence of the pinned version matters.
set -euo pipefail

die() { echo "fetch-kernel-dbg: error: $*" >&2; exit 1; }
log() { echo "fetch-kernel-dbg: $*" >&2; }
usage="usage: $0 [--delete-deb] [ARCH]   (ARCH = i386 or amd64)"

delete_deb=0
args=()
for a in "$@"; do
    case "$a" in
        --delete-deb) delete_deb=1 ;;
        -h | --help) echo "$usage"; exit 0 ;;
        -*) die "$usage" ;;
        *) args+=("$a") ;;
    esac
done
[ ${#args[@]} -le 1 ] || die "$usage"
arch=${args[0]:-i386}
case "$arch" in
    i386) flavour=686 ;;
    amd64) flavour=amd64 ;;
    *) die "$usage (got '$arch')" ;;
esac
kver=6.1.0-50-$flavour
imgpkg=linux-image-$kver
pkg=$imgpkg-dbg

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
guestsums=$repo/guests/linux/SHA256SUMS
dbgsums=$repo/crates/ailuro-kprofile/profiles/SHA256SUMS
cache=${AILURO_CACHE:-$HOME/.cache/ailuro}/kdbg/$arch
debs=$cache/debs
vmlinux=$cache/vmlinux-$kver
member=./usr/lib/debug/boot/vmlinux-$kver
for tool in dpkg dpkg-deb apt-get apt-cache sha256sum tar; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found: this script needs a Debian system"
done
[ -f "$guestsums" ] || die "$guestsums is missing"
mkdir -p "$debs"

# The version of the guest kernel package, e.g. 6.1.176-1.
line=$(grep -E "^[0-9a-f]{64}  ${imgpkg}_[^_]+_${arch}\.deb\$" "$guestsums" || true)
[ -n "$line" ] || die "$guestsums has no entry for $imgpkg ($arch)"
[ "$(wc -l <<< "$line")" = 1 ] || die "$guestsums has several entries for $imgpkg ($arch)"
ver=${line##* }
ver=${ver#"${imgpkg}_"}
ver=${ver%"_${arch}.deb"}
ver=${ver//%3a/:}
file=${pkg}_${ver//:/%3a}_${arch}.deb
deb=$debs/$file

# Pinned sha256 of the dbg .deb, if the crate's SHA256SUMS lists it.
pinned_sha=""
if [ -f "$dbgsums" ]; then
    pinned_sha=$(awk -v f="$file" '$2 == f { print $1 }' "$dbgsums")
fi

have_arch() {
    [ "$(dpkg --print-architecture)" = "$arch" ] || dpkg --print-foreign-architectures | grep -qx "$arch"
}

apt_update() {
    [ "$(id -u)" = 0 ] || die "the apt indexes lack $pkg:$arch=$ver; run as root (needs dpkg --add-architecture $arch and apt-get update)"
    if ! have_arch; then
        log "dpkg --add-architecture $arch"
        dpkg --add-architecture "$arch"
    fi
    log "apt-get update (errors for some indexes are tolerated)"
    if ! apt-get update -q >"$cache/apt-update.log" 2>&1; then
        log "warning: apt-get update reported errors (often: security indexes of foreign architectures);"
        log "         continuing with what was fetched; details in $cache/apt-update.log"
        grep -E '^(E|W):' "$cache/apt-update.log" | head -5 | sed 's/^/fetch-kernel-dbg:   /' >&2 || true
    fi
}

check_sha() { # $1 = file; fails when a pinned sha256 exists and differs
    [ -n "$pinned_sha" ] || return 0
    [ "$(sha256sum < "$1" | cut -d' ' -f1)" = "$pinned_sha" ]
}

# 1. the .deb
if [ -f "$deb" ] && check_sha "$deb"; then
    log "cached: $file"
elif [ -f "$vmlinux" ] && [ -f "$cache/extract.stamp" ] && [ "$(cat "$cache/extract.stamp")" = "$file" ]; then
    log "already extracted from $file (the .deb itself was deleted): $vmlinux"
    echo "vmlinux=$vmlinux"
    exit 0
else
    rm -f "$deb"
    if ! have_arch || ! apt-cache show "$pkg:$arch=$ver" >/dev/null 2>&1; then
        apt_update
    fi
    if ! apt-cache show "$pkg:$arch=$ver" >/dev/null 2>&1; then
        cand=$(apt-cache policy "$pkg:$arch" 2>/dev/null | awk '/Candidate:/ { print $2 }')
        die "Debian's archive (as indexed by apt) does not offer $pkg:$arch version $ver, the version
  of the guest kernel pinned in $guestsums (its candidate: ${cand:-none}).
  Check /etc/apt/sources.list* (bookworm main) and $cache/apt-update.log."
    fi
    apt_opts=()
    [ "$(id -u)" != 0 ] || apt_opts=(-o APT::Sandbox::User=root)
    tmp=$(mktemp -d "$debs/.dl.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    log "downloading $pkg:$arch=$ver (large: several hundred MB)"
    (cd "$tmp" && apt-get "${apt_opts[@]}" -q download "$pkg:$arch=$ver" >&2) \
        || die "apt-get download $pkg:$arch=$ver failed"
    [ -f "$tmp/$file" ] || { ls "$tmp" >&2; die "apt-get download did not produce $file"; }
    if ! check_sha "$tmp/$file"; then
        mv "$tmp/$file" "$debs/$file.rejected"
        die "checksum mismatch for $file: $dbgsums pins $pinned_sha (kept as $debs/$file.rejected)"
    fi
    mv "$tmp/$file" "$deb"
    rm -rf "$tmp"
    trap - EXIT
    log "fetched: $file (sha256 $(sha256sum < "$deb" | cut -d' ' -f1))"
fi

# 2. the vmlinux
stamp=$cache/extract.stamp
if [ -f "$vmlinux" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$file" ]; then
    log "already extracted: $vmlinux"
else
    x=$(mktemp -d "$cache/.x.XXXXXX")
    trap 'rm -rf "$x"' EXIT
    log "extracting $member"
    dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$x" "$member" \
        || die "could not extract $member from $deb"
    [ -f "$x/$member" ] || die "$deb has no $member"
    mv "$x/$member" "$vmlinux"
    rm -rf "$x"
    trap - EXIT
    echo "$file" > "$stamp"
    log "extracted $vmlinux"
fi
if [ "$delete_deb" = 1 ] && [ -f "$deb" ]; then
    rm -f "$deb"
    log "deleted $deb"
fi

echo "vmlinux=$vmlinux"
