#include "mgmt/server/config.hpp"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <grp.h>
#include <pwd.h>

#include "mgmt/client.hpp"
#include "mgmt/units.hpp"
#include "mgmt/wire.hpp"

namespace fs = std::filesystem;

namespace mgmt {

std::string where(const std::string& file, const YAML::Node& node) {
  const YAML::Mark m = node.Mark();
  if (m.is_null()) return file;
  return file + ":" + std::to_string(m.line + 1) + ":" + std::to_string(m.column + 1);
}

std::uint8_t parse_msg_type(const std::string& text) {
  std::size_t used = 0;
  unsigned long v = 0;
  try {
    v = std::stoul(text, &used, 0);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text.size() || v > 0xFF) {
    throw std::invalid_argument("\"" + text + "\" is not a message type (write it as 0xA0)");
  }
  return static_cast<std::uint8_t>(v);
}

namespace {

// The stock mapping, used when mgmt.yaml has no `handlers` section.
const std::pair<std::uint8_t, const char*> kStockHandlers[] = {
    {0xA0, "list"}, {0xA2, "status"}, {0xA4, "logs"},
    {0xA6, "events"}, {0xA8, "start"}, {0xA9, "stop"},
};

class Reader {
 public:
  explicit Reader(std::string file) : file_(std::move(file)) {}

  [[noreturn]] void fail(const YAML::Node& n, const std::string& msg) const {
    throw ConfigError(where(file_, n) + ": " + msg);
  }

  void only_keys(const YAML::Node& map, std::initializer_list<const char*> allowed,
                 const std::string& section) const {
    for (const auto& kv : map) {
      if (!kv.first.IsScalar()) fail(kv.first, "keys in " + section + " must be plain names");
      const auto key = kv.first.as<std::string>();
      bool ok = false;
      for (const char* a : allowed) ok = ok || key == a;
      if (!ok) {
        std::string list;
        for (const char* a : allowed) list += std::string(list.empty() ? "" : ", ") + a;
        fail(kv.first, "unknown key \"" + key + "\" in " + section + " (expected one of: " +
                           list + ")");
      }
    }
  }

  std::string scalar(const YAML::Node& n, const std::string& what) const {
    if (!n.IsScalar()) fail(n, what + " must be a string");
    return n.as<std::string>();
  }

  bool boolean(const YAML::Node& n, const std::string& what) const {
    bool v = false;
    if (!n.IsScalar() || !YAML::convert<bool>::decode(n, v)) fail(n, what + " must be true or false");
    return v;
  }

  std::uint64_t size(const YAML::Node& n, const std::string& what) const {
    const std::string s = scalar(n, what);
    const auto v = parse_size(s);
    if (!v) fail(n, what + " must be a size such as 1048576, 64KiB or 1MiB (got \"" + s + "\")");
    return *v;
  }

  std::chrono::milliseconds duration(const YAML::Node& n, const std::string& what) const {
    const std::string s = scalar(n, what);
    const auto v = parse_duration(s);
    if (!v) fail(n, what + " must be a duration such as 500ms, 10s, 5m or 0 (got \"" + s + "\")");
    return *v;
  }

  Right right(const YAML::Node& n, const std::string& what) const {
    const std::string s = scalar(n, what);
    if (s == "read") return Right::read;
    if (s == "control") return Right::control;
    fail(n, what + " must be read or control (got \"" + s + "\")");
  }

  PluginRef plugin_ref(const YAML::Node& n, const std::string& what) const {
    PluginRef ref;
    ref.origin = where(file_, n);
    if (n.IsScalar()) {
      ref.plugin = n.as<std::string>();
    } else if (n.IsMap()) {
      only_keys(n, {"plugin", "version", "config", "right"}, what);
      if (!n["plugin"]) fail(n, what + " needs a `plugin:` naming the plugin to load");
      ref.plugin = scalar(n["plugin"], what + ".plugin");
      ref.origin = where(file_, n["plugin"]);
      if (n["version"]) {
        try {
          ref.version = VersionConstraint(scalar(n["version"], what + ".version"));
        } catch (const std::invalid_argument& e) {
          fail(n["version"], e.what());
        }
      }
      if (const auto config = n["config"]) ref.config = config;
      if (n["right"]) ref.right = right(n["right"], what + ".right");
    } else {
      fail(n, what + " must be a plugin name or a map with `plugin:`");
    }
    if (ref.plugin.empty()) fail(n, what + ": the plugin name is empty");
    return ref;
  }

  const std::string& file() const { return file_; }

