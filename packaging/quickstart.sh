#!/usr/bin/env bash
# Sets up a fresh Debian machine, builds mgmtd, mgmtctl and the stock plugins (release
# preset, the `server` target: no tests or benchmarks) and runs the stock server in the
# foreground on config/mgmt.yaml. Stop it with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
bash packaging/setup-debian.sh
cmake --preset release >/dev/null
cmake --build --preset release --target server
echo "mgmtd: starting on config/mgmt.yaml; in another terminal try: ./build/release/bin/mgmtctl list"
exec ./build/release/bin/mgmtd -c config/mgmt.yaml "$@"
