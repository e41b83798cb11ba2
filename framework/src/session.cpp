#include "session.hpp"

#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <spdlog/spdlog.h>

#include "mgmt/log.hpp"
#include "mgmt/messages.hpp"
#include "mgmt/wire.hpp"

namespace mgmt {

namespace {

// The Exchange handed to handlers. It keeps its session alive while an answer is pending
// (nothing else does while a stop is in progress) and posts every action to the I/O
// thread, where the session's state lives, except stream frames, which go straight into
// the session's locked queue (see push_units). A stream's exchange is owned by the
// subscription the session holds; Session::close() drops those, which ends the cycle.
class SessionExchange final : public Exchange {
 public:
  SessionExchange(const std::shared_ptr<Session>& s, std::shared_ptr<Handler> handler,
                  asio::io_context& io, std::uint8_t type, std::uint64_t seq, std::string payload)
      : handler_(std::move(handler)),
        session_(s),
        closed_(s->closed_flag()),
        io_(io),
        type_(type),
        seq_(seq),
        payload_(std::move(payload)),
        peer_pid_(s->peer_pid()),
        peer_uid_(s->peer_uid()) {}

  ~SessionExchange() override {
    // A handler that drops the request without answering would leave the client waiting
    // forever; answer for it.
    if (!answered_.load() && !streaming_.load()) {
      reply(to_byte(MsgType::StatusResponse),
            error_reply("handler for " + type_hex(type_) + " returned no answer"));
    }
  }

  std::uint8_t type() const override { return type_; }
  std::uint64_t seq() const override { return seq_; }
  std::string_view payload() const override { return payload_; }

  void reply(std::uint8_t type, std::string payload) override {
    if (answered_.exchange(true)) return;
    if (!session_->on_dispatch()) {
      session_->reply_direct(type, seq_, payload);
      return;
    }
    post([type, seq = seq_, p = std::move(payload)](Session& s) mutable {
      s.on_reply(type, seq, std::move(p));
    });
  }

  void begin_stream() override {
    if (streaming_.exchange(true)) return;
    post([](Session& s) { s.on_begin_stream(); });
  }

  bool push(std::uint8_t type, std::string payload) override {
    return push_units(type, std::move(payload), 1);
  }

  // Queued straight into the session's (locked) queue from the caller's thread: one post
  // wakes the writer for a whole burst, and a flood is bounded by the spill queue rather
  // than piling up as posted handlers.
  bool push_units(std::uint8_t type, std::string payload, std::uint64_t units) override {
    const std::string_view part(payload);
    return push_parts(type, &part, 1, units);
  }

  // The frame header and the payload's parts are copied straight into the queue's buffers.
  bool push_parts(std::uint8_t type, const std::string_view* parts, std::size_t count,
                  std::uint64_t units) override {
    if (closed_->load()) return false;
    constexpr std::size_t kMaxParts = 8;
    if (count >= kMaxParts) return Exchange::push_parts(type, parts, count, units);
    std::size_t size = 0;
    for (std::size_t i = 0; i < count; ++i) size += parts[i].size();
    std::uint8_t head[kHeaderSize];
    write_header(FrameHeader{type, 0, seq_, static_cast<std::uint32_t>(size)}, head);
    std::string_view frame[kMaxParts];
    frame[0] = std::string_view(reinterpret_cast<const char*>(head), kHeaderSize);
    for (std::size_t i = 0; i < count; ++i) frame[i + 1] = parts[i];
    // The first push makes the connection a stream, whatever the session is doing: a push
    // that finds the writer busy (an earlier answer still going out) does not kick it, and
    // without this the session would never watch for its client leaving.
    if (!streaming_.exchange(true)) post([](Session& s) { s.on_begin_stream(); });
    return session_->push_frame(std::span<const std::string_view>(frame, count + 1), units);
  }

  void on_stall(StallPayload make_payload, std::uint8_t type) override {
    session_->set_stall_notice(
        [seq = seq_, type, f = std::move(make_payload)](std::uint64_t dropped, std::int64_t since) {
          return make_frame(type, seq, f(dropped, since));
        });
  }

  void end_stream() override {
    post([](Session& s) { s.on_end_stream(); });
  }

  void hold(std::shared_ptr<void> resource) override {
    // Destroyed on the I/O thread either way: with the session, or right away if it is gone.
    post([r = std::move(resource)](Session& s) mutable { s.on_hold(std::move(r)); });
  }

  bool open() const override { return !closed_->load(); }
  std::int64_t peer_pid() const override { return peer_pid_; }
  std::int64_t peer_uid() const override { return peer_uid_; }

