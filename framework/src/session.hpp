// One client connection: reads frames, hands each to the dispatcher, writes answers and
// stream frames in order through a bounded queue.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "asio.hpp"
#include "mgmt/wire.hpp"
#include "mgmt/server/config.hpp"
#include "mgmt/server/dispatcher.hpp"

namespace spdlog {
class logger;
}

namespace mgmt {

class Session;

// What sessions share with the server.
struct SessionHost {
  asio::io_context& io;
  const Dispatcher& dispatcher;
  const Limits& limits;
  std::shared_ptr<spdlog::logger> log;
  std::function<void(Session*)> on_closed;
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  using Socket = asio::local::stream_protocol::socket;

  Session(Socket socket, SessionHost& host, std::uint64_t id);
  ~Session();

  void start();
  // Server shutdown: idle connections close now; streams and pending answers are flushed
  // first.
  void shutdown();
  void close(const char* why);

  std::uint64_t id() const { return id_; }
  std::int64_t peer_pid() const { return peer_pid_; }
  std::int64_t peer_uid() const { return peer_uid_; }

  // Called (on the I/O thread) by the exchange of the current request.
  void on_reply(std::string frame);
  bool on_push(std::string frame);
  void on_begin_stream();
  void on_end_stream();
  void on_hold(std::shared_ptr<void> r);

  const std::shared_ptr<std::atomic<bool>>& closed_flag() const { return closed_flag_; }

 private:
  enum class Mode { reading, busy, streaming, closed };

  void read_header();
  void on_header(const boost::system::error_code& ec);
  void read_payload();
  void discard_payload(std::size_t remaining);
  void dispatch();
  void answer_now(std::string payload);
  void watch_stream();
  void enqueue(std::string frame);
  void flush();

  Socket socket_;
  SessionHost& host_;
  const std::uint64_t id_;
  std::int64_t peer_pid_ = -1;
  std::int64_t peer_uid_ = -1;

  Mode mode_ = Mode::reading;
  bool shutting_down_ = false;
  bool close_after_flush_ = false;
  std::array<std::uint8_t, 17> header_buf_{};
  FrameHeader header_{};
  std::string payload_;
  std::array<char, 4096> scratch_{};

  std::deque<std::string> outq_;
  std::size_t queued_bytes_ = 0;
  std::size_t in_flight_ = 0;
  bool writing_ = false;
  std::vector<asio::const_buffer> write_bufs_;

  std::vector<std::shared_ptr<void>> held_;
  std::shared_ptr<std::atomic<bool>> closed_flag_ = std::make_shared<std::atomic<bool>>(false);
};

}  // namespace mgmt
