#include "process_config.hpp"

#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <limits>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <system_error>

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
bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), is_digit);
}

struct RLimitName {
  std::string_view name;
  int resource;
  bool bytes;  // takes sizes such as 64MiB
};
constexpr RLimitName kRLimits[] = {
    {"nofile", RLIMIT_NOFILE, false}, {"nproc", RLIMIT_NPROC, false},
    {"core", RLIMIT_CORE, true},      {"memlock", RLIMIT_MEMLOCK, true},
    {"stack", RLIMIT_STACK, true},    {"as", RLIMIT_AS, true},
    {"cpu", RLIMIT_CPU, false},       {"fsize", RLIMIT_FSIZE, true},
};

// A user of the user database. The *_r lookups: a reload reads the config on a thread of
// its own, and getpwnam's static buffer is not ours alone.
struct UserEntry {
  std::string name, home, shell;
  uid_t uid = 0;
  gid_t gid = 0;
};

std::optional<UserEntry> lookup_user(const std::string& s) {
  std::vector<char> buf(16384);
  passwd pw{};
  passwd* found = nullptr;
  while (true) {
    const int rc = all_digits(s) && s.size() <= 10
                       ? ::getpwuid_r(static_cast<uid_t>(std::strtoul(s.c_str(), nullptr, 10)),
                                      &pw, buf.data(), buf.size(), &found)
                       : ::getpwnam_r(s.c_str(), &pw, buf.data(), buf.size(), &found);
    if (rc != ERANGE || buf.size() >= (std::size_t{1} << 22)) break;
    buf.resize(buf.size() * 2);
  }
  if (found == nullptr) return std::nullopt;
  return UserEntry{pw.pw_name, pw.pw_dir != nullptr ? pw.pw_dir : "/",
                   pw.pw_shell != nullptr && pw.pw_shell[0] != '\0' ? pw.pw_shell : "/bin/sh",
                   pw.pw_uid, pw.pw_gid};
}

std::optional<gid_t> lookup_group(const std::string& s) {
  std::vector<char> buf(16384);
  group gr{};
  group* found = nullptr;
  while (true) {
    const int rc = all_digits(s) && s.size() <= 10
                       ? ::getgrgid_r(static_cast<gid_t>(std::strtoul(s.c_str(), nullptr, 10)),
                                      &gr, buf.data(), buf.size(), &found)
                       : ::getgrnam_r(s.c_str(), &gr, buf.data(), buf.size(), &found);
    if (rc != ERANGE || buf.size() >= (std::size_t{1} << 22)) break;
    buf.resize(buf.size() * 2);
  }
  if (found == nullptr) return std::nullopt;
  return gr.gr_gid;
}

// The groups initgroups(name, gid) would set.
std::vector<std::uint32_t> group_list(const std::string& name, gid_t gid) {
  int n = 32;
  std::vector<gid_t> groups;
  while (true) {
    groups.resize(static_cast<std::size_t>(n));
    const int want = n;
    if (::getgrouplist(name.c_str(), gid, groups.data(), &n) >= 0) break;
    if (n <= want) n = want * 2;  // some implementations do not say how many
    if (n > 65536) {
      n = want;
      break;
    }
  }
  groups.resize(static_cast<std::size_t>(n));
  return {groups.begin(), groups.end()};
}

