// The plugin contract: how a shared object tells mgmtd what it is and how to create it.
//
// Plugin ABI (kAbiVersion below, currently 3)
// -------------------------------------------
// mgmtd and its plugins share C++ types across the shared-object boundary: the classes
// Backend, Handler and Exchange (their virtual tables), and the structs PluginInfo,
// PluginEnv, ServerInfo, Entry, OpResult, Event, LogQuery and FollowResult, all passed by
// reference or pointer. kAbiVersion names one layout of all of them. It is bumped whenever
// one of them changes layout or meaning: a member added anywhere but at the end of a
// struct only the server creates (PluginEnv, ServerInfo), a virtual function added,
// reordered or removed, a changed signature. A server refuses a plugin built for another
// number ("was built for plugin ABI N, this mgmtd loads ABI M"). New free functions and
// new headers do not bump it. (2: Backend::list_version and Exchange::push_parts. 3: the
// in-place upgrade: Backend::handoff_version/handoff/adopt, the Handoff struct,
// PluginEnv::on_main_thread, ServerInfo::upgraded_at/upgrades/upgrade; log times:
// Backend::logs_timed/follow_logs_timed/reopen_logs, FollowResult::times.) Both sides must also use the same C++ standard library
// (libstdc++ on Debian): std::string, std::vector, std::function and std::shared_ptr cross
// the boundary.
//
// The contract
// ------------
// A plugin exports `mgmt_plugin_info` and one factory, all extern "C":
//   const mgmt::PluginInfo* mgmt_plugin_info();
//   mgmt::Handler* mgmt_create_handler(const mgmt::PluginEnv&);   // kind handler or command
//   mgmt::Backend* mgmt_create_backend(const mgmt::PluginEnv&);   // kind backend
// The macros below write these. The loader:
//   1. dlopens the file with RTLD_NOW | RTLD_LOCAL (an unresolved symbol is an error at
//      start-up, not a crash later);
//   2. reads the info and refuses the plugin unless `abi` equals the server's kAbiVersion,
//      `kind` is what the configuration slot needs (handler for 0xA0..0xA9, command for
//      0xAA..0xAF, backend for `backend:`) and `version` (a semantic version) satisfies the
//      slot's `version:` constraint; every refusal names the file, what the plugin reports
//      and what was required;
//   3. calls the factory once. A factory may throw to refuse its configuration; the
//      exception's text reaches the user. The backend is created first (env.backend is
//      null for it), then every handler and command with env.backend set.
// Objects are destroyed by the server with `delete` (so the factory must return `new T`);
// each holds a reference to its library, which is unmapped after its last object is gone.
// Threading: see backend.hpp (a backend's methods are called from the I/O thread and
// must not block) and handler.hpp (handle() runs on the I/O thread and must not block).
//
// Building a plugin: `mgmt_add_plugin(<name> SOURCES ... [VERSION x.y.z])` from the SDK's
// CMake package (find_package(mgmt)) builds <name>.so with hidden visibility, defines
// MGMT_PLUGIN_NAME and MGMT_PLUGIN_VERSION for the macros below, and MGMT_PLUGIN_BUILD_ABI,
// which this header checks against kAbiVersion (a mismatch means the include path mixes
// two SDKs).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "mgmt/backend.hpp"
#include "mgmt/handler.hpp"
#include "mgmt/stats.hpp"

namespace spdlog {
class logger;
}

