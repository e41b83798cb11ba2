#include "mgmt/server/plugin_loader.hpp"

#include <filesystem>
#include <system_error>
#include <utility>

#include <boost/dll/shared_library.hpp>

namespace fs = std::filesystem;

namespace mgmt {

const char* kind_name(PluginKind k) noexcept {
  switch (k) {
    case PluginKind::handler:
      return "handler";
    case PluginKind::backend:
      return "backend";
    case PluginKind::command:
      return "command";
  }
  return "unknown";
}

namespace {

using InfoFn = const PluginInfo*();
using HandlerFactory = Handler*(const PluginEnv&);
using BackendFactory = Backend*(const PluginEnv&);

// Boost.DLL wraps dlerror() as "...load() failed (dlerror system message: TEXT): errno
// text"; the dynamic loader's TEXT is what tells the user what is wrong.
std::string dlerror_text(const std::system_error& e) {
  const std::string what = e.what();
  const std::string marker = "dlerror system message: ";
  const auto start = what.find(marker);
  if (start == std::string::npos) return what;
  const auto end = what.rfind("):");
  const auto from = start + marker.size();
  return what.substr(from, end != std::string::npos && end > from ? end - from : std::string::npos);
}

[[noreturn]] void refuse(const PluginRef& ref, const std::string& msg) {
  throw PluginError(ref.origin + ": " + msg);
}

boost::dll::shared_library& lib_of(const PluginHandle& h) {
  return *static_cast<boost::dll::shared_library*>(h.library.get());
}

template <class T, class Factory>
std::shared_ptr<T> create(const PluginHandle& h, const PluginRef& ref, const PluginEnv& env,
                          const char* symbol) {
  auto& lib = lib_of(h);
  if (!lib.has(symbol)) {
    refuse(ref, "plugin " + h.path + " (" + h.info->name + ") does not export " + symbol);
  }
  auto& factory = lib.get<Factory>(symbol);
  T* raw = nullptr;
  try {
    raw = factory(env);
  } catch (const std::exception& e) {
    refuse(ref, "plugin " + std::string(h.info->name) + " (" + h.path + ") refused to start: " +
                    e.what());
  } catch (...) {
    refuse(ref, "plugin " + std::string(h.info->name) + " (" + h.path +
                    ") refused to start with an unknown exception");
  }
  if (raw == nullptr) refuse(ref, "plugin " + h.path + " returned no object");
  // The deleter owns a reference to the library, so the code of T's destructor is still
  // mapped when it runs; the library goes once the last object made from it is gone.
  std::shared_ptr<void> keep = h.library;
  return std::shared_ptr<T>(raw, [keep = std::move(keep)](T* p) { delete p; });
}

}  // namespace

PluginLoader::PluginLoader(std::vector<std::string> search_dirs) : dirs_(std::move(search_dirs)) {}

std::string PluginLoader::resolve(const PluginRef& ref) const {
  const std::string& name = ref.plugin;
  const bool is_path = name.find('/') != std::string::npos ||
                       (name.size() > 3 && name.compare(name.size() - 3, 3, ".so") == 0);
  if (is_path) {
    std::error_code ec;
    if (!fs::exists(name, ec)) refuse(ref, "plugin file " + name + " does not exist");
    return fs::absolute(name).lexically_normal().string();
  }
  std::string looked;
  for (const auto& dir : dirs_) {
    const fs::path candidate = fs::path(dir) / (name + ".so");
    std::error_code ec;
    if (fs::exists(candidate, ec)) return candidate.string();
    looked += (looked.empty() ? "" : ", ") + candidate.string();
  }
  if (looked.empty()) looked = "(no plugin_dirs configured)";
  refuse(ref, "plugin \"" + name + "\" not found; looked for " + looked +
                  " (add its folder to plugin_dirs or give a path)");
}

PluginHandle PluginLoader::load(const PluginRef& ref, PluginKind expected) const {
  PluginHandle h;
  h.path = resolve(ref);
  std::shared_ptr<boost::dll::shared_library> lib;
  try {
    // rtld_now: an unresolved symbol is reported here, not as a crash on first use.
    lib = std::make_shared<boost::dll::shared_library>(
        fs::path(h.path),
        boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local);
  } catch (const std::system_error& e) {
    refuse(ref, "cannot load plugin " + h.path + ": " + dlerror_text(e));
  }
  if (!lib->has("mgmt_plugin_info")) {
    refuse(ref, h.path + " is not an mgmtd plugin (it exports no mgmt_plugin_info)");
  }
  h.info = lib->get<InfoFn>("mgmt_plugin_info")();
  if (h.info == nullptr) refuse(ref, h.path + ": mgmt_plugin_info returned nothing");
  if (h.info->abi != kAbiVersion) {
    refuse(ref, "plugin " + h.path + " was built for plugin ABI " + std::to_string(h.info->abi) +
                    ", this mgmtd loads ABI " + std::to_string(kAbiVersion) +
                    ": rebuild the plugin against this mgmtd's SDK");
  }
  const std::string name = h.info->name ? h.info->name : "";
  if (h.info->kind != expected) {
    refuse(ref, "plugin " + name + " (" + h.path + ") is a " + kind_name(h.info->kind) +
                    " plugin, but a " + kind_name(expected) + " plugin is needed here");
  }
  try {
    h.version = parse_version(h.info->version ? h.info->version : "");
  } catch (const std::invalid_argument& e) {
    refuse(ref, "plugin " + name + " (" + h.path + ") reports a bad version: " + e.what());
  }
  if (!ref.version.matches(h.version)) {
    refuse(ref, "plugin " + name + " (" + h.path + ") is version " + h.version.str() +
                    ", but the configuration requires \"" + ref.version.text() + "\"");
  }
  h.library = std::move(lib);
  return h;
}

std::shared_ptr<Handler> PluginLoader::make_handler(const PluginHandle& h, const PluginRef& ref,
                                                    const PluginEnv& env) const {
  return create<Handler, HandlerFactory>(h, ref, env, "mgmt_create_handler");
}

std::shared_ptr<Backend> PluginLoader::make_backend(const PluginHandle& h, const PluginRef& ref,
                                                    const PluginEnv& env) const {
  return create<Backend, BackendFactory>(h, ref, env, "mgmt_create_backend");
}

}  // namespace mgmt
