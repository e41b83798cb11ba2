// Extra commands (message types 0xAA..0xAF): the payloads of the stock ones (restart,
// signal, info), their MessagePack codec, and helpers for writing command plugins.
//
// Wire conventions for extra commands
// - Requests and answers are MessagePack maps keyed by short strings, decoded as tolerantly
//   as the protocol's own payloads (messages.hpp): unknown keys are ignored, missing keys
//   keep their defaults, any integer width is accepted when the value fits.
// - A command answers with one frame of the request's own type (restart called on 0xAA
//   answers on 0xAA), whose map always carries `err`: a str, "" on success, else what went
//   wrong.
// - A request that does not decode, and a type that no plugin serves, get the protocol's
//   generic StatusResponse (0xA3) with `err` set, like any other request. So a client that
//   receives 0xA3 knows that the command itself did not run.
// Which type serves which command is mgmt.yaml's business (`commands:`); the stock
// configuration maps them as the k*CommandType constants say, and mgmtctl defaults to those.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mgmt/handler.hpp"
#include "mgmt/messages.hpp"

namespace mgmt {

// The stock mapping (config/mgmt.yaml).
inline constexpr std::uint8_t kRestartCommandType = 0xAA;
inline constexpr std::uint8_t kSignalCommandType = 0xAB;
inline constexpr std::uint8_t kInfoCommandType = 0xAC;
inline constexpr std::uint8_t kReloadCommandType = 0xAD;
inline constexpr std::uint8_t kUpgradeCommandType = 0xAF;

// restart: stops the process (waiting out its stop timeout), then starts it. A process that
// is not running is simply started. Request {`id`: str}; answer {`entry`: Entry after the
// start, `err`: str} -- the same maps as IdRequest and StatusResponse, on the command's type.
using RestartRequest = IdRequest;
using RestartResponse = StatusResponse;

// signal: sends a signal to the process, or to its whole process group.
struct SignalRequest {
  std::string id;      // `id`
  std::string sig;     // `sig`: a name, "SIGHUP" or "HUP" (any case), or a number, "1"
  bool group = false;  // `group`: the process group instead of the process alone
};
// Answer {`entry`: Entry after the signal was sent, `err`: str}.
using SignalResponse = StatusResponse;

// info: facts about the server. Request: an empty map (or no payload).
struct InfoRequest {};
struct PluginReport {
  std::uint8_t type = 0;  // `type`: the message type served; 0 for the backend
  std::string name;       // `name`
  std::string kind;       // `kind`: "handler", "command" or "backend"
  std::string version;    // `version`: the plugin's own semantic version
  std::string path;       // `path`: the shared object it was loaded from
};
struct InfoResponse {
  std::string version;        // `version`: mgmtd's version
  std::uint32_t abi = 0;      // `abi`: the plugin ABI it loads (kAbiVersion)
  std::int64_t started_at = 0;  // `started_at`: unix nanos
  std::int64_t uptime = 0;    // `uptime`: nanoseconds since started_at, as the server saw it
  std::int64_t pid = 0;       // `pid`: the server's process id
  std::string config;         // `config`: path of mgmt.yaml
  std::vector<PluginReport> plugins;  // `plugins`: backend first, then by type
  std::string err;            // `err`
  // In-place upgrades (see the `upgrade` command): when the running program took over
  // (= started_at before any), and how many programs have taken over since started_at.
  std::int64_t upgraded_at = 0;  // `upgraded_at`: unix nanos
  std::uint32_t upgrades = 0;    // `upgrades`
};

// upgrade: checks the mgmtd binary on disk (`--check` of the running configuration, a
// compatible plugin ABI, state image and backend handoff) and execs it in place: same pid,
// the processes keep running. Request: an empty map. Answer {`err`, `binary`: the program
// that takes over, `upgrades`: the count before this one}; sent before the handover, after
// which the connection closes. A client waits for `info` to report a higher count.
struct UpgradeResponse {
  std::string binary;          // `binary`
  std::uint32_t upgrades = 0;  // `upgrades`
  std::string err;             // `err`
};

// reload: `what` is "" or "config" (re-read mgmt.yaml and apply it; the same as SIGHUP)
// or "logs" (close every log file, each opened again by its path at its next write; the
// same as SIGUSR1, for logrotate). Answer {`err`, `done`: "config" or "logs", what was
// done}. A reload command that predates `what` ignores it, re-reads the configuration and
// answers without `done`.
struct ReloadRequest {
  std::string what;  // `what`
};
struct ReloadResponse {
  std::string err;   // `err`
  std::string done;  // `done`
};

std::string encode(const SignalRequest& m);
std::string encode(const InfoRequest& m);
std::string encode(const InfoResponse& m);
std::string encode(const UpgradeResponse& m);
std::string encode(const ReloadRequest& m);
std::string encode(const ReloadResponse& m);
// Empty on success, else what was wrong (see messages.hpp).
std::string decode(std::string_view payload, SignalRequest& out);
std::string decode(std::string_view payload, InfoRequest& out);
std::string decode(std::string_view payload, InfoResponse& out);
std::string decode(std::string_view payload, UpgradeResponse& out);
std::string decode(std::string_view payload, ReloadRequest& out);
std::string decode(std::string_view payload, ReloadResponse& out);

// {`err`: err}: the smallest valid answer of a command, for failures.
std::string command_error(std::string_view err);

// Sends a command's answer on the request's own type.
inline void reply_command(Exchange& ex, std::string payload) {
  ex.reply(ex.type(), std::move(payload));
}

// "SIGHUP", "HUP", "hup" and "1" all give 1 (SIGHUP); "RTMIN+2" and "SIGRTMAX" work too.
// 0 when the text names no signal.
int signal_number(std::string_view name) noexcept;
// "SIGHUP", "SIGRTMIN+2"; "signal 99" for a number without a name.
std::string signal_name(int signo);

}  // namespace mgmt
