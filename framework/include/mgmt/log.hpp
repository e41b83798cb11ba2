// Logging for mgmtd and its plugins: mgmt::log::info(logger, "format {}", args...).
//
// The same as logger.info(...), with the format string checked at compile time, but the
// line is formatted by libfmt's compiled fmt::vformat. spdlog's own logging templates
// instantiate fmt's whole formatting engine in every object file that logs (about 85 KB of
// code per shared object, and each one maps its own copy); a call here instantiates only
// the argument list.
#pragma once

#include <utility>

#include <fmt/core.h>
#include <spdlog/logger.h>

namespace mgmt::log {

// Formats `format` with `args` and logs the line at `level`. Never throws: a line that
// cannot be formatted or written is dropped, as spdlog itself does.
void write(spdlog::logger& logger, spdlog::level::level_enum level, fmt::string_view format,
           fmt::format_args args) noexcept;

template <typename... Args>
void at(spdlog::logger& logger, spdlog::level::level_enum level, fmt::format_string<Args...> format,
        Args&&... args) {
  if (logger.should_log(level)) write(logger, level, format, fmt::make_format_args(args...));
}

template <typename... Args>
void trace(spdlog::logger& l, fmt::format_string<Args...> f, Args&&... args) {
  at(l, spdlog::level::trace, f, std::forward<Args>(args)...);
}
template <typename... Args>
void debug(spdlog::logger& l, fmt::format_string<Args...> f, Args&&... args) {
  at(l, spdlog::level::debug, f, std::forward<Args>(args)...);
}
template <typename... Args>
void info(spdlog::logger& l, fmt::format_string<Args...> f, Args&&... args) {
  at(l, spdlog::level::info, f, std::forward<Args>(args)...);
}
template <typename... Args>
void warn(spdlog::logger& l, fmt::format_string<Args...> f, Args&&... args) {
  at(l, spdlog::level::warn, f, std::forward<Args>(args)...);
}
template <typename... Args>
void error(spdlog::logger& l, fmt::format_string<Args...> f, Args&&... args) {
  at(l, spdlog::level::err, f, std::forward<Args>(args)...);
}
template <typename... Args>
void critical(spdlog::logger& l, fmt::format_string<Args...> f, Args&&... args) {
  at(l, spdlog::level::critical, f, std::forward<Args>(args)...);
}

}  // namespace mgmt::log
