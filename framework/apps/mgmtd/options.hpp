// mgmtd's command line.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace mgmt::daemon {

// How mgmtd writes its log: human-readable lines on stderr (coloured on a terminal), or
// one JSON object per line on stdout (for containers: `--log-format json`).
enum class LogFormat { text, json };

struct Options {
  std::string config = "/etc/mgmtd/mgmt.yaml";
  std::optional<std::string> socket;     // overrides server.socket
  std::optional<std::string> log_level;  // overrides log.level
  LogFormat log_format = LogFormat::text;
  // Written once the socket listens and the backend has started its processes; removed
  // on exit. Stale ones are removed at start-up.
  std::optional<std::string> ready_file;
  bool check = false;
  bool help = false;
  bool version = false;
};

// Throws std::invalid_argument with a one-line reason.
Options parse_options(const std::vector<std::string>& args);
const char* usage();

}  // namespace mgmt::daemon
