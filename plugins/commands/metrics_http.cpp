// The metrics plugin's HTTP server (Boost.Beast on a private io_context and thread).
#include <utility>  // Boost 1.74's Asio needs std::exchange declared first under C++20.

#include "metrics_http.hpp"
#include "mgmt/log.hpp"

#include <fcntl.h>

#include <charconv>
#include <chrono>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <spdlog/spdlog.h>

namespace mgmt::metrics {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using namespace std::chrono_literals;

namespace {

constexpr auto kIoTimeout = 30s;
constexpr const char* kContentType = "text/plain; version=0.0.4; charset=utf-8";

std::string endpoint_text(const tcp::endpoint& ep) {
  const auto a = ep.address();
  return (a.is_v6() ? "[" + a.to_string() + "]" : a.to_string()) + ":" + std::to_string(ep.port());
}

}  // namespace

ListenAddress parse_listen(const std::string& text, bool allow_remote) {
  std::string host;
  std::string port;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      throw std::invalid_argument("listen: \"" + text + "\" is not [ADDRESS]:PORT");
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string::npos || text.find(':') != colon) {
      throw std::invalid_argument("listen: \"" + text +
                                  "\" is not ADDRESS:PORT (e.g. 127.0.0.1:9464, [::1]:9464)");
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  if (host == "localhost") host = "127.0.0.1";
  boost::system::error_code ec;
  const auto addr = net::ip::make_address(host, ec);
  if (ec) {
    throw std::invalid_argument("listen: \"" + host +
                                "\" is not an IP address (write 127.0.0.1, ::1 or localhost)");
  }
  unsigned p = 0;
  const auto [end, perr] = std::from_chars(port.data(), port.data() + port.size(), p);
  if (port.empty() || perr != std::errc() || end != port.data() + port.size() || p > 65535) {
    throw std::invalid_argument("listen: port \"" + port + "\" is not a number from 0 to 65535");
  }
  ListenAddress out{addr.to_string(), static_cast<std::uint16_t>(p), addr.is_loopback()};
  if (!out.loopback && !allow_remote) {
    throw std::invalid_argument("listen: " + text +
                                " is not a loopback address: metrics are served to this machine "
                                "only unless `allow_remote: true` is set");
  }
  return out;
}

struct HttpServer::Impl {
  // First member: destroyed last, after the objects whose operations it runs.
  net::io_context ioc{1};
  tcp::acceptor acceptor{ioc};
  net::steady_timer retry{ioc};
  tcp::endpoint endpoint;
  std::string wanted;  // as configured, for messages
  Render render;
  Gate gate;
  std::shared_ptr<spdlog::logger> log;
  bool warned = false;
  mutable std::mutex mu;
  std::string bound;  // guarded by mu
  std::thread thread;

  void try_listen();
  void accept();
  http::response<http::string_body> respond(const http::request<http::string_body>& req);
};

namespace {

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket s, HttpServer::Impl& srv) : stream_(std::move(s)), srv_(srv) {}
  void start() { read(); }

 private:
  void read() {
    parser_.emplace();
    parser_->header_limit(16 * 1024);
    parser_->body_limit(16 * 1024);
    stream_.expires_after(kIoTimeout);
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, std::size_t) {
                       self->on_read(ec);
                     });
  }
  void on_read(beast::error_code ec) {
    if (ec) return;  // end of stream, timeout or a malformed request: the connection ends
    res_ = srv_.respond(parser_->get());
    stream_.expires_after(kIoTimeout);
    http::async_write(stream_, res_, [self = shared_from_this()](beast::error_code e, std::size_t) {
      self->on_write(e);
    });
  }
  void on_write(beast::error_code ec) {
    if (ec) return;
    if (!res_.keep_alive()) {
      stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
      return;
    }
    read();
  }

  beast::tcp_stream stream_;
  HttpServer::Impl& srv_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::response<http::string_body> res_;
};

}  // namespace

