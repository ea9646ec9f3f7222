#!/bin/bash
# The project's test command: setup, format check, lints, then every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The Linux end-to-end test boots Debian's kernel: fetch and build the guest (cached, idempotent).
scripts/fetch-linux-guest.sh i386 >/dev/null
cargo fmt --all --check
cargo clippy --workspace --all-targets --release -- -D warnings
cargo test --workspace --release
