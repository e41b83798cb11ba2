// mgmtd: configuration → plugins → dispatcher → socket server.
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "mgmt/plugin.hpp"
#include "mgmt/server/config.hpp"
#include "mgmt/server/dispatcher.hpp"
#include "mgmt/server/plugin_loader.hpp"
#include "mgmt/server/server.hpp"
#include "options.hpp"

namespace {

namespace fs = std::filesystem;

// Plugins installed beside this binary: <prefix>/bin/mgmtd → <prefix>/lib/mgmtd/plugins.
// The build tree has the same layout, so a freshly built mgmtd finds its stock plugins.
std::string builtin_plugin_dir() {
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (ec) return {};
  return (exe.parent_path().parent_path() / "lib" / "mgmtd" / "plugins").string();
}

struct Loaded {
  // What the plugins see as env.server (the `info` command). First, so it outlives them; on
  // the heap, so its address survives moving Loaded.
  std::unique_ptr<mgmt::ServerInfo> server = std::make_unique<mgmt::ServerInfo>();
  std::shared_ptr<mgmt::Backend> backend;
  mgmt::Dispatcher dispatcher;
  std::vector<std::string> summary;  // one line per plugin, for --check
};

Loaded load_plugins(const mgmt::ServerConfig& cfg, const std::shared_ptr<spdlog::logger>& log) {
  Loaded out;
  mgmt::PluginLoader loader(cfg.plugin_dirs);
  auto describe = [](const std::string& role, const mgmt::PluginHandle& h) {
    return role + ": " + h.info->name + " " + h.version.str() + " (" + h.path + ")";
  };
  out.server->version = MGMTD_VERSION;
  out.server->started_at = std::chrono::duration_cast<std::chrono::nanoseconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
  out.server->config_file = fs::absolute(cfg.file).string();
  auto record = [&](std::uint8_t type, const mgmt::PluginHandle& h) {
    out.server->plugins.push_back({type, h.info->name, h.info->kind, h.version.str(), h.path});
  };

  const auto bh = loader.load(cfg.backend, mgmt::PluginKind::backend);
  mgmt::PluginEnv benv;
  benv.config = cfg.backend.config;
  benv.config_file = cfg.file;
  benv.log = log->clone(bh.info->name);
  benv.server = out.server.get();
  record(0, bh);
  out.backend = loader.make_backend(bh, cfg.backend, benv);
  out.summary.push_back(describe("backend", bh));

  for (const auto& [type, ref] : cfg.handlers) {
    const bool command = type >= mgmt::kFirstCommandType && type <= mgmt::kLastCommandType;
    const auto hh = loader.load(ref, command ? mgmt::PluginKind::command : mgmt::PluginKind::handler);
    mgmt::PluginEnv env;
    env.backend = out.backend.get();
    env.config = ref.config;
    env.config_file = cfg.file;
    env.log = log->clone(hh.info->name);
    env.server = out.server.get();
    record(type, hh);
    out.dispatcher.set(type, loader.make_handler(hh, ref, env),
                       ref.right.value_or(mgmt::default_right(type)));
    out.summary.push_back(describe(mgmt::type_hex(type), hh));
  }
  return out;
}

}  // namespace

// Each client connection and each child's pipes take descriptors; the soft limit (often
// 1024) would cap connections well below limits.max_connections.
static void raise_fd_limit() {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
}

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  raise_fd_limit();

  mgmt::daemon::Options opts;
  try {
    opts = mgmt::daemon::parse_options(std::vector<std::string>(argv + 1, argv + argc));
  } catch (const std::invalid_argument& e) {
    std::cerr << "mgmtd: " << e.what() << "\ntry 'mgmtd --help'\n";
    return 2;
  }
  if (opts.help) {
    std::cout << mgmt::daemon::usage();
    return 0;
  }
  if (opts.version) {
    std::cout << "mgmtd " << MGMTD_VERSION << " (plugin ABI " << mgmt::kAbiVersion << ")\n";
    return 0;
  }

  auto log = spdlog::stderr_color_mt("mgmtd");
  log->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%-5l%$ [%n] %v");

  mgmt::ServerConfig cfg;
  Loaded plugins;
  try {
    cfg = mgmt::load_config(opts.config, builtin_plugin_dir());
    if (opts.socket) cfg.socket_path = fs::absolute(*opts.socket).string();
    log->set_level(spdlog::level::from_str(opts.log_level.value_or(cfg.log_level)));
    plugins = load_plugins(cfg, log);
  } catch (const std::exception& e) {  // ConfigError, PluginError: already say where and why
    std::cerr << "mgmtd: " << e.what() << "\n";
    return 2;
  }

  if (opts.check) {
    std::cout << cfg.file << ": OK\n";
    std::cout << "  socket: " << cfg.socket_path << "\n";
    for (const auto& line : plugins.summary) std::cout << "  " << line << "\n";
    plugins.dispatcher.clear();
    plugins.backend.reset();
    return 0;
  }

  int rc = 0;
  {
    mgmt::ServerOptions so{cfg.socket_path, cfg.write_hint, cfg.limits, cfg.access};
    mgmt::Server server(so, plugins.dispatcher, *plugins.backend, log);
    plugins.server->stats = &server.stats();
    try {
      server.listen();
      plugins.backend->start_all();
      log->info("mgmtd {} ready ({} plugins loaded, pid {})", MGMTD_VERSION,
                plugins.summary.size(), ::getpid());
      server.run();
    } catch (const std::exception& e) {
      log->error("{}", e.what());
      rc = 1;
    }
  }
  // Objects before the libraries that made them: the server (and its sessions) first, then
  // the handlers, then the backend. Each plugin object releases its library as it goes.
  plugins.dispatcher.clear();
  plugins.backend.reset();
  return rc;
}
