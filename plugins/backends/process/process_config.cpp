#include "process_config.hpp"

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <limits>
#include <map>
#include <stdexcept>

namespace mgmt::process {

std::string_view to_string(RestartPolicy p) noexcept {
  switch (p) {
    case RestartPolicy::never: return "never";
    case RestartPolicy::on_failure: return "on_failure";
    case RestartPolicy::always: return "always";
  }
  return "?";
}

namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Splits "12.5ms" into its number and unit; false unless the number is digits with at
// most one '.', and at least one digit.
bool split_number(std::string_view text, std::string_view& number, std::string_view& unit) {
  std::size_t i = 0;
  bool dot = false;
  bool digits = false;
  for (; i < text.size(); ++i) {
    if (is_digit(text[i])) {
      digits = true;
    } else if (text[i] == '.' && !dot) {
      dot = true;
    } else {
      break;
    }
  }
  number = text.substr(0, i);
  unit = text.substr(i);
  return digits;
}

class Reader {
 public:
  explicit Reader(const std::string& file) : file_(file) {}

  std::string where(const YAML::Node& n) const {
    const YAML::Mark m = n.Mark();
    if (m.is_null()) return file_;
    return file_ + ":" + std::to_string(m.line + 1) + ":" + std::to_string(m.column + 1);
  }

  [[noreturn]] void fail(const YAML::Node& n, const std::string& msg) const {
    throw std::runtime_error(where(n) + ": " + msg);
  }

  void only_keys(const YAML::Node& map, std::initializer_list<std::string_view> allowed,
                 std::string_view section) const {
    for (const auto& kv : map) {
      const std::string key = kv.first.IsScalar() ? kv.first.Scalar() : std::string();
      bool ok = false;
      for (std::string_view a : allowed) ok = ok || key == a;
      if (ok) continue;
      std::string list;
      for (std::string_view a : allowed) {
        if (!list.empty()) list += ", ";
        list += a;
      }
      fail(kv.first, "unknown key \"" + key + "\" in " + std::string(section) +
                         " (expected one of: " + list + ")");
    }
  }

  std::string scalar(const YAML::Node& n, std::string_view what) const {
    if (!n.IsScalar()) fail(n, std::string(what) + " must be a string");
    return n.Scalar();
  }

  bool boolean(const YAML::Node& n, std::string_view what) const {
    bool v = false;
    if (!n.IsScalar() || !YAML::convert<bool>::decode(n, v)) {
      fail(n, std::string(what) + " must be true or false");
    }
    return v;
  }

  std::uint32_t count(const YAML::Node& n, std::string_view what) const {
    const std::string s = n.IsScalar() ? n.Scalar() : std::string();
    std::uint64_t v = 0;
    bool ok = !s.empty() && s.size() <= 10;
    for (char c : s) {
      ok = ok && is_digit(c);
      if (ok) v = v * 10 + static_cast<std::uint64_t>(c - '0');
    }
    if (!ok || v > std::numeric_limits<std::uint32_t>::max()) {
      fail(n, std::string(what) + " must be a whole number such as 5 (got \"" + s + "\")");
    }
    return static_cast<std::uint32_t>(v);
  }

  std::chrono::milliseconds duration(const YAML::Node& n, std::string_view what) const {
    const std::string s = n.IsScalar() ? n.Scalar() : std::string();
    const auto d = parse_duration(s);
    if (!d) {
      fail(n, std::string(what) + " must be a duration such as 250ms, 5s, 2m or 1h (got \"" +
                  s + "\")");
    }
    return *d;
  }

  std::size_t size(const YAML::Node& n, std::string_view what) const {
    const std::string s = n.IsScalar() ? n.Scalar() : std::string();
    const auto v = parse_size(s);
    if (!v || *v == 0 || *v > std::numeric_limits<std::size_t>::max()) {
      fail(n, std::string(what) + " must be a size of at least 1 byte such as 65536, 64KiB or "
                                  "1MiB (got \"" + s + "\")");
    }
    return static_cast<std::size_t>(*v);
  }

