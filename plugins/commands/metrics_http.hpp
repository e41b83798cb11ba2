// The metrics plugin's HTTP endpoint: GET /metrics on a TCP address, on a thread of its own.
// Boost.Beast stays inside metrics_http.cpp (it is expensive to compile).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace spdlog {
class logger;
}

namespace mgmt::metrics {

struct ListenAddress {
  std::string host;        // numeric address, "127.0.0.1" or "::1"
  std::uint16_t port = 0;  // 0: any free port (tests)
  bool loopback = true;
};

// Parses `listen:` ("127.0.0.1:9464", "[::1]:9464", "localhost:9464"). Throws
// std::invalid_argument with a reason: a bad address or port, or an address that is not a
// loopback one while `allow_remote` is false.
ListenAddress parse_listen(const std::string& text, bool allow_remote);

// Serves GET (and HEAD) /metrics with what `render` returns (text/plain; version=0.0.4);
// nullopt from `render` is a 503. Other paths are 404, other methods 405.
// Binding happens on the server's thread, once `gate` returns true (polled every 50 ms:
// the plugin waits for mgmtd's own socket, so `mgmtd --check` never binds). While the
// address is taken (another mgmtd, or the previous instance of this plugin during a
// reload) it logs once and retries every second. The destructor stops the thread.
class HttpServer {
 public:
  // `render` runs on the HTTP thread; it returns the exposition, or nullopt and a reason.
  using Render = std::function<std::optional<std::string>(std::string& why)>;
  using Gate = std::function<bool()>;  // runs on the HTTP thread too
  HttpServer(ListenAddress addr, Render render, Gate gate, std::shared_ptr<spdlog::logger> log);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // "127.0.0.1:41234" once listening (the real port when 0 was asked for), else "".
  std::string bound_address() const;

  struct Impl;  // metrics_http.cpp

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace mgmt::metrics
