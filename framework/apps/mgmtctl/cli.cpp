#include "cli.hpp"

#include <ostream>

#include "args.hpp"
#include "commands.hpp"

#ifndef MGMTCTL_VERSION
#define MGMTCTL_VERSION "dev"
#endif

namespace mgmtctl {

std::string usage_text() {
  return R"(usage: mgmtctl [--socket PATH | --runtime-dir DIR] <command> [args]

Commands:
  list [--json]                  list supervised processes
  status [--json] <id>           show one process
  start <id>...                  start processes
  stop <id>...                   stop processes
  logs [--stream stdout|stderr|all] [-f|--follow] [--since DUR] [-n|--lines N] <id>
                                 print a process's output; --follow needs one stream
  events [--process a,b] [--type t1,t2]
                                 stream lifecycle events until the server closes
  restart [--type 0xNN] <id>...  stop, then start processes
  signal [--group] [--type 0xNN] <SIGNAL> <id>
                                 send a signal (HUP, SIGTERM, USR1, 9...) to a process,
                                 or with --group to its whole process group
  info [--json] [--type 0xNN]    server version, plugin ABI, uptime, config file and
                                 the loaded plugins with their versions and files
  reload [--type 0xNN]           re-read mgmt.yaml and apply it (exit 1 with the reason
                                 when the server refuses it and keeps the running one)
  call <TYPE> [JSON]             send any request (a JSON object, converted to
                                 MessagePack; none: an empty payload) and print the
                                 answer as JSON (byte strings as base64); exit 1 when
                                 the answer's "err" is set
  help                           show this help
  version                        print the version

Global options:
  --socket PATH                  the server's socket (wins over everything)
  --runtime-dir DIR              use DIR/manager.sock
  -h, --help                     show this help
  --version                      print the version

Without --socket the socket is found as cliwrap finds it: --runtime-dir, then
$CLIWRAP_RUNTIME_DIR, then the hint file <cache dir>/cliwrap/runtime-dir written
by the server, then $TMPDIR/cliwrap/manager.sock (/tmp when TMPDIR is unset).
Durations are Go's: 500ms, 90s, 5m, 1h30m.
restart, signal, info and reload are extra commands: mgmt.yaml maps them to a message
type (stock: restart 0xAA, signal 0xAB, info 0xAC, reload 0xAD); --type reaches them
on another one.

Exit codes: 0 success, 1 failure (connection, server or protocol error), 2 usage error.
)";
}

std::string version_text() { return "mgmtctl " MGMTCTL_VERSION "\n"; }

int run_cli(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  const ParseResult r = parse_args(args);
  if (!r.ok()) {
    err << "mgmtctl: " << r.error << "\ntry 'mgmtctl --help'\n";
    return kExitUsage;
  }
  switch (r.options.command) {
    case Command::help:
      out << usage_text();
      return kExitOk;
    case Command::version:
      out << version_text();
      return kExitOk;
    default:
      return run_command(r.options, out, err);
  }
}

}  // namespace mgmtctl
