#include "remote.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <ostream>
#include <stdexcept>
#include <string_view>
#include <thread>
#include <utility>

extern char** environ;

namespace mgmtctl {

namespace {

constexpr std::string_view kForms =
    "want ssh://[user@]host[:port][/path/to/manager.sock] or unix:///path/to/manager.sock";

bool has_blank_or_control(std::string_view s) {
  for (const char c : s) {
    if (static_cast<unsigned char>(c) <= ' ' || c == '\x7f') return true;
  }
  return false;
}

std::optional<unsigned> parse_port(std::string_view s) {
  if (s.empty() || s.size() > 5) return std::nullopt;
  unsigned v = 0;
  for (const char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<unsigned>(c - '0');
  }
  if (v == 0 || v > 65535) return std::nullopt;
  return v;
}

// ---- Ctrl-C and friends: the ssh children die with us ----------------------------------
//
// An ssh child shares our process group, so a terminal's Ctrl-C reaches it too, but a
// SIGTERM or SIGHUP sent to mgmtctl alone would leave it behind, connected. The handler
// kills and reaps every live child, then dies of the signal as it would have.

constexpr std::size_t kMaxTracked = 256;
std::array<std::atomic<pid_t>, kMaxTracked> g_children{};
// Set by the handler: the ssh processes die because we do, not a failure to report
// (another thread may see its ssh end before the signal ends the process).
std::atomic<bool> g_dying{false};

extern "C" void on_fatal_signal(int sig) {
  const int saved = errno;
  g_dying.store(true);
  for (auto& slot : g_children) {
    const pid_t pid = slot.exchange(0);
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
      }
    }
  }
  ::signal(sig, SIG_DFL);
  ::raise(sig);  // delivered when the handler returns
  errno = saved;
}

void install_signal_handlers() {
  static std::once_flag once;
  std::call_once(once, [] {
    // SIGPIPE too: `mgmtctl --host ... events | head -1` ends by it.
    for (const int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE}) {
      struct sigaction old {};
      if (::sigaction(sig, nullptr, &old) != 0) continue;
      if (old.sa_handler == SIG_IGN) continue;  // nohup and friends: stay ignored
      struct sigaction sa {};
      sa.sa_handler = on_fatal_signal;
      sigemptyset(&sa.sa_mask);
      ::sigaction(sig, &sa, nullptr);
    }
  });
}

void track(pid_t pid) {
  for (auto& slot : g_children) {
    pid_t expected = 0;
    if (slot.compare_exchange_strong(expected, pid)) return;
  }
  // More children than slots: this one is still reaped, just not on a fatal signal.
}

void untrack(pid_t pid) {
  for (auto& slot : g_children) {
    pid_t expected = pid;
    if (slot.compare_exchange_strong(expected, 0)) return;
  }
}

// The last non-blank line of what ssh wrote to stderr (`fd`, a memfd): ssh and the remote
// shell put the line that matters last, after warnings such as "Permanently added ...".
std::string last_line(int fd) {
  if (fd < 0) return "";
  std::string text;
  char buf[4096];
  off_t at = 0;
  while (true) {
    const ssize_t n = ::pread(fd, buf, sizeof buf, at);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    text.append(buf, static_cast<std::size_t>(n));
    at += n;
  }
  std::size_t end = text.size();
  while (end > 0) {
    while (end > 0 && (text[end - 1] == '\n' || text[end - 1] == '\r' || text[end - 1] == ' ')) {
      --end;
    }
    const auto nl = text.rfind('\n', end == 0 ? 0 : end - 1);
    const std::size_t begin = nl == std::string::npos ? 0 : nl + 1;
    std::string line = text.substr(begin, end - begin);
    if (line.find_first_not_of(" \t\r") != std::string::npos) return line;
    end = begin;
  }
  return "";
}

