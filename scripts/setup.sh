#!/bin/bash
# Installs what building and testing Ailuro needs on a fresh Debian machine (idempotent).
# Needs root (or sudo) only when something is missing.
set -euo pipefail

need=()
command -v nasm >/dev/null 2>&1 || need+=(nasm)
command -v ld >/dev/null 2>&1 || need+=(binutils)
command -v cc >/dev/null 2>&1 || need+=(gcc)
command -v xz >/dev/null 2>&1 || need+=(xz-utils)
if [ "${AILURO_WITH_QEMU:-0}" = 1 ]; then
    command -v qemu-system-i386 >/dev/null 2>&1 || need+=(qemu-system-x86)
fi

if [ ${#need[@]} -gt 0 ]; then
    echo "setup: installing ${need[*]}" >&2
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq || echo "setup: apt-get update reported errors; trying to install anyway" >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found; install a Rust toolchain (rustup) first" >&2
    exit 1
fi