 private:
  template <class F>
  void post(F&& f) {
    asio::dispatch(io_, [s = session_, f = std::forward<F>(f)]() mutable { f(*s); });
  }

  // The handler serving this exchange stays (with its library) while the exchange lives,
  // even once a reload replaced it: the server frees replaced handlers nothing holds.
  const std::shared_ptr<Handler> handler_;
  std::shared_ptr<Session> session_;
  std::shared_ptr<std::atomic<bool>> closed_;
  asio::io_context& io_;
  const std::uint8_t type_;
  const std::uint64_t seq_;
  const std::string payload_;
  const std::int64_t peer_pid_;
  const std::int64_t peer_uid_;
  std::atomic<bool> answered_{false};
  std::atomic<bool> streaming_{false};
};

}  // namespace

namespace {

constexpr const char* kNotReading = "client stopped reading its answers";
constexpr const char* kStuckReader = "stream reader to be disconnected reads nothing";

SpillQueue::Options queue_options(const SessionHost& host, std::uint64_t id) {
  SpillQueue::Options o;
  // The dispatch host's copy: sessions are made on the dispatch context (at accept), and
  // another context's copy may be being replaced by a reload meanwhile.
  o.memory_limit = host.dispatch_host->limits.max_queue_bytes;
  o.spill_quota = host.streams.spill_quota;
  if (!host.streams.spill_dir.empty()) {
    o.spill_path = host.streams.spill_dir + "/conn-" + std::to_string(::getpid()) + "-" +
                   std::to_string(id) + ".spill";
  }
  // spill_quota_total 0 turns spilling off, as spill_quota 0 does.
  if (host.streams.spill_quota_total == 0) o.spill_quota = 0;
  o.memory_total = &host.queued;
  o.disk_total = &host.spilled;
  o.on_overflow = host.streams.on_overflow == StreamsConfig::Overflow::disconnect
                      ? SpillQueue::Overflow::disconnect
                      : SpillQueue::Overflow::notify;
  return o;
}

}  // namespace

namespace {

const char* kind_text(LogLimiter::Kind k) {
  switch (k) {
    case LogLimiter::Kind::refused:
      return "refused connections, limits.max_connections";
    case LogLimiter::Kind::refused_uid:
      return "refused connections, limits.max_connections_per_uid";
    case LogLimiter::Kind::bad_header:
      return "bad frame headers, connections closed";
    case LogLimiter::Kind::denied:
      return "requests denied by the access rules";
    case LogLimiter::Kind::timeout:
      return "connections closed by a timeout";
    case LogLimiter::Kind::stream_input:
      return "stream clients closed for sending data";
    case LogLimiter::Kind::budget:
      return "connections paused, limits.max_queue_total";
    case LogLimiter::Kind::count_:
      break;
  }
  return "?";
}

constexpr std::chrono::seconds kLogWindow{1};

}  // namespace

LogLimiter::LogLimiter(asio::io_context& io, std::shared_ptr<spdlog::logger> log)
    : log_(std::move(log)), io_(io), timer_(io) {}

bool LogLimiter::allow(Kind kind) {
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(mu_);
  Window& w = windows_[static_cast<std::size_t>(kind)];
  if (now - w.began >= kLogWindow) {
    if (w.suppressed > 0) summarise(now);  // the timer has not fired yet
    w = Window{now, 0, 0};
  }
  if (w.logged < kBurst) {
    ++w.logged;
    return true;
  }
  ++w.suppressed;
  arm();
  return false;
}

void LogLimiter::summarise(std::chrono::steady_clock::time_point now) {
  for (std::size_t i = 0; i < windows_.size(); ++i) {
    Window& w = windows_[i];
    if (w.suppressed == 0 || now - w.began < kLogWindow) continue;
    mgmt::log::warn(*log_, "{} more like this in the last second ({})", w.suppressed,
                    kind_text(static_cast<Kind>(i)));
    // A new window starts now: a flood that goes on is logged kBurst lines and one summary
    // a second.
    w = Window{now, kBurst, 0};
  }
}

void LogLimiter::arm() {
  if (armed_) return;
  auto first_end = std::chrono::steady_clock::time_point::max();
  for (const Window& w : windows_) {
    if (w.suppressed > 0) first_end = std::min(first_end, w.began + kLogWindow);
  }
  if (first_end == std::chrono::steady_clock::time_point::max()) return;
  armed_ = true;
  // The timer is io_'s: a session on another I/O thread arms it from there.
  asio::dispatch(io_, [this, first_end] {
    timer_.expires_at(first_end);
    timer_.async_wait([this](const boost::system::error_code& ec) {
      std::lock_guard lock(mu_);
      armed_ = false;
      if (ec) return;
      summarise(std::chrono::steady_clock::now());
      arm();
    });
  });
}

Session::Session(Socket socket, SessionHost& host, std::uint64_t id)
    : socket_(std::move(socket)), fd_(socket_.native_handle()), host_(host), id_(id),
      timer_(host.io),
      q_(queue_options(host, id)) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(socket_.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
    peer_pid_ = cred.pid;
    peer_uid_ = cred.uid;
    rights_ = host_.access.rights_of(cred.uid, cred.gid);
  }
}

