// `ready:` and `health:` of a process entry: what tells mgmtd that a child is ready, and
// that it is still healthy. Parsed (and regexes compiled) when the config is read.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <regex>
#include <string>
#include <string_view>
#include <vector>

#include <yaml-cpp/yaml.h>

namespace mgmt::process {

// Event types of readiness and health.
inline constexpr std::string_view kEventReady = "process.ready";
inline constexpr std::string_view kEventUnhealthy = "process.unhealthy";
inline constexpr std::string_view kEventHealthy = "process.healthy";

// One check. Readiness takes every kind; health all but log, notify and fd.
struct Probe {
  enum class Kind { none, exec, tcp, http, file, log, notify, fd };
  Kind kind = Kind::none;
  std::vector<std::string> argv;  // exec: the command and its arguments
  std::string host;               // tcp, http: an IP address (localhost is 127.0.0.1)
  std::uint16_t port = 0;         // tcp, http
  std::string path;               // http: the request target ("/health"); file: absolute path
  std::string text;               // as configured: the address, URL, path or regex
  int fd = -1;                    // fd: the descriptor the child writes a newline to
  // log: compiled when the config is read (std::regex is not comparable: `text` is).
  std::shared_ptr<const std::regex> regex;
  std::chrono::milliseconds interval{1000};  // between two probes
  std::chrono::milliseconds timeout{5000};   // of one probe

  bool operator==(const Probe& o) const {
    return kind == o.kind && argv == o.argv && host == o.host && port == o.port &&
           path == o.path && text == o.text && fd == o.fd && interval == o.interval &&
           timeout == o.timeout;
  }
};

// "tcp 127.0.0.1:5432", "http http://127.0.0.1:8080/health", "exec pg_isready -q", ...
std::string describe(const Probe& p);

// `ready:`.
struct ReadyCheck {
  Probe probe;
  // Not ready this long after the fork: the start fails (the child is stopped, and
  // start_retries applies).
  std::chrono::milliseconds start_timeout{60000};

  bool operator==(const ReadyCheck&) const = default;
};

// `health:`.
struct HealthCheck {
  Probe probe;  // kind none with a watchdog only
  std::uint32_t retries = 3;  // failures in a row that make it unhealthy
  // A notify process must send WATCHDOG=1 at least this often (0: no watchdog).
  std::chrono::milliseconds watchdog{0};
  enum class Action { restart, log, signal };
  Action on_unhealthy = Action::restart;
  int signal = 0;  // Action::signal

  bool operator==(const HealthCheck&) const = default;
};

// Read `ready:` / `health:`. Throw std::runtime_error "<file>:<line>:<column>: ..." like
// the rest of the process config; `file` names the config (relative paths are taken from
// its folder).
ReadyCheck parse_ready(const YAML::Node& n, const std::string& file);
HealthCheck parse_health(const YAML::Node& n, const std::string& file);

}  // namespace mgmt::process
