// The blocking management client: plain POSIX calls on an AF_UNIX stream socket, so a
// one-shot CLI pays for no event loop at start-up.
#include "mgmt/client.hpp"

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace mgmt {

namespace {

std::string errno_text(int err) { return std::strerror(err); }

[[noreturn]] void fail(const std::string& msg) { throw std::runtime_error(msg); }

// Reads up to n bytes, stopping early only at end of stream. Returns how many were read.
std::size_t read_full(int fd, char* buf, std::size_t n, const std::string& path) {
  std::size_t got = 0;
  while (got < n) {
    const ssize_t r = ::recv(fd, buf + got, n - got, 0);
    if (r > 0) {
      got += static_cast<std::size_t>(r);
    } else if (r == 0) {
      break;
    } else if (errno != EINTR) {
      fail("cannot read from " + path + ": " + errno_text(errno));
    }
  }
  return got;
}

void write_full(int fd, const char* buf, std::size_t n, const std::string& path) {
  std::size_t done = 0;
  while (done < n) {
    // MSG_NOSIGNAL: a server that went away is an error to report, not a SIGPIPE.
    const ssize_t w = ::send(fd, buf + done, n - done, MSG_NOSIGNAL);
    if (w >= 0) {
      done += static_cast<std::size_t>(w);
    } else if (errno == EPIPE || errno == ECONNRESET) {
      fail("cannot send to " + path + ": the server closed the connection (" +
           errno_text(errno) + ")");
    } else if (errno != EINTR) {
      fail("cannot send to " + path + ": " + errno_text(errno));
    }
  }
}

}  // namespace

Client::Client(const std::string& socket_path) : path_(socket_path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.empty()) fail("cannot connect: empty socket path");
  if (socket_path.size() >= sizeof(addr.sun_path)) {
    fail("cannot connect to " + socket_path + ": path is " + std::to_string(socket_path.size()) +
         " bytes, the limit for a unix socket is " + std::to_string(sizeof(addr.sun_path) - 1) +
         " (use a shorter --runtime-dir)");
  }
  std::memcpy(addr.sun_path, socket_path.data(), socket_path.size());

  fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) fail("cannot create a unix socket: " + errno_text(errno));

  int rc;
  do {
    rc = ::connect(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
  } while (rc < 0 && errno == EINTR);
  // A connect interrupted and retried may report that it already went through.
  if (rc < 0 && errno != EISCONN) {
    const int err = errno;
    ::close(fd_);
    fd_ = -1;
    std::string msg = "cannot connect to " + socket_path + ": " + errno_text(err);
    if (err == ENOENT || err == ECONNREFUSED) {
      msg += " (is mgmtd running? use --socket or --runtime-dir)";
    } else if (err == EACCES || err == EPERM) {
      msg += " (the socket belongs to another user?)";
    }
    fail(msg);
  }
}

Client Client::adopt(int fd, std::string label) {
  Client c;
  c.fd_ = fd;
  c.path_ = std::move(label);
  return c;
}

Client::~Client() {
  if (fd_ >= 0) ::close(fd_);
}

Client::Client(Client&& o) noexcept
    : fd_(std::exchange(o.fd_, -1)), next_seq_(o.next_seq_), path_(std::move(o.path_)) {}

Client& Client::operator=(Client&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(o.fd_, -1);
    next_seq_ = o.next_seq_;
    path_ = std::move(o.path_);
  }
  return *this;
}

std::uint64_t Client::send(std::uint8_t type, std::string_view payload) {
  if (fd_ < 0) fail("not connected to " + path_);
  if (payload.size() > kMaxPayload) {
    fail("request to " + path_ + " too large: " + std::to_string(payload.size()) +
         " bytes, the protocol allows " + std::to_string(kMaxPayload));
  }
  const std::uint64_t seq = next_seq_++;
  const std::string frame = make_frame(type, seq, payload);
  write_full(fd_, frame.data(), frame.size(), path_);
  return seq;
}

std::optional<Frame> Client::receive() {
  if (fd_ < 0) fail("not connected to " + path_);
  char head[kHeaderSize];
  const std::size_t got = read_full(fd_, head, kHeaderSize, path_);
  if (got == 0) return std::nullopt;
  if (got < kHeaderSize) {
    fail("protocol error: " + path_ + " closed the connection in the middle of a frame header (" +
         std::to_string(got) + " of " + std::to_string(kHeaderSize) + " bytes)");
  }
  Frame f;
  const HeaderError err = parse_header(reinterpret_cast<const std::uint8_t*>(head), f.header);
  if (err != HeaderError::none) {
    std::string msg = "protocol error from " + path_ + ": " + std::string(describe(err));
    if (err == HeaderError::too_large) {
      msg += " (" + std::to_string(f.header.length) + " bytes, at most " +
             std::to_string(kMaxPayload) + " allowed)";
    } else if (err == HeaderError::bad_magic) {
      msg += " (starts with " + type_hex(static_cast<std::uint8_t>(head[0])) + " " +
             type_hex(static_cast<std::uint8_t>(head[1])) + ")";
    } else if (err == HeaderError::bad_version) {
      msg += " (" + type_hex(static_cast<std::uint8_t>(head[2])) + ")";
    }
    fail(msg);
  }
  f.payload.resize(f.header.length);
  const std::size_t body = read_full(fd_, f.payload.data(), f.payload.size(), path_);
  if (body < f.payload.size()) {
    fail("protocol error: " + path_ + " closed the connection in the middle of a frame (" +
         std::to_string(body) + " of " + std::to_string(f.header.length) + " payload bytes)");
  }
  return f;
}

Frame Client::call(std::uint8_t type, std::string_view payload) {
  send(type, payload);
  auto f = receive();
  if (!f) fail(path_ + " closed the connection without answering");
  return std::move(*f);
}

}  // namespace mgmt
