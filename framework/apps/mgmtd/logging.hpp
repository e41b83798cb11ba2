// mgmtd's logger: human-readable on stderr, or JSON lines on stdout (--log-format json).
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include "options.hpp"

namespace spdlog {
class logger;
}

namespace mgmt::daemon {

// The "mgmtd" logger (registered with spdlog). Plugins get clones of it, so they share its
// sinks and format. JSON lines are flushed one by one (stdout is a pipe in a container).
std::shared_ptr<spdlog::logger> make_logger(LogFormat format);

// One JSON log line, newline-ended: {"ts":"2025-11-24T16:00:00.123456Z","level":"info",
// "logger":"mgmtd","msg":"..."}. Strings are escaped for JSON; bytes that are not UTF-8
// become U+FFFD, so every line parses.
std::string json_log_line(std::chrono::system_clock::time_point ts, std::string_view level,
                          std::string_view logger, std::string_view msg);

// `s` as the body of a JSON string (without the quotes).
void append_json_escaped(std::string& out, std::string_view s);

}  // namespace mgmt::daemon
