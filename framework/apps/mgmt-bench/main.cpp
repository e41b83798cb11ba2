// mgmt-bench: measures any server speaking the cliwrap management protocol against a
// floor (a minimal server answering each frame with a canned reply of the same size).
#include <csignal>
#include <iostream>

#include "bench.hpp"

namespace {

constexpr const char* kUsage = R"(usage: mgmt-bench <command> [options]

  load     --socket PATH [--op list|status] [--id ID] [--clients C] [--duration S]
           [--warmup S] [--label TEXT]
           C connections, one request in flight on each, for S seconds (after a
           warm-up): prints requests/s and latency p50, p99, max in microseconds.
  capture  --socket PATH [--op list|status] [--id ID] --out FILE
           saves the server's whole reply frame, for the floor.
  floor    --socket PATH [--reply TYPE=FILE]... [--reply-size N] [--threads N]
           a minimal server: reads each request frame and answers it with the
           captured frame for its type (seq patched), else with an N-byte frame
           (default 64). One epoll thread, or N sharing the listening socket (0: one
           per core: the floor that uses the whole machine). Runs until SIGTERM/SIGINT.
  hold     --socket PATH [--connections N]
           opens N idle connections and keeps them until SIGTERM/SIGINT.
  unread   --socket PATH [--connections N] [--op list|status] [--id ID]
           N misbehaving clients: each sends requests back to back and never
           reads an answer, until the server stops taking them; then holds the
           connections until SIGTERM/SIGINT.
  startup  --socket PATH [--repeat N] [--timeout S] -- SERVER ARGS...
           spawn to first successful connect, N times (SIGTERM after each).
  wall     [--repeat N] -- COMMAND ARGS...
           wall time of a command (stdout to /dev/null), N times.
  mem      --pid PID
           a process's memory in KiB: VmRSS and VmHWM, and what is its own:
           RssAnon, PSS and Private_Dirty (/proc/PID/smaps_rollup).
  scale    --mgmtd PATH --dir DIR [--procs N] [--subscribers S] [--idle S]
           [--duration S] [--timeout S]
           runs MGMTD with N /bin/sleep processes (config and socket in DIR) and
           times spawn to all running, idle CPU over S s, RssAnon/PSS, list p50/p99
           (1 and 4 clients), a reload changing one process, one event to S
           subscribers, SIGTERM to exit; prints key=value (packaging/scale.sh).

packaging/bench.sh runs the whole comparison against mgmtd and prints a table.
)";

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  using namespace mgmt::bench;
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    std::cout << kUsage;
    return argc < 2 ? 2 : 0;
  }
  const std::string cmd = argv[1];
  const Args args(argv + 2, argv + argc);
  try {
    if (cmd == "load") return cmd_load(args);
    if (cmd == "capture") return cmd_capture(args);
    if (cmd == "floor") return cmd_floor(args);
    if (cmd == "hold") return cmd_hold(args);
    if (cmd == "unread") return cmd_unread(args);
    if (cmd == "startup") return cmd_startup(args);
    if (cmd == "wall") return cmd_wall(args);
    if (cmd == "mem") return cmd_mem(args);
    if (cmd == "scale") return cmd_scale(args);
    throw UsageError("unknown command '" + cmd + "'");
  } catch (const UsageError& e) {
    std::cerr << "mgmt-bench: " << e.what() << "\n\n" << kUsage;
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "mgmt-bench " << cmd << ": " << e.what() << "\n";
    return 1;
  }
}
