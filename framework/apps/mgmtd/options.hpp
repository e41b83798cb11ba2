// mgmtd's command line.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace mgmt::daemon {

struct Options {
  std::string config = "/etc/mgmtd/mgmt.yaml";
  std::optional<std::string> socket;     // overrides server.socket
  std::optional<std::string> log_level;  // overrides log.level
  bool check = false;
  bool help = false;
  bool version = false;
};

// Throws std::invalid_argument with a one-line reason.
Options parse_options(const std::vector<std::string>& args);
const char* usage();

}  // namespace mgmt::daemon