 private:
  std::string file_;
};

std::vector<YAML::Node> as_list(const Reader& r, const YAML::Node& n, const std::string& what) {
  std::vector<YAML::Node> out;
  if (!n) return out;
  if (n.IsScalar()) {
    out.push_back(n);
  } else if (n.IsSequence()) {
    for (const auto& e : n) out.push_back(e);
  } else {
    r.fail(n, what + " must be a name or a list of names");
  }
  return out;
}

// A numeric uid or gid ("1000"); nullopt for names.
std::optional<unsigned> numeric_id(const std::string& s) {
  unsigned v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

uid_t lookup_user(const Reader& r, const YAML::Node& n, const std::string& what) {
  const std::string name = r.scalar(n, what);
  if (auto id = numeric_id(name)) return static_cast<uid_t>(*id);
  passwd pw{};
  passwd* found = nullptr;
  std::vector<char> buf(16384);
  if (::getpwnam_r(name.c_str(), &pw, buf.data(), buf.size(), &found) != 0 || !found) {
    r.fail(n, "unknown user \"" + name + "\" in " + what + " (give a user name or a uid)");
  }
  return pw.pw_uid;
}

gid_t lookup_group(const Reader& r, const YAML::Node& n, const std::string& what) {
  const std::string name = r.scalar(n, what);
  if (auto id = numeric_id(name)) return static_cast<gid_t>(*id);
  group gr{};
  group* found = nullptr;
  std::vector<char> buf(16384);
  if (::getgrnam_r(name.c_str(), &gr, buf.data(), buf.size(), &found) != 0 || !found) {
    r.fail(n, "unknown group \"" + name + "\" in " + what + " (give a group name or a gid)");
  }
  return gr.gr_gid;
}

std::string absolute_from(const fs::path& base_dir, const std::string& p) {
  fs::path path(p);
  if (path.is_relative()) path = base_dir / path;
  return path.lexically_normal().string();
}

}  // namespace

ServerConfig parse_config(const std::string& text, const std::string& file,
                          const std::string& builtin_plugin_dir) {
  Reader r(file);
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    throw ConfigError(file + ":" + std::to_string(e.mark.line + 1) + ":" +
                      std::to_string(e.mark.column + 1) + ": invalid YAML: " + e.msg);
  }
  if (!root.IsMap()) {
    throw ConfigError(file + ":1:1: the configuration must be a YAML map with at least a "
                             "`backend:` section");
  }
  const fs::path base_dir = fs::absolute(fs::path(file)).parent_path();
  ServerConfig cfg;
  cfg.file = file;

  try {
    r.only_keys(root,
                {"server", "plugin_dirs", "backend", "handlers", "commands", "limits", "access", "log",
                 "streams"},
                "the top level");
    // server
    std::string runtime_dir;
    if (const auto server = root["server"]) {
      if (!server.IsMap()) r.fail(server, "server must be a map");
      r.only_keys(server, {"socket", "runtime_dir", "write_hint", "io_threads"}, "server");
      if (server["socket"] && server["runtime_dir"]) {
        r.fail(server["runtime_dir"], "give either server.socket or server.runtime_dir, not both");
      }
      if (server["socket"]) cfg.socket_path = absolute_from(base_dir, r.scalar(server["socket"], "server.socket"));
      if (server["runtime_dir"]) {
        runtime_dir = absolute_from(base_dir, r.scalar(server["runtime_dir"], "server.runtime_dir"));
      }
      if (server["write_hint"]) cfg.write_hint = r.boolean(server["write_hint"], "server.write_hint");
      if (const auto n = server["io_threads"]) {
        const std::string v = r.scalar(n, "server.io_threads");
        unsigned t = 0;
        const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), t);
        if (v == "auto") {
          t = 0;  // one per core, counted at start
        } else if (ec != std::errc() || end != v.data() + v.size() || t < 1 || t > 64) {
          r.fail(n, "server.io_threads must be a number of threads from 1 to 64, or auto (got \"" +
                        v + "\")");
        }
        cfg.limits.io_threads = t;
      }
    }
    if (cfg.socket_path.empty()) {
      if (runtime_dir.empty()) runtime_dir = default_runtime_dir();
      cfg.socket_path = (fs::path(runtime_dir) / "manager.sock").string();
    }

    // plugin_dirs
    if (const auto dirs = root["plugin_dirs"]) {
      if (dirs.IsScalar()) {
        cfg.plugin_dirs.push_back(absolute_from(base_dir, dirs.as<std::string>()));
      } else if (dirs.IsSequence()) {
        for (const auto& d : dirs) cfg.plugin_dirs.push_back(absolute_from(base_dir, r.scalar(d, "plugin_dirs entry")));
      } else {
        r.fail(dirs, "plugin_dirs must be a list of directories");
      }
    }
    if (!builtin_plugin_dir.empty()) cfg.plugin_dirs.push_back(builtin_plugin_dir);

    // backend
    const auto backend = root["backend"];
    if (!backend) {
      throw ConfigError(file + ":1:1: missing `backend:` section (for the stock supervisor write "
                               "`backend: {plugin: process, config: {processes: [...]}}`)");
    }
    cfg.backend = r.plugin_ref(backend, "backend");

