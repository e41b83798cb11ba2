// Loads plugin shared objects with Boost.DLL and checks them before anything runs.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "mgmt/plugin.hpp"
#include "mgmt/server/config.hpp"
#include "mgmt/server/version.hpp"

namespace mgmt {

// A refused plugin. what() names where the config asked for it, the file, and the reason.
class PluginError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A loaded, checked plugin library.
struct PluginHandle {
  std::string path;
  const PluginInfo* info = nullptr;
  Version version;
  std::shared_ptr<void> library;  // keeps the shared object mapped
};

class PluginLoader {
 public:
  explicit PluginLoader(std::vector<std::string> search_dirs);

  // The file a reference names: a path (contains '/' or ends in .so) as is, else
  // <dir>/<name>.so in the search dirs, first match. Throws PluginError listing the places.
  std::string resolve(const PluginRef& ref) const;

  // Loads and checks: the entry points exist, the ABI matches, the kind is `expected`,
  // the version satisfies the reference's constraint.
  PluginHandle load(const PluginRef& ref, PluginKind expected) const;

  // Create the plugin's object. The returned pointer keeps the library loaded until the
  // object is destroyed. A constructor that throws becomes a PluginError.
  std::shared_ptr<Handler> make_handler(const PluginHandle& h, const PluginRef& ref,
                                        const PluginEnv& env) const;
  std::shared_ptr<Backend> make_backend(const PluginHandle& h, const PluginRef& ref,
                                        const PluginEnv& env) const;

  const std::vector<std::string>& search_dirs() const { return dirs_; }

 private:
  std::vector<std::string> dirs_;
};

}  // namespace mgmt
