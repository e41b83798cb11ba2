#include "mgmt/units.hpp"

#include <charconv>
#include <cmath>
#include <limits>

namespace mgmt {

namespace {

// Splits "1.5s" into 1.5 and "s". False when there is no leading number.
bool split_number(std::string_view text, double& value, std::string_view& unit) {
  const char* b = text.data();
  const char* e = b + text.size();
  const char* p = b;
  while (p < e && ((*p >= '0' && *p <= '9') || *p == '.')) ++p;
  if (p == b) return false;
  const std::string number(b, p);
  try {
    std::size_t used = 0;
    value = std::stod(number, &used);
    if (used != number.size()) return false;
  } catch (const std::exception&) {
    return false;
  }
  unit = std::string_view(p, static_cast<std::size_t>(e - p));
  return std::isfinite(value);
}

}  // namespace

std::optional<std::chrono::milliseconds> parse_duration(std::string_view text) {
  double v = 0;
  std::string_view unit;
  if (!split_number(text, v, unit)) return std::nullopt;
  double ms = 0;
  if (unit == "ms") ms = v;
  else if (unit.empty() || unit == "s") ms = v * 1000;
  else if (unit == "m") ms = v * 60'000;
  else if (unit == "h") ms = v * 3'600'000;
  else return std::nullopt;
  if (ms > static_cast<double>(std::numeric_limits<std::int64_t>::max() / 2)) return std::nullopt;
  return std::chrono::milliseconds(static_cast<std::int64_t>(std::llround(ms)));
}

std::optional<std::uint64_t> parse_size(std::string_view text) {
  std::uint64_t v = 0;
  const char* b = text.data();
  const char* e = b + text.size();
  auto [p, ec] = std::from_chars(b, e, v);
  if (ec != std::errc() || p == b) return std::nullopt;
  const std::string_view unit(p, static_cast<std::size_t>(e - p));
  std::uint64_t mult = 0;
  if (unit.empty() || unit == "B") mult = 1;
  else if (unit == "KiB" || unit == "K") mult = 1ull << 10;
  else if (unit == "MiB" || unit == "M") mult = 1ull << 20;
  else if (unit == "GiB" || unit == "G") mult = 1ull << 30;
  else if (unit == "KB") mult = 1000;
  else if (unit == "MB") mult = 1000 * 1000;
  else if (unit == "GB") mult = 1000ull * 1000 * 1000;
  else return std::nullopt;
  if (v > std::numeric_limits<std::uint64_t>::max() / mult) return std::nullopt;
  return v * mult;
}

}  // namespace mgmt