Session::~Session() = default;

void Session::start() {
  host_.stats.connection_opened();
  mgmt::log::debug(*host_.log, "conn {}: opened by pid {} uid {}", id_, peer_pid_, peer_uid_);
  next_request();
}

void Session::next_request() {
  if (mode_ == Mode::closed) return;
  mode_ = Mode::reading;
  if (shutting_down_) {
    close("server shutting down");
    return;
  }
  const std::size_t have = in_end_ - in_begin_;
  if (have > 0 && frame_deadline_ == kNoDeadline) frame_begins();
  if (have < kHeaderSize) {
    fill_buffer();
    return;
  }
  const HeaderError err = parse_header(reinterpret_cast<const std::uint8_t*>(&in_buf_[in_begin_]),
                                       header_);
  if (err != HeaderError::none) {
    // Nothing after a bad header can be trusted to be a frame boundary.
    if (host_.log_limit.allow(LogLimiter::Kind::bad_header)) {
      mgmt::log::warn(*host_.log, "conn {} (pid {} uid {}): {}; closing the connection", id_,
                      peer_pid_, peer_uid_, describe(err));
    }
    host_.stats.bad_frame();
    close("bad header");
    return;
  }
  in_begin_ += kHeaderSize;
  mode_ = Mode::busy;
  const std::size_t buffered = std::min<std::size_t>(in_end_ - in_begin_, header_.length);
  if (header_.length > host_.limits.max_request) {
    // Within the protocol's limit but over ours: skip the payload, answer, keep going.
    in_begin_ += buffered;
    discard_payload(header_.length - buffered);
    return;
  }
  if (header_.length > in_buf_.size() && !host_.queued.try_take(header_.length)) {
    // No room left in limits.max_queue_total for it: skip it and answer, as one over
    // max_request. Requests that fit in the read buffer are never turned away.
    in_begin_ += buffered;
    discard_payload(header_.length - buffered);
    return;
  }
  if (header_.length > in_buf_.size()) payload_charged_ = header_.length;
  payload_.assign(&in_buf_[in_begin_], buffered);
  in_begin_ += buffered;
  if (buffered < header_.length) {
    read_rest_of_payload(buffered);
    return;
  }
  frame_deadline_ = kNoDeadline;
  cancel_timer();
  dispatch();
}

void Session::frame_begins() {
  const auto limit = host_.limits.frame_timeout;
  frame_deadline_ = limit.count() > 0 ? std::chrono::steady_clock::now() + limit : kNoDeadline;
}

void Session::arm_frame_timer() {
  if (frame_deadline_ == kNoDeadline) {
    cancel_timer();  // frame_timeout 0: no limit
    return;
  }
  arm_timer_at(frame_deadline_, "frame timeout");
}

void Session::fill_buffer() {
  // Keep the unparsed tail at the front so a whole header always fits.
  if (in_begin_ > 0) {
    std::memmove(in_buf_.data(), &in_buf_[in_begin_], in_end_ - in_begin_);
    in_end_ -= in_begin_;
    in_begin_ = 0;
  }
  if (in_end_ == 0) {
    arm_timer(host_.limits.idle_timeout, "idle timeout");
  } else {
    arm_frame_timer();
  }
  socket_.async_read_some(
      asio::buffer(&in_buf_[in_end_], in_buf_.size() - in_end_),
      [self = shared_from_this()](const boost::system::error_code& ec, std::size_t n) {
        if (ec == asio::error::eof && (self->writing_ || !self->queue_empty())) {
          // Half-closed with answers still on their way: they go out, then it closes.
          self->close_after_flush_ = true;
          self->arm_timer(self->host_.limits.idle_timeout, kNotReading);
          return;
        }
        if (ec) {
          self->close(ec == asio::error::eof
                          ? (self->in_end_ == 0 ? "client closed" : "client closed mid-frame")
                          : "read error");
          return;
        }
        self->in_end_ += n;
        self->next_request();
      });
}