std::string strip_prefix(std::string s, std::string_view prefix) {
  if (s.compare(0, prefix.size(), prefix) == 0) s.erase(0, prefix.size());
  return s;
}

}  // namespace

std::string HostSpec::where() const {
  if (kind == Kind::local) return path;
  std::string w = user.empty() ? "" : user + "@";
  const bool v6 = host.find(':') != std::string::npos;
  w += v6 && port ? "[" + host + "]" : host;
  if (port) w += ":" + std::to_string(*port);
  return w;
}

std::optional<HostSpec> parse_host(const std::string& text, std::string& error) {
  auto fail = [&](const std::string& why) -> std::optional<HostSpec> {
    error = "invalid host \"" + text + "\": " + why;
    return std::nullopt;
  };
  HostSpec h;
  h.text = text;
  std::string_view rest = text;
  if (rest.starts_with("unix://")) {
    rest.remove_prefix(7);
    if (rest.empty() || rest[0] != '/') {
      return fail("unix:// needs an absolute path (unix:///run/mgmt/manager.sock)");
    }
    h.kind = HostSpec::Kind::local;
    h.path = rest;
    return h;
  }
  if (!rest.starts_with("ssh://")) {
    return fail(std::string(rest.find("://") == std::string_view::npos ? "no scheme"
                                                                       : "unsupported scheme") +
                " (" + std::string(kForms) + ")");
  }
  rest.remove_prefix(6);
  h.kind = HostSpec::Kind::ssh;
  const auto slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  if (slash != std::string_view::npos) {
    h.path = rest.substr(slash);
    if (h.path == "/") h.path.clear();  // ssh://host/: the remote's own discovery
  }
  if (has_blank_or_control(authority)) return fail("blanks or control characters in the host part");
  if (const auto at = authority.rfind('@'); at != std::string_view::npos) {
    h.user = authority.substr(0, at);
    authority.remove_prefix(at + 1);
    if (h.user.empty()) return fail("empty user before '@'");
    if (h.user[0] == '-') return fail("a user may not start with '-'");
  }
  std::string_view port_text;
  bool has_port = false;
  if (!authority.empty() && authority[0] == '[') {  // [::1]:2222
    const auto close = authority.find(']');
    if (close == std::string_view::npos) return fail("'[' without ']'");
    h.host = authority.substr(1, close - 1);
    const std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') return fail("expected ':PORT' after ']'");
      port_text = after.substr(1);
      has_port = true;
    }
  } else {
    const auto colon = authority.find(':');
    if (colon != std::string_view::npos &&
        authority.find(':', colon + 1) != std::string_view::npos) {
      return fail("an IPv6 address goes in brackets (ssh://[::1]:2222)");
    }
    h.host = authority.substr(0, colon);
    if (colon != std::string_view::npos) {
      port_text = authority.substr(colon + 1);
      has_port = true;
    }
  }
  if (h.host.empty()) return fail("no host name (" + std::string(kForms) + ")");
  if (h.host[0] == '-') return fail("a host may not start with '-'");
  if (has_port) {
    h.port = parse_port(port_text);
    if (!h.port) return fail("invalid port \"" + std::string(port_text) + "\" (want 1..65535)");
  }
  return h;
}

std::vector<std::string> parse_hosts_file(const std::string& content) {
  std::vector<std::string> hosts;
  std::string_view rest = content;
  while (!rest.empty()) {
    const auto nl = rest.find('\n');
    std::string_view line = rest.substr(0, nl);
    rest.remove_prefix(nl == std::string_view::npos ? rest.size() : nl + 1);
    if (const auto hash = line.find('#'); hash != std::string_view::npos)
      line = line.substr(0, hash);
    const auto b = line.find_first_not_of(" \t\r");
    if (b == std::string_view::npos) continue;
    const auto e = line.find_last_not_of(" \t\r");
    hosts.emplace_back(line.substr(b, e - b + 1));
  }
  return hosts;
}