  RestartPolicy restart(const YAML::Node& n) const {
    const std::string s = n.IsScalar() ? n.Scalar() : std::string();
    for (auto p : {RestartPolicy::never, RestartPolicy::on_failure, RestartPolicy::always}) {
      if (s == to_string(p)) return p;
    }
    fail(n, "restart must be one of never, on_failure, always (got \"" + s + "\")");
  }

  std::vector<std::string> args(const YAML::Node& n) const {
    if (!n.IsSequence()) fail(n, "args must be a list of strings, e.g. [-m, http.server, \"8080\"]");
    std::vector<std::string> out;
    for (const auto& a : n) out.push_back(scalar(a, "each of args"));
    return out;
  }

  std::vector<std::pair<std::string, std::string>> env(const YAML::Node& n) const {
    std::vector<std::pair<std::string, std::string>> out;
    auto add = [&](const YAML::Node& at, std::string key, std::string value) {
      if (key.empty() || key.find('=') != std::string::npos) {
        fail(at, "env name \"" + key + "\" must be non-empty and must not contain '='");
      }
      out.emplace_back(std::move(key), std::move(value));
    };
    if (n.IsMap()) {
      for (const auto& kv : n) {
        add(kv.first, scalar(kv.first, "env name"), scalar(kv.second, "env value"));
      }
    } else if (n.IsSequence()) {
      for (const auto& item : n) {
        const std::string s = scalar(item, "each env entry");
        const auto eq = s.find('=');
        if (eq == std::string::npos) fail(item, "env entry \"" + s + "\" must read KEY=value");
        add(item, s.substr(0, eq), s.substr(eq + 1));
      }
    } else {
      fail(n, "env must be a map {KEY: value} or a list of \"KEY=value\"");
    }
    return out;
  }

  ProcessSpec process(const YAML::Node& n, std::size_t default_log_buffer) const {
    if (!n.IsMap()) fail(n, "each entry of processes must be a map with at least id and command");
    only_keys(n,
              {"id", "name", "command", "args", "env", "work_dir", "restart", "max_restarts",
               "restart_backoff", "restart_backoff_max", "stop_timeout", "autostart",
               "log_buffer"},
              "a process");
    ProcessSpec p;
    p.log_buffer = default_log_buffer;
    if (!n["id"]) fail(n, "a process needs an id, e.g. `id: web`");
    p.id = scalar(n["id"], "id");
    bool id_ok = !p.id.empty();
    for (char c : p.id) {
      id_ok = id_ok && (is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                        c == '.' || c == '_' || c == '-');
    }
    if (!id_ok) {
      fail(n["id"], "id must use only letters, digits, '.', '_' and '-' (got \"" + p.id + "\")");
    }
    if (!n["command"]) fail(n, "process " + p.id + " needs a command, e.g. `command: /usr/bin/python3`");
    p.command = scalar(n["command"], "command");
    if (p.command.empty()) fail(n["command"], "command must not be empty");
    p.name = n["name"] ? scalar(n["name"], "name") : p.id;
    if (n["args"]) p.args = args(n["args"]);
    if (n["env"]) p.env = env(n["env"]);
    if (n["work_dir"]) p.work_dir = scalar(n["work_dir"], "work_dir");
    if (n["restart"]) p.restart = restart(n["restart"]);
    if (n["max_restarts"]) p.max_restarts = count(n["max_restarts"], "max_restarts");
    if (n["restart_backoff"]) p.restart_backoff = duration(n["restart_backoff"], "restart_backoff");
    if (n["restart_backoff_max"]) {
      p.restart_backoff_max = duration(n["restart_backoff_max"], "restart_backoff_max");
    }
    if (!n["restart_backoff_max"]) {
      p.restart_backoff_max = std::max(p.restart_backoff_max, p.restart_backoff);
    } else if (p.restart_backoff_max < p.restart_backoff) {
      fail(n["restart_backoff_max"],
           "restart_backoff_max (" + std::to_string(p.restart_backoff_max.count()) +
               " ms) must not be shorter than restart_backoff (" +
               std::to_string(p.restart_backoff.count()) + " ms)");
    }
    if (n["stop_timeout"]) p.stop_timeout = duration(n["stop_timeout"], "stop_timeout");
    if (n["autostart"]) p.autostart = boolean(n["autostart"], "autostart");
    if (n["log_buffer"]) p.log_buffer = size(n["log_buffer"], "log_buffer");
    return p;
  }

