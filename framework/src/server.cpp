#include "mgmt/server/server.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <malloc.h>
#include <unistd.h>

#include <signal.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <thread>
#include <unordered_map>

#include <spdlog/spdlog.h>

#include "mgmt/client.hpp"
#include "mgmt/log.hpp"
#include "session.hpp"

namespace fs = std::filesystem;

namespace mgmt {

namespace {

// Returns true when something accepts connections on `path`.
bool socket_is_live(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  const bool live = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return live;
}

void write_hint_file(const std::string& runtime_dir, spdlog::logger& log) {
  const fs::path hint = hint_file_path();
  std::error_code ec;
  fs::create_directories(hint.parent_path(), ec);
  const fs::path tmp = hint.string() + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << runtime_dir << "\n";
    if (!out) {
      mgmt::log::warn(log, "cannot write the runtime-dir hint {}: clients will need --runtime-dir",
                      hint.string());
      return;
    }
  }
  fs::rename(tmp, hint, ec);
  if (ec) {
    mgmt::log::warn(log, "cannot write the runtime-dir hint {}: {}", hint.string(), ec.message());
    fs::remove(tmp, ec);
  }
}

// The spill folder: streams.spill_dir, else <socket's folder>/spill.
std::string resolve_spill_dir(const ServerOptions& o) {
  if (!o.streams.spill_dir.empty()) return fs::absolute(o.streams.spill_dir).string();
  const fs::path dir = fs::path(o.socket_path).parent_path();
  return ((dir.empty() ? fs::current_path() : fs::absolute(dir)) / "spill").string();
}

StreamsConfig resolved_streams(const ServerOptions& o) {
  StreamsConfig s = o.streams;
  s.spill_dir = resolve_spill_dir(o);
  return s;
}

// Removes spill files a previous server left behind (conn-<pid>-<id>.spill of a pid that is
// gone, or ours from an earlier run with the same pid).
void remove_stale_spill_files(const std::string& dir, spdlog::logger& log) {
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.rfind("conn-", 0) != 0 || name.size() < 11 ||
        name.compare(name.size() - 6, 6, ".spill") != 0) {
      continue;
    }
    const long pid = std::strtol(name.c_str() + 5, nullptr, 10);
    if (pid > 0 && pid != ::getpid() &&
        (::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM)) {
      continue;  // another live server's
    }
    std::error_code rm;
    if (fs::remove(it->path(), rm))
      mgmt::log::info(log, "removed stale spill file {}", it->path().string());
  }
}

}  // namespace

struct Server::Impl {
  Impl(ServerOptions o, std::shared_ptr<const Dispatcher> d, Backend& b,
       std::shared_ptr<spdlog::logger> l)
      : opts(std::move(o)),
        dispatcher(std::move(d)),
        backend(b),
        log(std::move(l)),
        acceptor(io),
        signals(io),
        drain_timer(io),
        trim_timer(io),
        access(::geteuid(), opts.access.rules),
        log_limit(io, log),
        host{io,     io,  &host, dispatcher.get(), opts.limits, access, stats, log,
             nullptr, resolved_streams(opts), log_limit, queued, spilled} {
    queued.limit = opts.limits.queue_total();
    spilled.limit = opts.streams.spill_quota_total;
    // server.io_threads: this thread is the first; the others each get a context of their
    // own, whose sessions hand their requests to this one.
    unsigned n = opts.limits.io_threads;
    if (n == 0) n = std::max(1u, std::thread::hardware_concurrency());
    for (unsigned i = 1; i < n; ++i) {
      shards.push_back(std::make_unique<Shard>(*this));
    }
  }

  // An I/O thread beyond the first: its own context, sessions and copy of the limits.
  struct Shard {
    explicit Shard(Impl& m)
        : io(1),
          host{io,      m.io,  &m.host, nullptr, m.opts.limits, m.access, m.stats, m.log,
               nullptr, m.host.streams, m.log_limit, m.queued, m.spilled},
          work(io.get_executor()) {}
    asio::io_context io;
    SessionHost host;
    std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
    std::thread thread;
  };

