// The socket server: accepts connections on the Unix socket and runs a session for each.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "mgmt/backend.hpp"
#include "mgmt/server/config.hpp"
#include "mgmt/server/dispatcher.hpp"
#include "mgmt/stats.hpp"

namespace spdlog {
class logger;
}

namespace mgmt {

struct ServerOptions {
  std::string socket_path;
  bool write_hint = false;
  Limits limits;
  AccessConfig access;
  StreamsConfig streams;  // spill_dir "" = <socket's folder>/spill
  // A listening Unix socket handed over by the service manager (socket activation): served
  // instead of creating socket_path, and never unlinked.
  std::optional<int> listen_fd;
  // With listen_fd: the socket is mgmtd's own, handed over by an in-place upgrade: served
  // like an inherited one, but removed at shutdown like one this server created.
  bool listen_owned = false;
};

class Server {
 public:
  Server(ServerOptions opts, std::shared_ptr<const Dispatcher> dispatcher, Backend& backend,
         std::shared_ptr<spdlog::logger> log);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Creates the socket (mode 0600, its folder 0700 when created). Replaces a stale socket
  // file, but refuses when a live server answers on it. Throws std::runtime_error.
  // With options.listen_fd, serves that socket instead (socket activation).
  // SIGINT, SIGTERM and SIGHUP are caught from here on and handled once run() starts.
  void listen();
  // Serves until SIGINT or SIGTERM (or stop()), then shuts down in order: stop accepting,
  // remove the socket, stop the backend's processes, drain stream clients, close.
  void run();
  // Asks run() to shut down, from any thread.
  void stop();
  // Live counters (connections, requests by type, latency), readable from any thread.
  const ServerStats& stats() const;
  // In-place upgrade: continue the previous program's counts (before run()).
  void restore_stats(const StatsSnapshot& s);

  // Live reload, on the I/O thread only (a SIGHUP handler or a request handler).
  // Requests from now on go to `d`. A handler of the previous table that `d` does not keep
  // is destroyed (and its library released) as soon as no exchange or stream uses it: at
  // once when idle, else once the last connection it serves has closed.
  void set_dispatcher(std::shared_ptr<const Dispatcher> d);
  // New limits and access rules. Connections already open keep the rights they were
  // given when they connected.
  void update(const Limits& limits, const AccessConfig& access);
  // What SIGHUP does; without a handler it only logs that reload is unsupported.
  void on_reload(std::function<void()> reload);
  // What SIGUSR2 does (an in-place upgrade); without a handler it only logs that upgrades
  // are unsupported.
  void on_upgrade(std::function<void()> upgrade);
  // Ends run() for an in-place upgrade, on the I/O thread: stops accepting (the socket file
  // stays, and connections that arrive wait in its backlog for the next program), gives
  // pending answers a moment to be written, closes every connection (clients reconnect)
  // and returns from run() without stopping the backend. Returns a duplicate of the
  // listening socket (close-on-exec) for the next program, or -1.
  int end_for_upgrade();
  // True once shutdown (or end_for_upgrade()) has begun; on the I/O thread.
  bool stopping() const;
  // Called on the I/O thread when shutdown begins (before the processes are stopped).
  void on_shutdown(std::function<void()> f);
  // Runs `f` on the I/O thread, from any thread.
  void post(std::function<void()> f);
  // Runs `f` on the I/O thread every `interval`, from run() until the shutdown's drain:
  // a job that stops when the I/O thread is stuck (the systemd watchdog).
  void every(std::chrono::milliseconds interval, std::function<void()> f);

 private:
  void adopt_listener();
  void ready_to_serve();

  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mgmt
