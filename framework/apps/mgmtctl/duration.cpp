#include "duration.hpp"

#include <cstdint>
#include <limits>

namespace mgmtctl {

namespace {

constexpr std::uint64_t kLimit = std::uint64_t{1} << 63;  // |int64 min|

// Nanoseconds per unit, or 0 when the unit is unknown.
std::uint64_t unit_nanos(std::string_view u) {
  if (u == "ns") return 1;
  if (u == "us" || u == "\xC2\xB5s" || u == "\xCE\xBCs") return 1'000;  // us, µs (micro), μs (mu)
  if (u == "ms") return 1'000'000;
  if (u == "s") return 1'000'000'000;
  if (u == "m") return 60'000'000'000;
  if (u == "h") return 3'600'000'000'000;
  return 0;
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

}  // namespace

// Same algorithm as Go's: each component is integer part + fraction, scaled by its unit,
// with overflow checked against 2^63 so that the int64 minimum is still reachable.
std::optional<std::chrono::nanoseconds> parse_go_duration(std::string_view s) {
  bool neg = false;
  if (!s.empty() && (s.front() == '-' || s.front() == '+')) {
    neg = s.front() == '-';
    s.remove_prefix(1);
  }
  if (s == "0") return std::chrono::nanoseconds{0};
  if (s.empty()) return std::nullopt;

  std::uint64_t total = 0;
  while (!s.empty()) {
    // Integer part.
    std::uint64_t v = 0;
    std::size_t i = 0;
    bool overflow = false;
    while (i < s.size() && is_digit(s[i])) {
      if (v > kLimit / 10) overflow = true;
      v = v * 10 + static_cast<std::uint64_t>(s[i] - '0');
      if (v > kLimit) overflow = true;
      ++i;
    }
    if (overflow) return std::nullopt;
    const bool had_int = i > 0;
    // Fraction: digits beyond what fits are dropped, as Go does.
    std::uint64_t f = 0;
    double scale = 1;
    bool had_frac = false;
    if (i < s.size() && s[i] == '.') {
      ++i;
      bool dropping = false;
      while (i < s.size() && is_digit(s[i])) {
        had_frac = true;
        if (!dropping) {
          const std::uint64_t y = f * 10 + static_cast<std::uint64_t>(s[i] - '0');
          if (f > (kLimit - 1) / 10 || y > kLimit) {
            dropping = true;
          } else {
            f = y;
            scale *= 10;
          }
        }
        ++i;
      }
    }
    if (!had_int && !had_frac) return std::nullopt;
    s.remove_prefix(i);

    // Unit: everything up to the next digit or '.'.
    std::size_t u = 0;
    while (u < s.size() && s[u] != '.' && !is_digit(s[u])) ++u;
    if (u == 0) return std::nullopt;  // missing unit
    const std::uint64_t unit = unit_nanos(s.substr(0, u));
    if (unit == 0) return std::nullopt;
    s.remove_prefix(u);

    if (v > kLimit / unit) return std::nullopt;
    v *= unit;
    if (f > 0) {
      v += static_cast<std::uint64_t>(static_cast<double>(f) * (static_cast<double>(unit) / scale));
      if (v > kLimit) return std::nullopt;
    }
    total += v;
    if (total > kLimit) return std::nullopt;
  }
  if (!neg && total > kLimit - 1) return std::nullopt;
  if (neg) {
    if (total == kLimit) return std::chrono::nanoseconds{std::numeric_limits<std::int64_t>::min()};
    return std::chrono::nanoseconds{-static_cast<std::int64_t>(total)};
  }
  return std::chrono::nanoseconds{static_cast<std::int64_t>(total)};
}

}  // namespace mgmtctl
