#include "mgmt/log.hpp"

#include <string>

namespace mgmt::log {

void write(spdlog::logger& logger, spdlog::level::level_enum level, fmt::string_view format,
           fmt::format_args args) noexcept {
  try {
    const std::string line = fmt::vformat(format, args);
    logger.log(level, spdlog::string_view_t(line.data(), line.size()));
  } catch (...) {  // NOLINT(bugprone-empty-catch): a log line is never worth an exception
  }
}

}  // namespace mgmt::log
