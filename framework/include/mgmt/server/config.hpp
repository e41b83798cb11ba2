// mgmt.yaml: the server's configuration, validated up front with file:line:column errors.
#pragma once

#include <cstddef>
#include <cstdint>
#include <chrono>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "mgmt/server/access.hpp"
#include "mgmt/server/version.hpp"

namespace mgmt {

// A configuration problem. what() reads "<file>:<line>:<column>: <problem and fix>".
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Where a node came from, "mgmt.yaml:12:5", for messages about it.
std::string where(const std::string& file, const YAML::Node& node);

// A plugin as mgmt.yaml names it.
struct PluginRef {
  std::string plugin;             // a name searched in plugin_dirs, or a path to a .so
  VersionConstraint version;      // empty = any
  YAML::Node config;              // handed to the plugin as is
  std::string origin;             // "mgmt.yaml:12:5", where it was named
  std::optional<Right> right;     // handlers and commands: overrides default_right(type)
};

struct Limits {
  std::uint32_t max_request = 1u << 20;        // largest request payload accepted
  std::size_t max_queue_bytes = 8u << 20;      // per-connection outgoing bytes in memory:
                                               // streams spill beyond it, and a client whose
                                               // unread answers reach half of it is read no
                                               // further until they drain
  // Outgoing bytes in memory across all connections (0 = 64 MiB, or max_queue when that is
  // larger). max_queue alone bounds one connection, not the server: 500 clients that never
  // read their answers held 4 MiB each. Past this budget a connection with answers queued
  // reads no further requests until they are read, and stream frames go to the spill file
  // as if past max_queue. 64 MiB is eight connections at their full max_queue, far more
  // than clients that read what they asked for ever hold, and little next to what the
  // supervised processes use.
  std::size_t max_queue_total = 0;
  std::size_t max_connections = 1024;
  // Connections one user may hold at once, other than the server's owner and root (0 = a
  // quarter of max_connections): one user cannot lock everyone else out by opening
  // connections (and parking them on event subscriptions).
  std::size_t max_connections_per_uid = 0;
  // Of max_connections, the last few that only the server's owner and root may take, so
  // the operator can always get in, whoever else fills the server.
  std::size_t reserved_connections = 4;
  // A connection waiting for its next request, or paused because its answers go unread
  // (see max_queue_bytes) with none taken, is closed after this (0 = never). Streams and
  // requests in progress are not affected.
  std::chrono::milliseconds idle_timeout{std::chrono::minutes(10)};
  // Once a frame has begun, all of it must arrive within this (0 = no limit). A stream
  // reader being disconnected (streams.on_overflow: disconnect) that reads nothing for this
  // long is closed without its notice.
  std::chrono::milliseconds frame_timeout{std::chrono::seconds(10)};
  // server.io_threads (kept here so that it reaches the server with the limits): threads
  // reading requests off connections and writing answers and stream frames, the first of
  // them the one that runs handlers and the backend; 0 = one per core. Fixed at start: a
  // reload keeps the number running.
  unsigned io_threads = 1;

  std::size_t queue_total() const {
    if (max_queue_total != 0) return max_queue_total;
    return max_queue_bytes > (64u << 20) ? max_queue_bytes : (64u << 20);
  }
  std::size_t per_uid_cap() const {
    if (max_connections_per_uid != 0) return max_connections_per_uid;
    return max_connections / 4 > 0 ? max_connections / 4 : 1;
  }
  // reserved_connections, leaving others at least one slot (the default of 4 on a server
  // configured for fewer connections).
  std::size_t reserved() const {
    return reserved_connections < max_connections ? reserved_connections : max_connections - 1;
  }
};

// The `streams` section: how a stream reader that falls behind is handled (events, log
// follow). Its frames beyond limits.max_queue are spilled to a file and replayed in order;
// past spill_quota they are dropped, and the reader is told how many.
struct StreamsConfig {
  enum class Overflow { notify, disconnect };
  std::string spill_dir;                   // "" = <socket's folder>/spill
  std::uint64_t spill_quota = 64u << 20;   // unread bytes on disk per connection
  // Spill file bytes across all connections: past it, frames that would spill are dropped
  // (with the stall notice) as past spill_quota. The default spill folder is next to the
  // socket, often on a tmpfs (/run), where spilled bytes are memory: 256 MiB is four
  // readers at their full quota, not max_connections of them.
  std::uint64_t spill_quota_total = 256u << 20;
  Overflow on_overflow = Overflow::notify; // after the notice: go on, or close the connection
};

// The `access` section.
struct AccessConfig {
  mode_t socket_mode = 0600;
  std::optional<gid_t> socket_group;
  std::vector<AccessRule> rules;
};

struct ServerConfig {
  std::string file;                            // the config file itself
  std::string socket_path;
  bool write_hint = true;                      // write cliwrap's runtime-dir hint file
  std::vector<std::string> plugin_dirs;        // absolute
  PluginRef backend;
  std::map<std::uint8_t, PluginRef> handlers;  // request types and extra commands
  Limits limits;
  AccessConfig access;
  std::string log_level = "info";
  StreamsConfig streams;
};

// Reads and validates `path`. Relative plugin dirs are taken relative to the file's folder;
// `builtin_plugin_dir` is searched after them. Throws ConfigError.
ServerConfig load_config(const std::string& path, const std::string& builtin_plugin_dir);
// Same, from text (tests); `file` is used in messages and to resolve relative paths.
ServerConfig parse_config(const std::string& text, const std::string& file,
                          const std::string& builtin_plugin_dir);

// Parses "0xA0" or "160". Throws std::invalid_argument.
std::uint8_t parse_msg_type(const std::string& text);

}  // namespace mgmt
