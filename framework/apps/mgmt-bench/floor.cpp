// The floor: the cheapest server that still speaks the protocol's framing. epoll, the same
// AF_UNIX stream socket, a header check and the whole payload read for every request, and
// one canned reply per request, of the same size as mgmtd's real one, sent with one send().
// Whatever mgmtd costs beyond this is its own work. With one thread (the default) it is a
// server of mgmtd's own shape; with --threads N (0: one per core) N epoll threads share the
// listening socket, each serving the connections it accepted: a floor that uses the whole
// machine.
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <memory>
#include <thread>
#include <unordered_map>
#include <vector>

#include "bench.hpp"
#include "mgmt/messages.hpp"

namespace mgmt::bench {

namespace {

volatile std::sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

struct Conn {
  int fd = -1;
  std::string in;        // received bytes not yet consumed
  std::size_t in_len = 0;
  std::string out;       // unsent tail of replies (only when the socket was full)
  std::size_t out_off = 0;
};

int listen_on(const std::string& path) {
  ::unlink(path.c_str());
  const int lfd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) throw std::runtime_error("socket path too long");
  std::memcpy(addr.sun_path, path.data(), path.size());
  const mode_t old = ::umask(0177);
  const bool ok = ::bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
                  ::listen(lfd, SOMAXCONN) == 0;
  ::umask(old);
  if (!ok) throw std::runtime_error("cannot listen on " + path + ": " + std::strerror(errno));
  return lfd;
}

class Floor {
 public:
  // Each thread has its own copy of the replies: answering patches the seq in place.
  Floor(std::array<std::string, 256> replies, int lfd) : replies_(std::move(replies)), lfd_(lfd) {
    ep_ = ::epoll_create1(EPOLL_CLOEXEC);
    // Exclusive: one waiting thread is woken per connection, not all of them.
    add(lfd_, EPOLLIN | EPOLLEXCLUSIVE);
  }

  void run() {
    std::array<epoll_event, 64> evs;
    while (!g_stop) {
      const int n = ::epoll_wait(ep_, evs.data(), static_cast<int>(evs.size()), 200);
      for (int i = 0; i < n; ++i) {
        const int fd = evs[static_cast<std::size_t>(i)].data.fd;
        const auto ev = evs[static_cast<std::size_t>(i)].events;
        if (fd == lfd_) {
          accept_all();
          continue;
        }
        auto it = conns_.find(fd);
        if (it == conns_.end()) continue;
        Conn& c = *it->second;
        if ((ev & EPOLLOUT) && !flush(c)) continue;
        if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable(c);
      }
    }
  }

 private:
  void add(int fd, std::uint32_t events) {
    epoll_event e{};
    e.events = events;
    e.data.fd = fd;
    ::epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &e);
  }

  void accept_all() {
    for (;;) {
      const int fd = ::accept4(lfd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) return;
      auto c = std::make_unique<Conn>();
      c->fd = fd;
      c->in.resize(4096);
      add(fd, EPOLLIN);
      conns_.emplace(fd, std::move(c));
    }
  }

  void close_conn(Conn& c) {
    ::epoll_ctl(ep_, EPOLL_CTL_DEL, c.fd, nullptr);
    ::close(c.fd);
    conns_.erase(c.fd);  // destroys c
  }

