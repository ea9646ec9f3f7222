#!/bin/bash
# Fetch the Linux guest (Debian bookworm's stock kernel + busybox-static) and build its initramfs.
#
#   scripts/fetch-linux-guest.sh [ARCH]       ARCH = i386 (default) | i386-pae | amd64 | armhf
#
# Downloads, with apt-get from Debian's archive, exactly the .deb versions listed in
# guests/linux/SHA256SUMS (kernel ABI 6.1.0-50):
#   i386      linux-image-6.1.0-50-686:i386      busybox-static:i386
#   i386-pae  linux-image-6.1.0-50-686-pae:i386  busybox-static:i386  (same initramfs as i386)
#   amd64     linux-image-6.1.0-50-amd64:amd64   busybox-static:amd64
#   armhf     linux-image-6.1.0-50-armmp:armhf   busybox-static:armhf
# checks their sha256 against that file (and fails if the archive serves anything else), extracts
# them with dpkg-deb and runs scripts/build-initramfs.sh ARCH (for i386-pae: the i386 build, on
# this directory's busybox, so the archive is byte-identical to i386's). Everything goes to
#   ${AILURO_CACHE:-$HOME/.cache/ailuro}/linux/ARCH/
#     vmlinuz  config  busybox  initramfs.cpio.gz  debs/*.deb
# and the paths are printed on stdout as NAME=PATH lines. Idempotent: cached .deb files whose
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

# pinned file name and sha256 of package $1 for $arch, from SHA256SUMS
pinned() {
    local line
    line=$(grep -E "^[0-9a-f]{64}  $1_[^_]+_${arch}\.deb\$" "$sums" || true)
    [ -n "$line" ] || die "$sums has no entry for $1 ($arch)"
    [ "$(wc -l <<< "$line")" = 1 ] || die "$sums has several entries for $1 ($arch)"
    echo "$line"
}

have_arch() {
    local foreign
    foreign=$(dpkg --print-foreign-architectures)
    [ "$(dpkg --print-architecture)" = "$arch" ] || grep -qx "$arch" <<< "$foreign"
}

updated=0
apt_update() {
    [ "$updated" = 0 ] || return 0
    updated=1
    [ "$(id -u)" = 0 ] || die "the apt indexes lack $1; run as root (needs dpkg --add-architecture $arch and apt-get update)"
    if ! have_arch; then
        log "dpkg --add-architecture $arch"
        dpkg --add-architecture "$arch"
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

# fetch $1 (package name) at the pinned version into $debs; sets $fetched to the .deb path
# (not run in a subshell, so that apt-get update runs at most once)
fetch() {
    local pkg=$1 line sha file ver deb got tmp
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

# extract (skipped when the same .debs were extracted before)
stamp=$cache/extract.stamp
want=$(sha256sum "$kdeb" "$bdeb" | cut -d' ' -f1 | tr '\n' ' ')
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -f "$cache/vmlinuz" ] && [ -f "$cache/busybox" ]; then
    log "already extracted: $cache/vmlinuz, $cache/busybox"
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
echo "config=$cache/config"
