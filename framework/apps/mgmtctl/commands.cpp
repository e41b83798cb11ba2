#include "commands.hpp"

#include <chrono>
#include <deque>
#include <cstdlib>
#include <fstream>
#include <ostream>
#include <sstream>
#include <stdexcept>
#include <sys/socket.h>
#include <unistd.h>
#include <thread>

#include <nlohmann/json.hpp>

#include "mgmt/client.hpp"
#include "mgmt/commands.hpp"
#include "mgmt/messages.hpp"
#include "fleet.hpp"
#include "follow.hpp"
#include "logs_view.hpp"
#include "remote.hpp"

namespace mgmtctl {

namespace {

using mgmt::MsgType;
using mgmt::to_byte;

// The server answered with a StatusResponse carrying `err`: shown to the user as is.
struct ServerError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] void protocol_error(const mgmt::Client& c, const std::string& what) {
  throw std::runtime_error("protocol error from " + c.path() + ": " + what);
}

// Decodes `f` as the reply type `want`. An error reply (a StatusResponse with err set, the
// protocol's answer to anything it cannot serve) becomes a ServerError.
template <class T>
T expect(const mgmt::Client& c, const mgmt::Frame& f, MsgType want) {
  if (f.header.type == to_byte(want)) {
    T v;
    if (auto e = mgmt::decode(f.payload, v); !e.empty()) {
      protocol_error(c, "cannot decode " + mgmt::type_hex(f.header.type) + " payload: " + e);
    }
    return v;
  }
  if (f.header.type == to_byte(MsgType::StatusResponse)) {
    mgmt::StatusResponse s;
    if (mgmt::decode(f.payload, s).empty() && !s.err.empty()) throw ServerError(s.err);
  }
  protocol_error(c, "got message type " + mgmt::type_hex(f.header.type) + " where " +
                        mgmt::type_hex(to_byte(want)) + " was expected");
}

// An extra command's answer: a frame of the request's own type (decoded as T), or the
// protocol's generic error reply (0xA3, e.g. "unknown request type 0xaa" when the server
// maps nothing there), which becomes a ServerError.
template <class T>
T expect_command(const mgmt::Client& c, const mgmt::Frame& f, std::uint8_t type) {
  if (f.header.type == type) {
    T v;
    if (auto e = mgmt::decode(f.payload, v); !e.empty()) {
      protocol_error(c, "cannot decode the " + mgmt::type_hex(type) + " answer: " + e);
    }
    return v;
  }
  return expect<T>(c, f, static_cast<MsgType>(type));
}

// What to tell the user about `e`, a transport or protocol failure on `conn`: the ssh
// step that failed when it was the transport's doing, else the failure itself.
std::string failure_text(Connection& conn, const std::exception& e) {
  if (auto t = conn.transport_error(); !t.empty()) return t;
  return e.what();
}

int cmd_list(mgmt::Client& c, const Options& o, std::ostream& out) {
  const auto f = c.call(to_byte(MsgType::ListRequest), {});
  const auto resp = expect<mgmt::ListResponse>(c, f, MsgType::ListResponse);
  if (o.ids_only) {
    for (const auto& e : resp.entries) out << e.id << '\n';
  } else {
    out << (o.json ? format_list_json(resp.entries) : format_table(resp.entries, o.color));
  }
  return kExitOk;
}

int cmd_status(mgmt::Client& c, const Options& o, std::ostream& out, std::ostream& err,
               TimeZone tz) {
  const auto f = c.call(to_byte(MsgType::StatusRequest), mgmt::encode(mgmt::StatusRequest{o.ids[0]}));
  const auto resp = expect<mgmt::StatusResponse>(c, f, MsgType::StatusResponse);
  if (!resp.err.empty()) {
    err << resp.err << '\n';
    return kExitFailure;
  }
  out << (o.json ? format_status_json(resp.entry) : format_status(resp.entry, tz, o.color));
  return kExitOk;
}

// start and stop: one request per id, on one connection; every id gets a line.
int cmd_start_stop(Connection& conn, const Options& o, std::ostream& out, std::ostream& err) {
  mgmt::Client& c = conn.client();
  const bool start = o.command == Command::start;
  const auto type = to_byte(start ? MsgType::StartRequest : MsgType::StopRequest);
  int rc = kExitOk;
  std::vector<Outcome> outcomes;  // --json: printed at the end
  for (const auto& id : o.ids) {
    try {
      const auto f = c.call(type, mgmt::encode(mgmt::IdRequest{id}));
      const auto resp = expect<mgmt::StatusResponse>(c, f, MsgType::StatusResponse);
      if (o.json) outcomes.push_back({id, resp.err, resp.entry, {}, false});
      if (!resp.err.empty()) {
        if (!o.json) err << id << ": " << resp.err << '\n';
        rc = kExitFailure;
        continue;
      }
      if (!o.json) {
        out << (start ? "started " : "stopped ") << id << '\n';
        out.flush();
      }
    } catch (const std::exception& e) {
      // The connection is unusable after a transport or protocol error: stop here.
      const std::string why = failure_text(conn, e);
      if (o.json) {
        outcomes.push_back({id, why, std::nullopt, {}, false});
        out << format_outcomes_json(outcomes);
      } else {
        err << id << ": " << why << '\n';
      }
      return kExitFailure;
    }
  }
  if (o.json) out << format_outcomes_json(outcomes);
  return rc;
}

// restart: one request per id, like stop.
int cmd_restart(Connection& conn, const Options& o, std::ostream& out, std::ostream& err) {
  mgmt::Client& c = conn.client();
  const auto type = o.msg_type.value_or(mgmt::kRestartCommandType);
  int rc = kExitOk;
  std::vector<Outcome> outcomes;  // --json: printed at the end
  for (const auto& id : o.ids) {
    try {
      const auto f = c.call(type, mgmt::encode(mgmt::RestartRequest{id}));
      const auto resp = expect_command<mgmt::RestartResponse>(c, f, type);
      if (!resp.err.empty()) throw ServerError(resp.err);
      if (o.json) {
        outcomes.push_back({id, {}, resp.entry, {}, false});
      } else {
        out << "restarted " << id << '\n';
        out.flush();
      }
    } catch (const ServerError& e) {
      if (o.json) {
        outcomes.push_back({id, e.what(), std::nullopt, {}, false});
      } else {
        err << id << ": " << e.what() << '\n';
      }
      rc = kExitFailure;
    } catch (const std::exception& e) {
      const std::string why = failure_text(conn, e);
      if (o.json) {
        outcomes.push_back({id, why, std::nullopt, {}, false});
        out << format_outcomes_json(outcomes);
      } else {
        err << id << ": " << why << '\n';
      }
      return kExitFailure;
    }
  }
  if (o.json) out << format_outcomes_json(outcomes);
  return rc;
}

int cmd_signal(mgmt::Client& c, const Options& o, std::ostream& out) {
  const auto type = o.msg_type.value_or(mgmt::kSignalCommandType);
  const auto f = c.call(type, mgmt::encode(mgmt::SignalRequest{o.ids[0], o.signal, o.group}));
  const auto resp = expect_command<mgmt::SignalResponse>(c, f, type);
  if (o.json) {
    out << format_signal_json({o.ids[0], resp.err, resp.entry, o.signal, o.group});
    return resp.err.empty() ? kExitOk : kExitFailure;
  }
  if (!resp.err.empty()) throw ServerError(o.ids[0] + ": " + resp.err);
  out << "sent " << o.signal << " to " << (o.group ? "the process group of " : "") << o.ids[0]
      << '\n';
  return kExitOk;
}

int cmd_reload(mgmt::Client& c, const Options& o, std::ostream& out, std::ostream& err) {
  const auto type = o.msg_type.value_or(mgmt::kReloadCommandType);
  mgmt::ReloadRequest req;
  if (o.reopen_logs) req.what = "logs";
  // A plain reload sends an empty map, as before `what` existed.
  const auto f = c.call(type, req.what.empty() ? mgmt::encode(mgmt::InfoRequest{})
                                               : mgmt::encode(req));
  const auto resp = expect_command<mgmt::ReloadResponse>(c, f, type);
  if (o.reopen_logs) {
    if (resp.done != "logs") {
      // A reload command from before `what`: it re-read the configuration instead.
      err << "this server's reload command cannot reopen log files (it re-read the "
             "configuration instead"
          << (resp.err.empty() ? "" : ", and refused: " + resp.err)
          << "); send SIGUSR1 to mgmtd\n";
      return kExitFailure;
    }
    if (!resp.err.empty()) {
      err << "reopening the log files failed: " << resp.err << '\n';
      return kExitFailure;
    }
    out << "log files reopened\n";
    return kExitOk;
  }
  if (!resp.err.empty()) {
    err << "reload refused, the running configuration stays: " << resp.err << '\n';
    return kExitFailure;
  }
  out << "reloaded\n";
  return kExitOk;
}

// upgrade: the answer comes once the new binary passed its check; then the connection
// closes and the new program (same pid) serves on the same socket. Waits for it to report
// the higher upgrade count.
int cmd_upgrade(Connection& conn, const HostSpec& host, const Options& o, std::ostream& out,
                std::ostream& err) {
  const auto type = o.msg_type.value_or(mgmt::kUpgradeCommandType);
  mgmt::Client& c = conn.client();
  const auto f = c.call(type, mgmt::encode(mgmt::InfoRequest{}));  // an empty map
  const auto resp = expect_command<mgmt::UpgradeResponse>(c, f, type);
  if (!resp.err.empty()) {
    err << "upgrade refused, nothing changed: " << resp.err << '\n';
    return kExitFailure;
  }
  out << "upgrading in place to " << (resp.binary.empty() ? "the binary on disk" : resp.binary)
      << "\n";
  out.flush();
  // A minute, as mgmtd gives the new binary's check: loading the plugins is most of it.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  std::string last;
  while (std::chrono::steady_clock::now() < deadline) {
    try {
      Connection again = Connection::open(host);
      const auto info_type = mgmt::kInfoCommandType;
      const auto g = again.client().call(info_type, mgmt::encode(mgmt::InfoRequest{}));
      const auto info = expect_command<mgmt::InfoResponse>(again.client(), g, info_type);
      if (info.err.empty() && info.upgrades > resp.upgrades) {
        out << "upgraded: mgmtd " << info.version << ", pid " << info.pid << ", upgrade "
            << info.upgrades << "\n";
        return kExitOk;
      }
    } catch (const std::exception& e) {
      last = e.what();  // not serving yet (the exec, the new program's start)
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  err << "mgmtctl: the new program did not answer within 60 s" << (last.empty() ? "" : ": " + last)
      << '\n';
  return kExitFailure;
}

int cmd_info(mgmt::Client& c, const Options& o, std::ostream& out, TimeZone tz) {
  const auto type = o.msg_type.value_or(mgmt::kInfoCommandType);
  const auto f = c.call(type, mgmt::encode(mgmt::InfoRequest{}));
  const auto resp = expect_command<mgmt::InfoResponse>(c, f, type);
  if (!resp.err.empty()) throw ServerError(resp.err);
  out << (o.json ? format_info_json(resp) : format_info(resp, tz));
  return kExitOk;
}

// call: any request, any answer, as JSON. Exit 1 when the answer's `err` is a non-empty
// string (the protocol's and the extra commands' convention), 0 otherwise.
int cmd_call(mgmt::Client& c, const Options& o, std::ostream& out) {
  const std::string payload = o.json_payload.empty() ? std::string() : json_to_msgpack(o.json_payload);
  const auto f = c.call(*o.msg_type, payload);
  std::string text;
  try {
    text = msgpack_to_json(f.payload);
  } catch (const std::invalid_argument& e) {
    protocol_error(c, mgmt::type_hex(f.header.type) + " answer: " + e.what());
  }
  out << text;
  const auto j = nlohmann::json::from_msgpack(f.payload, /*strict=*/true, /*allow_exceptions=*/false);
  const bool failed = j.is_object() && j.contains("err") && j["err"].is_string() &&
                      !j["err"].get_ref<const std::string&>().empty();
  return failed ? kExitFailure : kExitOk;
}

// metrics: the plugin's {err, text}; the text is printed as it is.
int cmd_metrics(mgmt::Client& c, const Options& o, std::ostream& out) {
  const auto type = o.msg_type.value_or(kMetricsCommandType);
  const auto f = c.call(type, std::string("\x80", 1));  // an empty map
  if (f.header.type != type) {
    expect<mgmt::StatusResponse>(c, f, static_cast<MsgType>(type));  // throws the error
  }
  const auto j = nlohmann::json::from_msgpack(f.payload, /*strict=*/true, /*allow_exceptions=*/false);
  if (!j.is_object()) protocol_error(c, "the " + mgmt::type_hex(type) + " answer is not a map");
  if (j.contains("err") && j["err"].is_string() && !j["err"].get_ref<const std::string&>().empty()) {
    throw ServerError(j["err"].get<std::string>());
  }
  if (!j.contains("text") || !j["text"].is_string()) {
    protocol_error(c, "the " + mgmt::type_hex(type) + " answer has no text: is the metrics plugin mapped there?");
  }
  out << j["text"].get_ref<const std::string&>();
  return kExitOk;
}

std::int64_t since_to_unix_nanos(std::chrono::nanoseconds since) {
  const auto now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  const auto sn = now - since.count();
  return sn > 0 ? sn : 1;  // 0 would mean "no filter"; anything before 1970 is all of it
}

// A stream the server closed without its end: mgmtd upgrading in place (the socket stays
// open, so connecting succeeds, and the next program answers within moments) or stopping
// (its socket is removed, or refuses connections). Returns a connection to a server that
// answers on it again, waiting up to a minute; nullopt at once when nothing can be
// connected to (through ssh: when the remote side cannot connect either).
std::optional<Connection> reconnect(const HostSpec& host) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    std::optional<Connection> probe;
    try {
      probe.emplace(Connection::open(host));
    } catch (const std::exception&) {
      return std::nullopt;  // nobody listens there any more: the server has stopped
    }
    try {
      // Answering a request proves it serves (a connection alone may only sit in the
      // backlog of a socket nobody accepts on any more).
      const timeval patience{5, 0};
      ::setsockopt(probe->client().fd(), SOL_SOCKET, SO_RCVTIMEO, &patience, sizeof patience);
      (void)probe->client().call(to_byte(MsgType::ListRequest), "");
      return Connection::open(host);
    } catch (const std::exception&) {
      if (!probe->transport_error().empty()) return std::nullopt;  // no mgmtd over there
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return std::nullopt;
}

int cmd_logs(Connection& conn, const HostSpec& host, const Options& o, std::ostream& out,
             std::ostream& err) {
  mgmt::LogsRequest req;
  req.ln = o.lines;
  if (o.since) req.sn = since_to_unix_nanos(*o.since);
  std::vector<LogSource> sources;  // logs_view.hpp
  for (const auto& id : o.ids) {
    if (o.stream != Stream::err) sources.push_back({id, 0});
    if (o.stream != Stream::out) sources.push_back({id, 1});
  }
  LogsLook look;
  look.timestamps = o.timestamps;
  look.json = o.json;
  look.prefix = o.ids.size() > 1;

  if (!o.follow) {
    auto e = print_log_snapshots(conn.client(), req, sources, look, out, err);
    if (!e.empty()) throw ServerError(e);
    return kExitOk;
  }

  // Each stream on its own connection (through ssh, an ssh each); after an in-place
  // upgrade, a new one where the stream resumes.
  std::deque<Connection> extra;
  int rc = 0;
  try {
    rc = follow_log_sources(sources, req, look,
                            [&](std::size_t i, bool again) -> mgmt::Client* {
                              if (!again) {
                                if (i == 0) return &conn.client();
                                extra.push_back(Connection::open(host));
                                return &extra.back().client();
                              }
                              auto next = reconnect(host);
                              if (!next) return nullptr;
                              extra.push_back(std::move(*next));
                              return &extra.back().client();
                            },
                            out, err);
  } catch (const std::exception& e) {
    for (auto& c : extra) {
      if (auto t = c.transport_error(); !t.empty()) throw std::runtime_error(t);
    }
    throw;
  }
  for (auto& c : extra) {
    if (auto t = c.transport_error(); !t.empty()) throw std::runtime_error(t);
  }
  return rc;
}

int cmd_events(Connection& conn, const HostSpec& host, const Options& o, std::ostream& out,
               TimeZone tz) {
  mgmt::EventsSubscribe sub{o.processes, o.types};
  const std::int64_t subscribed_at = std::chrono::duration_cast<std::chrono::nanoseconds>(
                                         std::chrono::system_clock::now().time_since_epoch())
                                         .count();
  conn.client().send(to_byte(MsgType::EventsSubscribe), mgmt::encode(sub));
  // The number of the last event received (the `n` extension): a subscription the server
  // closes (an in-place upgrade) resumes after it, so nothing is repeated or lost; before
  // any event it resumes with the events since it subscribed (`since`).
  std::uint64_t last = 0;
  bool numbered = true;  // until an event without a number says otherwise (a Go server)
  std::optional<Connection> again;
  mgmt::Client* cur = &conn.client();
  while (true) {
    std::optional<mgmt::Frame> f;
    try {
      f = cur->receive();
    } catch (const std::exception&) {
      if (!numbered) throw;
    }
    if (!f) {
      if (!numbered) break;
      if (!(again ? *again : conn).transport_error().empty()) break;  // ssh, or no mgmtd there
      auto next = reconnect(host);
      if (!next) break;
      again.reset();
      again.emplace(std::move(*next));
      cur = &again->client();
      sub.after = last;
      sub.since = last == 0 ? subscribed_at : 0;
      cur->send(to_byte(MsgType::EventsSubscribe), mgmt::encode(sub));
      continue;
    }
    const auto ev = expect<mgmt::EventsStream>(*cur, *f, MsgType::EventsStream);
    if (ev.n > 0) last = ev.n;
    numbered = ev.n > 0;
    out << (o.json ? format_event_json(ev) : format_event_line(ev, tz));
    out.flush();
  }
  return kExitOk;
}

}  // namespace

std::string socket_path(const Options& o) {
  if (o.socket) return *o.socket;
  return mgmt::discover_socket(o.runtime_dir);
}

int run_on_host(const HostSpec& host, const Options& o, std::ostream& out, std::ostream& err,
                TimeZone tz) {
  try {
    Connection conn = Connection::open(host);
    int rc = kExitFailure;
    try {
      mgmt::Client& c = conn.client();
      switch (o.command) {
        case Command::list: rc = cmd_list(c, o, out); break;
        case Command::status: rc = cmd_status(c, o, out, err, tz); break;
        case Command::start:
        case Command::stop: rc = cmd_start_stop(conn, o, out, err); break;
        case Command::logs: rc = cmd_logs(conn, host, o, out, err); break;
        case Command::events: rc = cmd_events(conn, host, o, out, tz); break;
        case Command::restart: rc = cmd_restart(conn, o, out, err); break;
        case Command::signal: rc = cmd_signal(c, o, out); break;
        case Command::info: rc = cmd_info(c, o, out, tz); break;
        case Command::reload: rc = cmd_reload(c, o, out, err); break;
        case Command::upgrade: rc = cmd_upgrade(conn, host, o, out, err); break;
        case Command::call: rc = cmd_call(c, o, out); break;
        case Command::metrics: rc = cmd_metrics(c, o, out); break;
        default:
          err << "mgmtctl: internal error: no server command to run\n";
          return kExitFailure;
      }
    } catch (const ServerError&) {
      throw;
    } catch (const std::exception& e) {
      throw std::runtime_error(failure_text(conn, e));
    }
    // A stream that ended cleanly (events, logs -f) may have ended because ssh failed:
    // through ssh, the end of the server and the end of the transport look alike.
    if (rc == kExitOk) {
      if (auto t = conn.transport_error(); !t.empty()) {
        err << "mgmtctl: " << t << '\n';
        return kExitFailure;
      }
    }
    return rc;
  } catch (const ServerError& e) {
    err << e.what() << '\n';
  } catch (const std::exception& e) {
    err << "mgmtctl: " << e.what() << '\n';
  }
  return kExitFailure;
}

int run_command(const Options& o, std::ostream& out, std::ostream& err, TimeZone tz) {
  if (o.command == Command::dial_stdio) {
    std::string socket;
    try {
      socket = socket_path(o);
    } catch (const std::exception& e) {
      err << "mgmtctl: " << e.what() << '\n';
      return kExitFailure;
    }
    return dial_stdio(socket, err);
  }

  // Where to go: --host and --hosts-file, else $MGMT_HOST unless --socket or --runtime-dir
  // say otherwise, else the local socket.
  std::vector<std::string> texts = o.hosts;
  std::string source = "--host";
  if (o.hosts_file) {
    std::ifstream in(*o.hosts_file);
    if (!in) {
      err << "mgmtctl: cannot read hosts file " << *o.hosts_file << "\n";
      return kExitUsage;
    }
    std::stringstream ss;
    ss << in.rdbuf();
    const auto more = parse_hosts_file(ss.str());
    if (more.empty() && texts.empty()) {
      err << "mgmtctl: hosts file " << *o.hosts_file << " names no host\n";
      return kExitUsage;
    }
    texts.insert(texts.end(), more.begin(), more.end());
    source = "--hosts-file " + *o.hosts_file;
  }
  if (texts.empty() && !o.socket && !o.runtime_dir) {
    if (const char* env = std::getenv("MGMT_HOST"); env != nullptr && *env != '\0') {
      texts = split_list(env);
      source = "MGMT_HOST";
    }
  }
  std::vector<HostSpec> hosts;
  for (const auto& t : texts) {
    std::string why;
    auto h = parse_host(t, why);
    if (!h) {
      err << "mgmtctl: " << source << ": " << why << "\ntry 'mgmtctl --help'\n";
      return kExitUsage;
    }
    hosts.push_back(std::move(*h));
  }
  if (hosts.size() > 1) {
    if (!fleet_command(o.command)) {
      err << "mgmtctl: " << fleet_usage_error(o.command, hosts.size())
          << "\ntry 'mgmtctl --help'\n";
      return kExitUsage;
    }
    return run_fleet(hosts, o, out, err, tz);  // fleet.hpp
  }
  if (hosts.empty()) {
    HostSpec local;
    try {
      local.path = socket_path(o);
    } catch (const std::exception& e) {
      err << "mgmtctl: " << e.what() << '\n';
      return kExitFailure;
    }
    hosts.push_back(std::move(local));
  }
  return run_on_host(hosts.front(), o, out, err, tz);
}

}  // namespace mgmtctl