  void accept();
  bool refused(asio::local::stream_protocol::socket& sock);
  void session_closed(std::uint64_t id, std::int64_t uid);
  // Runs `f(s)` on the session's own context (at once when that is this thread's).
  template <class F>
  static void on_session(const std::shared_ptr<Session>& s, F f) {
    asio::dispatch(s->context(), [s, f = std::move(f)]() mutable { f(*s); });
  }
  void start_io_threads();
  void stop_io_threads();
  void begin_shutdown(const char* why);
  void finish_shutdown();
  void wait_signal();
  void release_retired();
  void trim_soon();
  void check_drain();

  ServerOptions opts;
  std::shared_ptr<const Dispatcher> dispatcher;
  // Tables replaced by reloads whose handlers still serve an exchange or a stream: each
  // handler goes (with its library) once the last of those is gone.
  std::vector<std::shared_ptr<Dispatcher>> retired;
  std::function<void()> reload;
  std::function<void()> upgrade;  // SIGUSR2
  bool upgrading = false;         // end_for_upgrade() was called
  Backend& backend;
  std::shared_ptr<spdlog::logger> log;
  asio::io_context io;
  asio::local::stream_protocol::acceptor acceptor;
  asio::signal_set signals;
  asio::steady_timer drain_timer;
  // The shutdown drain (see check_drain()).
  static constexpr std::chrono::seconds kDrainStall{3};
  static constexpr std::chrono::seconds kDrainMax{30};
  std::chrono::steady_clock::time_point drain_deadline{};
  std::unordered_map<std::uint64_t, std::uint64_t> drain_progress;  // written() at the last check
  // Memory given back after connections close (see trim_soon()).
  asio::steady_timer trim_timer;
  bool trim_armed = false;
  // Server::every(): repeating jobs on the I/O thread, until the drain ends.
  std::vector<std::unique_ptr<asio::steady_timer>> tickers;
  std::function<void()> shutdown_hook;
  std::vector<std::shared_ptr<std::function<void()>>> tick_fns;  // kept for the tickers
  AccessPolicy access;
  ServerStats stats;
  LogLimiter log_limit;
  // limits.max_queue_total and streams.spill_quota_total, shared by every session (and so
  // declared before host, and destroyed after the last session's queue gives back its share).
  Budget queued;
  Budget spilled;
  SessionHost host;
  // Declared after what their sessions use, so that sessions still queued on them at
  // destruction go before those.
  std::vector<std::unique_ptr<Shard>> shards;
  std::size_t next_context = 0;  // round-robin over this context and the shards'
  // By id, not address: a session on another context is forgotten here only when its
  // close has been posted back, by which time a new one may have its address.
  std::unordered_map<std::uint64_t, std::weak_ptr<Session>> sessions;
  std::unordered_map<std::int64_t, std::size_t> per_uid;  // open sessions by peer uid
  std::uint64_t next_id = 1;
  bool listening = false;
  bool shutting_down = false;
  std::thread backend_stopper;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> shutdown_work;
};

Server::Server(ServerOptions opts, std::shared_ptr<const Dispatcher> dispatcher, Backend& backend,
               std::shared_ptr<spdlog::logger> log)
    : impl_(std::make_unique<Impl>(std::move(opts), std::move(dispatcher), backend,
                                   std::move(log))) {}

Server::~Server() {
  if (impl_->backend_stopper.joinable()) impl_->backend_stopper.join();
  if (impl_->listening) {
    std::error_code ec;
    fs::remove(impl_->opts.socket_path, ec);
  }
}