void Session::read_rest_of_payload(std::size_t have) {
  arm_frame_timer();
  payload_.resize(header_.length);
  asio::async_read(socket_, asio::buffer(payload_.data() + have, payload_.size() - have),
                   [self = shared_from_this()](const boost::system::error_code& ec, std::size_t) {
                     if (ec) {
                       self->close("client closed mid-frame");
                       return;
                     }
                     self->frame_deadline_ = kNoDeadline;
                     self->cancel_timer();
                     self->dispatch();
                   });
}

void Session::discard_payload(std::size_t remaining) {
  if (remaining == 0) {
    frame_deadline_ = kNoDeadline;
    cancel_timer();
    if (header_.length <= host_.limits.max_request) {
      answer_now(error_reply("request of " + std::to_string(header_.length) +
                             " bytes refused: the server's memory for queued data "
                             "(limits.max_queue_total) is taken; try again later"));
      return;
    }
    answer_now(error_reply("request of " + std::to_string(header_.length) +
                           " bytes exceeds this server's limit of " +
                           std::to_string(host_.limits.max_request) +
                           " bytes (limits.max_request)"));
    return;
  }
  arm_frame_timer();
  in_begin_ = in_end_ = 0;
  const std::size_t n = std::min(remaining, in_buf_.size());
  asio::async_read(socket_, asio::buffer(in_buf_.data(), n),
                   [self = shared_from_this(), remaining](const boost::system::error_code& ec,
                                                          std::size_t got) {
                     if (ec) {
                       self->close("client closed mid-frame");
                       return;
                     }
                     self->discard_payload(remaining - got);
                   });
}

// Timeouts are a deadline that one lazily re-armed timer checks, rather than a timer reset
// on every request: re-arming an asio timer costs a timerfd_settime syscall and a cancelled
// handler each time, which showed on the request path. A wait that fires before the
// (since pushed back) deadline simply waits again.
void Session::arm_timer(std::chrono::milliseconds after, const char* why) {
  if (after.count() <= 0) {
    cancel_timer();
    return;
  }
  arm_timer_at(std::chrono::steady_clock::now() + after, why);
}

void Session::arm_timer_at(std::chrono::steady_clock::time_point deadline, const char* why) {
  deadline_ = deadline;
  timer_why_ = why;
  if (timer_waiting_ && timer_.expiry() <= deadline_) return;  // it will re-arm itself
  wait_timer();
}

void Session::wait_timer() {
  timer_waiting_ = true;
  timer_.expires_at(deadline_);  // a pending later wait is cancelled and superseded
  const std::uint64_t gen = ++timer_gen_;
  timer_.async_wait([self = shared_from_this(), gen](const boost::system::error_code& ec) {
    if (gen != self->timer_gen_) return;  // superseded by a newer wait
    self->timer_waiting_ = false;
    if (ec || self->mode_ == Mode::closed || self->deadline_ == kNoDeadline) return;
    if (std::chrono::steady_clock::now() < self->deadline_) {
      self->wait_timer();
      return;
    }
    if (self->host_.log_limit.allow(LogLimiter::Kind::timeout)) {
      mgmt::log::info(*self->host_.log, "conn {} (pid {}): {}; closing the connection",
                      self->id_, self->peer_pid_, self->timer_why_);
    }
    self->host_.stats.timeout();
    self->close(self->timer_why_);
  });
}

void Session::cancel_timer() {
  // Lazy: a pending wait finds no deadline when it fires. close() cancels it for real.
  deadline_ = kNoDeadline;
}

void Session::answer_now(std::string payload) {
  on_reply(to_byte(MsgType::StatusResponse), header_.seq, std::move(payload));
}

void Session::dispatch() {
  // Read whole: from here its handler holds it (briefly, or capped, for the stock ones).
  host_.queued.recharge(payload_charged_, 0);
  const std::uint8_t type = header_.type;
  request_started_ = std::chrono::steady_clock::now();
  host_.stats.request(type);
  if (&host_.io == &host_.dispatch_io) {
    // One context (server.io_threads: 1, or a session on the dispatch thread): no hop.
    run_handler(type, header_.seq, std::move(payload_));
    payload_.clear();
    return;
  }
  asio::post(host_.dispatch_io, [self = shared_from_this(), type, seq = header_.seq,
                                 p = std::move(payload_)]() mutable {
    self->run_handler(type, seq, std::move(p));
  });
  payload_.clear();
}

