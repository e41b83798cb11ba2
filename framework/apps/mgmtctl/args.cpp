#include "args.hpp"

#include <charconv>
#include <string_view>

#include "duration.hpp"
#include "format.hpp"
#include "mgmt/commands.hpp"
#include "remote.hpp"

namespace mgmtctl {

namespace {

std::optional<Command> command_named(std::string_view s) {
  if (s == "list") return Command::list;
  if (s == "status") return Command::status;
  if (s == "start") return Command::start;
  if (s == "stop") return Command::stop;
  if (s == "logs") return Command::logs;
  if (s == "events") return Command::events;
  if (s == "restart") return Command::restart;
  if (s == "signal") return Command::signal;
  if (s == "info") return Command::info;
  if (s == "reload") return Command::reload;
  if (s == "upgrade") return Command::upgrade;
  if (s == "call") return Command::call;
  if (s == "metrics") return Command::metrics;
  if (s == "help") return Command::help;
  if (s == "version") return Command::version;
  if (s == "dial-stdio") return Command::dial_stdio;
  return std::nullopt;
}

}  // namespace

std::string command_name(Command c) {
  switch (c) {
    case Command::list: return "list";
    case Command::status: return "status";
    case Command::start: return "start";
    case Command::stop: return "stop";
    case Command::logs: return "logs";
    case Command::events: return "events";
    case Command::restart: return "restart";
    case Command::signal: return "signal";
    case Command::info: return "info";
    case Command::reload: return "reload";
    case Command::upgrade: return "upgrade";
    case Command::call: return "call";
    case Command::metrics: return "metrics";
    case Command::help: return "help";
    case Command::version: return "version";
    case Command::dial_stdio: return "dial-stdio";
    case Command::none: break;
  }
  return "";
}

const std::vector<std::string>& command_names() {
  static const std::vector<std::string> names = {
      "list", "status", "start", "stop", "logs", "events", "restart", "signal",
      "info", "metrics", "reload", "upgrade", "call", "dial-stdio", "help", "version"};
  return names;
}

bool fleet_command(Command c) {
  return c == Command::list || c == Command::status || c == Command::start ||
         c == Command::stop || c == Command::restart || c == Command::signal ||
         c == Command::events;
}

std::string fleet_usage_error(Command c, std::size_t hosts) {
  return command_name(c) + " works on one host at a time, got " + std::to_string(hosts) +
         " hosts (list, status, start, stop, restart, signal and events take several)";
}

namespace {

// Which command a command-specific flag belongs to; global flags are not listed.
bool flag_applies(std::string_view flag, Command c) {
  if (flag == "json") {
    return c == Command::list || c == Command::status || c == Command::info ||
           c == Command::start || c == Command::stop || c == Command::restart ||
           c == Command::signal || c == Command::events || c == Command::logs;
  }
  if (flag == "ids") return c == Command::list;
  if (flag == "group") return c == Command::signal;
  if (flag == "logs") return c == Command::reload;
  if (flag == "stream" || flag == "follow" || flag == "since" || flag == "lines" ||
      flag == "timestamps") {
    return c == Command::logs;
  }
  if (flag == "process") return c == Command::events;
  if (flag == "type") {
    return c == Command::events || c == Command::restart || c == Command::signal ||
           c == Command::info || c == Command::metrics || c == Command::reload ||
           c == Command::upgrade;
  }
  return true;
}

bool takes_value(std::string_view flag) {
  return flag == "socket" || flag == "runtime-dir" || flag == "host" || flag == "hosts-file" ||
         flag == "stream" || flag == "since" ||
         flag == "lines" || flag == "process" || flag == "type";
}

bool is_bool_flag(std::string_view flag) {
  return flag == "help" || flag == "version" || flag == "json" || flag == "follow" ||
         flag == "group" || flag == "ids" || flag == "timestamps" || flag == "logs";
}

std::string quoted(std::string_view s) { return "\"" + std::string(s) + "\""; }

// The spelling used in messages: the long form with two dashes.
std::string dashed(std::string_view flag) { return "--" + std::string(flag); }

}  // namespace

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::string_view rest = s;
  while (true) {
    const auto comma = rest.find(',');
    std::string_view part = rest.substr(0, comma);
    const auto b = part.find_first_not_of(" \t");
    if (b != std::string_view::npos) {
      const auto e = part.find_last_not_of(" \t");
      out.emplace_back(part.substr(b, e - b + 1));
    }
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }
  return out;
}