void Server::listen() {
  auto& m = *impl_;
  const std::string& path = m.opts.socket_path;
  if (m.opts.listen_fd) {
    adopt_listener();
    return;
  }
  if (path.size() >= sizeof(sockaddr_un{}.sun_path)) {
    throw std::runtime_error("socket path " + path + " is too long (" +
                             std::to_string(path.size()) +
                             " bytes; Unix sockets allow 107): choose a shorter runtime_dir");
  }
  const fs::path dir = fs::path(path).parent_path();
  std::error_code ec;
  if (!dir.empty() && !fs::exists(dir, ec)) {
    fs::create_directories(dir, ec);
    if (ec) {
      throw std::runtime_error("cannot create the socket folder " + dir.string() + ": " +
                               ec.message());
    }
    // Group or others get in only where the socket's own mode lets them.
    const mode_t sm = m.opts.access.socket_mode;
    const mode_t dir_mode = 0700 | ((sm & 0060) ? 0050 : 0) | ((sm & 0006) ? 0005 : 0);
    ::chmod(dir.c_str(), dir_mode);
    if (m.opts.access.socket_group && ::chown(dir.c_str(), static_cast<uid_t>(-1),
                                              *m.opts.access.socket_group) != 0) {
      mgmt::log::warn(*m.log, "cannot give {} to group {}: {}", dir.string(),
                      *m.opts.access.socket_group, std::strerror(errno));
    }
  }

  struct stat st{};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      throw std::runtime_error(path + " exists and is not a socket: remove it or choose another "
                                      "server.socket");
    }
    if (socket_is_live(path)) {
      throw std::runtime_error("another server is already listening on " + path +
                               ": stop it first, or give this one another server.socket");
    }
    mgmt::log::info(*m.log, "removing stale socket {}", path);
    ::unlink(path.c_str());
  }

  // The umask makes the socket 0600 from the moment it exists, with no window in which
  // another user could connect.
  const mode_t old_mask = ::umask(0177);
  try {
    m.acceptor.open(asio::local::stream_protocol());
    // Asio opens and accepts without SOCK_CLOEXEC: no child may inherit a socket.
    ::fcntl(m.acceptor.native_handle(), F_SETFD, FD_CLOEXEC);
    m.acceptor.bind(asio::local::stream_protocol::endpoint(path));
    m.acceptor.listen();
  } catch (const boost::system::system_error& e) {
    ::umask(old_mask);
    throw std::runtime_error("cannot listen on " + path + ": " + e.code().message());
  }
  ::umask(old_mask);
  if (m.opts.access.socket_group &&
      ::chown(path.c_str(), static_cast<uid_t>(-1), *m.opts.access.socket_group) != 0) {
    throw std::runtime_error("cannot give " + path + " to group " +
                             std::to_string(*m.opts.access.socket_group) + ": " +
                             std::strerror(errno) + " (access.socket_group)");
  }
  ::chmod(path.c_str(), m.opts.access.socket_mode);
  m.listening = true;
  ready_to_serve();
  mgmt::log::info(*m.log, "listening on {}", path);
}

// Socket activation: the socket is the service manager's. It stays where it is, with the
// mode and owner its unit gave it, and is never unlinked: connections that arrive while
// mgmtd restarts wait in its backlog.
void Server::adopt_listener() {
  auto& m = *impl_;
  const int fd = *m.opts.listen_fd;
  sockaddr_un addr{};
  socklen_t len = sizeof addr;
  std::string where = "descriptor " + std::to_string(fd);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0 &&
      len > offsetof(sockaddr_un, sun_path) && addr.sun_path[0] != '\0') {
    where = addr.sun_path;
    if (where != m.opts.socket_path) {
      mgmt::log::warn(*m.log,
                      "serving the inherited socket {}, not server.socket {}: clients that "
                      "find the socket through the configuration will not reach this server",
                      where, m.opts.socket_path);
    }
  }
  boost::system::error_code ec;
  m.acceptor.assign(asio::local::stream_protocol(), fd, ec);
  if (ec) throw std::runtime_error("cannot serve the inherited socket " + where + ": " + ec.message());
  // Handed over by an in-place upgrade: still ours to remove at shutdown.
  if (m.opts.listen_owned) m.listening = true;
  ready_to_serve();
  mgmt::log::info(*m.log, "listening on {} ({})", where,
                  m.opts.listen_owned ? "handed over by an in-place upgrade" : "socket activation");
}