    // handlers
    if (const auto handlers = root["handlers"]) {
      if (!handlers.IsMap()) r.fail(handlers, "handlers must be a map from message type to plugin");
      for (const auto& kv : handlers) {
        std::uint8_t type = 0;
        try {
          type = parse_msg_type(kv.first.as<std::string>());
        } catch (const std::invalid_argument& e) {
          r.fail(kv.first, e.what());
        }
        if (type >= kFirstCommandType && type <= kLastCommandType) {
          r.fail(kv.first, type_hex(type) + " is an extra-command type: map it under `commands:`");
        }
        if (cfg.handlers.count(type)) r.fail(kv.first, type_hex(type) + " is mapped twice");
        cfg.handlers[type] = r.plugin_ref(kv.second, "handler " + type_hex(type));
      }
    } else {
      for (const auto& [type, name] : kStockHandlers) {
        PluginRef ref;
        ref.plugin = name;
        ref.origin = file + " (stock handler for " + type_hex(type) + ")";
        cfg.handlers[type] = std::move(ref);
      }
    }

    // commands
    if (const auto commands = root["commands"]) {
      if (!commands.IsMap()) r.fail(commands, "commands must be a map from message type to plugin");
      for (const auto& kv : commands) {
        std::uint8_t type = 0;
        try {
          type = parse_msg_type(kv.first.as<std::string>());
        } catch (const std::invalid_argument& e) {
          r.fail(kv.first, e.what());
        }
        if (type < kFirstCommandType || type > kLastCommandType) {
          r.fail(kv.first, "extra commands use types 0xaa..0xaf, not " + type_hex(type));
        }
        if (cfg.handlers.count(type)) r.fail(kv.first, type_hex(type) + " is mapped twice");
        cfg.handlers[type] = r.plugin_ref(kv.second, "command " + type_hex(type));
      }
    }

    // limits
    if (const auto limits = root["limits"]) {
      if (!limits.IsMap()) r.fail(limits, "limits must be a map");
      r.only_keys(limits,
                  {"max_request", "max_queue", "max_queue_total", "max_connections",
                   "max_connections_per_uid", "reserved_connections", "idle_timeout",
                   "frame_timeout"},
                  "limits");
      if (limits["idle_timeout"]) {
        cfg.limits.idle_timeout = r.duration(limits["idle_timeout"], "limits.idle_timeout");
      }
      if (limits["frame_timeout"]) {
        cfg.limits.frame_timeout = r.duration(limits["frame_timeout"], "limits.frame_timeout");
      }
      if (limits["max_request"]) {
        const auto v = r.size(limits["max_request"], "limits.max_request");
        if (v == 0 || v > kMaxPayload) {
          r.fail(limits["max_request"], "limits.max_request must be between 1 and 16MiB");
        }
        cfg.limits.max_request = static_cast<std::uint32_t>(v);
      }
      if (limits["max_queue"]) {
        const auto v = r.size(limits["max_queue"], "limits.max_queue");
        if (v < 64 * 1024) r.fail(limits["max_queue"], "limits.max_queue must be at least 64KiB");
        cfg.limits.max_queue_bytes = v;
      }
      if (limits["max_queue_total"]) {
        const auto v = r.size(limits["max_queue_total"], "limits.max_queue_total");
        // Below max_queue one connection could not use what max_queue grants it; below
        // max_request a request of the largest size allowed could never be read.
        const std::uint64_t floor =
            std::max<std::uint64_t>(cfg.limits.max_queue_bytes, cfg.limits.max_request);
        if (v < floor) {
          r.fail(limits["max_queue_total"],
                 "limits.max_queue_total must be at least limits.max_queue and "
                 "limits.max_request (" + std::to_string(floor) + " bytes)");
        }
        cfg.limits.max_queue_total = v;
      }
      if (limits["max_connections"]) {
        const auto v = r.size(limits["max_connections"], "limits.max_connections");
        if (v == 0) r.fail(limits["max_connections"], "limits.max_connections must be at least 1");
        cfg.limits.max_connections = v;
      }
      if (limits["max_connections_per_uid"]) {
        const auto v = r.size(limits["max_connections_per_uid"], "limits.max_connections_per_uid");
        if (v == 0) {
          r.fail(limits["max_connections_per_uid"],
                 "limits.max_connections_per_uid must be at least 1");
        }
        cfg.limits.max_connections_per_uid = v;
      }
      if (limits["reserved_connections"]) {
        const auto v = r.size(limits["reserved_connections"], "limits.reserved_connections");
        if (v >= cfg.limits.max_connections) {
          r.fail(limits["reserved_connections"],
                 "limits.reserved_connections must be less than limits.max_connections (" +
                     std::to_string(cfg.limits.max_connections) + ")");
        }
        cfg.limits.reserved_connections = v;
      }
    }

