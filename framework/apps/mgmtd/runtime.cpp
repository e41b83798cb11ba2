#include "runtime.hpp"

#include <malloc.h>

#include <chrono>
#include <atomic>
#include <deque>
#include <filesystem>
#include <mutex>
#include <thread>

#include <spdlog/spdlog.h>

#include "mgmt/handler_support.hpp"  // rfc3339
#include "mgmt/log.hpp"
#include "mgmt/server/plugin_loader.hpp"
#include "upgrade.hpp"

namespace fs = std::filesystem;

namespace mgmt::daemon {

namespace {

std::string describe(const std::string& role, const PluginHandle& h) {
  return role + ": " + h.info->name + " " + h.version.str() + " (" + h.path + ")";
}

bool is_command(std::uint8_t type) { return type >= kFirstCommandType && type <= kLastCommandType; }

// A backend `config:` as YAML text: what an in-place upgrade hands the next program, and
// what tells it whether the file has changed since.
std::string yaml_text(const YAML::Node& n) {
  if (!n.IsDefined() || n.IsNull()) return {};
  YAML::Emitter out;
  out << n;
  return out.c_str();
}


}  // namespace

// The last events the backend published, numbered, and the subscribers that get them with
// their numbers (ServerInfo::subscribe_events): a subscriber that reconnects (after an
// in-place upgrade, which hands the journal over) asks for those after the last it got.
struct Runtime::Journal : std::enable_shared_from_this<Journal> {
  using Callback = std::function<void(const Event&, std::uint64_t)>;
  static constexpr std::size_t kKeep = 256;
  mutable std::mutex mu;
  std::uint64_t next = 1;
  std::deque<JournalEvent> events;
  std::map<std::uint64_t, std::shared_ptr<Callback>> subs;
  std::uint64_t next_key = 1;
  // The thread inside record(), so that a callback may unsubscribe without taking the lock
  // that thread holds (as the process backend's Broadcaster allows).
  std::atomic<std::thread::id> publisher{};

  // On the backend's thread that publishes, in its order.
  void record(const Event& e) {
    std::lock_guard lock(mu);
    const std::uint64_t n = next++;
    events.push_back({n, e});
    if (events.size() > kKeep) events.pop_front();
    publisher.store(std::this_thread::get_id(), std::memory_order_relaxed);
    for (auto it = subs.begin(); it != subs.end();) {
      const std::uint64_t key = it->first;
      const std::shared_ptr<Callback> cb = it->second;
      (*cb)(e, n);
      it = subs.upper_bound(key);
    }
    publisher.store(std::thread::id(), std::memory_order_relaxed);
  }

  class Token final : public Subscription {
   public:
    Token(std::shared_ptr<Journal> j, std::uint64_t key) : j_(std::move(j)), key_(key) {}
    ~Token() override {
      if (j_->publisher.load(std::memory_order_relaxed) == std::this_thread::get_id()) {
        j_->subs.erase(key_);
        return;
      }
      std::lock_guard lock(j_->mu);
      j_->subs.erase(key_);
    }

   private:
    std::shared_ptr<Journal> j_;
    std::uint64_t key_;
  };

