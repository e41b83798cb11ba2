#!/usr/bin/env bash
# Sets up a fresh Debian machine, then runs the whole test suite:
#   1. every test (unit, wire-vector compat, integration, fuzz regressions) built with
#      AddressSanitizer + UndefinedBehaviorSanitizer,
#   2. the same suite built with ThreadSanitizer,
#   3. each libFuzzer target for a bounded time (FUZZ_SECONDS, default 40),
#   4. the Debian packages: built (release), installed, run, purged (package-test.sh;
#      needs root or sudo; SKIP_PACKAGE_TEST=1 leaves it out).
set -euo pipefail
cd "$(dirname "$0")/.."
bash packaging/setup-debian.sh
for preset in asan tsan; do
  echo "== $preset: build"
  cmake --preset "$preset" >/dev/null
  cmake --build --preset "$preset"
  echo "== $preset: test"
  ctest --preset "$preset" -j2 "$@"
done
echo "== fuzz"
bash packaging/fuzz.sh "${FUZZ_SECONDS:-40}"
if [[ ${SKIP_PACKAGE_TEST:-0} != 1 ]]; then
  echo "== packages"
  bash packaging/package-test.sh
fi
