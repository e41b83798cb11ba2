// mgmtd: configuration → plugins → dispatcher → socket server.
#include <sys/resource.h>
#include <unistd.h>

#include <csignal>
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <string>

#include <spdlog/spdlog.h>

#include "logging.hpp"  // [sidecar] --log-format
#include "mgmt/log.hpp"
#include "mgmt/plugin.hpp"
#include "mgmt/server/server.hpp"
#include "options.hpp"
#include "ready_file.hpp"  // [sidecar] --ready-file
#include "runtime.hpp"
#include "systemd_agent.hpp"

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

// Each client connection and each child's pipes take descriptors; the soft limit (often
// 1024) would cap connections well below limits.max_connections.
struct FdLimit {
  bool known = false;
  rlim_t before = 0;  // the soft limit mgmtd was started with
  rlim_t soft = 0;
  rlim_t hard = 0;
};

FdLimit raise_fd_limit() {
  FdLimit l;
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return l;
  l.known = true;
  l.before = l.soft = rl.rlim_cur;
  l.hard = rl.rlim_max;
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &rl) == 0) l.soft = rl.rlim_max;
  }
  return l;
}

std::string limit_text(rlim_t v) { return v == RLIM_INFINITY ? "unlimited" : std::to_string(v); }

// Said once the logger exists: what raise_fd_limit() did, and whether the limit is still
// too low for the configuration (each connection takes one descriptor; each process about
// four: three pipes and a pidfd; mgmtd itself a few dozen).
void report_fd_limit(const FdLimit& l, std::size_t max_connections, std::size_t processes,
                     spdlog::logger& log) {
  if (!l.known) return;
  if (l.soft != l.before) {
    mgmt::log::info(log, "raised the open-file limit (RLIMIT_NOFILE) from {} to the hard limit {}",
                    limit_text(l.before), limit_text(l.soft));
  }
  const std::uint64_t need = max_connections + 4 * processes + 64;
  if (l.soft == RLIM_INFINITY || l.soft >= need) return;
  mgmt::log::warn(log,
                  "open-file limit is {} (hard limit {}), below the {} that limits.max_connections "
                  "({}) and {} process{} need: connections or starts will fail with \"too many "
                  "open files\"; raise the hard limit (systemd LimitNOFILE=, docker --ulimit "
                  "nofile=, ulimit -n) or lower limits.max_connections",
                  limit_text(l.soft), limit_text(l.hard), need, max_connections, processes,
                  processes == 1 ? "" : "es");
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  // Before anything can fork: the service manager's variables are mgmtd's alone.
  const mgmt::daemon::Notifier notifier;
  std::string activation_note;
  std::optional<int> listen_fd = mgmt::daemon::take_listen_fd(activation_note);
  const FdLimit fd_limit = raise_fd_limit();

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

  auto log = mgmt::daemon::make_logger(opts.log_format);  // [sidecar] text on stderr, or JSON lines

  mgmt::daemon::Runtime runtime({opts.config, builtin_plugin_dir(), opts.socket, opts.log_level},
                                log);
  try {
    runtime.load();
  } catch (const std::exception& e) {  // ConfigError, PluginError: already say where and why
    std::cerr << "mgmtd: " << e.what() << "\n";
    return 2;
  }
  const mgmt::ServerConfig& cfg = runtime.config();

  if (opts.check) {
    std::cout << cfg.file << ": OK\n";
    std::cout << "  socket: " << cfg.socket_path << "\n";
    for (const auto& line : runtime.summary()) std::cout << "  " << line << "\n";
    return 0;
  }

  int rc = 0;
  mgmt::daemon::ReadyFile ready(opts.ready_file);  // [sidecar] removed on exit
  if (!activation_note.empty()) mgmt::log::warn(*log, "{}", activation_note);
  report_fd_limit(fd_limit, cfg.limits.max_connections, runtime.backend().list().size(), *log);
  {
    mgmt::ServerOptions so{cfg.socket_path, cfg.write_hint, cfg.limits, cfg.access, cfg.streams,
                           listen_fd};
    mgmt::Server server(so, runtime.dispatcher(), runtime.backend(), log);
    runtime.attach(server);
    mgmt::daemon::SystemdAgent systemd(notifier, server, runtime, log);
    try {
      server.listen();
      runtime.backend().start_all();
      ready.mark(cfg.socket_path);  // [sidecar] --ready-file: listening, processes started
      systemd.ready();              // READY=1 under systemd (Type=notify)
      mgmt::log::info(*log, "mgmtd {} ready ({} plugins loaded, pid {})", MGMTD_VERSION,
                      runtime.summary().size(), ::getpid());
      server.run();
    } catch (const std::exception& e) {
      mgmt::log::error(*log, "{}", e.what());
      rc = 1;
    }
  }
  // Objects before the libraries that made them: the server (its sessions and any handler
  // tables replaced by reloads) is gone; now the handlers, then the backend.
  runtime.release();
  return rc;
}
