#include "cli.hpp"

#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <ostream>

#include "args.hpp"
#include "commands.hpp"

#ifndef MGMTCTL_VERSION
#define MGMTCTL_VERSION "dev"
#endif

namespace mgmtctl {

CliEnv detect_env() {
  CliEnv env;
  const char* no_color = std::getenv("NO_COLOR");  // https://no-color.org: set and not empty
  const char* term = std::getenv("TERM");
  env.color = ::isatty(STDOUT_FILENO) == 1 && (no_color == nullptr || *no_color == '\0') &&
              !(term != nullptr && std::strcmp(term, "dumb") == 0);
  return env;
}

std::string usage_text() {
  return R"(usage: mgmtctl [--socket PATH | --runtime-dir DIR | --host URL... | --hosts-file FILE]
               <command> [args]

Commands:
  list [--json | --ids]          list supervised processes
  status [--json] <id>           show one process
  start [--json] <id>...         start processes
  stop [--json] <id>...          stop processes
  logs [-f] [-t] [--json] [--stream S] [--since DUR] [-n N] <id>...
                                 print processes' output, merged in capture order
  events [--json] [--process a,b] [--type t1,t2]
                                 stream lifecycle events until the server closes
  restart [--json] [--type 0xNN] <id>...
                                 stop, then start processes
  signal [--json] [--group] [--type 0xNN] <SIGNAL> <id>
                                 send a signal (HUP, SIGTERM, USR1, 9...) to a process,
                                 or with --group to its whole process group
  info [--json] [--type 0xNN]    server version, plugin ABI, uptime, config file and
                                 the loaded plugins with their versions and files
  metrics [--type 0xNN]          the server's Prometheus metrics (text format)
  reload [--logs] [--type 0xNN]  re-read mgmt.yaml and apply it (exit 1 with the reason
                                 when the server refuses it and keeps the running one)
  upgrade [--type 0xNN]          replace mgmtd by the binary on disk in place (same pid,
                                 the processes keep running) and wait until it serves;
                                 exit 1 with the reason when it is refused
  call <TYPE> [JSON]             send any request (a JSON object, converted to
                                 MessagePack; none: an empty payload) and print the
                                 answer as JSON (byte strings as base64); exit 1 when
                                 the answer's "err" is set
  dial-stdio                     bridge stdin/stdout to the socket (what --host ssh://
                                 runs on the remote host)
  help [COMMAND]                 show this help, or a command's
  version                        print the version

Global options:
  --socket PATH                  the server's socket (wins over everything)
  --runtime-dir DIR              use DIR/manager.sock
  --host URL                     the server to talk to: ssh://[user@]host[:port][/path/to/sock]
                                 (through `ssh host mgmtctl dial-stdio`) or unix:///path;
                                 repeat it or give a comma list for a fleet
  --hosts-file FILE              more hosts, one per line (# comments)
  -h, --help                     show this help (after a command: that command's)
  --version                      print the version

Without --socket the socket is found as cliwrap finds it: --runtime-dir, then
$CLIWRAP_RUNTIME_DIR, then the hint file <cache dir>/cliwrap/runtime-dir written
by the server, then $TMPDIR/cliwrap/manager.sock (/tmp when TMPDIR is unset).
Without --host, --hosts-file, --socket and --runtime-dir, $MGMT_HOST is the --host.
Through ssh: $MGMT_SSH_COMMAND is the ssh program and its options (default "ssh"),
$MGMT_REMOTE_MGMTCTL the remote mgmtctl (default "mgmtctl" from the remote PATH).
On several hosts, list, status, start, stop, restart, signal and events run on all of
them in parallel, each row after its HOST; one host failing fails the exit code only.
Durations are Go's: 500ms, 90s, 5m, 1h30m.
restart, signal, info, reload, metrics and upgrade are extra commands: mgmt.yaml maps them
to a message type (stock: restart 0xAA, signal 0xAB, info 0xAC, reload 0xAD, metrics 0xAE,
upgrade 0xAF);
--type reaches them on another one.
States are coloured when stdout is a terminal and NO_COLOR is not set.

Exit codes: 0 success, 1 failure (connection, server or protocol error), 2 usage error.
)";
}

std::string command_help(Command c) {
  switch (c) {
    case Command::list:
      return R"(usage: mgmtctl list [--json | --ids]

Lists the supervised processes: a table ID, NAME, STATE, PID (the Go CLI's layout).
  --json    every field of every entry, extensions included, as a JSON array
  --ids     the ids alone, one per line (for scripts and shell completion)
On several hosts: a HOST column first; --json one array, each entry with "host";
--ids "HOST ID" per line.
)";
    case Command::status:
      return R"(usage: mgmtctl status [--json] <id>

Shows one process: ID, Name, State, ChildPID, then RSS, Restarts, Started, Last exit and
Last error when the server reports them. Exit 1 when the id is unknown.
  --json    the entry as a JSON object
On several hosts: each host's block after a "Host:" line; --json an array of the entries,
each with "host".
)";
    case Command::start:
      return R"(usage: mgmtctl start [--json] <id>...

Starts each process (and its dependencies that are down), one request per id, and
prints "started <id>" for each; failures as "<id>: <error>" on stderr (exit 1).
  --json    a JSON array of {id, ok, err, entry} instead (entry: the process afterwards)
)";
    case Command::stop:
      return R"(usage: mgmtctl stop [--json] <id>...

Stops each process (SIGTERM to its process group, SIGKILL after its stop_timeout), one
request per id, and prints "stopped <id>" for each; failures as "<id>: <error>" (exit 1).
  --json    a JSON array of {id, ok, err, entry} instead (entry: the process afterwards)
)";
    case Command::logs:
      return R"(usage: mgmtctl logs [-f|--follow] [-t|--timestamps] [--json] [--stream stdout|stderr|all] [--since DUR] [-n|--lines N] <id>...

Prints processes' captured output: their stdout to stdout, their stderr to stderr, the
streams merged in the order the output was captured.
  --stream S        stdout, stderr or all (default all)
  -f, --follow      keep printing new output until interrupted
  -t, --timestamps  the capture time (RFC 3339, UTC, microseconds) before each line
  --json            one JSON object per line on stdout: {ts (unix nanos), id, stream, line}
  --since DUR       only output from the last DUR (Go durations: 90s, 5m, 1h30m)
  -n, --lines N     only the last N lines of each stream
With several ids, each line starts with its process's id ("web  | ...").
)";
    case Command::events:
      return R"(usage: mgmtctl events [--json] [--process a,b] [--type t1,t2]

