#include "process_config.hpp"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <initializer_list>
#include <limits>
#include <map>
#include <optional>
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
    // A year is plenty for any timeout or backoff; beyond that it is a typo.
    if (!d || *d > std::chrono::hours(24 * 365)) {
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

  // A folder; relative ones are taken relative to the config file's folder.
  std::string dir(const YAML::Node& n, std::string_view what) const {
    const std::string s = scalar(n, what);
    if (s.empty()) fail(n, std::string(what) + " must not be empty");
    namespace fs = std::filesystem;
    fs::path p(s);
    if (p.is_relative()) p = fs::path(file_).parent_path() / p;
    std::error_code ec;
    const fs::path abs = fs::absolute(p, ec);
    return (ec ? p : abs).lexically_normal().string();
  }

  std::uint64_t positive_size(const YAML::Node& n, std::string_view what) const {
    const std::string s = n.IsScalar() ? n.Scalar() : std::string();
    const auto v = parse_size(s);
    if (!v || *v == 0) {
      fail(n, std::string(what) + " must be a size of at least 1 byte such as 10MiB (got \"" + s +
                  "\")");
    }
    return *v;
  }

  Resources resources(const YAML::Node& n) const {
    if (!n.IsMap()) {
      fail(n, "resources must be a map such as {max_rss: 512MiB, on_exceed: kill}");
    }
    const Fields f(*this, n, {"max_rss", "on_exceed", "sample_interval"}, "resources");
    Resources r;
    const YAML::Node* max_rss = f["max_rss"];
    if (max_rss == nullptr) fail(n, "resources needs max_rss, e.g. `max_rss: 512MiB`");
    r.max_rss = positive_size(*max_rss, "max_rss");
    if (const YAML::Node* on_exceed = f["on_exceed"]) {
      const YAML::Node& v = *on_exceed;
      const std::string s = v.IsScalar() ? v.Scalar() : std::string();
      if (s == "kill") {
        r.on_exceed.action = OnExceed::Action::kill;
      } else if (s == "log") {
        r.on_exceed.action = OnExceed::Action::log;
      } else if (s.rfind("signal:", 0) == 0 && parse_signal(s.substr(7)) > 0) {
        r.on_exceed.action = OnExceed::Action::signal;
        r.on_exceed.signal = parse_signal(s.substr(7));
      } else {
        fail(v, "on_exceed must be kill, log or signal:SIGNAME such as signal:SIGUSR1 (got \"" +
                    s + "\")");
      }
    }
    if (const YAML::Node* interval = f["sample_interval"]) {
      r.sample_interval = duration(*interval, "sample_interval");
      if (r.sample_interval < std::chrono::milliseconds(10)) {
        fail(*interval, "sample_interval must be at least 10ms");
      }
    }
    return r;
  }

  // A map's values by key, read in one pass that also refuses unknown keys. (yaml-cpp's
  // operator[] scans the map and copies each key it compares: reading a process entry field
  // by field that way took as long as parsing its YAML.) A key given twice: the first wins.
  class Fields {
   public:
    Fields(const Reader& r, const YAML::Node& map, std::initializer_list<std::string_view> allowed,
           std::string_view section)
        : keys_(allowed), values_(keys_.size()) {
      for (const auto& kv : map) {
        static const std::string kNoKey;
        const std::string& key = kv.first.IsScalar() ? kv.first.Scalar() : kNoKey;
        const auto at = std::find(keys_.begin(), keys_.end(), key);
        if (at == keys_.end()) {
          std::string list;
          for (std::string_view k : keys_) {
            if (!list.empty()) list += ", ";
            list += k;
          }
          r.fail(kv.first, "unknown key \"" + key + "\" in " + std::string(section) +
                               " (expected one of: " + list + ")");
        }
        auto& slot = values_[static_cast<std::size_t>(at - keys_.begin())];
        if (!slot) slot = kv.second;
      }
    }
    // The value of `key` (one of `allowed`), or nullptr when the map does not have it.
    const YAML::Node* operator[](std::string_view key) const {
      const auto at = std::find(keys_.begin(), keys_.end(), key);
      if (at == keys_.end()) return nullptr;
      const auto& slot = values_[static_cast<std::size_t>(at - keys_.begin())];
      return slot ? &*slot : nullptr;
    }

   private:
    std::vector<std::string_view> keys_;
    std::vector<std::optional<YAML::Node>> values_;
  };

  // Reads log_file_dir, log_max_size and log_max_files of `f` over `base`.
  LogFiles log_files(const Fields& f, LogFiles base) const {
    if (const auto* v = f["log_file_dir"]) base.dir = dir(*v, "log_file_dir");
    if (const auto* v = f["log_max_size"]) base.max_size = positive_size(*v, "log_max_size");
    if (const auto* v = f["log_max_files"]) base.max_files = count(*v, "log_max_files");
    return base;
  }

  std::vector<std::string> ids(const YAML::Node& n, std::string_view what) const {
    std::vector<std::string> out;
    if (n.IsScalar()) {
      out.push_back(n.Scalar());
    } else if (n.IsSequence()) {
      for (const auto& item : n) out.push_back(scalar(item, std::string("each of ") + std::string(what)));
    } else {
      fail(n, std::string(what) + " must be a list of process ids, e.g. [db, cache]");
    }
    return out;
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

  ProcessSpec process(const YAML::Node& n, std::size_t default_log_buffer,
                      const LogFiles& default_log_files) const {
    if (!n.IsMap()) fail(n, "each entry of processes must be a map with at least id and command");
    const Fields f(*this, n,
                   {"id", "name", "command", "args", "env", "work_dir", "restart", "max_restarts",
                    "restart_backoff", "restart_backoff_max", "restart_reset_after", "stop_timeout",
                    "autostart", "log_buffer", "log_file_dir", "log_max_size", "log_max_files",
                    "resources", "depends_on"},
                   "a process");
    ProcessSpec p;
    p.log_buffer = default_log_buffer;
    const YAML::Node* id = f["id"];
    if (id == nullptr) fail(n, "a process needs an id, e.g. `id: web`");
    p.id = scalar(*id, "id");
    bool id_ok = !p.id.empty();
    for (char c : p.id) {
      id_ok = id_ok && (is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                        c == '.' || c == '_' || c == '-');
    }
    if (!id_ok) {
      fail(*id, "id must use only letters, digits, '.', '_' and '-' (got \"" + p.id + "\")");
    }
    const YAML::Node* command = f["command"];
    if (command == nullptr) {
      fail(n, "process " + p.id + " needs a command, e.g. `command: /usr/bin/python3`");
    }
    p.command = scalar(*command, "command");
    if (p.command.empty()) fail(*command, "command must not be empty");
    const YAML::Node* name = f["name"];
    p.name = name != nullptr ? scalar(*name, "name") : p.id;
    if (const auto* v = f["args"]) p.args = args(*v);
    if (const auto* v = f["env"]) p.env = env(*v);
    if (const auto* v = f["work_dir"]) p.work_dir = scalar(*v, "work_dir");
    if (const auto* v = f["restart"]) p.restart = restart(*v);
    if (const auto* v = f["max_restarts"]) p.max_restarts = count(*v, "max_restarts");
    if (const auto* v = f["restart_backoff"]) p.restart_backoff = duration(*v, "restart_backoff");
    const YAML::Node* backoff_max = f["restart_backoff_max"];
    if (backoff_max == nullptr) {
      p.restart_backoff_max = std::max(p.restart_backoff_max, p.restart_backoff);
    } else {
      p.restart_backoff_max = duration(*backoff_max, "restart_backoff_max");
      if (p.restart_backoff_max < p.restart_backoff) {
        fail(*backoff_max, "restart_backoff_max (" + std::to_string(p.restart_backoff_max.count()) +
                               " ms) must not be shorter than restart_backoff (" +
                               std::to_string(p.restart_backoff.count()) + " ms)");
      }
    }
    if (const auto* v = f["restart_reset_after"]) {
      p.restart_reset_after = duration(*v, "restart_reset_after");
    }
    if (const auto* v = f["stop_timeout"]) p.stop_timeout = duration(*v, "stop_timeout");
    if (const auto* v = f["autostart"]) p.autostart = boolean(*v, "autostart");
    if (const auto* v = f["log_buffer"]) p.log_buffer = size(*v, "log_buffer");
    p.log_files = log_files(f, default_log_files);
    if (const auto* v = f["resources"]) p.resources = resources(*v);
    if (const auto* v = f["depends_on"]) p.depends_on = ids(*v, "depends_on");
    return p;
  }

 private:
  const std::string& file_;
};

// Fails on a depends_on that names no process, or on a cycle (naming it).
void check_dependencies(const Reader& r, const std::vector<ProcessSpec>& procs,
                        const std::vector<YAML::Node>& nodes) {
  std::map<std::string, std::size_t> index;
  for (std::size_t i = 0; i < procs.size(); ++i) index.emplace(procs[i].id, i);
  // The YAML node of the j-th entry of process i's depends_on (a scalar names only one).
  auto dep_node = [&](std::size_t i, std::size_t j) {
    const YAML::Node d = nodes[i]["depends_on"];
    return d.IsSequence() ? d[j] : d;
  };
  for (std::size_t i = 0; i < procs.size(); ++i) {
    for (std::size_t j = 0; j < procs[i].depends_on.size(); ++j) {
      const std::string& dep = procs[i].depends_on[j];
      if (index.count(dep) == 0) {
        r.fail(dep_node(i, j), "process " + procs[i].id + " depends on \"" + dep +
                                   "\", which is not a configured process id");
      }
    }
  }
  // Depth-first search; a dependency met again while still on the path closes a cycle.
  enum Mark { unseen, on_path, done };
  std::vector<Mark> mark(procs.size(), unseen);
  std::vector<std::size_t> path;
  std::function<void(std::size_t)> visit = [&](std::size_t i) {
    mark[i] = on_path;
    path.push_back(i);
    for (std::size_t j = 0; j < procs[i].depends_on.size(); ++j) {
      const std::size_t d = index.at(procs[i].depends_on[j]);
      if (mark[d] == on_path) {
        std::string cycle;
        const auto from = std::find(path.begin(), path.end(), d);
        for (auto it = from; it != path.end(); ++it) cycle += procs[*it].id + " -> ";
        cycle += procs[d].id;
        r.fail(dep_node(i, j), "dependency cycle: " + cycle +
                                   " (depends_on must not loop back; remove one of these)");
      }
      if (mark[d] == unseen) visit(d);
    }
    path.pop_back();
    mark[i] = done;
  };
  for (std::size_t i = 0; i < procs.size(); ++i) {
    if (mark[i] == unseen) visit(i);
  }
}

}  // namespace