  void on_readable(Conn& c) {
    if (c.in_len == c.in.size()) c.in.resize(c.in.size() * 2);
    const ssize_t r = ::recv(c.fd, c.in.data() + c.in_len, c.in.size() - c.in_len, 0);
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
      close_conn(c);
      return;
    }
    if (r < 0) return;
    c.in_len += static_cast<std::size_t>(r);
    std::size_t off = 0;
    while (c.in_len - off >= kHeaderSize) {
      FrameHeader h;
      if (parse_header(reinterpret_cast<const std::uint8_t*>(c.in.data() + off), h) !=
          HeaderError::none) {
        close_conn(c);
        return;
      }
      const std::size_t total = kHeaderSize + h.length;
      if (c.in_len - off < total) {
        if (c.in.size() < total) c.in.resize(total);
        break;
      }
      off += total;
      if (!answer(c, h)) return;
    }
    if (off > 0) {
      std::memmove(c.in.data(), c.in.data() + off, c.in_len - off);
      c.in_len -= off;
    }
  }

  // Sends the canned reply for h.type with h.seq. False when the connection was closed.
  bool answer(Conn& c, const FrameHeader& h) {
    std::string& reply = replies_[h.type];
    patch_seq(reply.data(), h.seq);
    if (c.out_off < c.out.size()) {  // still blocked: queue behind the rest
      c.out.append(reply);
      return true;
    }
    const ssize_t w = ::send(c.fd, reply.data(), reply.size(), MSG_NOSIGNAL);
    if (w < 0 && errno != EAGAIN) {
      close_conn(c);
      return false;
    }
    const auto sent = static_cast<std::size_t>(w < 0 ? 0 : w);
    if (sent < reply.size()) {
      c.out.assign(reply, sent);
      c.out_off = 0;
      epoll_event e{};
      e.events = EPOLLIN | EPOLLOUT;
      e.data.fd = c.fd;
      ::epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &e);
    }
    return true;
  }

  bool flush(Conn& c) {
    while (c.out_off < c.out.size()) {
      const ssize_t w =
          ::send(c.fd, c.out.data() + c.out_off, c.out.size() - c.out_off, MSG_NOSIGNAL);
      if (w < 0) {
        if (errno == EAGAIN) return true;
        close_conn(c);
        return false;
      }
      c.out_off += static_cast<std::size_t>(w);
    }
    c.out.clear();
    c.out_off = 0;
    epoll_event e{};
    e.events = EPOLLIN;
    e.data.fd = c.fd;
    ::epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &e);
    return true;
  }

  std::array<std::string, 256> replies_;
  int lfd_ = -1;
  int ep_ = -1;
  std::unordered_map<int, std::unique_ptr<Conn>> conns_;
};

}  // namespace

int cmd_floor(const Args& a) {
  std::string socket;
  long size = 64;
  long threads = 1;
  std::array<std::string, 256> replies;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i] == "--socket") {
      socket = take_value(a, i);
    } else if (a[i] == "--threads") {
      threads = parse_long(take_value(a, i), "--threads");
    } else if (a[i] == "--reply-size") {
      size = parse_long(take_value(a, i), "--reply-size");
    } else if (a[i] == "--reply") {
      // TYPE=FILE: a whole frame, as written by `capture`.
      const std::string v = take_value(a, i);
      const auto eq = v.find('=');
      if (eq == std::string::npos) throw UsageError("--reply wants TYPE=FILE, e.g. 0xa0=list.bin");
      const long type = parse_long(v.substr(0, eq), "--reply type");
      if (type > 255) throw UsageError("--reply: type over 0xff");
      std::string frame = read_file(v.substr(eq + 1));
      FrameHeader h;
      if (frame.size() < kHeaderSize ||
          parse_header(reinterpret_cast<const std::uint8_t*>(frame.data()), h) != HeaderError::none ||
          frame.size() != kHeaderSize + h.length) {
        throw std::runtime_error(v.substr(eq + 1) + " does not hold exactly one frame");
      }
      replies[static_cast<std::size_t>(type)] = std::move(frame);
    } else {
      throw UsageError("floor: unknown option " + a[i]);
    }
  }
  if (socket.empty()) throw UsageError("floor: --socket is required");
  if (size < static_cast<long>(kHeaderSize)) size = kHeaderSize;
  // Types without a captured reply: a StatusResponse-typed frame of --reply-size bytes.
  const std::string filler = make_frame(to_byte(MsgType::StatusResponse), 0,
                                        std::string(static_cast<std::size_t>(size) - kHeaderSize, '\0'));
  for (auto& r : replies) {
    if (r.empty()) r = filler;
  }
  if (threads <= 0) threads = static_cast<long>(std::max(1u, std::thread::hardware_concurrency()));
  std::signal(SIGPIPE, SIG_IGN);
  std::signal(SIGTERM, on_signal);
  std::signal(SIGINT, on_signal);
  const int lfd = listen_on(socket);
  std::vector<std::unique_ptr<Floor>> floors;
  for (long t = 0; t < threads; ++t) floors.push_back(std::make_unique<Floor>(replies, lfd));
  std::printf("floor listening on %s (%ld thread%s)\n", socket.c_str(), threads,
              threads == 1 ? "" : "s");
  std::fflush(stdout);
  std::vector<std::thread> workers;
  for (long t = 1; t < threads; ++t) {
    workers.emplace_back([f = floors[static_cast<std::size_t>(t)].get()] { f->run(); });
  }
  floors[0]->run();
  for (auto& w : workers) w.join();
  ::unlink(socket.c_str());
  return 0;
}

}  // namespace mgmt::bench
