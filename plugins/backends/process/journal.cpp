#include "journal.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <system_error>

namespace mgmt::process {

namespace {

// What journald's own clients ask for: a send buffer that holds many lines while the
// journal is busy (the kernel caps SO_SNDBUF at net.core.wmem_max; root may force it).
constexpr int kSendBuffer = 8 * 1024 * 1024;

void add_field(std::string& out, std::string_view name, std::string_view value) {
  out.append(name);
  if (value.find('\n') == std::string_view::npos) {
    out += '=';
    out.append(value);
  } else {
    out += '\n';
    std::uint64_t n = value.size();
    for (int i = 0; i < 8; ++i) {
      out += static_cast<char>(n & 0xff);
      n >>= 8;
    }
    out.append(value);
  }
  out += '\n';
}

}  // namespace

std::string encode_journal_entry(const JournalEntry& e) {
  std::string out;
  out.reserve(e.message.size() + 128 + 2 * e.identifier.size());
  add_field(out, "MESSAGE", e.message);
  add_field(out, "PRIORITY", std::to_string(e.priority));
  add_field(out, "SYSLOG_IDENTIFIER", e.identifier);
  if (e.pid > 0) add_field(out, "SYSLOG_PID", std::to_string(e.pid));
  add_field(out, "MGMT_PROCESS", e.identifier);
  add_field(out, "MGMT_STREAM", e.stream);
  return out;
}

JournalSink::JournalSink(std::string path) : path_(std::move(path)) {
  addr_.sun_family = AF_UNIX;
  const std::size_t n = std::min(path_.size(), sizeof addr_.sun_path - 1);
  std::memcpy(addr_.sun_path, path_.data(), n);
  addr_len_ = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + n + 1);
}

JournalSink::Result JournalSink::send(const JournalEntry& e, std::string& why) {
  if (!fd_) {
    fd_.reset(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd_) {
      why = "socket: " + std::system_category().message(errno);
      return Result::failed;
    }
    const int size = kSendBuffer;
    if (::setsockopt(fd_.get(), SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size) != 0) {
      ::setsockopt(fd_.get(), SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    }
  }
  const std::string datagram = encode_journal_entry(e);
  ssize_t r;
  do {
    r = ::sendto(fd_.get(), datagram.data(), datagram.size(), MSG_NOSIGNAL,
                 reinterpret_cast<const sockaddr*>(&addr_), addr_len_);
  } while (r < 0 && errno == EINTR);
  if (r >= 0) return Result::sent;
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) return Result::full;
  why = path_ + ": " + std::system_category().message(errno);
  return Result::failed;
}

}  // namespace mgmt::process