void Server::ready_to_serve() {
  auto& m = *impl_;
  remove_stale_spill_files(m.host.streams.spill_dir, *m.log);
  if (m.opts.write_hint) {
    write_hint_file(fs::path(m.opts.socket_path).parent_path().string(), *m.log);
  }
  // Caught from now on, and handled once run() starts: whoever saw the socket (or the
  // ready file written next) may already send SIGTERM, and must get a clean shutdown.
  m.signals.add(SIGINT);
  m.signals.add(SIGTERM);
  m.signals.add(SIGHUP);
  m.signals.add(SIGUSR2);
  m.signals.add(SIGUSR1);  // reopen the log files (logrotate)
}

void Server::Impl::accept() {
  // The next connection's context, round-robin; its socket is registered there.
  const std::size_t pick = next_context++ % (shards.size() + 1);
  SessionHost& target = pick == 0 ? host : shards[pick - 1]->host;
  acceptor.async_accept(asio::any_io_executor(target.io.get_executor()),
                        [this, &target](const boost::system::error_code& ec,
                                        asio::local::stream_protocol::socket sock) {
    if (ec) {
      if (ec == asio::error::operation_aborted || shutting_down) return;
      mgmt::log::warn(*log, "accept failed: {}", ec.message());
      if (ec == asio::error::no_descriptors) {
        // Out of file descriptors: back off briefly instead of spinning.
        drain_timer.expires_after(std::chrono::milliseconds(100));
        drain_timer.async_wait([this](const boost::system::error_code&) { accept(); });
        return;
      }
      accept();
      return;
    }
    ::fcntl(sock.native_handle(), F_SETFD, FD_CLOEXEC);
    if (refused(sock)) {
      stats.connection_refused();
      boost::system::error_code ignored;
      sock.close(ignored);
    } else {
      auto s = std::make_shared<Session>(std::move(sock), target, next_id++);
      sessions.emplace(s->id(), s);
      ++per_uid[s->peer_uid()];
      on_session(s, [](Session& x) { x.start(); });
    }
    accept();
  });
}

// True (and logged, rate-limited) when a new connection is refused. The server's owner and
// root are held only to max_connections; everyone else also to the per-uid cap, and kept
// out of the last reserved_connections slots, so that no other user can lock the operator
// out.
bool Server::Impl::refused(asio::local::stream_protocol::socket& sock) {
  const Limits& l = opts.limits;
  std::int64_t uid = -1;
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(sock.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
    uid = cred.uid;
  }
  if (sessions.size() >= l.max_connections) {
    if (log_limit.allow(LogLimiter::Kind::refused)) {
      mgmt::log::warn(*log,
                      "refusing a connection from uid {}: {} connections open "
                      "(limits.max_connections)",
                      uid, sessions.size());
    }
    return true;
  }
  if (uid == 0 || uid == static_cast<std::int64_t>(::geteuid())) return false;
  const auto it = per_uid.find(uid);
  const std::size_t held = it == per_uid.end() ? 0 : it->second;
  if (held >= l.per_uid_cap()) {
    if (log_limit.allow(LogLimiter::Kind::refused_uid)) {
      mgmt::log::warn(*log,
                      "refusing a connection from uid {}: it has {} open "
                      "(limits.max_connections_per_uid)",
                      uid, held);
    }
    return true;
  }
  if (sessions.size() >= l.max_connections - l.reserved()) {
    if (log_limit.allow(LogLimiter::Kind::refused)) {
      mgmt::log::warn(*log,
                      "refusing a connection from uid {}: {} connections open, the last {} are "
                      "kept for the server's owner and root (limits.reserved_connections)",
                      uid, sessions.size(), l.reserved());
    }
    return true;
  }
  return false;
}

