#!/usr/bin/env bash
# mgmtd at 100, 1,000 and 10,000 supervised processes (/bin/sleep): `mgmt-bench scale` runs
# one release mgmtd per size and times it over its socket; this prints a Markdown table.
#
#   bash packaging/scale.sh                    # builds the release preset if needed
#   SCALE_SIZES="100 1000" bash packaging/scale.sh
#
# Environment: SCALE_SIZES (default "100 1000 10000"), SCALE_SUBSCRIBERS (event
# subscribers, default 1000), SCALE_IDLE (seconds of idle CPU measured, default 10),
# SCALE_DURATION (seconds per list load run, default 3), SKIP_BUILD=1, BUILD_DIR (default
# build/release). Needs 4 descriptors per process in mgmtd while they start (two pipes, a
# pidfd and the exec status pipe) plus one per subscriber: the open-file limit is raised to that; where the hard limit is lower
# and cannot be raised (no CAP_SYS_RESOURCE), a size is cut to what fits, and said so.
# Not part of the test suite: it prints figures and asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=${BUILD_DIR:-build/release}
SIZES=${SCALE_SIZES:-100 1000 10000}
SUBS=${SCALE_SUBSCRIBERS:-1000}
IDLE=${SCALE_IDLE:-10}
DURATION=${SCALE_DURATION:-3}

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  [[ -f $BUILD/build.ninja ]] || cmake --preset release >/dev/null
  flock /tmp/mgmt-build.lock cmake --build "$BUILD" >&2
fi
BENCH=$BUILD/bin/mgmt-bench
MGMTD=$BUILD/bin/mgmtd
for f in "$MGMTD" "$BENCH"; do
  [[ -x $f ]] || { echo "scale: $f is missing; build the release preset" >&2; exit 1; }
done

TMP=$(mktemp -d /tmp/mgmt-scale.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

# Descriptors: 4 per process, 1 per subscriber, and room for the server's own.
fds_for() { echo $((4 * $1 + SUBS + 256)); }
largest=0
for n in $SIZES; do ((n > largest)) && largest=$n; done
want=$(fds_for "$largest")
ulimit -Hn "$want" 2>/dev/null || true   # root with CAP_SYS_RESOURCE
hard=$(ulimit -Hn)
[[ $hard == unlimited ]] && hard=$want
ulimit -Sn "$((want < hard ? want : hard))"
# Processes: ours count against RLIMIT_NPROC (root is exempt).
if [[ $(ulimit -Hu) == unlimited ]] || (($(ulimit -Hu) > largest + 4096)); then
  ulimit -Su "$((largest + 4096))" 2>/dev/null || true
fi

declare -A R
RUN=()
NOTES=()
for n in $SIZES; do
  m=$n
  if (($(fds_for "$n") > $(ulimit -Sn))); then
    m=$((($(ulimit -Sn) - SUBS - 256) / 4 / 1000 * 1000))
    NOTES+=("$n processes need $(fds_for "$n") descriptors in mgmtd; the hard open-file limit here is $hard and cannot be raised, so that column is $m processes.")
    echo "scale: $n processes do not fit in $hard descriptors: running $m" >&2
  fi
  echo "scale: $m processes..." >&2
  mkdir -p "$TMP/$m"
  line=$("$BENCH" scale --mgmtd "$MGMTD" --dir "$TMP/$m" --procs "$m" --subscribers "$SUBS" \
    --idle "$IDLE" --duration "$DURATION") || { echo "scale: $m processes failed" >&2; cat "$TMP/$m/mgmtd.log" >&2; exit 1; }
  echo "  $line" >&2
  for kv in $line; do R[$m,${kv%%=*}]=${kv#*=}; done
  RUN+=("$m")
  sleep 2  # the children's exits settle before the next size starts
done

fmt_ms() { awk -v v="$1" 'BEGIN {if (v >= 1000) printf "%.2f s", v / 1000; else printf "%.1f ms", v}'; }
fmt_us() { awk -v v="$1" 'BEGIN {if (v >= 1000) printf "%.2f ms", v / 1000; else printf "%.0f µs", v}'; }
fmt_bytes() { awk -v v="$1" 'BEGIN {if (v >= 1048576) printf "%.2f MiB", v / 1048576; else printf "%.1f KiB", v / 1024}'; }
fmt_mib() { awk -v v="$1" 'BEGIN {printf "%.1f MiB", v / 1024}'; }
row() {  # LABEL FORMATTER KEY
  local label=$1 f=$2 k=$3 cells=""
  for m in "${RUN[@]}"; do cells+=" $($f "${R[$m,$k]}") |"; done
  echo "| $label |$cells"
}
row_per() {  # LABEL KEY UNIT FACTOR: value * FACTOR / processes
  local label=$1 k=$2 unit=$3 fac=$4 cells=""
  for m in "${RUN[@]}"; do
    cells+=" $(awk -v v="${R[$m,$k]}" -v n="$m" -v f="$fac" -v u="$unit" 'BEGIN {printf "%.2f %s", v * f / n, u}') |"
  done
  echo "| $label |$cells"
}

CPU=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
echo
echo "Machine: $(nproc) cores ($CPU), $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)," \
  "$(uname -sr), load average $(cut -d' ' -f1-3 /proc/loadavg) at the end of the run."
echo
head="| figure |"; sep="| --- |"
for m in "${RUN[@]}"; do head+=" $m processes |"; sep+=" --- |"; done
echo "$head"; echo "$sep"
row "start: spawn of mgmtd → all \`running\`" fmt_ms running_ms
row_per "… per process" running_ms ms 1
row "RssAnon of mgmtd, all running" fmt_mib rss_anon_kib
row "PSS of mgmtd, all running" fmt_mib pss_kib
row_per "… RssAnon per process" rss_anon_kib KiB 1
row "idle CPU of mgmtd over ${IDLE} s (utime+stime)" fmt_ms idle_cpu_ms
row "list p50, 1 client" fmt_us list1_p50_us
row "list p99, 1 client" fmt_us list1_p99_us
row "list p50, 4 clients" fmt_us list4_p50_us
row "list p99, 4 clients" fmt_us list4_p99_us
row "list reply" fmt_bytes list_bytes
row "reload changing one process (SIGHUP → it runs, new pid)" fmt_ms reload_ms
row "… other processes restarted by it" echo reload_others_restarted
row "event to $SUBS subscribers: stop request → last delivery" fmt_ms events_all_ms
row "… of which event published → last delivery" fmt_ms events_fanout_ms
row "stop: SIGTERM → mgmtd exited, all stopped" fmt_ms stop_ms
row_per "… per process" stop_ms ms 1
echo
for note in "${NOTES[@]}"; do echo "$note"; done