std::vector<std::string> split_words(const std::string& s) {
  std::vector<std::string> words;
  std::size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n')) ++i;
    const std::size_t b = i;
    while (i < s.size() && s[i] != ' ' && s[i] != '\t' && s[i] != '\n') ++i;
    if (i > b) words.push_back(s.substr(b, i - b));
  }
  return words;
}

std::string shell_quote(const std::string& s) {
  const bool plain = !s.empty() && s.find_first_not_of(
                                       "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                       "0123456789_@%+=:,./-") == std::string::npos;
  if (plain) return s;
  std::string q = "'";
  for (const char c : s) {
    if (c == '\'') {
      q += "'\\''";
    } else {
      q += c;
    }
  }
  return q + "'";
}

SshSettings SshSettings::from_env() {
  SshSettings s;
  if (const char* c = std::getenv("MGMT_SSH_COMMAND"); c != nullptr) {
    auto words = split_words(c);
    if (!words.empty()) s.command = std::move(words);
  }
  if (const char* m = std::getenv("MGMT_REMOTE_MGMTCTL"); m != nullptr && *m != '\0') {
    s.remote_mgmtctl = m;
  }
  return s;
}

std::vector<std::string> ssh_argv(const HostSpec& h, const SshSettings& s) {
  std::vector<std::string> argv = s.command;
  if (h.port) {
    argv.emplace_back("-p");
    argv.push_back(std::to_string(*h.port));
  }
  argv.push_back(h.user.empty() ? h.host : h.user + "@" + h.host);
  // "--": nothing after it is read as an ssh option. ssh hands the rest to the remote
  // shell as one line, so the socket path is quoted for it.
  argv.emplace_back("--");
  argv.push_back(s.remote_mgmtctl);
  argv.emplace_back("dial-stdio");
  if (!h.path.empty()) {
    argv.emplace_back("--socket");
    argv.push_back(shell_quote(h.path));
  }
  return argv;
}

// ---- Connection -------------------------------------------------------------------------

Connection Connection::open(const HostSpec& h, const SshSettings& s) {
  Connection c;
  c.where_ = h.where();
  if (h.kind == HostSpec::Kind::local) {
    c.client_.emplace(h.path);
    return c;
  }

  // Our end stays close-on-exec, so ssh children of other hosts (fleet threads spawn
  // concurrently) never hold it open and hide ssh's end of the stream.
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    throw std::runtime_error(std::string("cannot create a socketpair for ssh: ") +
                             std::strerror(errno));
  }
  // ssh's stderr goes to memory, read only to explain a failure: a pipe nobody drains
  // could block ssh, and a terminal would get its noise.
  const int efd = ::memfd_create("mgmtctl-ssh-stderr", MFD_CLOEXEC);
  if (efd < 0) {
    const int e = errno;
    ::close(sv[0]);
    ::close(sv[1]);
    throw std::runtime_error(std::string("cannot create a buffer for ssh's stderr: ") +
                             std::strerror(e));
  }
  const auto argv = ssh_argv(h, s);
  std::vector<char*> cargv;
  cargv.reserve(argv.size() + 1);
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);

  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, sv[1], STDIN_FILENO);
  posix_spawn_file_actions_adddup2(&fa, sv[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&fa, efd, STDERR_FILENO);
  install_signal_handlers();
  pid_t pid = -1;
  const int rc = ::posix_spawnp(&pid, cargv[0], &fa, nullptr, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(sv[1]);
  if (rc != 0) {
    ::close(sv[0]);
    ::close(efd);
    throw std::runtime_error(
        "ssh to " + c.where_ + " failed: cannot run \"" + argv[0] + "\": " + std::strerror(rc) +
        (rc == ENOENT ? " (install an ssh client or set MGMT_SSH_COMMAND)" : ""));
  }
  track(pid);
  c.pid_ = pid;
  c.stderr_fd_ = efd;
  c.client_.emplace(mgmt::Client::adopt(sv[0], h.text));
  return c;
}

Connection::Connection(Connection&& o) noexcept
    : client_(std::move(o.client_)),
      pid_(std::exchange(o.pid_, -1)),
      stderr_fd_(std::exchange(o.stderr_fd_, -1)),
      where_(std::move(o.where_)),
      status_(o.status_) {
  o.client_.reset();
}

Connection::~Connection() {
  // Closing our end is ssh's end of input: it ends the remote command and exits, within
  // a round trip. Waited for a moment, then killed: a child is never left behind.
  client_.reset();
  if (pid_ > 0 && !status_) {
    reap(2000);
    if (!status_) kill();
  }
  if (pid_ > 0) untrack(pid_);
  if (stderr_fd_ >= 0) ::close(stderr_fd_);
}

void Connection::reap(int timeout_ms) {
  if (pid_ <= 0 || status_) return;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  auto pause = std::chrono::microseconds(200);
  while (true) {
    int st = 0;
    const pid_t r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
      status_ = st;
      return;
    }
    if (r < 0 && errno != EINTR) {  // reaped elsewhere (the signal handler): gone anyway
      status_ = 0;
      return;
    }
    if (std::chrono::steady_clock::now() >= deadline) return;
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(20000));
  }
}

