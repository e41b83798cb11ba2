#!/usr/bin/env bash
# Sets up a fresh Debian machine, builds everything (debug preset) and runs the whole test
# suite with ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash packaging/setup-debian.sh
cmake --preset debug >/dev/null
cmake --build --preset debug
ctest --preset debug -j2 "$@"