void Server::Impl::session_closed(std::uint64_t id, std::int64_t uid) {
  if (sessions.erase(id) == 0) return;
  const auto it = per_uid.find(uid);
  if (it != per_uid.end() && --it->second == 0) per_uid.erase(it);
}

void Server::Impl::wait_signal() {
  signals.async_wait([this](const boost::system::error_code& ec, int sig) {
    if (ec) return;
    if (sig == SIGHUP) {
      if (reload) {
        mgmt::log::info(*log, "SIGHUP: reloading the configuration");
        reload();
      } else {
        mgmt::log::warn(
            *log, "SIGHUP: configuration reload is not supported here; restart to apply changes");
      }
    } else if (sig == SIGUSR1) {
      mgmt::log::info(*log, "SIGUSR1: reopening log files");
      if (auto err = backend.reopen_logs(); !err.empty()) {
        mgmt::log::error(*log, "SIGUSR1: {}", err);
      }
    } else if (sig == SIGUSR2) {
      if (upgrade) {
        mgmt::log::info(*log, "SIGUSR2: upgrading in place");
        upgrade();
      } else {
        mgmt::log::warn(*log, "SIGUSR2: in-place upgrade is not supported here");
      }
    } else {
      begin_shutdown(sig == SIGINT ? "SIGINT" : "SIGTERM");
    }
    if (upgrading) return;
    wait_signal();
  });
}

void Server::Impl::begin_shutdown(const char* why) {
  if (shutting_down) {
    mgmt::log::info(*log, "{}: already shutting down", why);
    return;
  }
  shutting_down = true;
  mgmt::log::info(*log, "{}: shutting down", why);
  if (shutdown_hook) shutdown_hook();
  boost::system::error_code ignored;
  acceptor.close(ignored);
  if (listening) {
    ::unlink(opts.socket_path.c_str());
    listening = false;
  }
  shutdown_work.emplace(io.get_executor());
  // Stopping children waits up to their stop timeouts; the I/O thread keeps serving the
  // stream clients (who see the stop events) meanwhile.
  backend_stopper = std::thread([this] {
    backend.shutdown();
    asio::post(io, [this] { finish_shutdown(); });
  });
}

void Server::Impl::finish_shutdown() {
  if (backend_stopper.joinable()) backend_stopper.join();
  // Copy: shutdown() may close sessions, which erases them from the map.
  std::vector<std::shared_ptr<Session>> live;
  for (auto& [p, w] : sessions) {
    if (auto s = w.lock()) live.push_back(std::move(s));
  }
  for (auto& s : live) on_session(s, [](Session& x) { x.shutdown(); });
  trim_timer.cancel();
  for (auto& t : tickers) t->cancel();
  drain_timer.cancel();
  drain_deadline = std::chrono::steady_clock::now() + kDrainMax;
  drain_progress.clear();
  for (auto& s : live) drain_progress.emplace(s->id(), s->written());
  check_drain();
  signals.cancel();
  shutdown_work.reset();
  // Once the last session is gone and the drain timer fires or is cancelled, run() returns.
  if (sessions.empty()) drain_timer.cancel();
}

void Server::run() {
  auto& m = *impl_;
  m.wait_signal();  // listen() put SIGINT, SIGTERM and SIGHUP in the set
  auto closed = [&m](std::uint64_t id, std::int64_t uid) {
    m.session_closed(id, uid);
    // Its exchanges and streams are gone: a handler replaced by a reload may be unused now.
    // Later, from the event loop, where no plugin code is on the stack.
    if (!m.retired.empty()) asio::post(m.io, [&m] { m.release_retired(); });
    m.trim_soon();
    if (m.shutting_down && m.sessions.empty() && !m.backend_stopper.joinable()) {
      m.drain_timer.cancel();
    }
  };
  m.host.on_closed = [closed](Session* s) { closed(s->id(), s->peer_uid()); };
  for (auto& sh : m.shards) {
    sh->host.on_closed = [&m, closed](Session* s) {
      asio::post(m.io, [closed, id = s->id(), uid = s->peer_uid()] { closed(id, uid); });
    };
  }
  m.start_io_threads();
  m.accept();
  m.io.run();
  m.stop_io_threads();
  mgmt::log::info(*m.log, "stopped");
}

