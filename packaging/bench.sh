#!/usr/bin/env bash
# Benchmarks mgmtd against the floor (mgmt-bench floor: a minimal server answering every
# frame with a canned reply of the same size) in one run, and prints a Markdown table.
#
#   bash packaging/bench.sh            # builds the release preset first (~3 min total)
#
# Environment: SKIP_BUILD=1 (use build/release as it is), BENCH_DURATION (seconds per
# load run, default 2), BENCH_ROUNDS (alternating floor/mgmtd rounds per figure, median
# kept, default 3), BENCH_PROCS (supervised processes, default 100), BENCH_REPEAT (runs of
# the start-up and mgmtctl timings, default 20), BENCH_UNREAD (clients that never read
# their answers, default 500), BUILD_DIR (default build/release), BENCH_IO_THREADS (e.g.
# "1 2": one mgmtd per value of server.io_threads, all in the same alternating rounds, a
# set of request rows for each; the memory and timing rows are the first one's; default:
# one mgmtd with the configuration's default).
# Not part of the test suite: it prints figures and asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=${BUILD_DIR:-build/release}
DURATION=${BENCH_DURATION:-2}
ROUNDS=${BENCH_ROUNDS:-3}
NPROCS=${BENCH_PROCS:-100}
REPEAT=${BENCH_REPEAT:-20}
NCONN=1000
NUNREAD=${BENCH_UNREAD:-500}
read -r -a IOT <<<"${BENCH_IO_THREADS:-}"

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  cmake --preset release >/dev/null
  flock /tmp/mgmt-build.lock cmake --build "$BUILD" >&2
fi
BIN=$BUILD/bin
BENCH=$BIN/mgmt-bench
for f in "$BIN/mgmtd" "$BIN/mgmtctl" "$BENCH"; do
  [[ -x $f ]] || { echo "bench: $f is missing; build the release preset" >&2; exit 1; }
done

TMP=$(mktemp -d /tmp/mgmt-bench.XXXXXX)
SOCK=$TMP/mgmtd.sock
FSOCK=$TMP/floor.sock
FSOCK2=$TMP/floor2.sock
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

