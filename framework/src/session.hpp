// One client connection: reads frames, hands each to the dispatcher, writes answers and
// stream frames in order through a bounded queue.
#pragma once

#include <pthread.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "asio.hpp"
#include "mgmt/wire.hpp"
#include "mgmt/server/access.hpp"
#include "mgmt/server/config.hpp"
#include "mgmt/server/dispatcher.hpp"
#include "mgmt/stats.hpp"
#include "spill_queue.hpp"

namespace spdlog {
class logger;
}

namespace mgmt {

class Session;

// A mutex that spins a little before it sleeps (glibc's adaptive mutex): a session's queue
// lock is held for well under a microsecond at a time, and a backend thread that went to
// sleep on it whenever the writer held it paid a futex wait and wakeup for nothing.
class QueueMutex {
 public:
  QueueMutex() {
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
#ifdef __GLIBC__  // PTHREAD_MUTEX_ADAPTIVE_NP is an enumerator there, not a macro
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ADAPTIVE_NP);
#endif
    pthread_mutex_init(&m_, &attr);
    pthread_mutexattr_destroy(&attr);
  }
  ~QueueMutex() { pthread_mutex_destroy(&m_); }
  QueueMutex(const QueueMutex&) = delete;
  QueueMutex& operator=(const QueueMutex&) = delete;
  void lock() { pthread_mutex_lock(&m_); }
  void unlock() { pthread_mutex_unlock(&m_); }
  bool try_lock() { return pthread_mutex_trylock(&m_) == 0; }

 private:
  pthread_mutex_t m_;
};

// Log lines that any client can cause at will (a refused connection, a bad header...): the
// first few of each kind in a second are logged, the rest counted and summarised once a
// second, "N more like this in the last second (...)", so that a flood of bad connections
// cannot flood the log too. Any thread (every I/O thread's sessions share one); its timer
// runs on the context it was made with.
class LogLimiter {
 public:
  enum class Kind : std::size_t {
    refused,       // over limits.max_connections
    refused_uid,   // over limits.max_connections_per_uid
    bad_header,
    denied,        // a request the access rules refuse
    timeout,       // idle and frame timeouts
    stream_input,  // a stream client that keeps sending
    budget,        // paused: all connections' queues at limits.max_queue_total
    count_
  };
  static constexpr unsigned kBurst = 5;  // lines of one kind logged per second

  LogLimiter(asio::io_context& io, std::shared_ptr<spdlog::logger> log);
  // True when a line of `kind` may be logged now; false when it is only to be counted.
  bool allow(Kind kind);

 private:
  struct Window {
    std::chrono::steady_clock::time_point began{};
    unsigned logged = 0;
    std::uint64_t suppressed = 0;
  };
  // Logs the summary of every window that has ended; re-arms while some are still open.
  void summarise(std::chrono::steady_clock::time_point now);
  void arm();

  std::shared_ptr<spdlog::logger> log_;
  asio::io_context& io_;
  // Taken only on the rare line a client causes: allow() is never on the request path.
  std::mutex mu_;
  asio::steady_timer timer_;  // used on io_ only
  bool armed_ = false;  // guarded
  std::array<Window, static_cast<std::size_t>(Kind::count_)> windows_{};
};

// What sessions share with the server: one per I/O context (server.io_threads), each used
// only on its context's thread unless said otherwise.
struct SessionHost {
  asio::io_context& io;           // the context the session's socket and timer live on
  asio::io_context& dispatch_io;  // where handlers run (the server's main context)
  SessionHost* dispatch_host;     // the host of dispatch_io (this one when io is dispatch_io)
  const Dispatcher* dispatcher;   // dispatch_host's only: swapped by a reload, read on dispatch_io
  Limits limits;                  // a copy per context: a reload posts the new one to each
  const AccessPolicy& access;     // read by the session's constructor, on dispatch_io
  ServerStats& stats;
  std::shared_ptr<spdlog::logger> log;
  std::function<void(Session*)> on_closed;  // called on io
  StreamsConfig streams;  // spill_dir already resolved (absolute)
  LogLimiter& log_limit;
  // Server-wide: outgoing bytes in memory (limits.max_queue_total) and spill file bytes
  // (streams.spill_quota_total) of all sessions.
  Budget& queued;
  Budget& spilled;
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
  // The context the session lives on: its state is touched only there.
  asio::io_context& context() const { return host_.io; }
  // True when the session lives on the dispatch context (no hop between its I/O and its
  // handlers).
  bool on_dispatch() const { return &host_.io == &host_.dispatch_io; }
  std::int64_t peer_pid() const { return peer_pid_; }
  std::int64_t peer_uid() const { return peer_uid_; }

