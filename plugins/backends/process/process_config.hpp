// The process backend's `config:` block: what to supervise and how, validated up front.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "mgmt/units.hpp"

namespace mgmt::process {

enum class RestartPolicy { never, on_failure, always };

std::string_view to_string(RestartPolicy p) noexcept;

inline constexpr std::size_t kDefaultLogBuffer = std::size_t{1} << 20;
inline constexpr std::uint64_t kDefaultLogMaxSize = std::uint64_t{10} << 20;
inline constexpr std::uint32_t kDefaultLogMaxFiles = 5;

// What to do when a process group's resident memory passes `max_rss`.
struct OnExceed {
  enum class Action { kill, signal, log };
  Action action = Action::kill;
  int signal = 0;  // for Action::signal

  bool operator==(const OnExceed&) const = default;
};

// `resources:` of a process.
struct Resources {
  std::uint64_t max_rss = 0;  // bytes; 0 = no limit
  OnExceed on_exceed;
  std::chrono::milliseconds sample_interval{1000};

  bool operator==(const Resources&) const = default;
};

// Per-process log files beside the ring buffers (`log_file_dir` and friends).
struct LogFiles {
  std::string dir;  // "" = no files
  std::uint64_t max_size = kDefaultLogMaxSize;  // rotate when a write would pass this
  std::uint32_t max_files = kDefaultLogMaxFiles;  // rotated files kept besides the live one

  bool operator==(const LogFiles&) const = default;
};

// One supervised program, as a `processes:` entry describes it.
struct ProcessSpec {
  std::string id;
  std::string name;     // defaults to id
  std::string command;  // searched in PATH when it has no '/'
  std::vector<std::string> args;
  std::vector<std::pair<std::string, std::string>> env;  // added to the server's environment
  std::string work_dir;                                   // "" = the server's
  RestartPolicy restart = RestartPolicy::on_failure;
  std::uint32_t max_restarts = 0;  // consecutive restarts before giving up; 0 = unlimited
  std::chrono::milliseconds restart_backoff{1000};
  std::chrono::milliseconds restart_backoff_max{30000};
  // A run at least this long resets the consecutive-restart count (and so the backoff).
  std::chrono::milliseconds restart_reset_after{10000};
  std::chrono::milliseconds stop_timeout{10000};
  bool autostart = true;
  std::size_t log_buffer = kDefaultLogBuffer;  // bytes per stream
  LogFiles log_files;
  Resources resources;
  std::vector<std::string> depends_on;  // ids; validated, no cycles

  // Every field, in order (a reordered args, env or depends_on is a change). A live reload
  // (ProcessBackend::reconfigure) leaves a process whose spec compares equal untouched.
  bool operator==(const ProcessSpec&) const = default;
};

struct BackendConfig {
  std::vector<ProcessSpec> processes;  // in the order of the file
  // Where the live process groups are recorded, so that a later mgmtd can end what a
  // killed one left behind. "" = the default: mgmtd-<uid> under $XDG_RUNTIME_DIR or /tmp.
  std::string state_dir;
  bool subreaper = true;  // adopt and reap orphaned descendants (PR_SET_CHILD_SUBREAPER)
};

// The default state directory: $XDG_RUNTIME_DIR/mgmtd-<uid>, else /tmp/mgmtd-<uid>.
std::string default_state_dir();

// Indexes into `processes`, each process after everything it depends on, otherwise in
// file order. The config must be free of cycles (parse_backend_config checks).
std::vector<std::size_t> start_order(const std::vector<ProcessSpec>& processes);

// "SIGUSR1", "USR1" or "10" → 10; 0 when unknown.
int parse_signal(std::string_view text);

// Reads the block (a null node means no processes). Throws std::runtime_error reading
// "<file>:<line>:<column>: <what is wrong and what to write instead>".
BackendConfig parse_backend_config(const YAML::Node& config, const std::string& file);

// The framework's parsers of durations ("250ms", "5s", "2m", "1h", "1.5s", plain seconds)
// and sizes ("512", "64KiB", "1MiB", "1GB", ...), see mgmt/units.hpp.
using mgmt::parse_duration;
using mgmt::parse_size;

}  // namespace mgmt::process