std::optional<std::uint8_t> parse_type(const std::string& s) {
  std::string_view digits = s;
  int base = 10;
  if (digits.size() > 2 && digits[0] == '0' && (digits[1] == 'x' || digits[1] == 'X')) {
    digits.remove_prefix(2);
    base = 16;
  }
  unsigned v = 0;
  const auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v, base);
  if (digits.empty() || ec != std::errc() || p != digits.data() + digits.size() || v > 0xFF) {
    return std::nullopt;
  }
  return static_cast<std::uint8_t>(v);
}

ParseResult parse_args(int argc, const char* const* argv) {
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) args.emplace_back(argv[i]);
  return parse_args(args);
}

ParseResult parse_args(const std::vector<std::string>& args) {
  ParseResult r;
  Options& o = r.options;
  auto usage = [&r](std::string msg) {
    r.error = std::move(msg);
    return r;
  };

  bool want_help = false;
  bool want_version = false;
  bool positional_only = false;
  std::vector<std::string> positionals;
  std::vector<std::string> command_flags;  // checked against the command once it is known
  std::vector<std::string> type_values;    // --type: event types or a message type

  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (!positional_only && a == "--") {
      positional_only = true;
      continue;
    }
    if (positional_only || a.size() < 2 || a[0] != '-') {
      if (o.command == Command::none) {
        auto c = command_named(a);
        if (!c) return usage("unknown command " + quoted(a));
        o.command = *c;
      } else {
        positionals.push_back(a);
      }
      continue;
    }

    // Go's flag package takes -name and --name alike, with the value joined by '=' or next.
    std::string name = a.substr(a[1] == '-' ? 2 : 1);
    std::optional<std::string> inline_value;
    if (const auto eq = name.find('='); eq != std::string::npos) {
      inline_value = name.substr(eq + 1);
      name.resize(eq);
    }
    if (name == "h") name = "help";
    if (name == "f") name = "follow";
    if (name == "n") name = "lines";
    if (name == "t") name = "timestamps";

    if (is_bool_flag(name)) {
      bool v = true;
      if (inline_value) {
        if (*inline_value == "true" || *inline_value == "1") {
          v = true;
        } else if (*inline_value == "false" || *inline_value == "0") {
          v = false;
        } else {
          return usage("invalid value " + quoted(*inline_value) + " for " + dashed(name) +
                       ": want true or false");
        }
      }
      if (name == "help") want_help = v;
      if (name == "version") want_version = v;
      if (name == "json") o.json = v;
      if (name == "follow") o.follow = v;
      if (name == "group") o.group = v;
      if (name == "ids") o.ids_only = v;
      if (name == "timestamps") o.timestamps = v;
      if (name == "logs") o.reopen_logs = v;
      if (name == "json" || name == "follow" || name == "group" || name == "ids" ||
          name == "timestamps" || name == "logs") {
        command_flags.push_back(name);
      }
      continue;
    }
    if (!takes_value(name)) return usage("unknown flag " + quoted(a));

    std::string value;
    if (inline_value) {
      value = *inline_value;
    } else if (i + 1 < args.size()) {
      value = args[++i];
    } else {
      return usage("flag " + dashed(name) + " needs a value");
    }

    if (name == "socket" || name == "runtime-dir") {
      if (value.empty()) return usage("flag " + dashed(name) + " needs a non-empty path");
      (name == "socket" ? o.socket : o.runtime_dir) = value;
      continue;
    }
    if (name == "host") {
      const auto hosts = split_list(value);
      if (hosts.empty()) return usage("flag --host needs a host (ssh://[user@]host[:port][/path])");
      for (const auto& h : hosts) {
        std::string why;
        if (!parse_host(h, why)) return usage(why);
        o.hosts.push_back(h);
      }
      continue;
    }
    if (name == "hosts-file") {
      if (value.empty()) return usage("flag --hosts-file needs a non-empty path");
      o.hosts_file = value;
      continue;
    }
    command_flags.push_back(name);
    if (name == "stream") {
      if (value == "stdout") {
        o.stream = Stream::out;
      } else if (value == "stderr") {
        o.stream = Stream::err;
      } else if (value == "all" || value.empty()) {
        o.stream = Stream::all;
      } else {
        return usage("unknown --stream value " + quoted(value) + " (want stdout, stderr or all)");
      }
    } else if (name == "since") {
      auto d = parse_go_duration(value);
      if (!d) {
        return usage("invalid --since duration " + quoted(value) +
                     " (examples: 90s, 5m, 1h30m, 500ms)");
      }
      if (d->count() < 0) return usage("--since must not be negative, got " + quoted(value));
      o.since = *d;
    } else if (name == "lines") {
      std::int64_t n = -1;
      const auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
      if (ec != std::errc() || p != value.data() + value.size() || n < 0) {
        return usage("invalid --lines value " + quoted(value) + ": want a number >= 0");
      }
      o.lines = n;
    } else if (name == "process") {
      auto v = split_list(value);
      o.processes.insert(o.processes.end(), v.begin(), v.end());
    } else if (name == "type") {
      type_values.push_back(value);  // its meaning depends on the command
    }
  }

  if (o.command == Command::help) {  // `mgmtctl help [COMMAND]`
    if (!positionals.empty()) {
      const auto topic = command_named(positionals.front());
      if (!topic) return usage("no help for unknown command " + quoted(positionals.front()));
      o.help_topic = *topic == Command::help ? Command::none : *topic;
    }
    return r;
  }
  if (want_help) {  // `mgmtctl COMMAND --help`
    o.help_topic = o.command == Command::version ? Command::none : o.command;
    o.command = Command::help;
    return r;
  }
  if (want_version || o.command == Command::version) {
    o.command = Command::version;
    return r;
  }
  if (o.command == Command::none) return usage("missing command");
  if ((!o.hosts.empty() || o.hosts_file) && (o.socket || o.runtime_dir)) {
    return usage(std::string(o.hosts.empty() ? "--hosts-file" : "--host") +
                 " and --socket/--runtime-dir do not go together (a remote socket goes in the "
                 "URL: ssh://host/run/mgmt/manager.sock)");
  }
  if (o.command == Command::dial_stdio && (!o.hosts.empty() || o.hosts_file)) {
    return usage("dial-stdio bridges a local socket; --host and --hosts-file do not apply");
  }
  if (o.hosts.size() > 1 && !fleet_command(o.command)) {
    return usage(fleet_usage_error(o.command, o.hosts.size()));
  }

  const std::string cmd(command_name(o.command));
  for (const auto& f : command_flags) {
    if (!flag_applies(f, o.command)) return usage("flag " + dashed(f) + " does not apply to " + cmd);
  }

  switch (o.command) {
    case Command::list:
    case Command::events:
      if (!positionals.empty()) {
        return usage(cmd + " takes no arguments, got " + quoted(positionals.front()));
      }
      break;
    case Command::logs:
      if (positionals.empty()) return usage(cmd + " needs a process id");
      break;
    case Command::status:
      if (positionals.empty()) return usage(cmd + " needs a process id");
      if (positionals.size() > 1) {
        return usage(cmd + " takes one process id, got " + std::to_string(positionals.size()));
      }
      break;
    case Command::start:
    case Command::stop:
    case Command::restart:
      if (positionals.empty()) return usage(cmd + " needs at least one process id");
      break;
    case Command::info:
    case Command::metrics:
    case Command::reload:
    case Command::upgrade:
    case Command::dial_stdio:
      if (!positionals.empty()) {
        return usage(cmd + " takes no arguments, got " + quoted(positionals.front()));
      }
      break;
    case Command::signal: {
      if (positionals.size() != 2) {
        return usage("signal needs a signal name and a process id (signal [--group] HUP web)");
      }
      const int signo = mgmt::signal_number(positionals[0]);
      if (signo == 0) {
        return usage("unknown signal " + quoted(positionals[0]) +
                     " (examples: HUP, SIGTERM, USR1, 9)");
      }
      o.signal = mgmt::signal_name(signo);
      positionals.erase(positionals.begin());
      break;
    }
    case Command::call: {
      if (positionals.empty() || positionals.size() > 2) {
        return usage("call needs a message type and optionally a JSON object (call 0xAC '{}')");
      }
      o.msg_type = parse_type(positionals[0]);
      if (!o.msg_type) {
        return usage("invalid message type " + quoted(positionals[0]) +
                     " (want 0x00..0xff or 0..255)");
      }
      if (positionals.size() == 2) {
        if (auto e = json_object_error(positionals[1]); !e.empty()) return usage(e);
        o.json_payload = positionals[1];
      }
      positionals.clear();
      break;
    }
    default:
      break;
  }
  for (const auto& value : type_values) {
    if (o.command == Command::events) {
      auto v = split_list(value);
      o.types.insert(o.types.end(), v.begin(), v.end());
    } else {
      o.msg_type = parse_type(value);
      if (!o.msg_type) {
        return usage("invalid --type value " + quoted(value) + ": want a message type such as 0xAA");
      }
    }
  }
  // logs -f without --stream follows both streams (two connections), unlike the Go CLI.
  o.ids = std::move(positionals);
  return r;
}

}  // namespace mgmtctl