Streams lifecycle events until the server closes: HH:MM:SS.mmm, type, process, summary.
  --process a,b   only these processes
  --type t1,t2    only these event types (process.started, process.crashed, ...)
  --json          one JSON object per line: {ts (unix nanos), pid, type, summary}
On several hosts: merged as they arrive, each line after its host (--json: "host" first).
)";
    case Command::restart:
      return R"(usage: mgmtctl restart [--json] [--type 0xNN] <id>...

Stops each process (waiting out its stop timeout), then starts it; a process that is not
running is just started. Prints "restarted <id>" for each; failures as "<id>: <error>".
  --type 0xNN   the message type the restart command is mapped to (default 0xAA)
  --json        a JSON array of {id, ok, err, entry}
)";
    case Command::signal:
      return R"(usage: mgmtctl signal [--json] [--group] [--type 0xNN] <SIGNAL> <id>

Sends a signal, by name or number (HUP, SIGTERM, usr1, 9, RTMIN+2), to the process.
  --group       to its whole process group instead
  --type 0xNN   the message type the signal command is mapped to (default 0xAB)
  --json        {id, signal, group, ok, err, entry} instead of "sent SIGHUP to web"
)";
    case Command::info:
      return R"(usage: mgmtctl info [--json] [--type 0xNN]

The server's version, plugin ABI, pid, start time and uptime, configuration file, and
every loaded plugin with its type, kind, name, version and file.
  --type 0xNN   the message type the info command is mapped to (default 0xAC)
  --json        the same as a JSON object
)";
    case Command::metrics:
      return R"(usage: mgmtctl metrics [--type 0xNN]

Prints the server's metrics in the Prometheus text format: per process its state,
restarts, RSS and uptime; for the server its connections, requests by type and their
latency histogram, and dropped stream readers. The same text the metrics plugin serves
over HTTP (GET /metrics).
  --type 0xNN   the message type the metrics plugin is mapped to (default 0xAE)
)";
    case Command::reload:
      return R"(usage: mgmtctl reload [--logs] [--type 0xNN]

Asks the server to re-read its configuration and apply it (processes added, removed or
changed; handlers remapped; limits and access rules), as SIGHUP does, and prints
"reloaded"; a refused reload changes nothing and its reason goes to stderr (exit 1).
  --logs        reopen the log files instead, as SIGUSR1 does: each is closed and opened
                again by its path at its next write (logrotate's postrotate); prints
                "log files reopened"
  --type 0xNN   the message type the reload command is mapped to (default 0xAD)
)";
    case Command::upgrade:
      return R"(usage: mgmtctl upgrade [--type 0xNN]

Asks the server to upgrade in place, as SIGUSR2 does: it runs the mgmtd binary it was
started as with --check on its configuration, and when that binary validates it and can
take over (plugin ABI, state image, backend handoff), execs it with the same pid. The
processes keep running with their pids, logs, counters and timers; every connection is
closed (`logs -f` and `events` reconnect and resume). Waits until the new program serves,
then prints it; a refused upgrade changes nothing and its reason goes to stderr (exit 1).
  --type 0xNN   the message type the upgrade command is mapped to (default 0xAF)
)";
    case Command::call:
      return R"(usage: mgmtctl call <TYPE> [JSON]

Sends any request to any message type (0xAD or 173): the JSON object is converted to the
MessagePack map it stands for (no JSON: an empty payload). The one answer is printed as
JSON, whatever its type; MessagePack byte strings become base64 strings. Exit 1 when the
answer's "err" is a non-empty string.
)";
    case Command::dial_stdio:
      return R"(usage: mgmtctl dial-stdio [--socket PATH | --runtime-dir DIR]

Connects to the server's socket (found as every command finds it), then copies stdin to
it and its answers to stdout until the server closes the connection; the end of stdin
half-closes it, and answers still in flight go out. What `mgmtctl --host ssh://HOST ...`
runs on HOST through ssh. Exit 1 with the reason on stderr when it cannot connect.
)";
    case Command::version:
    case Command::help:
    case Command::none:
      break;
  }
  return usage_text();
}

std::string version_text() { return "mgmtctl " MGMTCTL_VERSION "\n"; }

int run_cli(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  return run_cli(args, out, err, CliEnv{});
}

int run_cli(const std::vector<std::string>& args, std::ostream& out, std::ostream& err,
            const CliEnv& env) {
  ParseResult r = parse_args(args);
  if (!r.ok()) {
    err << "mgmtctl: " << r.error << "\ntry 'mgmtctl --help'\n";
    return kExitUsage;
  }
  switch (r.options.command) {
    case Command::help:
      out << command_help(r.options.help_topic);
      return kExitOk;
    case Command::version:
      out << version_text();
      return kExitOk;
    default:
      r.options.color = env.color;
      return run_command(r.options, out, err);
  }
}

}  // namespace mgmtctl
