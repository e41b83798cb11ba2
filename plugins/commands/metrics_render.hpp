// The metrics plugin's exposition: mgmtd's state in the Prometheus text format (0.0.4).
// Pure functions of their input, so the text can be pinned by tests.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "mgmt/messages.hpp"
#include "mgmt/plugin.hpp"
#include "mgmt/stats.hpp"

namespace mgmt::metrics {

struct Input {
  std::int64_t now_ns = 0;                 // unix nanos, for uptimes
  const ServerInfo* server = nullptr;      // version, start time, plugins (may be null)
  const StatsSnapshot* stats = nullptr;    // socket server counters (null: not serving yet)
  const std::vector<Entry>* processes = nullptr;  // the backend's list()
  std::uint64_t scrapes = 0;               // expositions rendered so far, this one included
};

// The whole exposition, every family with # HELP and # TYPE, ending with a newline.
std::string render(const Input& in);

// A label value escaped as the text format wants: \\, \" and \n.
std::string escape_label(std::string_view v);
// Microseconds as decimal seconds without exponent or trailing zeros: 50 → "0.00005".
std::string micros_as_seconds(std::uint64_t us);

}  // namespace mgmt::metrics
