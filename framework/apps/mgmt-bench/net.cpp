// Socket, clock and option helpers shared by the subcommands.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>

#include "bench.hpp"
#include "mgmt/messages.hpp"

namespace mgmt::bench {

std::int64_t now_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

void sleep_ns(std::int64_t ns) noexcept {
  timespec ts{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
  while (::nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

namespace {

bool make_addr(const std::string& path, sockaddr_un& addr) noexcept {
  addr = sockaddr_un{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr.sun_path) return false;
  std::memcpy(addr.sun_path, path.data(), path.size());
  return true;
}

}  // namespace

int try_connect_unix(const std::string& path) noexcept {
  sockaddr_un addr;
  if (!make_addr(path, addr)) return -1;
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

int connect_unix(const std::string& path) {
  sockaddr_un addr;
  if (!make_addr(path, addr)) throw std::runtime_error("bad socket path " + path);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
  int rc;
  do {
    rc = ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    const int err = errno;
    ::close(fd);
    throw std::runtime_error("cannot connect to " + path + ": " + std::strerror(err));
  }
  return fd;
}

void write_all(int fd, const char* p, std::size_t n) {
  while (n > 0) {
    const ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      throw std::runtime_error(std::string("send: ") + std::strerror(errno));
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

bool read_frame(int fd, std::string& buf, FrameHeader& h) {
  if (buf.size() < 64 * 1024) buf.resize(64 * 1024);
  std::size_t got = 0;
  std::size_t want = kHeaderSize;
  bool have_header = false;
  while (got < want) {
    // Read as much as is there (up to the buffer), so a small reply costs one recv.
    const ssize_t r = ::recv(fd, buf.data() + got, buf.size() - got, 0);
    if (r == 0) {
      if (got == 0) return false;
      throw std::runtime_error("connection closed in the middle of a frame");
    }
    if (r < 0) {
      if (errno == EINTR) continue;
      throw std::runtime_error(std::string("recv: ") + std::strerror(errno));
    }
    got += static_cast<std::size_t>(r);
    if (!have_header && got >= kHeaderSize) {
      const HeaderError err = parse_header(reinterpret_cast<const std::uint8_t*>(buf.data()), h);
      if (err != HeaderError::none) {
        throw std::runtime_error("bad reply header: " + std::string(describe(err)));
      }
      have_header = true;
      want = kHeaderSize + h.length;
      if (buf.size() < want) buf.resize(want);
    }
  }
  if (got != want) throw std::runtime_error("server sent more than one frame per request");
  return true;
}

std::string request_frame(std::string_view op, const std::string& id) {
  if (op == "list") return make_frame(to_byte(MsgType::ListRequest), 0, {});
  if (op == "status") return make_frame(to_byte(MsgType::StatusRequest), 0, encode(StatusRequest{id}));
  throw UsageError("unknown op '" + std::string(op) + "' (list or status)");
}

std::uint8_t reply_type(std::string_view op) {
  return op == "list" ? to_byte(MsgType::ListResponse) : to_byte(MsgType::StatusResponse);
}

void patch_seq(char* frame, std::uint64_t seq) noexcept {
  for (int i = 7; i >= 0; --i) {
    frame[5 + i] = static_cast<char>(seq & 0xFF);
    seq >>= 8;
  }
}

std::string take_value(const Args& a, std::size_t& i) {
  if (i + 1 >= a.size()) throw UsageError(a[i] + " needs a value");
  return a[++i];
}

double parse_double(const std::string& s, const std::string& what) {
  try {
    std::size_t pos = 0;
    const double v = std::stod(s, &pos);
    if (pos == s.size() && v >= 0) return v;
  } catch (const std::exception&) {
  }
  throw UsageError(what + ": expected a non-negative number, got '" + s + "'");
}

long parse_long(const std::string& s, const std::string& what) {
  try {
    std::size_t pos = 0;
    const long v = std::stol(s, &pos, 0);
    if (pos == s.size() && v >= 0) return v;
  } catch (const std::exception&) {
  }
  throw UsageError(what + ": expected a non-negative integer, got '" + s + "'");
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, std::string_view data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  if (!out) throw std::runtime_error("cannot write " + path);
}

}  // namespace mgmt::bench