void Session::answer_from_dispatch(std::uint64_t seq, std::string payload) {
  if (!on_dispatch()) {
    reply_direct(to_byte(MsgType::StatusResponse), seq, payload);
    return;
  }
  asio::dispatch(host_.io, [self = shared_from_this(), seq, p = std::move(payload)]() mutable {
    self->on_reply(to_byte(MsgType::StatusResponse), seq, std::move(p));
  });
}

void Session::run_handler(std::uint8_t type, std::uint64_t seq, std::string payload) {
  // On the dispatch context: the dispatcher is the dispatch host's, and rights_, the peer's
  // credentials and id_ do not change after the constructor.
  const Dispatcher& dispatcher = *host_.dispatch_host->dispatcher;
  const Dispatcher::Route route = dispatcher.find(type);
  Handler* h = route.handler;
  if (h == nullptr) {
    answer_from_dispatch(seq, error_reply("unknown request type " + type_hex(type)));
    return;
  }
  if ((rights_ & bit(route.right)) == 0) {
    host_.stats.denied();
    if (host_.log_limit.allow(LogLimiter::Kind::denied)) {
      mgmt::log::warn(*host_.log, "conn {}: denied {} to uid {} pid {}: lacks the {} right", id_,
                      type_hex(type), peer_uid_, peer_pid_, right_name(route.right));
    }
    answer_from_dispatch(
        seq, error_reply(std::string("permission denied: uid ") + std::to_string(peer_uid_) +
                         " lacks the " + right_name(route.right) + " right needed for " +
                         type_hex(type) + " (grant it under access.rules in mgmt.yaml)"));
    return;
  }
  auto ex = std::make_shared<SessionExchange>(shared_from_this(), dispatcher.handler(type),
                                              host_.io, type, seq, std::move(payload));
  try {
    h->handle(ex);
  } catch (const std::exception& e) {
    mgmt::log::error(*host_.log, "conn {}: handler for {} failed: {}", id_, type_hex(type),
                     e.what());
    ex->reply(to_byte(MsgType::StatusResponse),
              error_reply("internal error in the handler for " + type_hex(type) + ": " + e.what()));
  } catch (...) {
    mgmt::log::error(*host_.log, "conn {}: handler for {} failed with an unknown exception", id_,
                     type_hex(type));
    ex->reply(to_byte(MsgType::StatusResponse),
              error_reply("internal error in the handler for " + type_hex(type)));
  }
}

void Session::on_reply(std::uint8_t type, std::uint64_t seq, std::string payload) {
  if (mode_ == Mode::closed) return;
  const std::uint64_t backlog = send_reply(type, seq, payload);
  if (mode_ == Mode::closed) return;  // the send failed
  replied(backlog);
}

void Session::reply_direct(std::uint8_t type, std::uint64_t seq, std::string_view payload) {
  std::uint8_t head[kHeaderSize];
  write_header(FrameHeader{type, 0, seq, static_cast<std::uint32_t>(payload.size())}, head);
  std::array<std::string_view, 2> parts{
      std::string_view(reinterpret_cast<const char*>(head), kHeaderSize), payload};
  bool failed = false;
  bool run = false;
  {
    std::lock_guard lock(qmu_);
    // idle_: nothing queued, nothing being written, and the socket still open (see fd_).
    failed = !send_or_queue_locked(parts, idle_ && q_.empty(), run);
  }
  asio::post(host_.io, [self = shared_from_this(), failed, run] {
    if (self->mode_ == Mode::closed) return;
    if (failed) {
      self->close("write error");
      return;
    }
    if (run) self->flush();
    if (self->mode_ == Mode::closed) return;
    std::uint64_t backlog = 0;
    {
      std::lock_guard lock(self->qmu_);
      backlog = self->q_.backlog_bytes() + self->in_flight_bytes_;
    }
    self->replied(backlog);
  });
}

