// The process backend's `config:` block: what to supervise and how, validated up front.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "mgmt/units.hpp"
#include "probe_spec.hpp"

namespace mgmt::process {

enum class RestartPolicy { never, on_failure, always };

std::string_view to_string(RestartPolicy p) noexcept;

inline constexpr std::size_t kDefaultLogBuffer = std::size_t{1} << 20;
inline constexpr std::uint64_t kDefaultLogMaxSize = std::uint64_t{10} << 20;
inline constexpr std::uint32_t kDefaultLogMaxFiles = 5;

// What to do when a process group's resident memory passes `max_rss`.
struct OnExceed {
  enum class Action { kill, signal, log };
  Action action = Action::kill;
  int signal = 0;  // for Action::signal

  bool operator==(const OnExceed&) const = default;
};

// `resources:` of a process.
struct Resources {
  std::uint64_t max_rss = 0;  // bytes; 0 = no limit
  OnExceed on_exceed;
  std::chrono::milliseconds sample_interval{1000};

  bool operator==(const Resources&) const = default;
};

// Per-process log files beside the ring buffers (`log_file_dir` and friends).
struct LogFiles {
  std::string dir;  // "" = no files
  std::uint64_t max_size = kDefaultLogMaxSize;  // rotate when a write would pass this
  std::uint32_t max_files = kDefaultLogMaxFiles;  // rotated files kept besides the live one
  bool timestamps = false;  // log_timestamps: the capture time before each line
  bool journal = false;     // log_journal: each line to the systemd journal too

  bool operator==(const LogFiles&) const = default;
};

// One `rlimits:` entry: setrlimit(resource, {soft, hard}) in the child before exec.
struct RLimit {
  int resource = 0;        // RLIMIT_NOFILE, RLIMIT_CORE, ...
  std::uint64_t soft = 0;  // RLIM_INFINITY for `unlimited`
  std::uint64_t hard = 0;

  bool operator==(const RLimit&) const = default;
};

// The user and groups a child runs as (`user:`, `group:`). Resolved when the config is
// read: after fork only async-signal-safe calls are allowed, and the user database is not.
struct Identity {
  std::string user;   // as configured ("" = mgmtd's user)
  std::string group;  // as configured ("" = the user's primary group, or mgmtd's)
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  std::vector<std::uint32_t> groups;  // supplementary, as initgroups(3) would set them
  std::string name, home, shell;      // USER/LOGNAME, HOME and SHELL (with `user:` only)
  // mgmtd is root: the child calls setgroups/setgid/setuid. Otherwise the config was only
  // accepted because it names mgmtd's own user and group, and nothing needs to change.
  bool switch_ids = false;

  bool empty() const { return user.empty() && group.empty(); }
  bool operator==(const Identity&) const = default;
};

// One `env_file:` entry.
struct EnvFile {
  std::string path;       // absolute (relative ones are taken from the config's folder)
  bool optional = false;  // written with a leading '-': a missing file is fine

  bool operator==(const EnvFile&) const = default;
};

// One supervised program, as a `processes:` entry describes it.
struct ProcessSpec {
  std::string id;
  std::string name;     // defaults to id
  std::string command;  // searched in PATH when it has no '/'
  std::vector<std::string> args;
  std::vector<std::pair<std::string, std::string>> env;  // added to the server's environment
  std::string work_dir;                                   // "" = the server's
  RestartPolicy restart = RestartPolicy::on_failure;
  std::uint32_t max_restarts = 0;  // consecutive restarts before giving up; 0 = unlimited
  std::chrono::milliseconds restart_backoff{1000};
  std::chrono::milliseconds restart_backoff_max{30000};
  // A run at least this long resets the consecutive-restart count (and so the backoff).
  std::chrono::milliseconds restart_reset_after{10000};
  std::chrono::milliseconds stop_timeout{10000};
  bool autostart = true;
  std::size_t log_buffer = kDefaultLogBuffer;  // bytes per stream
  LogFiles log_files;
  Resources resources;
  std::vector<std::string> depends_on;  // ids; validated, no cycles

