#!/bin/bash
# The project's test command (README): exactly what CI runs — setup, the Linux guest, format
# check, clippy with warnings denied, every test. The steps live in .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .ci/run