void Session::replied(std::uint64_t backlog) {
  if (mode_ == Mode::busy) {
    host_.stats.answered(static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() -
                                                              request_started_)
            .count()));
    if (shutting_down_) {
      close_after_flush_ = true;
      if (!writing_ && queue_empty()) close("server shutting down");
      return;
    }
    const bool budget = backlog < pause_at() && over_budget(backlog);
    if (backlog >= pause_at() || budget) {
      // The client sends requests faster than it reads the answers: take no more until
      // they drain (flush() resumes), so its backlog stays bounded, in memory.
      if (budget && host_.log_limit.allow(LogLimiter::Kind::budget)) {
        mgmt::log::warn(*host_.log,
                        "conn {} (pid {} uid {}): the answers queued on all connections reached "
                        "limits.max_queue_total ({} bytes); reading none of its requests until "
                        "its {} bytes of answers are read",
                        id_, peer_pid_, peer_uid_, host_.queued.limit.load(), backlog);
      }
      mode_ = Mode::paused;
      arm_timer(host_.limits.idle_timeout, kNotReading);
      return;
    }
    if (in_end_ > in_begin_) {
      // A pipelined request is already buffered: serve it from the event loop rather than
      // recursing, so one client's burst cannot starve the others.
      mode_ = Mode::reading;
      asio::post(host_.io, [self = shared_from_this()] { self->next_request(); });
    } else {
      next_request();
    }
  }
}

void Session::on_begin_stream() {
  if (mode_ != Mode::busy) return;
  mode_ = Mode::streaming;
  watch_stream();
}

bool Session::push_frame(std::span<const std::string_view> parts, std::uint64_t units) {
  bool kick = false;
  SpillQueue::Added added;
  {
    std::lock_guard lock(qmu_);
    added = q_.push_parts(parts, units);
    account_locked(added);
    if (added != SpillQueue::Added::closed && idle_) {
      idle_ = false;
      kick = true;
    }
  }
  if (kick) asio::post(host_.io, [self = shared_from_this()] { self->on_kick(); });
  if (added == SpillQueue::Added::disconnect) {
    // The writer may be stuck on a reader that reads nothing: bound the wait from now on.
    asio::post(host_.io, [self = shared_from_this()] {
      if (self->mode_ != Mode::closed) {
        self->arm_timer(self->host_.limits.frame_timeout, kStuckReader);
      }
    });
  }
  return added != SpillQueue::Added::closed && added != SpillQueue::Added::disconnect &&
         !closed_flag_->load();
}

void Session::set_stall_notice(SpillQueue::NoticeBuilder b) {
  std::lock_guard lock(qmu_);
  q_.set_notice(std::move(b));
}

void Session::account_locked(SpillQueue::Added added) {
  switch (added) {
    case SpillQueue::Added::spilled:
      host_.stats.frames_spilled();
      break;
    case SpillQueue::Added::dropped:
      host_.stats.frames_dropped();
      if (!dropping_logged_ && q_.short_of_disk()) {
        dropping_logged_ = true;
        mgmt::log::warn(*host_.log,
                        "conn {} (pid {}): stream reader is {} bytes behind, and the spill files "
                        "of all connections fill streams.spill_quota_total ({}); dropping "
                        "frames until it catches up",
                        id_, peer_pid_, q_.backlog_bytes(), host_.spilled.limit.load());
      } else if (!dropping_logged_) {
        dropping_logged_ = true;
        mgmt::log::warn(*host_.log,
                        "conn {} (pid {}): stream reader is {} bytes behind, past its spill "
                        "quota (streams.spill_quota {}); dropping frames until it catches up",
                        id_, peer_pid_, q_.backlog_bytes(), host_.streams.spill_quota);
      }
      break;
    case SpillQueue::Added::disconnect:
      host_.stats.frames_dropped();
      host_.stats.slow_reader_dropped();
      disconnect_ = true;
      mgmt::log::warn(*host_.log,
                      "conn {} (pid {}): stream reader is {} bytes behind, past its spill "
                      "quota (streams.spill_quota {}); disconnecting it after the stall notice",
                      id_, peer_pid_, q_.backlog_bytes(), host_.streams.spill_quota);
      break;
    default:
      break;
  }
  if (!file_error_logged_ && !q_.file_error().empty() &&
      (added == SpillQueue::Added::dropped || added == SpillQueue::Added::disconnect ||
       added == SpillQueue::Added::spilled)) {
    // Once per connection: from now on it spills no more, as if past its quota.
    file_error_logged_ = true;
    mgmt::log::warn(*host_.log,
                    "conn {} (pid {}): spill file failed ({}); its stream frames beyond "
                    "limits.max_queue are dropped from now on",
                    id_, peer_pid_, q_.file_error());
  }
  if (q_.stalls() != stalls_seen_) {
    stalls_seen_ = q_.stalls();
    dropping_logged_ = false;
    host_.stats.stall();
    mgmt::log::info(*host_.log, "conn {} (pid {}): stream reader caught up; stall notice queued",
                    id_, peer_pid_);
  }
}

