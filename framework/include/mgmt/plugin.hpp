// The plugin contract: how a shared object tells mgmtd what it is and how to create it.
//
// A plugin exports `mgmt_plugin_info` and one factory, all extern "C":
//   const mgmt::PluginInfo* mgmt_plugin_info();
//   mgmt::Handler* mgmt_create_handler(const mgmt::PluginEnv&);   // kind handler or command
//   mgmt::Backend* mgmt_create_backend(const mgmt::PluginEnv&);   // kind backend
// The macros below write these. The loader reads the info first and refuses the plugin
// unless `abi` equals the server's kAbiVersion; a factory may throw to refuse its config,
// and the message reaches the user.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <yaml-cpp/yaml.h>

#include "mgmt/backend.hpp"
#include "mgmt/handler.hpp"

namespace spdlog {
class logger;
}

namespace mgmt {

// Bump whenever a type crossing the plugin boundary changes layout or meaning.
inline constexpr std::uint32_t kAbiVersion = 1;

enum class PluginKind : std::uint32_t { handler = 1, backend = 2, command = 3 };

struct PluginInfo {
  std::uint32_t abi;
  PluginKind kind;
  const char* name;     // as referenced from mgmt.yaml
  const char* version;  // semantic version of the plugin itself, "1.2.3"
  const char* summary;  // one line for humans
};

// What a plugin receives when it is created.
struct PluginEnv {
  Backend* backend = nullptr;         // null when creating the backend itself
  YAML::Node config;                  // the plugin's `config:` block (may be null)
  std::string config_file;            // mgmt.yaml path, for error messages
  std::shared_ptr<spdlog::logger> log;
};

const char* kind_name(PluginKind k) noexcept;

}  // namespace mgmt

#define MGMT_PLUGIN_EXPORT extern "C" __attribute__((visibility("default")))

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