  // Called (on the I/O thread) by the exchange of the current request.
  void on_reply(std::uint8_t type, std::uint64_t seq, std::string payload);
  // The answer of a session on another I/O thread, from any thread: written right there
  // when nothing is queued or being written (the client gets it without waiting for a hop
  // to the session's thread), else queued; then the session's thread takes the next
  // request.
  void reply_direct(std::uint8_t type, std::uint64_t seq, std::string_view payload);
  void on_begin_stream();
  void on_end_stream();
  void on_hold(std::shared_ptr<void> r);

  // Called from any thread by a stream's exchange: queues one frame, made of `parts` laid
  // end to end (spilling or dropping it when the reader is behind), and wakes the writer.
  // False once the connection is closed or closing because the reader fell past its quota.
  bool push_frame(std::span<const std::string_view> parts, std::uint64_t units);
  // Any thread: how the stall notice frame is built (already a whole frame).
  void set_stall_notice(SpillQueue::NoticeBuilder b);

  const std::shared_ptr<std::atomic<bool>>& closed_flag() const { return closed_flag_; }
  // Bytes the queue has handed to the socket (the shutdown drain's measure of progress).
  std::uint64_t written() const { return written_.load(std::memory_order_relaxed); }

 private:
  // paused: the client's answers are piling up unread; no request is read until they drain.
  enum class Mode { reading, busy, paused, streaming, closed };

  // Request path. Bytes are read into in_buf_ with as few reads as the client allows;
  // frames are parsed from it one at a time, so pipelined requests are served in order.
  void next_request();
  void fill_buffer();
  void read_rest_of_payload(std::size_t have);
  void discard_payload(std::size_t remaining);
  void dispatch();
  // On the dispatch context: finds the request's handler and runs it.
  void run_handler(std::uint8_t type, std::uint64_t seq, std::string payload);
  // From the dispatch context: an answer the server gives itself (unknown type, denied).
  void answer_from_dispatch(std::uint64_t seq, std::string payload);
  // Resources of plugins (subscriptions) are released on the dispatch context, where plugin
  // code runs, whichever context the session is on.
  void release_on_dispatch(std::vector<std::shared_ptr<void>> held);
  void answer_now(std::string payload);
  // After the answer to the request being served went out or was queued, `backlog` bytes
  // then waiting: pauses, or takes the next request.
  void replied(std::uint64_t backlog);
  void arm_timer(std::chrono::milliseconds after, const char* why);
  void arm_timer_at(std::chrono::steady_clock::time_point deadline, const char* why);
  // Bytes of a new frame have come in (or were left over from the previous one): from now,
  // all of it must arrive within limits.frame_timeout.
  void frame_begins();
  // Arms the timer for the deadline of the frame being read.
  void arm_frame_timer();
  void wait_timer();
  void cancel_timer();
  void watch_stream();
  // Sends a reply's frame at once when the connection has nothing queued, else queues it.
  // Returns the bytes then queued.
  std::uint64_t send_reply(std::uint8_t type, std::uint64_t seq, std::string_view payload);
  // Answers waiting (queued or being written) past which no request is read: half the
  // queue's memory, so that answers never spill to disk.
  std::uint64_t pause_at() const { return host_.limits.max_queue_bytes / 2; }
  // After a write: a paused connection reads requests again once its backlog has halved
  // (and, past the server-wide budget, is gone).
  void resume_if_drained(std::uint64_t backlog);
  // Past limits.max_queue_total, a connection that has answers waiting takes no more
  // requests: those adding to the total are the ones holding part of it.
  bool over_budget(std::uint64_t backlog) const { return backlog > 0 && host_.queued.over(); }
  // One non-blocking sendmsg of `parts`: false on a socket error (not on a full socket);
  // `sent` says how many bytes went.
  bool send_now(std::span<const std::string_view> parts, std::size_t& sent);
  // With qmu_ held: a frame's `parts` sent at once when `now` (the caller's condition for
  // "nothing queued or being written"), and what the socket did not take queued; `run`
  // turns true when the connection must start writing its queue. False on a write error
  // (nothing queued then).
  bool send_or_queue_locked(std::span<std::string_view> parts, bool now, bool& run);
  void flush();
  void on_kick();
  bool queue_empty();
  // With qmu_ held: reports what the queue did since the last call (stats, log).
  void account_locked(SpillQueue::Added added);