void Session::on_kick() {
  if (mode_ == Mode::closed) return;
  if (mode_ == Mode::busy) on_begin_stream();
  flush();
}

bool Session::queue_empty() {
  std::lock_guard lock(qmu_);
  return q_.empty();
}

void Session::on_end_stream() {
  if (mode_ == Mode::closed) return;
  close_after_flush_ = true;
  if (!writing_ && queue_empty()) close("stream ended");
}

void Session::on_hold(std::shared_ptr<void> r) {
  if (mode_ == Mode::closed) {
    std::vector<std::shared_ptr<void>> one;
    one.push_back(std::move(r));
    release_on_dispatch(std::move(one));
    return;
  }
  held_.push_back(std::move(r));
}

void Session::release_on_dispatch(std::vector<std::shared_ptr<void>> held) {
  if (held.empty()) return;
  if (&host_.io == &host_.dispatch_io) {
    held.clear();  // right here, as before there were I/O threads
    return;
  }
  asio::post(host_.dispatch_io, [h = std::move(held)]() mutable { h.clear(); });
}

void Session::watch_stream() {
  // A streaming connection takes no more requests, but reading tells us when the client
  // goes away so its subscription can be released at once. What it sends is discarded; a
  // client that keeps sending is closed rather than read for nothing without end.
  stream_input_ += in_end_ - in_begin_;
  in_begin_ = in_end_ = 0;
  if (stream_input_ > kMaxStreamInput) {
    if (host_.log_limit.allow(LogLimiter::Kind::stream_input)) {
      mgmt::log::warn(*host_.log,
                      "conn {} (pid {} uid {}): stream client sent {} bytes, more than the {} a "
                      "stream takes; closing the connection",
                      id_, peer_pid_, peer_uid_, stream_input_, kMaxStreamInput);
    }
    close("stream client kept sending");
    return;
  }
  socket_.async_read_some(asio::buffer(in_buf_),
                          [self = shared_from_this()](const boost::system::error_code& ec,
                                                      std::size_t n) {
                            if (ec) {
                              self->close("stream client closed");
                              return;
                            }
                            if (self->mode_ == Mode::closed) return;
                            self->in_end_ = n;
                            self->watch_stream();
                          });
}

std::uint64_t Session::send_reply(std::uint8_t type, std::uint64_t seq, std::string_view payload) {
  std::uint8_t head[kHeaderSize];
  write_header(FrameHeader{type, 0, seq, static_cast<std::uint32_t>(payload.size())}, head);
  std::array<std::string_view, 2> parts{
      std::string_view(reinterpret_cast<const char*>(head), kHeaderSize), payload};
  bool run = false;
  bool failed = false;
  std::uint64_t backlog = 0;
  {
    std::lock_guard lock(qmu_);
    // Nothing queued or being written (a client waiting for its answer, the usual case):
    // send it right here, and queue only what the socket does not take.
    failed = !send_or_queue_locked(parts, idle_ && !writing_ && q_.empty(), run);
    backlog = q_.backlog_bytes() + in_flight_bytes_;
  }
  if (failed) {
    close("write error");
  } else if (run) {
    flush();
  }
  return backlog;
}

bool Session::send_or_queue_locked(std::span<std::string_view> parts, bool now, bool& run) {
  if (now) {
    std::size_t sent = 0;
    if (!send_now(parts, sent)) return false;
    written_.fetch_add(sent, std::memory_order_relaxed);
    for (auto& p : parts) {
      const std::size_t n = std::min(sent, p.size());
      p.remove_prefix(n);
      sent -= n;
    }
  }
  if (std::any_of(parts.begin(), parts.end(), [](std::string_view p) { return !p.empty(); })) {
    account_locked(q_.push_parts(parts, 1, /*keep=*/true));
    if (idle_) {
      idle_ = false;
      run = true;
    }
  }
  return true;
}