void Server::Impl::start_io_threads() {
  for (auto& sh : shards) {
    sh->thread = std::thread([&io = sh->io] { io.run(); });
  }
}

// After the dispatch context has stopped: whatever is still open on the other contexts
// (an upgrade closes what it waited for; a drain that ended has none) is closed there,
// then their threads finish what is left and are joined.
void Server::Impl::stop_io_threads() {
  if (shards.empty()) return;
  for (auto& [id, w] : sessions) {
    if (auto s = w.lock()) on_session(s, [](Session& x) { x.close("server stopped"); });
  }
  for (auto& sh : shards) sh->work.reset();
  for (auto& sh : shards) {
    if (sh->thread.joinable()) sh->thread.join();
  }
}

const ServerStats& Server::stats() const { return impl_->stats; }

void Server::restore_stats(const StatsSnapshot& s) { impl_->stats.restore(s); }

void Server::set_dispatcher(std::shared_ptr<const Dispatcher> d) {
  auto& m = *impl_;
  // Copied: the runtime keeps its own pointer to the table it gave us, so the one retired
  // here must be ours to empty.
  m.retired.push_back(std::make_shared<Dispatcher>(*m.dispatcher));
  m.dispatcher = std::move(d);
  m.host.dispatcher = m.dispatcher.get();
  m.release_retired();
}

// A connection's buffers, queue blocks and read-ahead go back to malloc when it closes, but
// glibc keeps freed memory in its arenas (the backend threads' included) for reuse: after a
// crowd of connections, or a few with large backlogs, the server would stay that big. A
// second after connections close (once per second at most, whatever the rate of closes),
// what is free beyond kTrimSlack goes back to the kernel; below it trimming would only make
// the next connections fault their pages back in.
// The drain after shutdown: stream clients get what is queued for them for as long as they
// keep reading it. A client that took nothing in kDrainStall is closed, and so is every
// client still there kDrainMax after the drain began (a reader trickling a large backlog
// must not hold the shutdown, and the service manager's stop timeout, for ever).
void Server::Impl::check_drain() {
  drain_timer.expires_after(kDrainStall);
  drain_timer.async_wait([this](const boost::system::error_code& ec) {
    if (ec) return;
    const bool overdue = std::chrono::steady_clock::now() >= drain_deadline;
    std::vector<std::shared_ptr<Session>> stalled;
    std::unordered_map<std::uint64_t, std::uint64_t> progress;
    for (auto& [p, w] : sessions) {
      auto s = w.lock();
      if (!s) continue;
      const auto before = drain_progress.find(p);
      if (overdue || (before != drain_progress.end() && before->second == s->written())) {
        stalled.push_back(std::move(s));
      } else {
        progress.emplace(p, s->written());
      }
    }
    drain_progress = std::move(progress);
    if (!stalled.empty()) {
      mgmt::log::warn(*log, "closing {} clients that {} (shutdown drain)", stalled.size(),
                      overdue ? "were still reading after " +
                                    std::to_string(kDrainMax.count()) + " s"
                              : "read nothing for " + std::to_string(kDrainStall.count()) + " s");
    }
    for (auto& s : stalled) on_session(s, [](Session& x) { x.close("drain timeout"); });
    if (!sessions.empty()) check_drain();
  });
}

