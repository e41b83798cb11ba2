// Go's time.ParseDuration, for `logs --since`: users of cliwrap already type "1h30m".
#pragma once

#include <chrono>
#include <optional>
#include <string_view>

namespace mgmtctl {

// Parses "300ms", "-1.5h", "2h45m", "0". Units: ns, us (µs, μs), ms, s, m, h; a unit is
// required except for a bare "0". nullopt on a malformed or out-of-range value.
std::optional<std::chrono::nanoseconds> parse_go_duration(std::string_view s);

}  // namespace mgmtctl
