// mgmtd: configuration → plugins → dispatcher → socket server.
#include <sys/resource.h>
#include <unistd.h>

#include <csignal>
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <string>
#include <thread>

#include <spdlog/spdlog.h>

#include "logging.hpp"  // [sidecar] --log-format
#include "main_thread.hpp"
#include "mgmt/log.hpp"
#include "mgmt/plugin.hpp"
#include "mgmt/server/server.hpp"
#include "options.hpp"
#include "ready_file.hpp"  // [sidecar] --ready-file
#include "runtime.hpp"
#include "systemd_agent.hpp"
#include "upgrade.hpp"

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
  // SIGUSR2 asks for an in-place upgrade once the server serves; until then (and while a
  // new program starts after one) its default action would kill mgmtd and every child.
  std::signal(SIGUSR2, SIG_IGN);
  // Before anything can fork: the service manager's variables are mgmtd's alone.
  const mgmt::daemon::Notifier notifier;
  // Started by an in-place upgrade: the previous program's state, socket and children.
  std::optional<mgmt::daemon::UpgradeImage> image;
  try {
    image = mgmt::daemon::take_upgrade_image();
  } catch (const std::exception& e) {
    std::cerr << "mgmtd: in-place upgrade: " << e.what() << "\n";
    return 1;
  }
  std::string activation_note;
  std::optional<int> listen_fd =
      image ? std::optional<int>(image->listen_fd) : mgmt::daemon::take_listen_fd(activation_note);
  if (listen_fd && *listen_fd < 0) listen_fd.reset();
  // Recorded now: a package upgrade may replace (and so delete) the file later.
  const std::string self_binary = mgmt::daemon::upgrade_binary();
  const FdLimit fd_limit = raise_fd_limit();
  // The thread that forks every child (see main_thread.hpp): this one.
  mgmt::daemon::MainThreadJobs main_jobs;

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

  mgmt::daemon::Runtime runtime({opts.config, builtin_plugin_dir(), opts.socket, opts.log_level,
                                 [&main_jobs](const std::function<void()>& job) {
                                   return main_jobs.run(job);
                                 }},
                                log);
  try {
    runtime.load(image ? &*image : nullptr);
  } catch (const std::exception& e) {  // ConfigError, PluginError: already say where and why
    std::cerr << "mgmtd: " << e.what() << "\n";
    return 2;
  }
  const mgmt::ServerConfig& cfg = runtime.config();

  if (opts.check) {
    std::cout << cfg.file << ": OK\n";
    std::cout << "  socket: " << cfg.socket_path << "\n";
    for (const auto& line : runtime.summary()) std::cout << "  " << line << "\n";
    // What a running mgmtd checks before it hands over to this binary (upgrade.hpp).
    std::cout << "  plugin ABI: " << mgmt::kAbiVersion << "\n";
    std::cout << "  upgrade image: " << mgmt::daemon::kUpgradeImageVersion << "\n";
    std::cout << "  backend handoff: " << runtime.backend().handoff_version() << "\n";
    return 0;
  }

  int rc = 0;
  mgmt::daemon::ReadyFile ready(opts.ready_file);  // [sidecar] removed on exit
  if (!activation_note.empty()) mgmt::log::warn(*log, "{}", activation_note);
  report_fd_limit(fd_limit, cfg.limits.max_connections, runtime.backend().list().size(), *log);
  {
    // A socket created by mgmtd stays its own across upgrades (removed at shutdown); one
    // from socket activation never is.
    const bool socket_owned = image ? image->listen_owned : !listen_fd.has_value();
    mgmt::ServerOptions so{cfg.socket_path, cfg.write_hint, cfg.limits, cfg.access, cfg.streams,
                           listen_fd, image && image->listen_owned};
    mgmt::Server server(so, runtime.dispatcher(), runtime.backend(), log);
    runtime.attach(server);
    if (image) server.restore_stats(image->stats);  // the counts go on
    mgmt::daemon::SystemdAgent systemd(notifier, server, runtime, log);
    mgmt::daemon::Upgrader upgrader(server, runtime, notifier, log, self_binary,
                                    std::vector<std::string>(argv + 1, argv + argc), socket_owned);
    runtime.info().binary = self_binary;
    runtime.info().upgrade = [&upgrader](std::function<void(const std::string&)> done) {
      upgrader.request(std::move(done));
    };
    server.on_upgrade([&upgrader, &log] {
      upgrader.request([&log](const std::string& err) {
        if (err.empty()) mgmt::log::info(*log, "SIGUSR2: handing over");
      });
    });
    bool serving = false;
    try {
      server.listen();
      if (image) {
        if (std::string err = runtime.adopt(*image); !err.empty()) {
          throw std::runtime_error("in-place upgrade: cannot adopt the processes: " + err);
        }
      } else {
        runtime.backend().start_all();
      }
      serving = true;
    } catch (const std::exception& e) {
      mgmt::log::error(*log, "{}", e.what());
      rc = 1;
    }
    if (serving) {
      // The server runs on a thread of its own; this one forks the children (main_jobs)
      // until the server is done. Nothing here may take the backend's lock from now on:
      // its supervisor may hold it while it waits for a fork on this thread.
      std::thread io([&] {
        server.post([&] {
          ready.mark(cfg.socket_path);  // [sidecar] --ready-file: listening, processes started
          systemd.ready();              // READY=1 under systemd (Type=notify)
          mgmt::log::info(*log, "mgmtd {} ready ({} plugins loaded, pid {}{})", MGMTD_VERSION,
                          runtime.summary().size(), ::getpid(),
                          image ? ", upgrade " + std::to_string(image->upgrades) : std::string());
        });
        try {
          server.run();
        } catch (const std::exception& e) {
          mgmt::log::error(*log, "{}", e.what());
          rc = 1;
        }
        main_jobs.close();
      });
      main_jobs.serve();
      io.join();
      if (upgrader.pending()) {
        upgrader.exec();  // returns only when no program could be executed
        return 1;
      }
    }
  }
  // The server's signal set is gone with it, and with it the handlers it installed: a
  // SIGTERM now (a second one, sent while mgmtd shuts down) would kill the process with
  // its default action before it exits cleanly. Shutdown is under way: ignore them.
  for (const int sig : {SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2}) std::signal(sig, SIG_IGN);
  // Objects before the libraries that made them: the server (its sessions and any handler
  // tables replaced by reloads) is gone; now the handlers, then the backend.
  runtime.release();
  return rc;
}
