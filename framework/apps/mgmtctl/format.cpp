#include "format.hpp"

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <iterator>
#include <stdexcept>
#include <utility>

#include <nlohmann/json.hpp>

namespace mgmtctl {

namespace {

// Code points, the unit Go's tabwriter and fmt widths count in.
std::size_t display_width(std::string_view s) {
  std::size_t n = 0;
  for (const char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

struct SplitTime {
  std::tm tm{};
  std::int64_t nanos = 0;  // 0..999'999'999
};

SplitTime split_time(std::int64_t unix_nanos, TimeZone tz) {
  constexpr std::int64_t kPerSec = 1'000'000'000;
  std::int64_t sec = unix_nanos / kPerSec;
  std::int64_t rem = unix_nanos % kPerSec;
  if (rem < 0) {  // floor, so times before 1970 still read forward
    rem += kPerSec;
    --sec;
  }
  SplitTime out;
  out.nanos = rem;
  const std::time_t t = static_cast<std::time_t>(sec);
  if (tz == TimeZone::utc) {
    gmtime_r(&t, &out.tm);
  } else {
    localtime_r(&t, &out.tm);
  }
  return out;
}

nlohmann::ordered_json entry_json(const mgmt::Entry& e) {
  nlohmann::ordered_json j;
  j["id"] = e.id;
  j["name"] = e.name;
  j["state"] = e.state;
  j["pid"] = e.pid;
  j["rss"] = e.rss;
  if (e.restarts != 0) j["restarts"] = e.restarts;
  if (e.started_at != 0) j["started_at"] = e.started_at;
  if (e.exit_code) j["exit_code"] = *e.exit_code;
  if (e.exit_signal) j["exit_signal"] = *e.exit_signal;
  if (!e.last_error.empty()) j["last_error"] = e.last_error;
  if (!e.health.empty()) j["health"] = e.health;
  if (!e.probe.empty()) j["probe"] = e.probe;
  if (!e.status_text.empty()) j["status_text"] = e.status_text;
  return j;
}

// Names and process output may hold any bytes; JSON output must stay valid UTF-8.
std::string dump(const nlohmann::ordered_json& j) {
  return j.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
}

}  // namespace

std::string pad_right(std::string_view s, std::size_t width) {
  std::string out(s);
  const std::size_t w = display_width(s);
  if (w < width) out.append(width - w, ' ');
  return out;
}

std::string color_state(std::string_view state) {
  const char* code = nullptr;
  if (state == "running") {
    code = "\x1b[32m";
  } else if (state == "crashed" || state == "failed") {
    code = "\x1b[31m";
  } else if (state == "starting" || state == "stopping" || state == "restarting" ||
             state == "pending") {
    code = "\x1b[33m";
  }
  if (code == nullptr) return std::string(state);
  return std::string(code) + std::string(state) + "\x1b[0m";
}

namespace {

// Go's tabwriter with padding 2: every column but the last as wide as its widest cell.
// Column `state` is coloured with `color` (the padding counts the visible text only).
std::string tabulate(const std::vector<std::vector<std::string>>& rows, std::size_t state,
                     bool color) {
  constexpr std::size_t kPadding = 2;
  const std::size_t cols = rows.front().size();
  std::vector<std::size_t> width(cols - 1, 0);
  for (const auto& row : rows) {
    for (std::size_t c = 0; c < width.size(); ++c) {
      width[c] = std::max(width[c], display_width(row[c]));
    }
  }
  std::string out;
  bool header = true;
  for (const auto& row : rows) {
    for (std::size_t c = 0; c < width.size(); ++c) {
      if (c == state && color && !header) {
        out += color_state(row[c]);
        out.append(width[c] + kPadding - display_width(row[c]), ' ');
      } else {
        out += pad_right(row[c], width[c] + kPadding);
      }
    }
    out += row[cols - 1];
    out += '\n';
    header = false;
  }
  return out;
}

}  // namespace

std::string format_table(const std::vector<mgmt::Entry>& entries, bool color) {
  std::vector<std::vector<std::string>> rows;
  rows.reserve(entries.size() + 1);
  rows.push_back({"ID", "NAME", "STATE", "PID"});
  for (const auto& e : entries) rows.push_back({e.id, e.name, e.state, std::to_string(e.pid)});
  return tabulate(rows, 2, color);
}

std::string format_host_table(const std::vector<HostEntry>& entries, bool color) {
  std::vector<std::vector<std::string>> rows;
  rows.reserve(entries.size() + 1);
  rows.push_back({"HOST", "ID", "NAME", "STATE", "PID"});
  for (const auto& [host, e] : entries) {
    rows.push_back({host, e.id, e.name, e.state, std::to_string(e.pid)});
  }
  return tabulate(rows, 3, color);
}

std::string format_bytes(std::uint64_t n) {
  if (n < 1024) return std::to_string(n) + " B";
  static constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = static_cast<double>(n) / 1024.0;
  std::size_t u = 0;
  // Step up before rounding could print "1024.0 KiB".
  while (v >= 1023.95 && u + 1 < std::size(kUnits)) {
    v /= 1024.0;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f %s", v, kUnits[u]);
  return buf;
}

std::string format_exit(const mgmt::Entry& e) {
  if (e.exit_signal) {
    const auto sig = *e.exit_signal;
    const char* abbrev = (sig > 0 && sig < 128) ? sigabbrev_np(static_cast<int>(sig)) : nullptr;
    if (abbrev != nullptr) return std::string("signal SIG") + abbrev;
    return "signal " + std::to_string(sig);
  }
  if (e.exit_code) return "code " + std::to_string(*e.exit_code);
  return {};
}

std::string format_time(std::int64_t unix_nanos, TimeZone tz) {
  const SplitTime t = split_time(unix_nanos, tz);
  char buf[64];
  const std::size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &t.tm);
  std::string out(buf, n);
  if (tz == TimeZone::utc) {
    out += " UTC";
  } else if (t.tm.tm_zone != nullptr && *t.tm.tm_zone != '\0') {
    out += ' ';
    out += t.tm.tm_zone;
  }
  return out;
}

std::string format_status(const mgmt::Entry& e, TimeZone tz, bool color) {
  std::vector<std::pair<std::string_view, std::string>> lines = {
      {"ID:", e.id},
      {"Name:", e.name},
      {"State:", color ? color_state(e.state) : e.state},
      {"ChildPID:", std::to_string(e.pid)},
  };
  if (e.rss != 0) lines.emplace_back("RSS:", format_bytes(e.rss));
  if (e.restarts != 0) lines.emplace_back("Restarts:", std::to_string(e.restarts));
  if (e.started_at != 0) lines.emplace_back("Started:", format_time(e.started_at, tz));
  if (auto ex = format_exit(e); !ex.empty()) lines.emplace_back("Last exit:", std::move(ex));
  if (!e.last_error.empty()) lines.emplace_back("Last error:", e.last_error);
  if (!e.health.empty()) lines.emplace_back("Health:", e.health);
  if (!e.probe.empty()) lines.emplace_back("Probe:", e.probe);
  if (!e.status_text.empty()) lines.emplace_back("Notify:", e.status_text);

  // One fixed value column (the longest label possible, plus a space) so that scripts
  // see the same layout whichever extension fields a server sends.
  constexpr std::size_t kValueColumn = sizeof("Last error:");
  std::string out;
  for (const auto& [label, value] : lines) {
    out += pad_right(label, kValueColumn);
    out += value;
    out += '\n';
  }
  return out;
}

std::string format_event_line(const mgmt::EventsStream& ev, TimeZone tz) {
  const SplitTime t = split_time(ev.ts, tz);
  char clock[32];
  std::snprintf(clock, sizeof clock, "%02d:%02d:%02d.%03d", t.tm.tm_hour, t.tm.tm_min,
                t.tm.tm_sec, static_cast<int>(t.nanos / 1'000'000));
  std::string out = clock;
  out += "  ";
  out += pad_right(ev.t, 32);
  out += "  ";
  out += pad_right(ev.pid, 20);
  out += "  ";
  out += ev.sum;
  out += '\n';
  return out;
}

std::string format_list_json(const std::vector<mgmt::Entry>& entries) {
  auto arr = nlohmann::ordered_json::array();
  for (const auto& e : entries) arr.push_back(entry_json(e));
  return dump(arr);
}

std::string format_status_json(const mgmt::Entry& e) { return dump(entry_json(e)); }

namespace {

nlohmann::ordered_json outcome_json(const Outcome& o, bool with_signal) {
  nlohmann::ordered_json j;
  j["id"] = o.id;
  if (with_signal) {
    j["signal"] = o.signal;
    j["group"] = o.group;
  }
  j["ok"] = o.err.empty();
  if (!o.err.empty()) j["err"] = o.err;
  if (o.entry && !o.entry->id.empty()) j["entry"] = entry_json(*o.entry);
  return j;
}

}  // namespace

std::string format_outcomes_json(const std::vector<Outcome>& outcomes) {
  auto arr = nlohmann::ordered_json::array();
  for (const auto& o : outcomes) arr.push_back(outcome_json(o, false));
  return dump(arr);
}

std::string format_signal_json(const Outcome& o) { return dump(outcome_json(o, true)); }

std::string format_event_json(const mgmt::EventsStream& ev) {
  nlohmann::ordered_json j;
  j["ts"] = ev.ts;
  j["pid"] = ev.pid;
  j["type"] = ev.t;
  j["summary"] = ev.sum;
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
}

// ---------------------------------------------------------------------------------------
// Extra commands

namespace {

// Rows laid out like format_table: every column but the last padded to its widest cell
// plus two spaces.
std::string tabulate(const std::vector<std::vector<std::string>>& rows, std::string_view indent) {
  std::vector<std::size_t> width;
  for (const auto& row : rows) {
    if (row.size() > width.size()) width.resize(row.size(), 0);
    for (std::size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], display_width(row[c]));
  }
  std::string out;
  for (const auto& row : rows) {
    out += indent;
    for (std::size_t c = 0; c < row.size(); ++c) {
      out += c + 1 < row.size() ? pad_right(row[c], width[c] + 2) : row[c];
    }
    out += '\n';
  }
  return out;
}

// bin and ext values (nlohmann's "binary") become base64 strings, recursively.
void binary_to_base64(nlohmann::ordered_json& j) {
  if (j.is_binary()) {
    const auto& b = j.get_binary();
    j = base64(std::string_view(reinterpret_cast<const char*>(b.data()), b.size()));
  } else if (j.is_structured()) {
    for (auto& v : j) binary_to_base64(v);
  }
}

}  // namespace

std::string format_uptime(std::int64_t nanos) {
  std::int64_t s = nanos > 0 ? nanos / 1'000'000'000 : 0;
  const std::int64_t h = s / 3600;
  const std::int64_t m = s / 60 % 60;
  s %= 60;
  std::string out;
  if (h > 0) out += std::to_string(h) + "h";
  if (h > 0 || m > 0) out += std::to_string(m) + "m";
  out += std::to_string(s) + "s";
  return out;
}

std::string format_info(const mgmt::InfoResponse& info, TimeZone tz) {
  std::string out;
  out += "Server:   mgmtd " + info.version + " (plugin ABI " + std::to_string(info.abi) +
         "), pid " + std::to_string(info.pid) + "\n";
  out += "Started:  " + format_time(info.started_at, tz) + " (up " + format_uptime(info.uptime) +
         ")\n";
  if (info.upgrades > 0) {  // upgraded in place: the running program started then
    out += "Upgraded: " + format_time(info.upgraded_at, tz) + " (upgrade " +
           std::to_string(info.upgrades) + ")\n";
  }
  out += "Config:   " + info.config + "\n";
  out += "Plugins:\n";
  std::vector<std::vector<std::string>> rows{{"TYPE", "KIND", "NAME", "VERSION", "FILE"}};
  for (const auto& p : info.plugins) {
    rows.push_back({p.kind == "backend" ? "-" : mgmt::type_hex(p.type), p.kind, p.name,
                    p.version, p.path});
  }
  out += tabulate(rows, "  ");
  return out;
}

std::string format_info_json(const mgmt::InfoResponse& info) {
  nlohmann::ordered_json j;
  j["version"] = info.version;
  j["abi"] = info.abi;
  j["pid"] = info.pid;
  j["started_at"] = info.started_at;
  j["uptime"] = info.uptime;
  if (info.upgrades > 0) {
    j["upgraded_at"] = info.upgraded_at;
    j["upgrades"] = info.upgrades;
  }
  j["config"] = info.config;
  auto plugins = nlohmann::ordered_json::array();
  for (const auto& p : info.plugins) {
    nlohmann::ordered_json pj;
    pj["type"] = p.type;
    pj["kind"] = p.kind;
    pj["name"] = p.name;
    pj["version"] = p.version;
    pj["path"] = p.path;
    plugins.push_back(std::move(pj));
  }
  j["plugins"] = std::move(plugins);
  return dump(j);
}

std::string base64(std::string_view bytes) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const auto n = static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i])) << 16 |
                   static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i + 1])) << 8 |
                   static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i + 2]));
    out += kAlphabet[n >> 18 & 63];
    out += kAlphabet[n >> 12 & 63];
    out += kAlphabet[n >> 6 & 63];
    out += kAlphabet[n & 63];
  }
  if (const std::size_t rest = bytes.size() - i; rest > 0) {
    std::uint32_t n = static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i])) << 16;
    if (rest == 2) n |= static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i + 1])) << 8;
    out += kAlphabet[n >> 18 & 63];
    out += kAlphabet[n >> 12 & 63];
    out += rest == 2 ? kAlphabet[n >> 6 & 63] : '=';
    out += '=';
  }
  return out;
}

std::string json_object_error(std::string_view json) {
  const auto j = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return "the request is not valid JSON: " + std::string(json);
  if (!j.is_object()) {
    return "the request must be a JSON object (payloads are maps), got " + std::string(json);
  }
  return {};
}

std::string json_to_msgpack(std::string_view json) {
  nlohmann::ordered_json j;
  try {
    j = nlohmann::ordered_json::parse(json);
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(std::string("invalid JSON: ") + e.what());
  }
  const std::vector<std::uint8_t> bytes = nlohmann::ordered_json::to_msgpack(j);
  return std::string(bytes.begin(), bytes.end());
}

std::string msgpack_to_json(std::string_view payload) {
  if (payload.empty()) return "{}\n";
  nlohmann::ordered_json j;
  try {
    j = nlohmann::ordered_json::from_msgpack(payload.begin(), payload.end());
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(std::string("the reply is not MessagePack: ") + e.what());
  }
  binary_to_base64(j);
  return dump(j);
}

}  // namespace mgmtctl