int parse_signal(std::string_view text) {
  if (text.empty()) return 0;
  if (std::all_of(text.begin(), text.end(), is_digit)) {
    if (text.size() > 3) return 0;
    const int n = std::atoi(std::string(text).c_str());
    return n > 0 && n < NSIG ? n : 0;
  }
  if (text.rfind("SIG", 0) == 0) text.remove_prefix(3);
  for (int sig = 1; sig < NSIG; ++sig) {
    const char* abbrev = ::sigabbrev_np(sig);
    if (abbrev != nullptr && text == abbrev) return sig;
  }
  return 0;
}

std::string default_state_dir() {
  const char* xdg = std::getenv("XDG_RUNTIME_DIR");
  const std::string base = xdg != nullptr && xdg[0] == '/' ? xdg : "/tmp";
  return base + "/mgmtd-" + std::to_string(::geteuid());
}

std::vector<std::size_t> start_order(const std::vector<ProcessSpec>& processes) {
  std::map<std::string, std::size_t> index;
  for (std::size_t i = 0; i < processes.size(); ++i) index.emplace(processes[i].id, i);
  std::vector<bool> placed(processes.size(), false);
  std::vector<std::size_t> order;
  std::function<void(std::size_t)> place = [&](std::size_t i) {
    if (placed[i]) return;
    placed[i] = true;  // set first: a cycle (refused by the parser) cannot recurse forever
    for (const auto& dep : processes[i].depends_on) {
      if (const auto it = index.find(dep); it != index.end()) place(it->second);
    }
    order.push_back(i);
  };
  for (std::size_t i = 0; i < processes.size(); ++i) place(i);
  return order;
}

