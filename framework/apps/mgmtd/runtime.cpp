#include "runtime.hpp"

#include <malloc.h>

#include <chrono>
#include <filesystem>

#include <spdlog/spdlog.h>

#include "mgmt/log.hpp"
#include "mgmt/server/plugin_loader.hpp"

namespace fs = std::filesystem;

namespace mgmt::daemon {

namespace {

std::string describe(const std::string& role, const PluginHandle& h) {
  return role + ": " + h.info->name + " " + h.version.str() + " (" + h.path + ")";
}

bool is_command(std::uint8_t type) { return type >= kFirstCommandType && type <= kLastCommandType; }

}  // namespace

Runtime::Runtime(RuntimeOptions opts, std::shared_ptr<spdlog::logger> log)
    : opts_(std::move(opts)), log_(std::move(log)) {}

Runtime::~Runtime() { release(); }

std::string Runtime::slot_key(const std::string& path, const PluginRef& ref) {
  YAML::Emitter config;
  config << ref.config;
  return path + "\n" + ref.version.text() + "\n" +
         (ref.right ? right_name(*ref.right) : "default") + "\n" + config.c_str();
}

void Runtime::load() {
  cfg_ = load_config(opts_.config_file, opts_.builtin_plugin_dir);
  if (opts_.socket) cfg_.socket_path = fs::absolute(*opts_.socket).string();
  log_->set_level(spdlog::level::from_str(opts_.log_level.value_or(cfg_.log_level)));

  PluginLoader loader(cfg_.plugin_dirs);
  info_->version = MGMTD_VERSION;
  info_->started_at = std::chrono::duration_cast<std::chrono::nanoseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  info_->config_file = fs::absolute(cfg_.file).string();

  {
    const auto bh = loader.load(cfg_.backend, PluginKind::backend);
    PluginEnv benv;
    benv.config = cfg_.backend.config;
    benv.config_file = cfg_.file;
    benv.log = log_->clone(bh.info->name);
    benv.server = info_.get();
    info_->plugins.push_back({0, bh.info->name, bh.info->kind, bh.version.str(), bh.path});
    backend_ = loader.make_backend(bh, cfg_.backend, benv);
    backend_path_ = bh.path;
    summary_.push_back(describe("backend", bh));
  }  // benv's node goes here, before drop_plugin_configs()

  dispatcher_ = std::make_shared<Dispatcher>();
  for (const auto& [type, ref] : cfg_.handlers) {
    const auto hh = loader.load(ref, is_command(type) ? PluginKind::command : PluginKind::handler);
    info_->plugins.push_back({type, hh.info->name, hh.info->kind, hh.version.str(), hh.path});
    dispatcher_->set(type, loader.make_handler(hh, ref, handler_env(ref, cfg_.file, hh)),
                     ref.right.value_or(default_right(type)));
    slot_keys_[type] = slot_key(hh.path, ref);
    summary_.push_back(describe(type_hex(type), hh));
  }
  drop_plugin_configs(cfg_);
}

// What a handler or command plugin is created with.
PluginEnv Runtime::handler_env(const PluginRef& ref, const std::string& file,
                               const PluginHandle& h) const {
  PluginEnv env;
  env.backend = backend_.get();
  env.config = ref.config;
  env.config_file = file;
  env.log = log_->clone(h.info->name);
  env.server = info_.get();
  return env;
}

// Every plugin has been built from its `config:` block and the slot keys hold what a reload
// compares, so the kept configuration needs no YAML nodes. Any node keeps the memory of its
// whole document alive (about 5 KiB per process entry), hence they go.
void Runtime::drop_plugin_configs(ServerConfig& cfg) {
  // reset() rebinds; assigning an empty Node would rewrite the node in place instead.
  cfg.backend.config.reset();
  for (auto& [type, ref] : cfg.handlers) ref.config.reset();
  // What parsing and loading freed goes back to the system rather than staying resident
  // in the heap for the server's lifetime (glibc also releases free pages mid-heap).
  ::malloc_trim(0);
}

void Runtime::attach(Server& server) {
  server_ = &server;
  info_->stats = &server.stats();
  info_->reload = [this] { return reload(); };
  server.on_reload([this] { (void)reload(); });
}

std::string Runtime::reload() {
  const std::string file = cfg_.file;
  if (reload_observer_) reload_observer_(false);
  struct Ended {
    const std::function<void(bool)>& observer;
    ~Ended() {
      if (observer) observer(true);
    }
  } ended{reload_observer_};
  auto refuse = [&](const std::string& why) {
    mgmt::log::error(*log_, "reload of {} refused, the running configuration stays: {}", file, why);
    return why;
  };
  ServerConfig next;
  try {
    next = load_config(opts_.config_file, opts_.builtin_plugin_dir);
  } catch (const std::exception& e) {
    return refuse(e.what());
  }
  if (opts_.socket) next.socket_path = cfg_.socket_path;
  if (next.socket_path != cfg_.socket_path) {
    return refuse("the socket would move from " + cfg_.socket_path + " to " + next.socket_path +
                  ": restart mgmtd for that");
  }

  // Everything is loaded and created before anything changes, so a bad plugin refuses
  // the whole reload.
  PluginLoader loader(next.plugin_dirs);
  auto dispatcher = std::make_shared<Dispatcher>();
  std::map<std::uint8_t, std::string> keys;
  std::vector<LoadedPlugin> plugins{info_->plugins.front()};
  std::vector<std::string> summary{summary_.front()};
  int kept = 0, replaced = 0;
  try {
    const std::string backend_path = loader.resolve(next.backend);
    if (backend_path != backend_path_) {
      return refuse("the backend plugin would change from " + backend_path_ + " to " +
                    backend_path + ": restart mgmtd for that");
    }
    (void)loader.load(next.backend, PluginKind::backend);  // its version constraint
    for (const auto& [type, ref] : next.handlers) {
      const auto hh = loader.load(ref, is_command(type) ? PluginKind::command : PluginKind::handler);
      const std::string key = slot_key(hh.path, ref);
      const Right right = ref.right.value_or(default_right(type));
      auto old = slot_keys_.find(type);
      if (old != slot_keys_.end() && old->second == key) {
        dispatcher->set(type, dispatcher_->handler(type), right);
        ++kept;
      } else {
        dispatcher->set(type, loader.make_handler(hh, ref, handler_env(ref, next.file, hh)),
                        right);
        ++replaced;
      }
      keys[type] = key;
      plugins.push_back({type, hh.info->name, hh.info->kind, hh.version.str(), hh.path});
      summary.push_back(describe(type_hex(type), hh));
    }
  } catch (const std::exception& e) {
    return refuse(e.what());
  }
  if (std::string err = backend_->reconfigure(next.backend.config, next.file); !err.empty()) {
    return refuse(err);
  }

  // Commit.
  const std::size_t dropped = slot_keys_.size() - static_cast<std::size_t>(kept);
  // Ours first: the server then holds the only other reference to the old table, and
  // frees at once the replaced handlers that no exchange or stream still uses.
  dispatcher_ = std::move(dispatcher);
  if (server_) {
    server_->set_dispatcher(dispatcher_);
    server_->update(next.limits, next.access);
  }
  slot_keys_ = std::move(keys);
  info_->plugins = std::move(plugins);
  summary_ = std::move(summary);
  log_->set_level(spdlog::level::from_str(opts_.log_level.value_or(next.log_level)));
  cfg_ = std::move(next);
  drop_plugin_configs(cfg_);
  mgmt::log::info(*log_, "reloaded {}: {} handlers kept, {} loaded anew, {} dropped or replaced",
                  file, kept, replaced, dropped);
  return {};
}

void Runtime::release() {
  // Handlers hold a pointer to the backend: they go first.
  if (dispatcher_) dispatcher_->clear();
  dispatcher_.reset();
  backend_.reset();
}

}  // namespace mgmt::daemon