# --- configuration: every stock plugin, NPROCS idle processes --------------------------
CFG=$TMP/mgmt.yaml
{
  echo "server:"
  echo "  socket: $SOCK"
  echo "  write_hint: false"
  echo "backend:"
  echo "  plugin: process"
  echo "  config:"
  echo "    processes:"
  for ((i = 0; i < NPROCS; i++)); do
    printf '      - {id: p%03d, command: /bin/sleep, args: ["100000"], restart: never}\n' "$i"
  done
  echo "limits:"
  echo "  max_connections: $((NCONN + 64))"
  echo "log:"
  echo "  level: warn"
} >"$CFG"
# The stock handlers are the default mapping; stock command plugins (anything else in the
# plugin folder) are mapped to 0xAA.. when mgmtd accepts them.
PLUGDIR=$BUILD/lib/mgmtd/plugins
CMDS=()
for so in "$PLUGDIR"/*.so; do
  name=$(basename "$so" .so)
  # flood: a benchmark-only backend, not a command.
  case $name in list | status | logs | events | start | stop | process | flood) ;; *) CMDS+=("$name") ;; esac
done
if ((${#CMDS[@]} > 0)); then
  cp "$CFG" "$CFG.base"
  { echo "commands:"; t=170; for c in "${CMDS[@]:0:6}"; do printf '  0x%X: %s\n' $t "$c"; t=$((t + 1)); done; } >>"$CFG"
  if ! "$BIN/mgmtd" --check -c "$CFG" >/dev/null 2>&1; then
    echo "bench: mgmtd refuses the extra plugins (${CMDS[*]}) as commands; loading the stock six only" >&2
    mv "$CFG.base" "$CFG"
  fi
fi
NPLUGINS=$("$BIN/mgmtd" --check -c "$CFG" | grep -c ': .*(/')

wait_file_line() {  # FILE PATTERN: waits (10 s max) for PATTERN in FILE
  for _ in $(seq 1000); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.01; done
  echo "bench: timed out waiting for '$2' in $1" >&2; return 1
}
wait_running() {  # LOG [SOCKET]: waits (20 s max) for mgmtd on SOCKET ($SOCK) to run all NPROCS processes
  local n=0
  for _ in $(seq 1000); do
    n=$("$BIN/mgmtctl" --socket "${2:-$SOCK}" list 2>/dev/null | grep -c ' running ' || true)
    [[ $n == "$NPROCS" ]] && return 0
    sleep 0.02
  done
  echo "bench: mgmtd did not get $NPROCS processes running" >&2; cat "$1" >&2; return 1
}

# --- mgmtd ------------------------------------------------------------------------------
# MSRV: the mgmtd servers under request load (mgmtd, or io<N> for each BENCH_IO_THREADS);
# the first is on $SOCK with $CFG and is the one the other figures are taken from.
declare -A MSOCK MPID MLABEL
MSRV=()
if ((${#IOT[@]} == 0)); then
  MSRV=(mgmtd); MSOCK[mgmtd]=$SOCK; MLABEL[mgmtd]=""
else
  cp "$CFG" "$CFG.plain"
  for t in "${IOT[@]}"; do
    srv=io$t; MSRV+=("$srv"); MLABEL[$srv]=", io_threads $t"
    MSOCK[$srv]=$TMP/mgmtd-$t.sock; [[ ${#MSRV[@]} == 1 ]] && MSOCK[$srv]=$SOCK
    c=$TMP/mgmt-$t.yaml; [[ ${#MSRV[@]} == 1 ]] && c=$CFG
    sed "s|^  socket: $SOCK\$|  socket: ${MSOCK[$srv]}\n  io_threads: $t|" "$CFG.plain" >"$c"
  done
fi
for srv in "${MSRV[@]}"; do
  c=$CFG; [[ ${MSOCK[$srv]} != "$SOCK" ]] && c=$TMP/mgmt-${srv#io}.yaml
  "$BIN/mgmtd" -c "$c" 2>"$TMP/$srv.log" &
  MPID[$srv]=$!
  PIDS+=("${MPID[$srv]}")
done
for srv in "${MSRV[@]}"; do wait_running "$TMP/$srv.log" "${MSOCK[$srv]}"; done
MGMTD=${MPID[${MSRV[0]}]}
SID=$(printf 'p%03d' $((NPROCS / 2)))

# --- the floor, answering with mgmtd's own reply bytes -----------------------------------
"$BENCH" capture --socket "$SOCK" --op list --out "$TMP/list.bin" >/dev/null
"$BENCH" capture --socket "$SOCK" --op status --id "$SID" --out "$TMP/status.bin" >/dev/null
"$BENCH" floor --socket "$FSOCK" --reply 0xa0="$TMP/list.bin" --reply 0xa2="$TMP/status.bin" \
  >"$TMP/floor.out" &
FLOOR=$!
PIDS+=("$FLOOR")
wait_file_line "$TMP/floor.out" listening
# The second floor uses the whole machine: an epoll thread per core.
"$BENCH" floor --socket "$FSOCK2" --threads 0 --reply 0xa0="$TMP/list.bin" \
  --reply 0xa2="$TMP/status.bin" >"$TMP/floor2.out" &
FLOOR2=$!
PIDS+=("$FLOOR2")
wait_file_line "$TMP/floor2.out" listening

# --- request/response load: floor and mgmtd alternate, median of ROUNDS -----------------
declare -A R P C F  # R[server,op,clients,field] = median; P, C, F: memory figures
field() { tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k {print $2}'; }
median() { sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
for op in list status; do
  for c in 1 4; do
    declare -A runs=()
    for ((r = 0; r < ROUNDS; r++)); do
      for srv in floor floor2 "${MSRV[@]}"; do
        s=${MSOCK[$srv]:-}; [[ $srv == floor ]] && s=$FSOCK; [[ $srv == floor2 ]] && s=$FSOCK2
        line=$("$BENCH" load --socket "$s" --op "$op" --id "$SID" --clients "$c" \
          --duration "$DURATION" --warmup 0.3)
        echo "  $srv: $line" >&2
        for k in rps p50_us p99_us max_us reply_bytes; do runs[$srv,$k]+="$(field "$line" "$k") "; done
      done
    done
    for srv in floor floor2 "${MSRV[@]}"; do
      for k in rps p50_us p99_us max_us reply_bytes; do
        R[$srv,$op,$c,$k]=$(tr ' ' '\n' <<<"${runs[$srv,$k]}" | grep . | median)
      done
    done
    unset runs
  done
done

# --- what each io_threads setting costs: memory after the load runs, CPU while idle -------
declare -A MEM_LOADED IDLE_CPU NTHREADS
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
if ((${#IOT[@]} > 0)); then
  declare -A t0
  for srv in "${MSRV[@]}"; do
    MEM_LOADED[$srv]=$("$BENCH" mem --pid "${MPID[$srv]}")
    NTHREADS[$srv]=$(ls "/proc/${MPID[$srv]}/task" | wc -l)
    t0[$srv]=$(cpu_ticks "${MPID[$srv]}")
  done
  sleep 5
  for srv in "${MSRV[@]}"; do
    IDLE_CPU[$srv]=$(awk -v a="${t0[$srv]}" -v b="$(cpu_ticks "${MPID[$srv]}")" -v hz="$(getconf CLK_TCK)" \
      'BEGIN {printf "%.0f", (b - a) * 1000 / hz / 5}')
  done
fi

# --- memory -----------------------------------------------------------------------------
MEM_PROCS=$("$BENCH" mem --pid "$MGMTD")
"$BENCH" hold --socket "$SOCK" --connections "$NCONN" >"$TMP/hold.out" &
HOLD=$!
PIDS+=("$HOLD")
wait_file_line "$TMP/hold.out" holding
sleep 0.2
MEM_CONN=$("$BENCH" mem --pid "$MGMTD")
kill "$HOLD"; wait "$HOLD" 2>/dev/null || true
"$BENCH" hold --socket "$FSOCK" --connections "$NCONN" >"$TMP/hold.out" &
HOLD=$!
PIDS+=("$HOLD")
wait_file_line "$TMP/hold.out" holding
sleep 0.2
MEM_CONN_FLOOR=$("$BENCH" mem --pid "$FLOOR")
kill "$HOLD"; wait "$HOLD" 2>/dev/null || true

# --- misbehaving clients: requests sent back to back, answers never read ------------------
"$BENCH" unread --socket "$SOCK" --connections "$NUNREAD" >"$TMP/unread.out" &
UNREAD=$!
PIDS+=("$UNREAD")
# RssAnon once it has settled: unchanged (within 256 KiB) for 2 s, 60 s at most. The
# clients stop writing once their sockets are full, long before mgmtd has answered what
# those hold (without a server-wide budget it kept growing for 10 s, to 2 GiB); freed
# memory goes back to the kernel a second after connections close.
settled_rss() {
  local prev=-1 cur same=0
  for _ in $(seq 600); do
    cur=$("$BENCH" mem --pid "$MGMTD" | tr ' ' '\n' | awk -F= '$1 == "rss_anon_kib" {print $2}')
    if ((cur - prev <= 256 && prev - cur <= 256)); then
      ((++same >= 20)) && break
    else
      same=0; prev=$cur
    fi
    sleep 0.1
  done
}
wait_file_line "$TMP/unread.out" holding
settled_rss
MEM_UNREAD=$("$BENCH" mem --pid "$MGMTD")
kill "$UNREAD"; wait "$UNREAD" 2>/dev/null || true
settled_rss
MEM_AFTER=$("$BENCH" mem --pid "$MGMTD")

# --- mgmtctl list wall time (against mgmtd and against the floor) ------------------------
WALL=$("$BENCH" wall --repeat "$REPEAT" -- "$BIN/mgmtctl" --socket "$SOCK" list)
WALL_FLOOR=$("$BENCH" wall --repeat "$REPEAT" -- "$BIN/mgmtctl" --socket "$FSOCK" list)

for srv in "${MSRV[@]}"; do kill "${MPID[$srv]}"; wait "${MPID[$srv]}" 2>/dev/null || true; done
kill "$FLOOR" "$FLOOR2"; wait "$FLOOR" "$FLOOR2" 2>/dev/null || true
PIDS=()

# --- start-up to socket ready (mgmtd with every plugin; the floor's own start-up) --------
UP=$("$BENCH" startup --socket "$SOCK" --repeat "$REPEAT" -- "$BIN/mgmtd" -c "$CFG")
UP_FLOOR=$("$BENCH" startup --socket "$FSOCK" --repeat "$REPEAT" -- "$BENCH" floor --socket "$FSOCK")

# --- the table --------------------------------------------------------------------------
mib() { awk -v k="$1" 'BEGIN {printf "%.1f MiB", k / 1024}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}'; }
verdict() {  # VALUE OP LIMIT
  awk -v v="$1" -v op="$2" -v l="$3" 'BEGIN {ok = (op == ">=" ? v >= l : v <= l); print (ok ? "yes" : "**no**")}'
}
row() { printf '| %s | %s | %s | %s | %s | %s |\n' "$@"; }

CPU=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
echo
echo "Machine: $(nproc) cores ($CPU), $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)," \
  "$(uname -sr), load average $(cut -d' ' -f1-3 /proc/loadavg) at the end of the run."
echo "mgmtd: $NPROCS idle processes, $NPLUGINS plugins; ${DURATION}s per load run, median of $ROUNDS alternating rounds."
echo
# Requests: against the one-thread floor (a server of mgmtd's shape) and the floor that
# uses every core; the targets are against the latter.
row8() { printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$@"; }
row8 figure mgmtd "floor, 1 thread" ratio "floor, $(nproc) threads" ratio target met
row8 --- --- --- --- --- --- --- ---
M0=${MSRV[0]}
for srv in "${MSRV[@]}"; do
for op in list status; do
  what="list ($NPROCS processes, $(awk -v b="${R[$M0,list,1,reply_bytes]}" 'BEGIN {printf "%d B reply", b}')${MLABEL[$srv]})"
  [[ $op == status ]] && what="status ($(awk -v b="${R[$M0,status,1,reply_bytes]}" 'BEGIN {printf "%d B reply", b}')${MLABEL[$srv]})"
  for c in 1 4; do
    rps=${R[$srv,$op,$c,rps]}; frps=${R[floor,$op,$c,rps]}; frps2=${R[floor2,$op,$c,rps]}
    rr=$(ratio "$rps" "$frps"); rr2=$(ratio "$rps" "$frps2")
    tgt="—"; met="—"
    # list of 1000 processes: ≥ 0.5 (the reply is 70 KB, a copy and a write of its own).
    lim=0.70; ((NPROCS >= 1000)) && [[ $op == list ]] && lim=0.50
    if [[ $c == 4 ]]; then tgt="≥ $lim"; met=$(verdict "$rr2" ">=" "$lim"); fi
    row8 "$what, $c client(s): throughput" "$(printf '%.0f req/s' "$rps")" \
      "$(printf '%.0f req/s' "$frps")" "$rr" "$(printf '%.0f req/s' "$frps2")" "$rr2" "$tgt" "$met"
    for k in p50_us p99_us max_us; do
      v=${R[$srv,$op,$c,$k]}; f=${R[floor,$op,$c,$k]}; f2=${R[floor2,$op,$c,$k]}
      rr=$(ratio "$v" "$f"); rr2=$(ratio "$v" "$f2"); tgt="—"; met="—"
      if [[ $c == 4 && $k == p99_us ]]; then tgt="≤ 2.00"; met=$(verdict "$rr2" "<=" 2.0); fi
      row8 "$what, $c client(s): latency ${k%_us}" "$v µs" "$f µs" "$rr" "$f2 µs" "$rr2" "$tgt" "$met"
    done
  done
done
done
echo
row figure mgmtd floor ratio target met
row --- --- --- --- --- ---
# Memory: private (RssAnon, what the process itself wrote) and PSS (shared pages divided
# among their users) are what it costs the machine; VmRSS also counts clean code pages.
for k in rss_anon pss private_dirty vmrss; do
  P[$k]=$(field "$MEM_PROCS" "${k}_kib"); C[$k]=$(field "$MEM_CONN" "${k}_kib"); F[$k]=$(field "$MEM_CONN_FLOOR" "${k}_kib")
done
for srv in "${MSRV[@]}"; do
  [[ -n ${MEM_LOADED[$srv]:-} ]] || continue
  row "mgmtd${MLABEL[$srv]}: RssAnon after the load runs, threads, CPU while idle (5 s)" \
    "$(mib "$(field "${MEM_LOADED[$srv]}" rss_anon_kib)"), ${NTHREADS[$srv]} threads, ${IDLE_CPU[$srv]} ms/s" "—" "—" "—" "—"
done
row "RssAnon of mgmtd, $NPROCS processes (children excluded)" "$(mib "${P[rss_anon]}")" "—" "—" "≤ 6 MiB" "$(verdict "${P[rss_anon]}" "<=" 6144)"
row "PSS of mgmtd, $NPROCS processes" "$(mib "${P[pss]}")" "—" "—" "—" "—"
row "Private_Dirty / VmRSS (peak) of mgmtd, $NPROCS processes" "$(mib "${P[private_dirty]}") / $(mib "${P[vmrss]}") ($(mib "$(field "$MEM_PROCS" vmhwm_kib)"))" "—" "—" "—" "—"
row "RssAnon with $NCONN idle connections" "$(mib "${C[rss_anon]}")" "$(mib "${F[rss_anon]}")" "$(ratio "${C[rss_anon]}" "${F[rss_anon]}")" "≤ 32 MiB" "$(verdict "${C[rss_anon]}" "<=" 32768)"
row "PSS with $NCONN idle connections" "$(mib "${C[pss]}")" "$(mib "${F[pss]}")" "$(ratio "${C[pss]}" "${F[pss]}")" "—" "—"
# The documented bound (docs/streaming.md, Bounds under hostile clients): mgmtd as it was,
# plus limits.max_queue_total (64 MiB), plus for each client a connection (8 KiB) and the
# one answer that takes it past the budget.
UNREAD_BOUND=$(awk -v base="${P[rss_anon]}" -v n="$NUNREAD" -v a="${R[$M0,list,1,reply_bytes]}" \
  'BEGIN {printf "%d", base + 64 * 1024 + n * (8 + (a + 17) / 1024)}')
row "RssAnon with $NUNREAD clients that never read their answers ($(sed 's/^holding //' "$TMP/unread.out"))" "$(mib "$(field "$MEM_UNREAD" rss_anon_kib)")" "—" "—" "≤ $(mib "$UNREAD_BOUND") (budget)" "$(verdict "$(field "$MEM_UNREAD" rss_anon_kib)" "<=" "$UNREAD_BOUND")"
row "RssAnon once they have gone (freed memory given back)" "$(mib "$(field "$MEM_AFTER" rss_anon_kib)")" "—" "—" "—" "—"
row "VmRSS with $NCONN idle connections" "$(mib "${C[vmrss]}")" "$(mib "${F[vmrss]}")" "$(ratio "${C[vmrss]}" "${F[vmrss]}")" "—" "—"
up=$(field "$UP" median_ms); upf=$(field "$UP_FLOOR" median_ms)
row "start-up to socket ready, $NPLUGINS plugins (median of $REPEAT)" "$up ms" "$upf ms" "$(ratio "$up" "$upf")" "≤ 20 ms" "$(verdict "$up" "<=" 20)"
w=$(field "$WALL" median_ms); wf=$(field "$WALL_FLOOR" median_ms)
row "\`mgmtctl list\` wall (median of $REPEAT)" "$w ms" "$wf ms" "$(ratio "$w" "$wf")" "≤ 2 ms" "$(verdict "$w" "<=" 2)"
echo
echo "Floors: mgmt-bench floor, same socket and framing, one read and one write per request, a canned" \
  "reply of mgmtd's size; with one epoll thread (mgmtd's own shape) and with one per core (the machine)." \
  "The second table's floor column is the one-thread floor; for start-up, the floor's own; for" \
  "\`mgmtctl list\`, mgmtctl against the floor. Ratios: mgmtd / floor (throughput: higher is better)."