  Socket socket_;
  // Written to from other threads (reply_direct) under qmu_ while idle_: close() clears
  // idle_ under qmu_ before it closes the socket.
  const int fd_;
  SessionHost& host_;
  const std::uint64_t id_;
  std::int64_t peer_pid_ = -1;
  std::int64_t peer_uid_ = -1;
  unsigned rights_ = 0;

  Mode mode_ = Mode::reading;
  bool shutting_down_ = false;
  bool close_after_flush_ = false;
  FrameHeader header_{};
  std::chrono::steady_clock::time_point request_started_{};
  std::string payload_;
  // Bytes of payload_ charged to host_.queued: a payload larger than in_buf_ is allocated
  // whole when its header arrives, and a client may hold it for frame_timeout without
  // sending the rest, on every connection.
  std::uint64_t payload_charged_ = 0;
  std::array<char, 4096> in_buf_{};
  std::size_t in_begin_ = 0;  // unparsed bytes are in_buf_[in_begin_, in_end_)
  std::size_t in_end_ = 0;
  // Bytes a streaming client sent after its request (discarded), and how many it may.
  std::uint64_t stream_input_ = 0;
  static constexpr std::uint64_t kMaxStreamInput = 64 * 1024;
  asio::steady_timer timer_;
  std::uint64_t timer_gen_ = 0;
  static constexpr auto kNoDeadline = std::chrono::steady_clock::time_point::max();
  std::chrono::steady_clock::time_point deadline_ = kNoDeadline;  // of the armed timeout
  // When the frame being read must be complete (kNoDeadline between frames): fixed by its
  // first byte, so dripping bytes does not push it back.
  std::chrono::steady_clock::time_point frame_deadline_ = kNoDeadline;
  const char* timer_why_ = "";
  bool timer_waiting_ = false;  // an async_wait is pending on timer_

  // The outgoing queue is shared with backend threads (stream frames are queued by them
  // directly, so a flood cannot pile up in the I/O thread's post queue): guarded by qmu_.
  QueueMutex qmu_;
  SpillQueue q_;
  bool idle_ = true;             // guarded: no write in progress or scheduled; a push kicks
  bool disconnect_ = false;      // guarded: the reader fell past its quota (on_overflow:
                                 // disconnect): close once the notice is written
  bool dropping_logged_ = false; // guarded
  bool file_error_logged_ = false;  // guarded
  std::uint64_t stalls_seen_ = 0;  // guarded
  // I/O thread only: the buffers being written (each holds one or more whole frames).
  std::vector<std::string> in_flight_;
  std::uint64_t in_flight_bytes_ = 0;
  std::uint64_t in_flight_charged_ = 0;  // guarded: in_flight_bytes_ as host_.queued has it
  std::vector<std::string> spent_;  // written buffers, freed outside qmu_
  bool writing_ = false;
  std::atomic<std::uint64_t> written_{0};  // written on the I/O thread: see written()
  std::vector<asio::const_buffer> write_bufs_;

  std::vector<std::shared_ptr<void>> held_;
  std::shared_ptr<std::atomic<bool>> closed_flag_ = std::make_shared<std::atomic<bool>>(false);
};

}  // namespace mgmt