  // The kept events after `after`, then the new ones: one cut, nothing lost or repeated.
  std::unique_ptr<Subscription> subscribe(std::uint64_t after, std::int64_t since, Callback cb) {
    std::lock_guard lock(mu);
    for (const auto& je : events) {
      if (after > 0 ? je.seq > after : since > 0 && je.event.ts >= since) cb(je.event, je.seq);
    }
    const std::uint64_t key = next_key++;
    subs.emplace(key, std::make_shared<Callback>(std::move(cb)));
    return std::make_unique<Token>(shared_from_this(), key);
  }
};

Runtime::Runtime(RuntimeOptions opts, std::shared_ptr<spdlog::logger> log)
    : opts_(std::move(opts)), log_(std::move(log)) {}

Runtime::~Runtime() { release(); }

std::string Runtime::slot_key(const std::string& path, const PluginRef& ref) {
  YAML::Emitter config;
  config << ref.config;
  return path + "\n" + ref.version.text() + "\n" +
         (ref.right ? right_name(*ref.right) : "default") + "\n" + config.c_str();
}

void Runtime::load(const UpgradeImage* image) {
  cfg_ = load_config(opts_.config_file, opts_.builtin_plugin_dir);
  if (opts_.socket) cfg_.socket_path = fs::absolute(*opts_.socket).string();
  log_->set_level(spdlog::level::from_str(opts_.log_level.value_or(cfg_.log_level)));

  PluginLoader loader(cfg_.plugin_dirs);
  info_->version = MGMTD_VERSION;
  info_->started_at = std::chrono::duration_cast<std::chrono::nanoseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  info_->upgraded_at = info_->started_at;
  info_->config_file = fs::absolute(cfg_.file).string();

  {
    const auto bh = loader.load(cfg_.backend, PluginKind::backend);
    PluginEnv benv;
    benv.config = cfg_.backend.config;
    benv.on_main_thread = opts_.on_main_thread;
    backend_text_ = yaml_text(cfg_.backend.config);
    if (image) {
      // The processes keep the definitions they run with; the file's are applied after
      // adopt(), like a reload.
      if (image->backend_config != backend_text_) pending_backend_config_ = cfg_.backend.config;
      // reset() rebinds: assigning would overwrite the file's node (held above) in place.
      benv.config.reset(image->backend_config.empty() ? YAML::Node()
                                                      : YAML::Load(image->backend_config));
      backend_text_ = image->backend_config;
      info_->started_at = image->started_at;
      info_->upgrades = image->upgrades;
    }
    benv.config_file = cfg_.file;
    benv.log = log_->clone(bh.info->name);
    benv.server = info_.get();
    info_->plugins.push_back({0, bh.info->name, bh.info->kind, bh.version.str(), bh.path});
    backend_ = loader.make_backend(bh, cfg_.backend, benv);
    backend_path_ = bh.path;
    journal_ = std::make_shared<Journal>();
    if (image) {
      journal_->next = image->next_event;
      journal_->events.assign(image->events.begin(), image->events.end());
    }
    journal_sub_ = backend_->subscribe_events(
        [j = journal_](const Event& e) { j->record(e); });
    info_->subscribe_events = [j = journal_](std::uint64_t after, std::int64_t since,
                                             std::function<void(const Event&, std::uint64_t)> cb) {
      return j->subscribe(after, since, std::move(cb));
    };
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

std::string Runtime::adopt(const UpgradeImage& image) {
  if (std::string err = backend_->adopt(image.backend); !err.empty()) return err;
  mgmt::log::info(*log_, "upgrade {}: took over from mgmtd {} (running since {})",
                  image.upgrades, image.from_version, mgmt::rfc3339(image.started_at));
  if (pending_backend_config_) {
    // Changed in the file since the previous program last read it: applied like a reload.
    const std::string text = yaml_text(*pending_backend_config_);
    if (std::string err = backend_->reconfigure(*pending_backend_config_, cfg_.file); !err.empty()) {
      mgmt::log::error(*log_,
                       "the backend configuration of {} changed, and cannot be applied: {}; the "
                       "processes keep the one they ran with",
                       cfg_.file, err);
    } else {
      backend_text_ = text;
      mgmt::log::info(*log_, "applied the backend configuration of {}, changed since it was last read",
                      cfg_.file);
    }
    pending_backend_config_.reset();
  }
  return {};
}

void Runtime::journal_snapshot(std::uint64_t& next, std::vector<JournalEvent>& events) const {
  if (!journal_) return;
  std::lock_guard lock(journal_->mu);
  next = journal_->next;
  events.assign(journal_->events.begin(), journal_->events.end());
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
  // (A file's backend configuration that adopt() still has to apply is held apart.)
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
  backend_text_ = yaml_text(next.backend.config);

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
  journal_sub_.reset();
  backend_.reset();
}

}  // namespace mgmt::daemon
