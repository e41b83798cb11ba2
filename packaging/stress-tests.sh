#!/usr/bin/env bash
# Runs the test suite three times in a row with `ctest -j4` while a CPU hog (`yes` on every
# core) competes for the machine: what a loaded CI runner does to timing. A test that waits
# for a condition passes here; one that sleeps and hopes does not.
#
#   bash packaging/stress-tests.sh            # the asan preset (built first)
#   PRESET=tsan bash packaging/stress-tests.sh
#   RUNS=5 bash packaging/stress-tests.sh -R integration:   # extra args go to ctest
#
# Exits non-zero at the first run that fails.
set -euo pipefail
cd "$(dirname "$0")/.."
PRESET=${PRESET:-asan}
RUNS=${RUNS:-3}

bash packaging/setup-debian.sh
cmake --preset "$PRESET" >/dev/null
flock /tmp/mgmt-build.lock cmake --build --preset "$PRESET"

HOGS=()
stop_hogs() { for p in "${HOGS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap stop_hogs EXIT
for _ in $(seq "$(nproc)"); do
  yes >/dev/null &
  HOGS+=("$!")
done

for run in $(seq "$RUNS"); do
  echo "== stress run $run of $RUNS ($PRESET, ctest -j4, $(nproc) CPU hogs)"
  ctest --preset "$PRESET" -j4 "$@"
done
echo "== $RUNS loaded runs passed"