void HttpServer::Impl::try_listen() {
  if (gate && !gate()) {
    retry.expires_after(50ms);
    retry.async_wait([this](boost::system::error_code e) {
      if (!e) try_listen();
    });
    return;
  }
  gate = nullptr;  // open once: later retries are about the address only
  boost::system::error_code ec;
  acceptor.open(endpoint.protocol(), ec);
  // Asio opens and accepts without SOCK_CLOEXEC: no supervised child may inherit a socket.
  if (!ec) ::fcntl(acceptor.native_handle(), F_SETFD, FD_CLOEXEC);
  if (!ec) acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    boost::system::error_code ignored;
    acceptor.close(ignored);
    if (!warned) {
      mgmt::log::warn(*log, "cannot serve metrics on {}: {}; retrying every second", wanted,
                      ec.message());
      warned = true;
    }
    retry.expires_after(1s);
    retry.async_wait([this](boost::system::error_code e) {
      if (!e) try_listen();
    });
    return;
  }
  const std::string text = endpoint_text(acceptor.local_endpoint(ec));
  {
    std::lock_guard lock(mu);
    bound = text;
  }
  mgmt::log::info(*log, "serving metrics on http://{}/metrics", text);
  accept();
}

void HttpServer::Impl::accept() {
  acceptor.async_accept([this](boost::system::error_code ec, tcp::socket s) {
    if (ec == net::error::operation_aborted) return;
    if (ec) {  // e.g. out of descriptors: try again shortly rather than spin
      mgmt::log::debug(*log, "metrics: accept: {}", ec.message());
      retry.expires_after(100ms);
      retry.async_wait([this](boost::system::error_code e) {
        if (!e) accept();
      });
      return;
    }
    ::fcntl(s.native_handle(), F_SETFD, FD_CLOEXEC);
    std::make_shared<Session>(std::move(s), *this)->start();
    accept();
  });
}

http::response<http::string_body> HttpServer::Impl::respond(
    const http::request<http::string_body>& req) {
  http::response<http::string_body> res;
  res.version(req.version());
  res.keep_alive(req.keep_alive());
  res.set(http::field::server, "mgmtd-metrics");
  std::string_view target(req.target().data(), req.target().size());
  if (const auto q = target.find('?'); q != std::string_view::npos) target = target.substr(0, q);
  auto plain = [&](http::status st, std::string body) {
    res.result(st);
    res.set(http::field::content_type, "text/plain; charset=utf-8");
    res.body() = std::move(body);
    res.prepare_payload();
  };
  if (target != "/metrics") {
    plain(http::status::not_found, "not found: the metrics are at /metrics\n");
    return res;
  }
  const bool head = req.method() == http::verb::head;
  if (req.method() != http::verb::get && !head) {
    plain(http::status::method_not_allowed, "method not allowed: use GET\n");
    res.set(http::field::allow, "GET, HEAD");
    return res;
  }
  std::string why;
  std::optional<std::string> text;
  try {
    text = render(why);
  } catch (const std::exception& e) {
    why = e.what();
  }
  if (!text) {
    plain(http::status::service_unavailable, "metrics unavailable: " + why + "\n");
    return res;
  }
  res.result(http::status::ok);
  res.set(http::field::content_type, kContentType);
  if (head) {
    res.content_length(text->size());
  } else {
    res.body() = std::move(*text);
    res.prepare_payload();
  }
  return res;
}

HttpServer::HttpServer(ListenAddress addr, Render render, Gate gate,
                       std::shared_ptr<spdlog::logger> log)
    : impl_(std::make_unique<Impl>()) {
  impl_->endpoint = tcp::endpoint(net::ip::make_address(addr.host), addr.port);
  impl_->wanted = endpoint_text(impl_->endpoint);
  impl_->render = std::move(render);
  impl_->gate = std::move(gate);
  impl_->log = std::move(log);
  Impl* m = impl_.get();
  net::post(m->ioc, [m] { m->try_listen(); });
  m->thread = std::thread([m] {
    try {
      m->ioc.run();
    } catch (const std::exception& e) {
      mgmt::log::error(*m->log, "metrics: the HTTP server stopped: {}", e.what());
    }
  });
}

HttpServer::~HttpServer() {
  impl_->ioc.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

std::string HttpServer::bound_address() const {
  std::lock_guard lock(impl_->mu);
  return impl_->bound;
}

}  // namespace mgmt::metrics
