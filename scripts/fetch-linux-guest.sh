#!/bin/bash
# Fetch the Linux guest (Debian bookworm's stock kernel + busybox-static) and build its initramfs.
#
#   scripts/fetch-linux-guest.sh [ARCH]       ARCH = i386 (default) | i386-pae | amd64 | armhf
#
# Downloads, with apt-get from Debian's archive, exactly the .deb versions listed in
# guests/linux/SHA256SUMS (kernel ABI 6.1.0-50):
#   i386      linux-image-6.1.0-50-686:i386      busybox-static:i386
#   i386-pae  linux-image-6.1.0-50-686-pae:i386  busybox-static:i386  (same initramfs as i386)
#   amd64     linux-image-6.1.0-50-amd64:amd64   busybox-static:amd64  busybox-static:i386 (busybox32)
#   armhf     linux-image-6.1.0-50-armmp:armhf   busybox-static:armhf
# checks their sha256 against that file (and fails if the archive serves anything else), extracts
# them with dpkg-deb and runs scripts/build-initramfs.sh ARCH (for i386-pae: the i386 build, on
# this directory's busybox, so the archive is byte-identical to i386's). Everything goes to
#   ${AILURO_CACHE:-$HOME/.cache/ailuro}/linux/ARCH/
#     vmlinuz  config  busybox  initramfs.cpio.gz  debs/*.deb
# and, for amd64, busybox32: i386's static busybox (the same .deb as the i386 guest's), which the
# initramfs carries as /bin/busybox32 so that the workload runs a 32-bit (compat) process under
# the 64-bit kernel. The paths are printed on stdout as NAME=PATH lines. Idempotent: cached .deb files whose
# checksums match are not downloaded again, and extraction and the initramfs build are skipped when
# their inputs are unchanged.
#
# Needs root only when something must be downloaded and the apt indexes lack the foreign
# architecture (dpkg --add-architecture ARCH, apt-get update). apt-get update often fails for the
# security indexes of foreign architectures ("File has unexpected size ... Mirror sync in
# progress?"); that is tolerated: only the presence of the pinned versions matters.
set -euo pipefail

die() { echo "fetch-linux-guest: error: $*" >&2; exit 1; }
log() { echo "fetch-linux-guest: $*" >&2; }

# $guest names the variant (and its cache directory); $arch is the Debian architecture.
guest=${1:-i386}
case "$guest" in
    i386) arch=i386 kpkg=linux-image-6.1.0-50-686 ;;
    i386-pae) arch=i386 kpkg=linux-image-6.1.0-50-686-pae ;;
    amd64) arch=amd64 kpkg=linux-image-6.1.0-50-amd64 ;;
    armhf) arch=armhf kpkg=linux-image-6.1.0-50-armmp ;;
    *) die "usage: $0 [ARCH]   (ARCH = i386, i386-pae, amd64 or armhf; got '$guest')" ;;
esac
[ $# -le 1 ] || die "usage: $0 [ARCH]"

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
sums=$repo/guests/linux/SHA256SUMS
cache=${AILURO_CACHE:-$HOME/.cache/ailuro}/linux/$guest
debs=$cache/debs
[ -f "$sums" ] || die "$sums is missing"
for tool in dpkg dpkg-deb apt-get apt-cache sha256sum; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found: this script needs a Debian system"
done
mkdir -p "$debs"

# pinned file name and sha256 of package $1 for architecture $2 (default $arch), from SHA256SUMS
pinned() {
    local line a=${2:-$arch}
    line=$(grep -E "^[0-9a-f]{64}  $1_[^_]+_${a}\.deb\$" "$sums" || true)
    [ -n "$line" ] || die "$sums has no entry for $1 ($a)"
    [ "$(wc -l <<< "$line")" = 1 ] || die "$sums has several entries for $1 ($a)"
    echo "$line"
}

# whether dpkg knows architecture $1 (default $arch)
have_arch() {
    local foreign a=${1:-$arch}
    foreign=$(dpkg --print-foreign-architectures)
    [ "$(dpkg --print-architecture)" = "$a" ] || grep -qx "$a" <<< "$foreign"
}

# apt-get update, at most once per architecture added ($2, default $arch)
updated=
apt_update() {
    local a=${2:-$arch}
    case " $updated " in *" $a "*) return 0 ;; esac
    updated="$updated $a"
    [ "$(id -u)" = 0 ] || die "the apt indexes lack $1; run as root (needs dpkg --add-architecture $a and apt-get update)"
    if ! have_arch "$a"; then
        log "dpkg --add-architecture $a"
        dpkg --add-architecture "$a"
    elif [ "$updated" != " $a" ]; then
        return 0 # the indexes were updated for another architecture already, and dpkg knew this one
    fi
    log "apt-get update (errors for some indexes are tolerated)"
    if ! apt-get update -q >"$cache/apt-update.log" 2>&1; then
        log "warning: apt-get update reported errors (often: security indexes of foreign architectures);"
        log "         continuing with what was fetched; details in $cache/apt-update.log"
        grep -E '^(E|W):' "$cache/apt-update.log" | head -5 | sed 's/^/fetch-linux-guest:   /' >&2 || true
    fi
}

apt_opts=()
[ "$(id -u)" != 0 ] || apt_opts=(-o APT::Sandbox::User=root)