namespace mgmt {

// The plugin ABI this header describes (see the top of this file for what bumps it).
// CMake reads this line to set MGMT_ABI_VERSION: keep it on one line.
inline constexpr std::uint32_t kAbiVersion = 3;

enum class PluginKind : std::uint32_t { handler = 1, backend = 2, command = 3 };

struct PluginInfo {
  std::uint32_t abi;
  PluginKind kind;
  const char* name;     // as referenced from mgmt.yaml
  const char* version;  // semantic version of the plugin itself, "1.2.3"
  const char* summary;  // one line for humans
};

// One plugin the server has loaded, as the stock `info` command reports it.
struct LoadedPlugin {
  std::uint8_t type = 0;  // the message type it serves; 0 for the backend
  std::string name;       // PluginInfo::name
  PluginKind kind = PluginKind::handler;
  std::string version;    // PluginInfo::version, normalised ("1.2.0")
  std::string path;       // the shared object it was loaded from
};

// Facts about the running server, for plugins that report on it. mgmtd fills it while it
// loads the plugins (a plugin created early sees the list still growing in its
// constructor); it is complete, and no longer changes, once requests are served.
struct ServerInfo {
  std::string version;                // mgmtd's own version
  std::uint32_t abi = kAbiVersion;    // the plugin ABI it loads
  std::int64_t started_at = 0;        // unix nanos
  std::string config_file;            // absolute path of mgmt.yaml
  std::vector<LoadedPlugin> plugins;  // backend first, then by message type
  const ServerStats* stats = nullptr; // the socket server's live counters
  // Re-reads the configuration and applies it (the stock `reload` command); returns "" or
  // why nothing was changed. Call it on the I/O thread (from Handler::handle). Empty when
  // the host cannot reload.
  std::function<std::string()> reload;
  // In-place upgrade (appended in ABI 3). started_at stays the first program's start; this
  // is when the running program took over (= started_at before any upgrade).
  std::int64_t upgraded_at = 0;       // unix nanos
  std::uint32_t upgrades = 0;         // programs that took over since started_at
  std::string binary;                 // the mgmtd binary an upgrade checks and execs
  // Checks the binary on disk and, if it can take over, hands over to it (the stock
  // `upgrade` command). `done` runs on the I/O thread with "" (the handover begins: the
  // connection is closed soon after) or why nothing changed. Call it on the I/O thread.
  // Empty when the host cannot upgrade in place.
  std::function<void(std::function<void(const std::string& err)> done)> upgrade;
  // The backend's events, numbered (the stock events handler): first those the server still
  // keeps (the last few hundred) numbered after `after`, or when `after` is 0 of time
  // `since_ns` or later (none when both are 0), then every new one, in order; the numbers
  // continue across in-place upgrades. Callbacks run on the backend's threads under the
  // journal's lock: they must only queue. Empty when the host keeps no journal (subscribe
  // to the backend instead).
  std::function<std::unique_ptr<Subscription>(
      std::uint64_t after, std::int64_t since_ns,
      std::function<void(const Event&, std::uint64_t n)> on_event)>
      subscribe_events;
};

// What a plugin receives when it is created.
struct PluginEnv {
  Backend* backend = nullptr;         // null when creating the backend itself
  YAML::Node config;                  // the plugin's `config:` block (may be null)
  std::string config_file;            // mgmt.yaml path, for error messages
  std::shared_ptr<spdlog::logger> log;
  // The server, valid for the plugin's whole life (null only when a host other than mgmtd
  // creates the plugin, e.g. a unit test).
  const ServerInfo* server = nullptr;
  // Runs `job` on mgmtd's main thread and returns once it has run (true), or returns false
  // without running it when that thread takes no more jobs (mgmtd is exiting). Empty when
  // the host has no such thread (a unit test). A backend forks its children through it:
  // PR_SET_PDEATHSIG follows the forking thread, and an in-place upgrade execs on the main
  // thread, which is the only one to survive execve; children forked by any other thread
  // would get their parent-death signal. Never call it from the main thread while holding
  // a lock that thread may need.
  std::function<bool(const std::function<void()>& job)> on_main_thread;
};

const char* kind_name(PluginKind k) noexcept;

}  // namespace mgmt

#define MGMT_PLUGIN_EXPORT extern "C" __attribute__((visibility("default")))

// Defined by mgmt_add_plugin() from the CMake package's MGMT_ABI_VERSION.
#ifdef MGMT_PLUGIN_BUILD_ABI
static_assert(MGMT_PLUGIN_BUILD_ABI == ::mgmt::kAbiVersion,
              "mgmt_add_plugin() and mgmt/plugin.hpp come from different SDKs (plugin ABI "
              "numbers differ): check CMAKE_PREFIX_PATH and the include path");
#endif

#define MGMT_PLUGIN_INFO_(KIND, NAME, VERSION, SUMMARY)                                   \
  MGMT_PLUGIN_EXPORT const ::mgmt::PluginInfo* mgmt_plugin_info() {                       \
    static const ::mgmt::PluginInfo info{::mgmt::kAbiVersion, KIND, NAME, VERSION, SUMMARY}; \
    return &info;                                                                         \
  }

// Declares a handler plugin whose class is constructible from `const mgmt::PluginEnv&`.
#define MGMT_HANDLER_PLUGIN(CLASS, NAME, VERSION, SUMMARY)                          \
  MGMT_PLUGIN_INFO_(::mgmt::PluginKind::handler, NAME, VERSION, SUMMARY)            \
  MGMT_PLUGIN_EXPORT ::mgmt::Handler* mgmt_create_handler(const ::mgmt::PluginEnv& env) { \
    return new CLASS(env);                                                          \
  }

// Declares an extra-command plugin (types 0xAA..0xAF).
#define MGMT_COMMAND_PLUGIN(CLASS, NAME, VERSION, SUMMARY)                          \
  MGMT_PLUGIN_INFO_(::mgmt::PluginKind::command, NAME, VERSION, SUMMARY)            \
  MGMT_PLUGIN_EXPORT ::mgmt::Handler* mgmt_create_handler(const ::mgmt::PluginEnv& env) { \
    return new CLASS(env);                                                          \
  }

// Declares a backend plugin.
#define MGMT_BACKEND_PLUGIN(CLASS, NAME, VERSION, SUMMARY)                          \
  MGMT_PLUGIN_INFO_(::mgmt::PluginKind::backend, NAME, VERSION, SUMMARY)            \
  MGMT_PLUGIN_EXPORT ::mgmt::Backend* mgmt_create_backend(const ::mgmt::PluginEnv& env) { \
    return new CLASS(env);                                                          \
  }