bool Session::send_now(std::span<const std::string_view> parts, std::size_t& sent) {
  std::array<iovec, 2> iov{};
  std::size_t n = 0;
  for (const std::string_view p : parts) {
    if (p.empty() || n == iov.size()) continue;
    iov[n].iov_base = const_cast<char*>(p.data());
    iov[n].iov_len = p.size();
    ++n;
  }
  msghdr msg{};
  msg.msg_iov = iov.data();
  msg.msg_iovlen = n;
  for (;;) {
    const ssize_t r = ::sendmsg(fd_, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (r >= 0) {
      sent = static_cast<std::size_t>(r);
      return true;
    }
    if (errno == EINTR) continue;
    sent = 0;
    return errno == EAGAIN || errno == EWOULDBLOCK;  // full: the writer waits for room
  }
}

void Session::flush() {
  if (writing_ || mode_ == Mode::closed) return;
  bool disconnect = false;
  std::uint64_t backlog = 0;
  {
    std::lock_guard lock(qmu_);
    q_.recycle(in_flight_);   // the buffers just written: some are kept for reuse
    spent_.swap(in_flight_);  // the others are freed below, outside the lock
    // Memory first, then the spill file: a gathered write of up to 64 buffers (Asio's
    // limit per call) of frames packed back to back, at most 1 MiB unless a single frame
    // is larger.
    // While shutting down, smaller writes: each one completed is progress the drain sees.
    q_.take_buffers(in_flight_, shutting_down_ ? 64u << 10 : 1u << 20, 64);
    account_locked(SpillQueue::Added::memory);
    if (in_flight_.empty()) {
      idle_ = true;
      q_.release_spares(spent_);  // an idle connection keeps no buffers
    }
    disconnect = disconnect_;
    in_flight_bytes_ = 0;
    for (const auto& b : in_flight_) in_flight_bytes_ += b.size();
    // What is being written is still in memory: it counts towards limits.max_queue_total.
    host_.queued.recharge(in_flight_charged_, in_flight_bytes_);
    // Past the budget a connection keeps no spare buffers for reuse.
    if (host_.queued.over()) q_.release_spares(spent_);
    backlog = q_.backlog_bytes() + in_flight_bytes_;
  }
  spent_.clear();
  if (disconnect) {
    close_after_flush_ = true;
    // Its notice and what precedes it go out as fast as it reads; a reader that takes
    // nothing for frame_timeout is closed without them. Each write pushes the deadline.
    arm_timer(host_.limits.frame_timeout, kStuckReader);
  }
  if (in_flight_.empty()) {
    if (close_after_flush_) {
      close(disconnect ? "stream reader too slow" : shutting_down_ ? "server shutting down"
                                                                    : "done");
      return;
    }
    resume_if_drained(backlog);
    return;
  }
  writing_ = true;
  write_bufs_.clear();
  for (const auto& f : in_flight_) write_bufs_.push_back(asio::buffer(f));
  asio::async_write(socket_, write_bufs_,
                    [self = shared_from_this()](const boost::system::error_code& ec, std::size_t n) {
                      self->writing_ = false;
                      self->written_.fetch_add(n, std::memory_order_relaxed);
                      if (self->mode_ == Mode::closed) return;
                      if (ec) {
                        self->close("write error");
                        return;
                      }
                      self->flush();
                    });
  resume_if_drained(backlog);
}

void Session::resume_if_drained(std::uint64_t backlog) {
  if (mode_ != Mode::paused || shutting_down_) return;  // shutting down: flush, then close
  if (backlog > pause_at() / 2 || over_budget(backlog)) {
    arm_timer(host_.limits.idle_timeout, kNotReading);  // still reading: push the deadline
    return;
  }
  next_request();
}

void Session::shutdown() {
  if (mode_ == Mode::closed) return;
  shutting_down_ = true;
  if (mode_ == Mode::reading) {
    close("server shutting down");
    return;
  }
  close_after_flush_ = true;
  if ((mode_ == Mode::streaming || mode_ == Mode::paused) && !writing_ && queue_empty()) {
    close("server shutting down");
  }
}

void Session::close(const char* why) {
  if (mode_ == Mode::closed) return;
  mode_ = Mode::closed;
  closed_flag_->store(true);
  host_.stats.connection_closed();
  mgmt::log::debug(*host_.log, "conn {}: closed ({})", id_, why);
  cancel_timer();
  timer_.cancel();  // releases the pending wait (and its reference to this session) now
  {
    std::lock_guard lock(qmu_);
    q_.close();  // removes the spill file, gives its share of the budgets back
    host_.queued.recharge(in_flight_charged_, 0);
    host_.queued.recharge(payload_charged_, 0);
    // Nothing will be written any more; before the socket closes, so that no other thread
    // writes to its descriptor (reply_direct) once it may be another file's.
    idle_ = false;
  }
  boost::system::error_code ignored;
  socket_.shutdown(Socket::shutdown_both, ignored);
  socket_.close(ignored);
  // Subscriptions go now, so the backend stops feeding a connection that is gone.
  release_on_dispatch(std::move(held_));
  held_.clear();
  if (host_.on_closed) host_.on_closed(this);
}

}  // namespace mgmt
