#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan) and runs each for SECONDS (default 40).
# The corpus grows under build/fuzz/corpus/; a crash is saved under build/fuzz/crashes/ and
# fails the run. Keep every crashing input under tests/fuzz/regressions/<target>/ once fixed.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-40}
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz
wire_vectors=$(sed -n 's/^MGMT_WIRE_VECTORS_DIR:PATH=//p' build/fuzz/CMakeCache.txt)
total=0
for target in frames payloads config; do
  case $target in
    frames) seeds=$wire_vectors ;;
    *) seeds=tests/fuzz/seeds/$target ;;
  esac
  corpus=build/fuzz/corpus/$target
  mkdir -p "$corpus" build/fuzz/crashes
  log=build/fuzz/$target.log
  if ! ./build/fuzz/bin/fuzz_$target -max_total_time="$seconds" -print_final_stats=1 \
      -artifact_prefix="build/fuzz/crashes/$target-" \
      "$corpus" "$seeds" "tests/fuzz/regressions/$target" >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "fuzz: $target found a crash; the input is in build/fuzz/crashes/" >&2
    exit 1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  total=$((total + runs))
  echo "fuzz: $target: $runs inputs in ${seconds}s, no crash"
done
echo "fuzz: $total inputs in all"
