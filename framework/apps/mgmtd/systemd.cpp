#include "systemd.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>

namespace mgmt::daemon {

namespace {

std::optional<long long> env_number(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return std::nullopt;
  char* end = nullptr;
  errno = 0;
  const long long n = std::strtoll(v, &end, 10);
  if (errno != 0 || *end != '\0' || n < 0) return std::nullopt;
  return n;
}

}  // namespace

Notifier::Notifier() {
  const char* sock = std::getenv("NOTIFY_SOCKET");
  const auto wd_usec = env_number("WATCHDOG_USEC");
  const auto wd_pid = env_number("WATCHDOG_PID");
  if (sock != nullptr) address_ = sock;
  ::unsetenv("NOTIFY_SOCKET");
  ::unsetenv("WATCHDOG_USEC");
  ::unsetenv("WATCHDOG_PID");
  // A watchdog asked of another process (our parent's, say) is not ours to keep.
  if (wd_usec && *wd_usec > 0 && (!wd_pid || *wd_pid == ::getpid())) {
    watchdog_ = std::chrono::microseconds(*wd_usec / 2);
    watchdog_usec_ = *wd_usec;
  }
  // An absolute path, or '@' for the abstract namespace; anything else is not a socket
  // this protocol knows (systemd also allows vsock, which a supervisor has no use for).
  if (address_.empty() || (address_[0] != '/' && address_[0] != '@') ||
      address_.size() >= sizeof(sockaddr_un{}.sun_path)) {
    return;
  }
  fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
}

Notifier::~Notifier() {
  if (fd_ >= 0) ::close(fd_);
}

std::vector<std::string> Notifier::environment() const {
  std::vector<std::string> env;
  if (address_.empty()) return env;
  env.push_back("NOTIFY_SOCKET=" + address_);
  if (watchdog_) {
    env.push_back("WATCHDOG_USEC=" + std::to_string(watchdog_usec_));
    env.push_back("WATCHDOG_PID=" + std::to_string(::getpid()));
  }
  return env;
}

std::string Notifier::send(std::string_view message) const {
  if (fd_ < 0) return {};
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, address_.data(), address_.size());
  if (addr.sun_path[0] == '@') addr.sun_path[0] = '\0';
  const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + address_.size());
  for (;;) {
    const ssize_t n = ::sendto(fd_, message.data(), message.size(), MSG_NOSIGNAL | MSG_DONTWAIT,
                               reinterpret_cast<const sockaddr*>(&addr), len);
    if (n >= 0) return {};
    if (errno == EINTR) continue;
    return "cannot notify " + address_ + ": " + std::strerror(errno);
  }
}

std::string monotonic_usec() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  const long long usec = static_cast<long long>(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
  return "MONOTONIC_USEC=" + std::to_string(usec);
}

std::string status_summary(const std::vector<Entry>& entries) {
  // States in the order a reader cares about them; any other comes after, by name.
  static const char* const kOrder[] = {"running", "starting", "restarting", "stopping",
                                       "failed",  "crashed",  "stopped",    "pending"};
  std::map<std::string, std::size_t> count;
  for (const auto& e : entries) ++count[e.state];
  std::string out = std::to_string(entries.size()) +
                    (entries.size() == 1 ? " process" : " processes");
  bool first = true;
  auto add = [&](const std::string& state, std::size_t n) {
    out += first ? ": " : ", ";
    out += std::to_string(n) + " " + state;
    first = false;
  };
  for (const char* s : kOrder) {
    if (auto it = count.find(s); it != count.end()) {
      add(it->first, it->second);
      count.erase(it);
    }
  }
  for (const auto& [state, n] : count) add(state, n);
  return out;
}

std::optional<int> take_listen_fd(std::string& note) {
  constexpr int kFirst = 3;  // SD_LISTEN_FDS_START
  const auto pid = env_number("LISTEN_PID");
  const auto fds = env_number("LISTEN_FDS");
  ::unsetenv("LISTEN_PID");
  ::unsetenv("LISTEN_FDS");
  ::unsetenv("LISTEN_FDNAMES");
  if (!pid || !fds || *pid != ::getpid() || *fds <= 0) return std::nullopt;
  std::optional<int> chosen;
  int unused = 0;
  for (int fd = kFirst; fd < kFirst + static_cast<int>(std::min<long long>(*fds, 1024)); ++fd) {
    int listening = 0, type = 0;
    socklen_t len = sizeof listening;
    sockaddr_storage ss{};
    socklen_t sslen = sizeof ss;
    const bool ok = ::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) == 0 &&
                    (len = sizeof type, ::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0) &&
                    ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &sslen) == 0 &&
                    ss.ss_family == AF_UNIX && type == SOCK_STREAM && listening != 0;
    if (ok && !chosen) {
      ::fcntl(fd, F_SETFD, FD_CLOEXEC);
      chosen = fd;
    } else {
      ::close(fd);
      ++unused;
    }
  }
  if (!chosen) {
    note = "socket activation passed " + std::to_string(*fds) +
           " descriptors, none a listening Unix stream socket: creating the socket instead";
  } else if (unused > 0) {
    note = "socket activation: serving descriptor " + std::to_string(*chosen) + ", closed " +
           std::to_string(unused) + " other(s) that mgmtd does not serve";
  }
  return chosen;
}

}  // namespace mgmt::daemon
