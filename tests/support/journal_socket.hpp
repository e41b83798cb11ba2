// journald's side of the native protocol, played by a test: a datagram socket bound at a
// path of the test's own, and a reader of the entries sent to it.
#pragma once

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace mgmt::test {

using JournalFields = std::map<std::string, std::string>;

// The fields of one datagram ("NAME=value\n", or "NAME\n" + 64-bit LE size + value + "\n");
// nullopt when it is not well formed.
inline std::optional<JournalFields> parse_journal_entry(std::string_view d) {
  JournalFields out;
  while (!d.empty()) {
    const auto end = d.find_first_of("=\n");
    if (end == std::string_view::npos || end == 0) return std::nullopt;
    const std::string name(d.substr(0, end));
    if (d[end] == '=') {
      const auto nl = d.find('\n', end + 1);
      if (nl == std::string_view::npos) return std::nullopt;
      out[name] = std::string(d.substr(end + 1, nl - end - 1));
      d.remove_prefix(nl + 1);
    } else {
      d.remove_prefix(end + 1);
      if (d.size() < 8) return std::nullopt;
      std::uint64_t n = 0;
      for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(d[static_cast<std::size_t>(i)]);
      d.remove_prefix(8);
      if (d.size() < n + 1 || d[n] != '\n') return std::nullopt;
      out[name] = std::string(d.substr(0, n));
      d.remove_prefix(n + 1);
    }
  }
  return out;
}

class JournalSocket {
 public:
  explicit JournalSocket(const std::string& path) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      throw std::runtime_error("cannot bind a journal socket at " + path);
    }
    const int size = 8 << 20;
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size);
  }
  ~JournalSocket() { ::close(fd_); }
  JournalSocket(const JournalSocket&) = delete;
  JournalSocket& operator=(const JournalSocket&) = delete;

  // The next datagram, whole; nullopt when none comes within `timeout`.
  std::optional<std::string> next_datagram(std::chrono::milliseconds timeout) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return std::nullopt;
    std::string buf(256 * 1024, '\0');
    const ssize_t n = ::recv(fd_, buf.data(), buf.size(), 0);
    if (n < 0) return std::nullopt;
    buf.resize(static_cast<std::size_t>(n));
    return buf;
  }

  // The next entry; a datagram that does not parse throws (a test failure with its bytes).
  std::optional<JournalFields> next(std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    auto d = next_datagram(timeout);
    if (!d) return std::nullopt;
    auto e = parse_journal_entry(*d);
    if (!e) throw std::runtime_error("not a journal entry: " + *d);
    return e;
  }

  int fd() const { return fd_; }

 private:
  int fd_ = -1;
};

}  // namespace mgmt::test
