// Durations and sizes as configuration files write them.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string_view>

namespace mgmt {

// "250ms", "5s", "2m", "1h", "1.5s", or a plain number of seconds. nullopt when malformed
// or negative.
std::optional<std::chrono::milliseconds> parse_duration(std::string_view text);

// "512", "100B", "64KiB", "1MiB", "1GiB" (powers of 1024; "K", "M", "G" too), "1KB", "1MB",
// "1GB" (powers of 1000). nullopt when malformed or too large.
std::optional<std::uint64_t> parse_size(std::string_view text);

}  // namespace mgmt