# fetch $1 (package name) for architecture $2 (default $arch) at the pinned version into $debs;
# sets $fetched to the .deb path (not run in a subshell, so that apt-get update runs at most once).
# A matching copy in another guest's cache (e.g. i386's busybox-static for amd64) is reused.
fetch() {
    local pkg=$1 arch=${2:-$arch} line sha file ver deb got tmp other
    line=$(pinned "$pkg") || exit 1
    sha=${line%% *}
    file=${line##* }
    ver=${file#"${pkg}_"}
    ver=${ver%"_${arch}.deb"}
    ver=${ver//%3a/:}
    deb=$debs/$file
    if [ -f "$deb" ] && [ "$(sha256sum < "$deb" | cut -d' ' -f1)" = "$sha" ]; then
        log "cached: $file (sha256 ok)"
        fetched=$deb
        return
    fi
    for other in "$cache"/../*/debs/"$file"; do
        if [ -f "$other" ] && [ "$(sha256sum < "$other" | cut -d' ' -f1)" = "$sha" ]; then
            cp "$other" "$deb.tmp"
            mv "$deb.tmp" "$deb"
            log "copied: $file from $(cd "$(dirname "$other")/.." && pwd) (sha256 ok)"
            fetched=$deb
            return
        fi
    done
    if ! have_arch || ! apt-cache show "$pkg:$arch=$ver" >/dev/null 2>&1; then
        apt_update "$pkg:$arch=$ver"
    fi
    if ! apt-cache show "$pkg:$arch=$ver" >/dev/null 2>&1; then
        local cand
        cand=$(apt-cache policy "$pkg:$arch" 2>/dev/null | awk '/Candidate:/ { print $2 }')
        die "Debian's archive (as indexed by apt) does not offer $pkg:$arch version $ver pinned in
  $sums (its candidate: ${cand:-none}). Check /etc/apt/sources.list* (bookworm main) and
  $cache/apt-update.log; if Debian replaced the package, update SHA256SUMS deliberately."
    fi
    tmp=$(mktemp -d "$debs/.dl.XXXXXX")
    log "downloading $pkg:$arch=$ver"
    if ! (cd "$tmp" && apt-get "${apt_opts[@]}" -q download "$pkg:$arch=$ver" >&2); then
        rm -rf "$tmp"
        die "apt-get download $pkg:$arch=$ver failed"
    fi
    [ -f "$tmp/$file" ] || { ls "$tmp" >&2; rm -rf "$tmp"; die "apt-get download did not produce $file"; }
    got=$(sha256sum < "$tmp/$file" | cut -d' ' -f1)
    if [ "$got" != "$sha" ]; then
        mv "$tmp/$file" "$debs/$file.rejected"
        rm -rf "$tmp"
        die "checksum mismatch for $file: the archive served sha256 $got, $sums pins $sha
  (kept as $debs/$file.rejected). Refusing to use it."
    fi
    mv "$tmp/$file" "$deb"
    rm -rf "$tmp"
    log "fetched: $file (sha256 ok)"
    fetched=$deb
}

fetch "$kpkg"
kdeb=$fetched
fetch busybox-static
bdeb=$fetched
# amd64: also i386's busybox, for a 32-bit process in the workload (compat system calls)
b32deb=
if [ "$guest" = amd64 ]; then
    fetch busybox-static i386
    b32deb=$fetched
fi

# extract (skipped when the same .debs were extracted before)
stamp=$cache/extract.stamp
want=$(sha256sum "$kdeb" "$bdeb" ${b32deb:+"$b32deb"} | cut -d' ' -f1 | tr '\n' ' ')
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -f "$cache/vmlinuz" ] && [ -f "$cache/busybox" ] &&
    { [ -z "$b32deb" ] || [ -f "$cache/busybox32" ]; }; then
    log "already extracted: $cache/vmlinuz, $cache/busybox${b32deb:+, $cache/busybox32}"
else
    x=$(mktemp -d "$cache/.x.XXXXXX")
    trap 'rm -rf "$x"' EXIT
    dpkg-deb -x "$kdeb" "$x/k"
    dpkg-deb -x "$bdeb" "$x/b"
    kver=${kpkg#linux-image-}
    [ -f "$x/k/boot/vmlinuz-$kver" ] || die "$kdeb has no boot/vmlinuz-$kver"
    [ -f "$x/b/bin/busybox" ] || die "$bdeb has no bin/busybox"
    cp "$x/k/boot/vmlinuz-$kver" "$cache/vmlinuz"
    cp "$x/k/boot/config-$kver" "$cache/config"
    cp "$x/b/bin/busybox" "$cache/busybox"
    chmod 755 "$cache/busybox"
    if [ -n "$b32deb" ]; then
        dpkg-deb -x "$b32deb" "$x/b32"
        [ -f "$x/b32/bin/busybox" ] || die "$b32deb has no bin/busybox"
        cp "$x/b32/bin/busybox" "$cache/busybox32"
        chmod 755 "$cache/busybox32"
    else
        rm -f "$cache/busybox32"
    fi
    rm -rf "$x"
    trap - EXIT
    echo "$want" > "$stamp"
    log "extracted kernel $kver and busybox into $cache"
fi

if [ "$guest" = "$arch" ]; then
    initramfs=$("$repo/scripts/build-initramfs.sh" "$arch")
else
    # build-initramfs.sh knows Debian architectures only and reads CACHE/linux/ARCH/busybox: point a
    # scratch cache's linux/$arch at this directory so that it builds here, from this busybox.
    shim=$(mktemp -d "${TMPDIR:-/tmp}/ailuro-fetch.XXXXXX")
    trap 'rm -rf "$shim"' EXIT
    mkdir "$shim/linux"
    ln -s "$cache" "$shim/linux/$arch"
    AILURO_CACHE=$shim "$repo/scripts/build-initramfs.sh" "$arch" >/dev/null
    rm -rf "$shim"
    trap - EXIT
    initramfs=$cache/initramfs.cpio.gz
fi

echo "kernel=$cache/vmlinuz"
echo "initramfs=$initramfs"
echo "busybox=$cache/busybox"
[ ! -f "$cache/busybox32" ] || echo "busybox32=$cache/busybox32"
echo "config=$cache/config"