BackendConfig parse_backend_config(const YAML::Node& config, const std::string& file) {
  BackendConfig out;
  if (!config || config.IsNull()) return out;
  const Reader r(file);
  if (!config.IsMap()) r.fail(config, "the process backend's config must be a map with a `processes:` list");
  const Reader::Fields f(r, config,
                         {"log_buffer", "log_file_dir", "log_max_size", "log_max_files",
                          "state_dir", "subreaper", "processes"},
                         "the process backend's config");
  const YAML::Node* buffer = f["log_buffer"];
  const std::size_t log_buffer =
      buffer != nullptr ? r.size(*buffer, "log_buffer") : kDefaultLogBuffer;
  const LogFiles log_files = r.log_files(f, LogFiles{});
  if (const auto* v = f["state_dir"]) out.state_dir = r.dir(*v, "state_dir");
  if (const auto* v = f["subreaper"]) out.subreaper = r.boolean(*v, "subreaper");
  const YAML::Node* processes = f["processes"];
  if (processes == nullptr || processes->IsNull()) return out;
  const YAML::Node& list = *processes;
  if (!list.IsSequence()) r.fail(list, "processes must be a list of `- id: ...` entries");
  std::map<std::string, YAML::Node> seen;
  std::vector<YAML::Node> nodes;
  for (const auto& n : list) {
    ProcessSpec p = r.process(n, log_buffer, log_files);
    const YAML::Node id_node = n["id"];
    const auto [first, inserted] = seen.emplace(p.id, id_node);
    if (!inserted) {
      r.fail(id_node, "duplicate id \"" + p.id + "\" (line " +
                          std::to_string(id_node.Mark().line + 1) + ", first defined at line " +
                          std::to_string(first->second.Mark().line + 1) +
                          "); every process needs its own id");
    }
    out.processes.push_back(std::move(p));
    nodes.push_back(n);
  }
  check_dependencies(r, out.processes, nodes);
  return out;
}

}  // namespace mgmt::process