void Connection::kill() {
  if (pid_ <= 0 || status_) return;
  ::kill(pid_, SIGKILL);
  int st = 0;
  while (::waitpid(pid_, &st, 0) < 0) {
    if (errno != EINTR) break;
  }
  status_ = -1;  // ours: not a failure to explain
}

std::string Connection::transport_error() {
  if (pid_ <= 0) return "";
  if (!status_) {
    // ssh still holding its end open means it is connected and fine: the failure (a
    // protocol error, say) was not the transport's. Once it closed, it is exiting.
    pollfd p{client_ ? client_->fd() : -1, POLLRDHUP, 0};
    const bool closed =
        !client_ || (::poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0);
    if (!closed) return "";
    reap(10000);
    if (!status_) return "";
  }
  return explain(*status_);
}

std::string Connection::explain(int status) const {
  if (status == -1 || g_dying.load()) return "";  // killed by us
  const std::string line = last_line(stderr_fd_);
  const std::string said = line.empty() ? "" : ": " + line;
  if (WIFSIGNALED(status)) {
    return "ssh to " + where_ + " was killed by signal " + std::to_string(WTERMSIG(status));
  }
  switch (const int code = WEXITSTATUS(status)) {
    case 0:
      return "";
    case 255:
      return "ssh to " + where_ + " failed" + (said.empty() ? " (exit code 255)" : said);
    case 127:
      return "mgmtctl not found on " + where_ + " (set MGMT_REMOTE_MGMTCTL to its path there)" +
             said;
    case 126:
      return "cannot run mgmtctl on " + where_ + said;
    case 1:
      return "no mgmtd on " + where_ + (line.empty() ? "" : ": " + strip_prefix(line, "mgmtctl: "));
    case 2:
      return "the mgmtctl on " + where_ + " does not understand dial-stdio (older than this one?)" +
             said;
    default:
      return "ssh to " + where_ + ": the remote command failed with exit code " +
             std::to_string(code) + said;
  }
}

// ---- dial-stdio ---------------------------------------------------------------------------

