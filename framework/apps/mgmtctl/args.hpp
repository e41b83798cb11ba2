// Command-line parsing for mgmtctl. Hand-written and small: the grammar is a handful of
// flags, and the Go CLI's spellings (-flag, --flag, --flag=value) must all keep working.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace mgmtctl {

enum class Command {
  none, help, version, list, status, start, stop, logs, events,
  // Extra commands (types 0xAA..0xAF; which one is mgmt.yaml's business).
  restart, signal, info, reload, call, metrics, upgrade,
  // Bridges stdin/stdout to the local socket: what `--host ssh://` runs on the far side.
  dial_stdio
};

// Which log stream(s) `logs` shows.
enum class Stream { out, err, all };

struct Options {
  // Global.
  std::optional<std::string> socket;       // --socket PATH: wins over discovery
  std::optional<std::string> runtime_dir;  // --runtime-dir DIR
  // --host URL (repeatable, each a comma list): ssh://[user@]host[:port][/sock] or
  // unix:///sock, checked here; more than one makes a fleet command (fleet.hpp).
  std::vector<std::string> hosts;
  std::optional<std::string> hosts_file;  // --hosts-file FILE: more hosts, read at run time
  Command command = Command::none;
  // help: the command whose help was asked for (`mgmtctl status --help`, `mgmtctl help
  // status`); none for the general usage.
  Command help_topic = Command::none;
  // list, status, info, start, stop, restart, signal, events, logs: JSON output.
  bool json = false;
  // list --ids: the process ids alone, one per line (for scripts and shell completion).
  bool ids_only = false;
  // status, signal: one id; start, stop, restart, logs: one or more.
  std::vector<std::string> ids;
  // logs.
  Stream stream = Stream::all;
  bool follow = false;
  std::optional<std::chrono::nanoseconds> since;  // --since DUR
  std::int64_t lines = 0;                          // -n/--lines N, 0 = all
  bool timestamps = false;                         // -t/--timestamps
  // events.
  std::vector<std::string> processes;  // --process a,b
  std::vector<std::string> types;      // --type t1,t2
  // restart, signal, info, metrics: --type 0xNN, the message type the server maps the
  // command to (unset: the stock 0xAA, 0xAB, 0xAC, 0xAE). call: the TYPE argument.
  std::optional<std::uint8_t> msg_type;
  // signal.
  std::string signal;  // canonical name, "SIGHUP"
  bool group = false;  // --group
  bool reopen_logs = false;  // reload --logs: reopen the log files instead
  // call: the request as JSON text ("" = no payload).
  std::string json_payload;
  // Not a flag: set by the caller when stdout is a terminal and NO_COLOR is unset; colours
  // the state in list and status.
  bool color = false;
};

// Either options or a usage error (one line, without the "try --help" hint).
struct ParseResult {
  Options options;
  std::string error;
  bool ok() const noexcept { return error.empty(); }
};

// `args` excludes the program name.
ParseResult parse_args(const std::vector<std::string>& args);
ParseResult parse_args(int argc, const char* const* argv);

// Splits "a, b,,c" into {"a","b","c"}: blanks dropped, as the Go CLI does.
std::vector<std::string> split_list(const std::string& s);

// "0xAB", "0xab" or "171"; nullopt for anything else or a value over 0xff.
std::optional<std::uint8_t> parse_type(const std::string& s);

// Whether the command runs on several hosts at once (list, status, start, stop, restart,
// signal, events); the others take one host.
bool fleet_command(Command c);
// The usage error for `c` given `hosts` (> 1) hosts.
std::string fleet_usage_error(Command c, std::size_t hosts);

// The command's name as typed ("list"); "" for none.
std::string command_name(Command c);
// Every command name, in the order of the usage text (for help and completion).
const std::vector<std::string>& command_names();

}  // namespace mgmtctl