 private:
  const std::string& file_;
};

}  // namespace

std::optional<std::chrono::milliseconds> parse_duration(std::string_view text) {
  std::string_view number, unit;
  if (!split_number(text, number, unit)) return std::nullopt;
  double ms_per_unit = 0;
  if (unit.empty() || unit == "s") ms_per_unit = 1000;
  else if (unit == "ms") ms_per_unit = 1;
  else if (unit == "m") ms_per_unit = 60'000;
  else if (unit == "h") ms_per_unit = 3'600'000;
  else return std::nullopt;
  double value = 0;
  double scale = 1;
  bool fraction = false;
  for (char c : number) {
    if (c == '.') {
      fraction = true;
      continue;
    }
    value = value * 10 + (c - '0');
    if (fraction) scale *= 10;
  }
  const double ms = std::round(value / scale * ms_per_unit);
  // A year of milliseconds is plenty for any timeout; beyond that it is a typo.
  if (!(ms <= 365.0 * 24 * 3'600'000)) return std::nullopt;
  return std::chrono::milliseconds(static_cast<std::int64_t>(ms));
}

std::optional<std::uint64_t> parse_size(std::string_view text) {
  std::size_t i = 0;
  std::uint64_t v = 0;
  for (; i < text.size() && is_digit(text[i]); ++i) {
    if (v > (std::numeric_limits<std::uint64_t>::max() - 9) / 10) return std::nullopt;
    v = v * 10 + static_cast<std::uint64_t>(text[i] - '0');
  }
  if (i == 0) return std::nullopt;
  static const std::map<std::string_view, std::uint64_t> kUnits = {
      {"", 1},           {"B", 1},
      {"K", 1ull << 10}, {"KiB", 1ull << 10}, {"KB", 1000},
      {"M", 1ull << 20}, {"MiB", 1ull << 20}, {"MB", 1000ull * 1000},
      {"G", 1ull << 30}, {"GiB", 1ull << 30}, {"GB", 1000ull * 1000 * 1000},
  };
  const auto unit = kUnits.find(text.substr(i));
  if (unit == kUnits.end()) return std::nullopt;
  if (v > std::numeric_limits<std::uint64_t>::max() / unit->second) return std::nullopt;
  return v * unit->second;
}

BackendConfig parse_backend_config(const YAML::Node& config, const std::string& file) {
  BackendConfig out;
  if (!config || config.IsNull()) return out;
  const Reader r(file);
  if (!config.IsMap()) r.fail(config, "the process backend's config must be a map with a `processes:` list");
  r.only_keys(config, {"log_buffer", "processes"}, "the process backend's config");
  const std::size_t log_buffer =
      config["log_buffer"] ? r.size(config["log_buffer"], "log_buffer") : kDefaultLogBuffer;
  const YAML::Node list = config["processes"];
  if (!list || list.IsNull()) return out;
  if (!list.IsSequence()) r.fail(list, "processes must be a list of `- id: ...` entries");
  std::map<std::string, YAML::Node> seen;
  for (const auto& n : list) {
    ProcessSpec p = r.process(n, log_buffer);
    const YAML::Node id_node = n["id"];
    const auto [first, inserted] = seen.emplace(p.id, id_node);
    if (!inserted) {
      r.fail(id_node, "duplicate id \"" + p.id + "\" (line " +
                          std::to_string(id_node.Mark().line + 1) + ", first defined at line " +
                          std::to_string(first->second.Mark().line + 1) +
                          "); every process needs its own id");
    }
    out.processes.push_back(std::move(p));
  }
  return out;
}

}  // namespace mgmt::process
