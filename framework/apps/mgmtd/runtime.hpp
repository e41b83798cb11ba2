// What mgmtd is running: the configuration, the backend, the dispatcher of handlers, and
// the facts plugins see (ServerInfo). Builds them at start-up and rebuilds them on reload.
#pragma once

#include <map>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "mgmt/plugin.hpp"
#include "mgmt/server/config.hpp"
#include "mgmt/server/dispatcher.hpp"
#include "mgmt/server/plugin_loader.hpp"
#include "mgmt/server/server.hpp"

namespace spdlog {
class logger;
}

namespace mgmt::daemon {

struct RuntimeOptions {
  std::string config_file;
  std::string builtin_plugin_dir;
  std::optional<std::string> socket;     // overrides server.socket
  std::optional<std::string> log_level;  // overrides log.level
  // PluginEnv::on_main_thread for the backend (see main_thread.hpp).
  std::function<bool(const std::function<void()>&)> on_main_thread;
};

struct UpgradeImage;
struct JournalEvent;

class Runtime {
 public:
  Runtime(RuntimeOptions opts, std::shared_ptr<spdlog::logger> log);
  ~Runtime();

  // Reads the configuration and loads every plugin. Throws ConfigError or PluginError.
  // With `image` (an in-place upgrade), the backend is created from the `config:` its
  // processes ran with in the previous program; adopt() then takes them over.
  void load(const UpgradeImage* image = nullptr);
  // In-place upgrade, in the new program before it serves: the backend adopts the image's
  // state, then takes the file's backend configuration like a reload when it differs.
  // Returns "" or why the processes could not be adopted.
  std::string adopt(const UpgradeImage& image);
  // The backend `config:` the processes run with, as YAML (for the next program).
  const std::string& backend_config_text() const { return backend_text_; }
  // The recent events, for the next program.
  void journal_snapshot(std::uint64_t& next, std::vector<JournalEvent>& events) const;

  const ServerConfig& config() const { return cfg_; }
  std::shared_ptr<const Dispatcher> dispatcher() const { return dispatcher_; }
  Backend& backend() { return *backend_; }
  ServerInfo& info() { return *info_; }
  // One line per plugin ("0xa0: list 1.0.0 (/path/list.so)"), for --check and the log.
  const std::vector<std::string>& summary() const { return summary_; }

  // From now on SIGHUP and the `reload` command re-read the file and apply it to `server`.
  void attach(Server& server);
  // Re-reads the configuration and applies it, or changes nothing and says why. On the
  // server's I/O thread. Unchanged handlers are kept as they are (same object), changed
  // ones are replaced, the backend is asked to reconfigure itself, limits and access
  // rules are updated. The socket path and the backend plugin cannot change while running.
  std::string reload();
  // Told when a reload begins (false) and when it has ended, applied or refused (true).
  void on_reload_events(std::function<void(bool ended)> f) { reload_observer_ = std::move(f); }

  // Destroys the handlers, then the backend (each releases its library as it goes).
  void release();

 private:
  static void drop_plugin_configs(ServerConfig& cfg);
  std::function<void(bool)> reload_observer_;
  PluginEnv handler_env(const PluginRef& ref, const std::string& file,
                        const PluginHandle& h) const;
  // Identity of a handler slot: when it is equal, the existing handler is kept.
  static std::string slot_key(const std::string& path, const PluginRef& ref);

  RuntimeOptions opts_;
  std::shared_ptr<spdlog::logger> log_;
  ServerConfig cfg_;
  // First, so it outlives the plugins that point at it; on the heap so its address is
  // stable.
  std::unique_ptr<ServerInfo> info_ = std::make_unique<ServerInfo>();
  std::string backend_path_;
  std::string backend_text_;        // see backend_config_text()
  std::optional<YAML::Node> pending_backend_config_;  // the file's, when adopt() must apply it
  struct Journal;
  std::shared_ptr<Journal> journal_;
  std::unique_ptr<Subscription> journal_sub_;
  std::shared_ptr<Backend> backend_;
  std::shared_ptr<Dispatcher> dispatcher_;
  std::map<std::uint8_t, std::string> slot_keys_;
  std::vector<std::string> summary_;
  Server* server_ = nullptr;
};

}  // namespace mgmt::daemon