void Server::Impl::trim_soon() {
  static constexpr std::size_t kTrimSlack = 1u << 20;
  if (trim_armed || shutting_down) return;  // shutting down: the process exits soon
  trim_armed = true;
  trim_timer.expires_after(std::chrono::seconds(1));
  trim_timer.async_wait([this](const boost::system::error_code& ec) {
    trim_armed = false;
    if (ec) return;
    const struct mallinfo2 before = ::mallinfo2();
    if (before.fordblks < kTrimSlack) return;
    ::malloc_trim(0);
    mgmt::log::debug(*log, "gave {} KiB of free heap back to the kernel ({} connections open)",
                     before.fordblks / 1024, sessions.size());
  });
}

void Server::Impl::release_retired() {
  std::erase_if(retired, [this](const auto& old) { return old->release_unused(*dispatcher); });
}

void Server::update(const Limits& limits, const AccessConfig& access) {
  auto& m = *impl_;
  m.opts.limits = limits;
  m.opts.access = access;
  m.host.limits = limits;
  for (auto& sh : m.shards) {
    asio::post(sh->io, [h = &sh->host, limits] { h->limits = limits; });
  }
  m.queued.limit = limits.queue_total();
  m.access = AccessPolicy(::geteuid(), access.rules);
}

void Server::on_reload(std::function<void()> reload) { impl_->reload = std::move(reload); }

void Server::on_shutdown(std::function<void()> f) { impl_->shutdown_hook = std::move(f); }

void Server::on_upgrade(std::function<void()> upgrade) { impl_->upgrade = std::move(upgrade); }

bool Server::stopping() const { return impl_->shutting_down; }

int Server::end_for_upgrade() {
  auto& m = *impl_;
  int fd = -1;
  if (m.acceptor.is_open()) fd = ::fcntl(m.acceptor.native_handle(), F_DUPFD_CLOEXEC, 3);
  m.upgrading = true;
  m.shutting_down = true;  // accepts no more; nothing is trimmed
  m.listening = false;     // the socket file stays: the next program serves it
  boost::system::error_code ignored;
  m.acceptor.close(ignored);
  m.signals.cancel();
  m.trim_timer.cancel();
  for (auto& t : m.tickers) t->cancel();
  std::vector<std::shared_ptr<Session>> live;
  for (auto& [p, w] : m.sessions) {
    if (auto s = w.lock()) live.push_back(std::move(s));
  }
  // Idle connections close at once; answers under way (the upgrade command's own) and
  // stream backlogs get a moment. A stream client resumes from the next program anyway.
  for (auto& s : live) Impl::on_session(s, [](Session& x) { x.shutdown(); });
  auto finish = [&m] {
    std::vector<std::shared_ptr<Session>> left;
    for (auto& [p, w] : m.sessions) {
      if (auto s = w.lock()) left.push_back(std::move(s));
    }
    for (auto& s : left) Impl::on_session(s, [](Session& x) { x.close("mgmtd is upgrading"); });
    m.io.stop();
  };
  if (m.sessions.empty()) {
    asio::post(m.io, finish);
  } else {
    m.drain_timer.cancel();
    m.drain_timer.expires_after(std::chrono::seconds(1));
    m.drain_timer.async_wait([finish](const boost::system::error_code&) { finish(); });
  }
  return fd;
}

void Server::post(std::function<void()> f) { asio::post(impl_->io, std::move(f)); }

void Server::every(std::chrono::milliseconds interval, std::function<void()> f) {
  auto& m = *impl_;
  m.tickers.push_back(std::make_unique<asio::steady_timer>(m.io));
  asio::steady_timer& t = *m.tickers.back();
  auto tick = std::make_shared<std::function<void()>>();
  *tick = [&t, interval, f = std::move(f), weak = std::weak_ptr<std::function<void()>>(tick)] {
    t.expires_after(interval);
    t.async_wait([&f, weak](const boost::system::error_code& ec) {
      if (ec) return;
      f();
      if (auto again = weak.lock()) (*again)();
    });
  };
  m.tick_fns.push_back(tick);
  (*tick)();
}

void Server::stop() {
  asio::post(impl_->io, [m = impl_.get()] { m->begin_shutdown("stop requested"); });
}

}  // namespace mgmt
