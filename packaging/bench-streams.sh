#!/usr/bin/env bash
# Event fan-out and log follow throughput of mgmtd, in one run: prints a Markdown table
# (the one in docs/streaming.md).
#
#   bash packaging/bench-streams.sh     # builds the release preset first
#
# Environment: SKIP_BUILD=1 (use the build as it is), BUILD_DIR (default build/release),
# BENCH_EVENTS (events per burst, default 200000; a quarter of it with 100 subscribers),
# BENCH_FOLLOW_BYTES (default 1073741824), BENCH_SUBS (default 1,10,100).
# Not part of the test suite: it prints figures and asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=${BUILD_DIR:-build/release}
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  cmake --preset release >/dev/null
  flock /tmp/mgmt-build.lock cmake --build "$BUILD" >&2
fi
for f in "$BUILD/bin/mgmtd" "$BUILD/bin/mgmt-bench-streams" "$BUILD/lib/mgmtd/plugins/flood.so"; do
  [[ -e $f ]] || { echo "bench-streams: $f is missing; build the release preset" >&2; exit 1; }
done
echo "mgmtd streaming benchmark, $(nproc) cores, $(date -u +%Y-%m-%d)"
echo
"$BUILD/bin/mgmt-bench-streams" \
  --events "${BENCH_EVENTS:-200000}" \
  --follow-bytes "${BENCH_FOLLOW_BYTES:-1073741824}" \
  --subs "${BENCH_SUBS:-1,10,100}"