    // streams
    if (const auto streams = root["streams"]) {
      if (!streams.IsMap()) r.fail(streams, "streams must be a map");
      r.only_keys(streams, {"spill_dir", "spill_quota", "spill_quota_total", "on_overflow"},
                  "streams");
      if (streams["spill_dir"]) {
        const std::string dir = r.scalar(streams["spill_dir"], "streams.spill_dir");
        if (dir.empty()) r.fail(streams["spill_dir"], "streams.spill_dir must not be empty");
        cfg.streams.spill_dir = absolute_from(base_dir, dir);
      }
      if (streams["spill_quota"]) {
        // 0 turns spilling off: a reader more than limits.max_queue behind loses frames.
        cfg.streams.spill_quota = r.size(streams["spill_quota"], "streams.spill_quota");
      }
      if (streams["spill_quota_total"]) {
        // 0 turns spilling off as spill_quota 0 does.
        cfg.streams.spill_quota_total =
            r.size(streams["spill_quota_total"], "streams.spill_quota_total");
      }
      if (const auto o = streams["on_overflow"]) {
        const std::string v = r.scalar(o, "streams.on_overflow");
        if (v == "notify") {
          cfg.streams.on_overflow = StreamsConfig::Overflow::notify;
        } else if (v == "disconnect") {
          cfg.streams.on_overflow = StreamsConfig::Overflow::disconnect;
        } else {
          r.fail(o, "streams.on_overflow must be notify or disconnect (got \"" + v + "\")");
        }
      }
    }

    // access
    if (const auto access = root["access"]) {
      if (!access.IsMap()) r.fail(access, "access must be a map");
      r.only_keys(access, {"socket_mode", "socket_group", "rules"}, "access");
      if (const auto mode = access["socket_mode"]) {
        const std::string text = r.scalar(mode, "access.socket_mode");
        std::size_t used = 0;
        unsigned long v = 0;
        try {
          v = std::stoul(text, &used, 8);
        } catch (const std::exception&) {
          used = 0;
        }
        if (used == 0 || used != text.size() || v > 0777 || (v & 0600) != 0600) {
          r.fail(mode, "access.socket_mode must be an octal mode that lets the owner read and "
                       "write, such as \"0600\" or \"0660\" (quote it)");
        }
        cfg.access.socket_mode = static_cast<mode_t>(v);
      }
      if (const auto group = access["socket_group"]) {
        cfg.access.socket_group = lookup_group(r, group, "access.socket_group");
      }
      if (const auto rules = access["rules"]) {
        if (!rules.IsSequence()) r.fail(rules, "access.rules must be a list");
        for (const auto& rule : rules) {
          if (!rule.IsMap()) r.fail(rule, "each access rule must be a map with users/groups and allow");
          r.only_keys(rule, {"users", "groups", "allow"}, "an access rule");
          AccessRule ar;
          for (const auto& u : as_list(r, rule["users"], "users")) ar.uids.push_back(lookup_user(r, u, "users"));
          for (const auto& g : as_list(r, rule["groups"], "groups")) ar.gids.push_back(lookup_group(r, g, "groups"));
          if (ar.uids.empty() && ar.gids.empty()) r.fail(rule, "an access rule needs `users:` or `groups:`");
          if (!rule["allow"]) r.fail(rule, "an access rule needs `allow: [read]` or `allow: [read, control]`");
          for (const auto& a : as_list(r, rule["allow"], "allow")) ar.rights |= bit(r.right(a, "allow"));
          cfg.access.rules.push_back(std::move(ar));
        }
      }
    }

    // log
    if (const auto log = root["log"]) {
      if (!log.IsMap()) r.fail(log, "log must be a map");
      r.only_keys(log, {"level"}, "log");
      if (log["level"]) {
        static const std::set<std::string> levels{"trace", "debug", "info", "warn", "error", "off"};
        cfg.log_level = r.scalar(log["level"], "log.level");
        if (!levels.count(cfg.log_level)) {
          r.fail(log["level"], "log.level must be one of trace, debug, info, warn, error, off");
        }
      }
    }
  } catch (const YAML::Exception& e) {
    // Conversions inside yaml-cpp (e.g. a key that is not a scalar).
    throw ConfigError(file + ":" + std::to_string(e.mark.line + 1) + ":" +
                      std::to_string(e.mark.column + 1) + ": " + e.msg);
  }
  return cfg;
}

ServerConfig load_config(const std::string& path, const std::string& builtin_plugin_dir) {
  std::ifstream in(path);
  if (!in) {
    throw ConfigError(path + ": cannot read the configuration file: " +
                      std::string(std::strerror(errno)) + " (pass another with -c FILE)");
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_config(ss.str(), path, builtin_plugin_dir);
}

}  // namespace mgmt