  // Identity, environment, limits (applied in the child before exec).
  Identity identity;
  int umask = -1;                  // -1 = mgmtd's
  std::vector<EnvFile> env_files;  // read at each start; mgmtd's env < env files < `env`
  bool clear_env = false;          // start from an empty environment (PATH kept)
  std::vector<RLimit> rlimits;
  std::optional<int> nice;
  std::optional<int> oom_score_adj;

  // Stopping.
  int stop_signal = 15;    // SIGTERM
  bool stop_group = true;  // to the whole process group (and the leader), else the leader only

  // Start criteria and exit codes.
  // A start counts only once the program has run this long (0: once it is executed); an
  // exit before is a failed start, retried start_retries times, then `failed`.
  std::chrono::milliseconds start_seconds{0};
  std::uint32_t start_retries = 3;
  std::vector<int> success_exit_codes{0};  // an exit with one of them is `stopped`

  // `instances: N` entries are expanded into N specs `<id>-<i>`; -1 for a plain entry.
  int instance = -1;

  // Run on a pseudo-terminal (stdin, stdout and stderr), of this size.
  bool tty = false;
  std::uint16_t tty_cols = 80;
  std::uint16_t tty_rows = 24;

  // Readiness (`starting` until it passes) and health checks (probe_spec.hpp).
  std::optional<ReadyCheck> ready;
  std::optional<HealthCheck> health;

  // Every field, in order (a reordered args, env or depends_on is a change). A live reload
  // (ProcessBackend::reconfigure) leaves a process whose spec compares equal untouched.
  bool operator==(const ProcessSpec&) const = default;
};

// The fields that changed from `a` to `b`, by their names in the config ("args",
// "stop_timeout", ...), in the order of the struct.
std::vector<std::string> changed_fields(const ProcessSpec& a, const ProcessSpec& b);
// True when one of `fields` shapes the running program (command, args, env, user, limits,
// tty, ...): the child must be restarted to take it. The others (restart policy, stop and
// log settings, resources, depends_on, name, autostart) apply to a live child in place.
bool needs_restart(const std::vector<std::string>& fields);

// KEY=VALUE pairs in the order they were read.
using EnvVars = std::vector<std::pair<std::string, std::string>>;

// Parses the text of an environment file as systemd's EnvironmentFile= reads it: one
// KEY=VALUE a line, lines starting with # or ; are comments, blank lines and lines without
// '=' are skipped, whitespace around the key and before the value is dropped; a value may be
// '...' (literal) or "..." (\\, \", \$, \` escapes; may span lines), an unquoted one
// loses its trailing whitespace, and a backslash at the end of a line continues it.
EnvVars parse_env_file(std::string_view text);
// Reads every file in order. Returns the pairs, or an error text naming the file.
std::variant<EnvVars, std::string> read_env_files(const std::vector<EnvFile>& files);

struct BackendConfig {
  std::vector<ProcessSpec> processes;  // in the order of the file
  // Where the live process groups are recorded, so that a later mgmtd can end what a
  // killed one left behind. "" = the default: mgmtd-<uid> under $XDG_RUNTIME_DIR or /tmp.
  std::string state_dir;
  bool subreaper = true;  // adopt and reap orphaned descendants (PR_SET_CHILD_SUBREAPER)
};

// The default state directory: $XDG_RUNTIME_DIR/mgmtd-<uid>, else /tmp/mgmtd-<uid>.
std::string default_state_dir();

// Indexes into `processes`, each process after everything it depends on, otherwise in
// file order. The config must be free of cycles (parse_backend_config checks).
std::vector<std::size_t> start_order(const std::vector<ProcessSpec>& processes);

// RLIMIT_NOFILE → "nofile", as `rlimits:` names it.
std::string_view rlimit_name(int resource);

// "SIGUSR1", "USR1" or "10" → 10; 0 when unknown.
int parse_signal(std::string_view text);

// Reads the block (a null node means no processes). Throws std::runtime_error reading
// "<file>:<line>:<column>: <what is wrong and what to write instead>".
BackendConfig parse_backend_config(const YAML::Node& config, const std::string& file);

// The framework's parsers of durations ("250ms", "5s", "2m", "1h", "1.5s", plain seconds)
// and sizes ("512", "64KiB", "1MiB", "1GB", ...), see mgmt/units.hpp.
using mgmt::parse_duration;
using mgmt::parse_size;

}  // namespace mgmt::process
