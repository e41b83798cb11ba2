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

namespace mgmt::process {

enum class RestartPolicy { never, on_failure, always };

std::string_view to_string(RestartPolicy p) noexcept;

inline constexpr std::size_t kDefaultLogBuffer = std::size_t{1} << 20;

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
  std::chrono::milliseconds stop_timeout{10000};
  bool autostart = true;
  std::size_t log_buffer = kDefaultLogBuffer;  // bytes per stream
};

struct BackendConfig {
  std::vector<ProcessSpec> processes;
};

// Reads the block (a null node means no processes). Throws std::runtime_error reading
// "<file>:<line>:<column>: <what is wrong and what to write instead>".
BackendConfig parse_backend_config(const YAML::Node& config, const std::string& file);

// "250ms", "5s", "2m", "1h", "1.5s" or a plain number of seconds. nullopt when malformed.
std::optional<std::chrono::milliseconds> parse_duration(std::string_view text);
// "512", "64KiB", "1MiB", "1GiB" (powers of 1024), "1KB", "1MB", "1GB" (powers of 1000),
// "100B". nullopt when malformed or too large.
std::optional<std::uint64_t> parse_size(std::string_view text);

}  // namespace mgmt::process
