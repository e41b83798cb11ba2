// The socket server: accepts connections on the Unix socket and runs a session for each.
#pragma once

#include <functional>
#include <memory>
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
};

class Server {
 public:
  Server(ServerOptions opts, const Dispatcher& dispatcher, Backend& backend,
         std::shared_ptr<spdlog::logger> log);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Creates the socket (mode 0600, its folder 0700 when created). Replaces a stale socket
  // file, but refuses when a live server answers on it. Throws std::runtime_error.
  void listen();
  // Serves until SIGINT or SIGTERM (or stop()), then shuts down in order: stop accepting,
  // remove the socket, stop the backend's processes, drain stream clients, close.
  void run();
  // Asks run() to shut down, from any thread.
  void stop();
  // Live counters (connections, requests by type, latency), readable from any thread.
  const ServerStats& stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mgmt