namespace {

// Writes what it can of `buf` to stdout without blocking for long: a socket takes
// MSG_DONTWAIT; a pipe that polled writable takes a page without blocking.
ssize_t write_stdout(const std::string& buf) {
  ssize_t w = ::send(STDOUT_FILENO, buf.data(), buf.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  if (w < 0 && errno == ENOTSOCK) {
    w = ::write(STDOUT_FILENO, buf.data(), std::min<std::size_t>(buf.size(), 4096));
  }
  return w;
}

}  // namespace

int dial_stdio(const std::string& socket, std::ostream& err) {
  // A reader that went away is an EPIPE to handle, not a signal to die of.
  ::signal(SIGPIPE, SIG_IGN);
  std::optional<mgmt::Client> client;
  try {
    client.emplace(socket);
  } catch (const std::exception& e) {
    err << "mgmtctl: " << e.what() << '\n';
    return 1;
  }
  const int sock = client->fd();
  constexpr std::size_t kHigh = 1 << 20;  // stop reading a side while this much waits
  std::string to_sock, to_out;
  bool in_open = true, sock_open = true, shut = false;
  char buf[65536];
  while (true) {
    if (!in_open && to_sock.empty() && !shut) {
      // The client is done asking: the server sees the end of requests, and its answers
      // (and any stream) keep coming until it closes.
      ::shutdown(sock, SHUT_WR);
      shut = true;
    }
    if (!sock_open && to_out.empty()) return 0;
    pollfd fds[3];
    nfds_t n = 0;
    int in_i = -1, sock_i = -1, out_i = -1;
    if (in_open && to_sock.size() < kHigh) {
      in_i = static_cast<int>(n);
      fds[n++] = {STDIN_FILENO, POLLIN, 0};
    }
    const short sock_events = static_cast<short>((sock_open && to_out.size() < kHigh ? POLLIN : 0) |
                                                 (!to_sock.empty() ? POLLOUT : 0));
    if (sock_events != 0) {
      sock_i = static_cast<int>(n);
      fds[n++] = {sock, sock_events, 0};
    }
    if (!to_out.empty()) {
      out_i = static_cast<int>(n);
      fds[n++] = {STDOUT_FILENO, POLLOUT, 0};
    }
    if (::poll(fds, n, -1) < 0) {
      if (errno == EINTR) continue;
      err << "mgmtctl: dial-stdio: poll: " << std::strerror(errno) << '\n';
      return 1;
    }
    if (in_i >= 0 && fds[in_i].revents != 0) {
      const ssize_t r = ::read(STDIN_FILENO, buf, sizeof buf);
      if (r > 0) {
        to_sock.append(buf, static_cast<std::size_t>(r));
      } else if (r == 0 || (errno != EINTR && errno != EAGAIN)) {
        in_open = false;
      }
    }
    if (sock_i >= 0 && (fds[sock_i].revents & POLLOUT) != 0 && !to_sock.empty()) {
      const ssize_t w = ::send(sock, to_sock.data(), to_sock.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
      if (w > 0) {
        to_sock.erase(0, static_cast<std::size_t>(w));
      } else if (w < 0 && errno != EINTR && errno != EAGAIN) {
        // The server closed the connection: what it still sent is delivered, the rest
        // of the requests has nobody to go to.
        to_sock.clear();
        in_open = false;
        shut = true;
      }
    }
    if (sock_i >= 0 && (fds[sock_i].revents & (POLLIN | POLLHUP | POLLERR)) != 0 && sock_open &&
        to_out.size() < kHigh) {
      const ssize_t r = ::recv(sock, buf, sizeof buf, MSG_DONTWAIT);
      if (r > 0) {
        to_out.append(buf, static_cast<std::size_t>(r));
      } else if (r == 0 || errno == ECONNRESET) {
        sock_open = false;
      } else if (errno != EINTR && errno != EAGAIN) {
        err << "mgmtctl: dial-stdio: cannot read from " << socket << ": " << std::strerror(errno)
            << '\n';
        return 1;
      }
    }
    if (out_i >= 0 && fds[out_i].revents != 0) {
      const ssize_t w = write_stdout(to_out);
      if (w > 0) {
        to_out.erase(0, static_cast<std::size_t>(w));
      } else if (w < 0 && errno != EINTR && errno != EAGAIN) {
        return 1;  // nobody reads our output any more (ssh is gone): nothing left to do
      }
    }
  }
}

}  // namespace mgmtctl