// `path` taken relative to the folder of `file` when relative, made absolute.
std::string resolve_path(const std::string& file, const std::string& path) {
  namespace fs = std::filesystem;
  fs::path p(path);
  if (p.is_relative()) p = fs::path(file).parent_path() / p;
  std::error_code ec;
  const fs::path abs = fs::absolute(p, ec);
  return (ec ? p : abs).lexically_normal().string();
}

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  for (std::size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) {
    s.replace(at, from.size(), to);
  }
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
    return resolve_path(file_, s);
  }

  // A whole number from `lo` to `hi`.
  long long integer(const YAML::Node& n, std::string_view what, long long lo, long long hi,
                    std::string_view example) const {
    const std::string s = n.IsScalar() ? n.Scalar() : std::string();
    const char* begin = s.data() + (!s.empty() && s[0] == '+' ? 1 : 0);
    long long v = 0;
    const auto [end, ec] = std::from_chars(begin, s.data() + s.size(), v);
    if (s.empty() || ec != std::errc() || end != s.data() + s.size() || v < lo || v > hi) {
      fail(n, std::string(what) + " must be a whole number from " + std::to_string(lo) + " to " +
                  std::to_string(hi) + " such as " + std::string(example) + " (got \"" + s +
                  "\")");
    }
    return v;
  }

  Identity identity(const YAML::Node* user, const YAML::Node* grp) const {
    Identity id;
    const bool root = ::geteuid() == 0;
    if (user != nullptr) {
      id.user = scalar(*user, "user");
      const auto pw = lookup_user(id.user);
      if (!pw) {
        fail(*user, "user \"" + id.user +
                        "\" does not exist (no entry in the user database); name an existing "
                        "user, by name or uid");
      }
      if (!root && pw->uid != ::geteuid()) {
        fail(*user, "mgmtd runs as uid " + std::to_string(::geteuid()) +
                        ", not root, so it cannot switch to user " + id.user + " (uid " +
                        std::to_string(pw->uid) + "); run mgmtd as root or remove `user:`");
      }
      id.uid = pw->uid;
      id.gid = pw->gid;
      id.name = pw->name;
      id.home = pw->home;
      id.shell = pw->shell;
    }
    if (grp != nullptr) {
      id.group = scalar(*grp, "group");
      const auto gid = lookup_group(id.group);
      if (!gid) {
        fail(*grp, "group \"" + id.group +
                       "\" does not exist (no entry in the group database); name an existing "
                       "group, by name or gid");
      }
      if (!root && *gid != ::getegid()) {
        fail(*grp, "mgmtd runs as gid " + std::to_string(::getegid()) +
                       ", not root, so it cannot switch to group " + id.group + " (gid " +
                       std::to_string(*gid) + "); run mgmtd as root or remove `group:`");
      }
      id.gid = *gid;
    }
    if (root && !id.empty()) {
      id.switch_ids = true;
      // Like initgroups(3): the user's groups; with `group:` alone, that group only.
      id.groups =
          id.user.empty() ? std::vector<std::uint32_t>{id.gid} : group_list(id.name, id.gid);
    }
    return id;
  }

  int umask_value(const YAML::Node& n) const {
    const std::string s = n.IsScalar() ? n.Scalar() : std::string();
    int v = 0;
    bool ok = !s.empty() && s.size() <= 4;
    for (char c : s) {
      ok = ok && c >= '0' && c <= '7';
      if (ok) v = v * 8 + (c - '0');
    }
    if (!ok || v > 0777) {
      fail(n, "umask must be an octal mode such as \"027\" or \"0022\" (got \"" + s + "\")");
    }
    return v;
  }

  std::vector<EnvFile> env_files(const YAML::Node& n) const {
    std::vector<YAML::Node> items;
    if (n.IsScalar()) {
      items.push_back(n);
    } else if (n.IsSequence()) {
      for (const auto& item : n) items.push_back(item);
    } else {
      fail(n, "env_file must be a path or a list of paths, e.g. [/etc/web.env, -/etc/web.local]");
    }
    std::vector<EnvFile> out;
    for (const auto& item : items) {
      std::string s = scalar(item, "each env_file");
      EnvFile f;
      if (!s.empty() && s[0] == '-') {
        f.optional = true;
        s.erase(0, 1);
      }
      if (s.empty()) fail(item, "env_file must name a file");
      f.path = resolve_path(file_, s);
      out.push_back(std::move(f));
    }
    return out;
  }

  std::vector<RLimit> rlimits(const YAML::Node& n) const {
    if (!n.IsMap()) fail(n, "rlimits must be a map such as {nofile: 65536, core: unlimited}");
    std::vector<RLimit> out;
    for (const auto& kv : n) {
      const std::string key = kv.first.IsScalar() ? kv.first.Scalar() : std::string();
      const auto* known = std::find_if(std::begin(kRLimits), std::end(kRLimits),
                                       [&](const RLimitName& r) { return r.name == key; });
      if (known == std::end(kRLimits)) {
        fail(kv.first, "unknown key \"" + key +
                           "\" in rlimits (expected one of: nofile, nproc, core, memlock, stack, "
                           "as, cpu, fsize)");
      }
      const YAML::Node& v = kv.second;
      const std::string s = v.IsScalar() ? v.Scalar() : std::string();
      auto one = [&](std::string_view t) -> std::optional<std::uint64_t> {
        if (t == "unlimited" || t == "infinity") return RLIM_INFINITY;
        if (known->bytes) {
          const auto b = parse_size(std::string(t));
          if (b && *b < RLIM_INFINITY) return *b;
          return std::nullopt;
        }
        std::uint64_t x = 0;
        const auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), x);
        if (t.empty() || ec != std::errc() || end != t.data() + t.size() || x >= RLIM_INFINITY) {
          return std::nullopt;
        }
        return x;
      };
      const auto colon = s.find(':');
      const auto soft = one(std::string_view(s).substr(0, colon));
      const auto hard =
          colon == std::string::npos ? soft : one(std::string_view(s).substr(colon + 1));
      if (!soft || !hard) {
        fail(v, "rlimits." + key + " must be a number" +
                    (known->bytes ? std::string(" or a size such as 64MiB") : std::string()) +
                    ", `unlimited`, or soft:hard such as 1024:4096 (got \"" + s + "\")");
      }
      if (*soft > *hard) {
        fail(v, "rlimits." + key + ": the soft limit must not be above the hard one (got \"" + s +
                    "\")");
      }
      out.push_back(RLimit{known->resource, *soft, *hard});
    }
    return out;
  }

  std::vector<int> exit_codes(const YAML::Node& n) const {
    std::vector<int> out;
    if (n.IsScalar()) {
      out.push_back(static_cast<int>(integer(n, "success_exit_codes", 0, 255, "[0, 2]")));
    } else if (n.IsSequence()) {
      for (const auto& c : n) {
        out.push_back(static_cast<int>(integer(c, "each of success_exit_codes", 0, 255, "2")));
      }
    } else {
      fail(n, "success_exit_codes must be a list of exit codes, e.g. [0, 2]");
    }
    return out;
  }

  void tty_size(const YAML::Node& n, ProcessSpec& p) const {
    const std::string s = n.IsScalar() ? n.Scalar() : std::string();
    const auto x = s.find('x');
    unsigned cols = 0, rows = 0;
    bool ok = x != std::string::npos;
    if (ok) {
      const auto [e1, ec1] = std::from_chars(s.data(), s.data() + x, cols);
      const auto [e2, ec2] = std::from_chars(s.data() + x + 1, s.data() + s.size(), rows);
      ok = ec1 == std::errc() && e1 == s.data() + x && ec2 == std::errc() &&
           e2 == s.data() + s.size() && cols >= 1 && cols <= 65535 && rows >= 1 && rows <= 65535;
    }
    if (!ok) fail(n, "tty_size must read COLUMNSxROWS such as 80x24 (got \"" + s + "\")");
    p.tty_cols = static_cast<std::uint16_t>(cols);
    p.tty_rows = static_cast<std::uint16_t>(rows);
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
    if (const auto* v = f["log_timestamps"]) base.timestamps = boolean(*v, "log_timestamps");
    if (const auto* v = f["log_journal"]) base.journal = boolean(*v, "log_journal");
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

  // `instances` receives the entry's `instances:` (0 without).
  ProcessSpec process(const YAML::Node& n, std::size_t default_log_buffer,
                      const LogFiles& default_log_files, std::uint32_t& instances) const {
    if (!n.IsMap()) fail(n, "each entry of processes must be a map with at least id and command");
    const Fields f(*this, n,
                   {"id", "name", "command", "args", "env", "work_dir", "restart", "max_restarts",
                    "restart_backoff", "restart_backoff_max", "restart_reset_after", "stop_timeout",
                    "autostart", "log_buffer", "log_file_dir", "log_max_size", "log_max_files",
                    "log_timestamps", "log_journal", "resources", "depends_on", "user", "group", "umask",
                    "env_file", "clear_env",
                    "rlimits", "nice", "oom_score_adj", "stop_signal", "stop_group",
                    "start_seconds", "start_retries", "success_exit_codes", "instances", "tty",
                    "tty_size", "ready", "health"},
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
    p.identity = identity(f["user"], f["group"]);
    if (const auto* v = f["umask"]) p.umask = umask_value(*v);
    if (const auto* v = f["env_file"]) p.env_files = env_files(*v);
    if (const auto* v = f["clear_env"]) p.clear_env = boolean(*v, "clear_env");
    if (const auto* v = f["rlimits"]) p.rlimits = rlimits(*v);
    if (const auto* v = f["nice"]) p.nice = static_cast<int>(integer(*v, "nice", -20, 19, "10"));
    if (const auto* v = f["oom_score_adj"]) {
      p.oom_score_adj = static_cast<int>(integer(*v, "oom_score_adj", -1000, 1000, "500"));
    }
    if (const auto* v = f["stop_signal"]) {
      const std::string s = v->IsScalar() ? v->Scalar() : std::string();
      p.stop_signal = parse_signal(s);
      if (p.stop_signal == 0) {
        fail(*v, "stop_signal must be a signal name or number such as TERM, SIGINT or 15 (got \"" +
                     s + "\")");
      }
    }
    if (const auto* v = f["stop_group"]) p.stop_group = boolean(*v, "stop_group");
    if (const auto* v = f["start_seconds"]) p.start_seconds = duration(*v, "start_seconds");
    if (const auto* v = f["start_retries"]) p.start_retries = count(*v, "start_retries");
    if (const auto* v = f["success_exit_codes"]) p.success_exit_codes = exit_codes(*v);
    if (const auto* v = f["tty"]) p.tty = boolean(*v, "tty");
    if (const auto* v = f["tty_size"]) {
      if (!p.tty) fail(*v, "tty_size needs `tty: true`");
      tty_size(*v, p);
    }
    if (const auto* v = f["ready"]) p.ready = parse_ready(*v, file_);
    if (const auto* v = f["health"]) {
      p.health = parse_health(*v, file_);
      if (p.health->watchdog.count() > 0 &&
          (!p.ready || p.ready->probe.kind != Probe::Kind::notify)) {
        fail((*v)["watchdog"], "health.watchdog needs `ready: {notify: true}` (the child sends "
                               "WATCHDOG=1 to $NOTIFY_SOCKET)");
      }
    }
    instances = 0;
    if (const auto* v = f["instances"]) {
      instances = static_cast<std::uint32_t>(integer(*v, "instances", 1, 1000, "4"));
    }
    return p;
  }

 private:
  const std::string& file_;
};

// Fails on a depends_on that names no process, or on a cycle (naming it). `procs` holds
// one spec per entry of the file (before `instances:` expands it), `entry_ids` the entry's
// id, which depends_on may name for all its instances, and `counts` its instances (0
// without), which depends_on may also name one by one. Cycles are found between entries.
void check_dependencies(const Reader& r, const std::vector<ProcessSpec>& procs,
                        const std::vector<std::string>& entry_ids,
                        const std::vector<std::uint32_t>& counts,
                        const std::vector<YAML::Node>& nodes) {
  std::map<std::string, std::size_t> index;
  for (std::size_t i = 0; i < procs.size(); ++i) {
    index.emplace(entry_ids[i], i);
    for (std::uint32_t n = 0; n < counts[i]; ++n) {
      index.emplace(entry_ids[i] + "-" + std::to_string(n), i);
    }
  }
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

std::string_view rlimit_name(int resource) {
  for (const auto& r : kRLimits) {
    if (r.resource == resource) return r.name;
  }
  return "?";
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
                          "log_timestamps", "log_journal", "state_dir", "subreaper", "processes"},
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
  std::vector<ProcessSpec> entries;   // one per entry of the file
  std::vector<std::uint32_t> counts;  // its `instances:` (0 without)
  std::vector<std::string> entry_ids;
  for (const auto& n : list) {
    std::uint32_t instances = 0;
    ProcessSpec p = r.process(n, log_buffer, log_files, instances);
    const YAML::Node id_node = n["id"];
    // An entry with instances takes the ids <id>-0 ... <id>-(N-1), and its own id stays
    // reserved: depends_on names all of them by it.
    for (std::uint32_t i = 0; i <= instances; ++i) {
      const std::string id = i < instances ? p.id + "-" + std::to_string(i) : p.id;
      const auto [first, inserted] = seen.emplace(id, id_node);
      if (!inserted) {
        r.fail(id_node, "duplicate id \"" + id + "\" (line " +
                            std::to_string(id_node.Mark().line + 1) + ", first defined at line " +
                            std::to_string(first->second.Mark().line + 1) +
                            "); every process needs its own id");
      }
    }
    entry_ids.push_back(p.id);
    entries.push_back(std::move(p));
    counts.push_back(instances);
    nodes.push_back(n);
  }
  check_dependencies(r, entries, entry_ids, counts, nodes);
  // depends_on naming an entry with instances means every instance of it.
  std::map<std::string, std::uint32_t> instanced;
  for (std::size_t i = 0; i < entries.size(); ++i) {
    if (counts[i] > 0) instanced.emplace(entry_ids[i], counts[i]);
  }
  for (std::size_t e = 0; e < entries.size(); ++e) {
    ProcessSpec& base = entries[e];
    if (!instanced.empty()) {
      std::vector<std::string> deps;
      for (const auto& d : base.depends_on) {
        const auto it = instanced.find(d);
        if (it == instanced.end()) {
          deps.push_back(d);
          continue;
        }
        for (std::uint32_t i = 0; i < it->second; ++i) deps.push_back(d + "-" + std::to_string(i));
      }
      base.depends_on = std::move(deps);
    }
    if (counts[e] == 0) {
      out.processes.push_back(std::move(base));
      continue;
    }
    for (std::uint32_t i = 0; i < counts[e]; ++i) {
      ProcessSpec p = base;
      const std::string n = std::to_string(i);
      p.id = base.id + "-" + n;
      p.instance = static_cast<int>(i);
      if (base.name == base.id) p.name = p.id;
      replace_all(p.name, "{instance}", n);
      for (auto& a : p.args) replace_all(a, "{instance}", n);
      for (auto& kv : p.env) replace_all(kv.second, "{instance}", n);
      replace_all(p.work_dir, "{instance}", n);
      out.processes.push_back(std::move(p));
    }
  }
  return out;
}

std::vector<std::string> changed_fields(const ProcessSpec& a, const ProcessSpec& b) {
  std::vector<std::string> out;
  auto diff = [&](bool differs, const char* name) {
    if (differs) out.emplace_back(name);
  };
  diff(a.name != b.name, "name");
  diff(a.command != b.command, "command");
  diff(a.args != b.args, "args");
  diff(a.env != b.env, "env");
  diff(a.work_dir != b.work_dir, "work_dir");
  diff(a.restart != b.restart, "restart");
  diff(a.max_restarts != b.max_restarts, "max_restarts");
  diff(a.restart_backoff != b.restart_backoff, "restart_backoff");
  diff(a.restart_backoff_max != b.restart_backoff_max, "restart_backoff_max");
  diff(a.restart_reset_after != b.restart_reset_after, "restart_reset_after");
  diff(a.stop_timeout != b.stop_timeout, "stop_timeout");
  diff(a.autostart != b.autostart, "autostart");
  diff(a.log_buffer != b.log_buffer, "log_buffer");
  diff(a.log_files.dir != b.log_files.dir, "log_file_dir");
  diff(a.log_files.max_size != b.log_files.max_size, "log_max_size");
  diff(a.log_files.max_files != b.log_files.max_files, "log_max_files");
  diff(a.log_files.timestamps != b.log_files.timestamps, "log_timestamps");
  diff(a.log_files.journal != b.log_files.journal, "log_journal");
  diff(a.resources != b.resources, "resources");
  diff(a.depends_on != b.depends_on, "depends_on");
  // The user's entry may have changed in the database (uid, groups, home) under the same name.
  diff(a.identity.user != b.identity.user ||
           (a.identity != b.identity && a.identity.group == b.identity.group),
       "user");
  diff(a.identity.group != b.identity.group, "group");
  diff(a.umask != b.umask, "umask");
  diff(a.env_files != b.env_files, "env_file");
  diff(a.clear_env != b.clear_env, "clear_env");
  diff(a.rlimits != b.rlimits, "rlimits");
  diff(a.nice != b.nice, "nice");
  diff(a.oom_score_adj != b.oom_score_adj, "oom_score_adj");
  diff(a.stop_signal != b.stop_signal, "stop_signal");
  diff(a.stop_group != b.stop_group, "stop_group");
  diff(a.start_seconds != b.start_seconds, "start_seconds");
  diff(a.start_retries != b.start_retries, "start_retries");
  diff(a.success_exit_codes != b.success_exit_codes, "success_exit_codes");
  diff(a.instance != b.instance, "instances");
  diff(a.tty != b.tty, "tty");
  diff(a.tty_cols != b.tty_cols || a.tty_rows != b.tty_rows, "tty_size");
  diff(a.ready != b.ready, "ready");
  diff(a.health != b.health, "health");
  // A field added to ProcessSpec but not above: count it as one that needs a restart.
  if (out.empty() && !(a == b)) out.emplace_back("(other)");
  return out;
}

bool needs_restart(const std::vector<std::string>& fields) {
  static constexpr std::string_view kInPlace[] = {
      "name",          "restart",        "max_restarts",  "restart_backoff",
      "restart_backoff_max", "restart_reset_after", "stop_timeout", "autostart",
      "log_buffer",    "log_file_dir",   "log_max_size",  "log_max_files",
      "log_timestamps", "log_journal", "resources",     "depends_on",     "stop_signal",   "stop_group",
      "start_seconds", "start_retries",  "success_exit_codes"};
  return std::any_of(fields.begin(), fields.end(), [](const std::string& f) {
    return std::find(std::begin(kInPlace), std::end(kInPlace), f) == std::end(kInPlace);
  });
}

EnvVars parse_env_file(std::string_view text) {
  EnvVars out;
  const std::size_t n = text.size();
  std::size_t i = 0;
  auto blank = [](char c) { return c == ' ' || c == '\t' || c == '\r'; };
  while (i < n) {
    // Start of a line: leading whitespace and empty lines go.
    while (i < n && (blank(text[i]) || text[i] == '\n')) ++i;
    if (i >= n) break;
    if (text[i] == '#' || text[i] == ';') {
      while (i < n && text[i] != '\n') ++i;
      continue;
    }
    std::string key;
    while (i < n && text[i] != '=' && text[i] != '\n') key += text[i++];
    if (i >= n || text[i] == '\n') continue;  // no '=': not an assignment, skipped
    ++i;
    while (!key.empty() && blank(key.back())) key.pop_back();
    while (i < n && blank(text[i])) ++i;
    std::string value;
    std::size_t kept = 0;  // value's length without trailing unquoted whitespace
    while (i < n && text[i] != '\n') {
      const char c = text[i];
      if (c == '\'') {
        for (++i; i < n && text[i] != '\''; ++i) value += text[i];
        if (i < n) ++i;
        kept = value.size();
      } else if (c == '"') {
        for (++i; i < n && text[i] != '"'; ++i) {
          if (text[i] == '\\' && i + 1 < n) {
            const char e = text[i + 1];
            if (e == '\n') {  // a line continuation
              ++i;
              continue;
            }
            if (e == '"' || e == '\\' || e == '$' || e == '`') {
              value += e;
              ++i;
              continue;
            }
          }
          value += text[i];
        }
        if (i < n) ++i;
        kept = value.size();
      } else if (c == '\\') {
        if (i + 1 < n && text[i + 1] != '\n') {
          value += text[i + 1];
          kept = value.size();
        }
        i += 2;  // an escaped character, or a line continuation
      } else {
        value += c;
        ++i;
        if (!blank(c)) kept = value.size();
      }
    }
    value.resize(kept);
    const bool key_ok =
        !key.empty() && std::none_of(key.begin(), key.end(), [&](char c) { return blank(c); });
    if (key_ok) out.emplace_back(std::move(key), std::move(value));
  }
  return out;
}

std::variant<EnvVars, std::string> read_env_files(const std::vector<EnvFile>& files) {
  EnvVars out;
  for (const auto& f : files) {
    std::ifstream in(f.path, std::ios::binary);
    if (!in) {
      const int err = errno;
      if (f.optional && err == ENOENT) continue;
      return "env_file " + f.path + ": " + std::system_category().message(err);
    }
    std::stringstream ss;
    ss << in.rdbuf();
    for (auto& kv : parse_env_file(ss.str())) out.push_back(std::move(kv));
  }
  return out;
}

}  // namespace mgmt::process
