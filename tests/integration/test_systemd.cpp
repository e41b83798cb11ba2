// systemd's protocols against the real mgmtd, with sockets of the test's own: the notify
// socket (READY, STATUS, RELOADING, STOPPING, WATCHDOG) and socket activation (LISTEN_FDS).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "harness.hpp"
#include "systemd_fakes.hpp"
#include "wait.hpp"

using namespace mgmt;
using namespace mgmt::test;

namespace {

bool has_line(const std::string& text, const std::string& line) {
  return ("\n" + text + "\n").find("\n" + line + "\n") != std::string::npos;
}

std::string line_starting(const std::string& text, const std::string& prefix) {
  std::size_t at = 0;
  while (at < text.size()) {
    const std::size_t end = std::min(text.find('\n', at), text.size());
    if (text.compare(at, prefix.size(), prefix) == 0) return text.substr(at, end - at);
    at = end + 1;
  }
  return {};
}

// A listening Unix socket at `path`, owned by the test: the service manager's part.
int listening_socket(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);  // inherited by mgmtd: no CLOEXEC
  REQUIRE(fd >= 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  REQUIRE(::listen(fd, 64) == 0);
  return fd;
}

// Starts mgmtd as a socket-activated service: `listen_fd` becomes its descriptor 3, with
// LISTEN_FDS=1 and LISTEN_PID set to its own pid (which only the child knows: set after fork).
pid_t spawn_activated(int listen_fd, const std::string& config, const std::string& log) {
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    const int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    ::dup2(out, 1);
    ::dup2(out, 2);
    if (listen_fd != 3) {
      ::dup2(listen_fd, 3);
      ::close(listen_fd);
    }
    ::setenv("LISTEN_FDS", "1", 1);
    ::setenv("LISTEN_PID", std::to_string(::getpid()).c_str(), 1);
    ::execl(MGMTD_BIN, MGMTD_BIN, "-c", config.c_str(), "--log-level", "debug",
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  return pid;
}

int wait_child(pid_t pid, std::chrono::milliseconds timeout = 20s) {
  int status = 0;
  const bool done = wait_until([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, timeout);
  if (!done) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::vector<Entry> list_on(RawConn& c) {
  auto f = c.read(20s);
  REQUIRE(f);
  REQUIRE(int(f->header.type) == int(to_byte(MsgType::ListResponse)));
  ListResponse r;
  REQUIRE(decode(f->payload, r).empty());
  return r.entries;
}

const std::string kSleeper =
    "backend:\n  plugin: process\n  config:\n    processes:\n"
    "      - id: web\n        command: /bin/sh\n"
    "        args: [-c, 'env > \"$OUT\"; exec sleep 100000']\n"
    "        stop_timeout: 5s\n";

}  // namespace

TEST_CASE("systemd: READY, STATUS, RELOADING, STOPPING and WATCHDOG reach the notify socket",
          "[systemd]") {
  TempDir dir;
  NotifySocket notify(dir.file("notify.sock"));
  const ScopedEnv socket_env("NOTIFY_SOCKET", dir.file("notify.sock"));
  const ScopedEnv watchdog_env("WATCHDOG_USEC", "200000");  // a ping every 100 ms
  Mgmtd d(kSleeper + "        env: {OUT: " + dir.file("env") + "}\n");
  int pings = 0;

  auto ready = notify.next_state(pings);
  REQUIRE(ready);
  INFO(ready->text << "\n" << d.log());
  CHECK(ready->sender == d.pid());
  CHECK(has_line(ready->text, "READY=1"));
  // Sent once listening with the processes started: the socket already answers.
  CHECK(d.ctl({"list"}).exit_code == 0);
  CHECK_THAT(line_starting(ready->text, "STATUS="), Catch::StartsWith("STATUS=1 process: 1 "));

  // The status follows the processes.
  REQUIRE(wait_until([&] { return d.ctl({"status", "web"}).out.find("running") != std::string::npos; }));
  REQUIRE(d.ctl({"stop", "web"}).exit_code == 0);
  std::optional<NotifySocket::Message> m;
  REQUIRE(wait_until([&] {
    m = notify.next_state(pings, 5s);
    return !m || has_line(m->text, "STATUS=1 process: 1 stopped");
  }));
  REQUIRE(m);

  // A reload is bracketed: RELOADING=1 with the monotonic time, then READY=1.
  const auto before = std::chrono::steady_clock::now();
  REQUIRE(::kill(d.pid(), SIGHUP) == 0);
  auto reloading = notify.next_state(pings);
  REQUIRE(reloading);
  CHECK(has_line(reloading->text, "RELOADING=1"));
  const std::string usec = line_starting(reloading->text, "MONOTONIC_USEC=");
  REQUIRE_FALSE(usec.empty());
  const long long when = std::stoll(usec.substr(std::strlen("MONOTONIC_USEC=")));
  CHECK(when >= std::chrono::duration_cast<std::chrono::microseconds>(before.time_since_epoch())
                    .count());
  auto reloaded = notify.next_state(pings);
  REQUIRE(reloaded);
  CHECK(has_line(reloaded->text, "READY=1"));

  // The watchdog is fed from the I/O thread while mgmtd runs.
  REQUIRE(wait_until([&] {
    notify.next_state(pings, 200ms);
    return pings >= 3;
  }));

  // Shutdown begins with STOPPING=1.
  REQUIRE(::kill(d.pid(), SIGTERM) == 0);
  auto stopping = notify.next_state(pings);
  REQUIRE(stopping);
  CHECK(has_line(stopping->text, "STOPPING=1"));
  CHECK(d.terminate() == 0);

  // The supervised process did not inherit the service manager's variables.
  const std::string env = read_file(dir.file("env"));
  REQUIRE_FALSE(env.empty());
  CHECK(env.find("NOTIFY_SOCKET=") == std::string::npos);
  CHECK(env.find("WATCHDOG_USEC=") == std::string::npos);
}

TEST_CASE("systemd: an inherited socket is served, kept, and its waiting clients answered",
          "[systemd]") {
  TempDir dir;
  const std::string sock = dir.file("manager.sock");
  const int lfd = listening_socket(sock);
  dir.write("mgmt.yaml", "server:\n  socket: " + sock + "\n  write_hint: false\n" + kSleeper +
                             "        env: {OUT: " + dir.file("env") + "}\n");

  // A client that connects before mgmtd runs waits in the socket's backlog.
  RawConn early(sock);
  early.send(to_byte(MsgType::ListRequest), "");
  const pid_t first = spawn_activated(lfd, dir.file("mgmt.yaml"), dir.file("mgmtd.log"));
  const auto entries = list_on(early);
  REQUIRE(entries.size() == 1);
  CHECK(entries[0].id == "web");
  CHECK_THAT(read_file(dir.file("mgmtd.log")), Catch::Contains("(socket activation)"));
  REQUIRE(wait_until([&] { return !read_file(dir.file("env")).empty(); }));
  CHECK(read_file(dir.file("env")).find("LISTEN_FDS=") == std::string::npos);

  REQUIRE(::kill(first, SIGTERM) == 0);
  CHECK(wait_child(first) == 0);
  // The socket is the service manager's: still there, still taking connections.
  CHECK(std::filesystem::exists(sock));
  RawConn during_restart(sock);
  during_restart.send(to_byte(MsgType::ListRequest), "");

  const pid_t second = spawn_activated(lfd, dir.file("mgmt.yaml"), dir.file("mgmtd.log"));
  CHECK(list_on(during_restart).size() == 1);
  REQUIRE(::kill(second, SIGTERM) == 0);
  CHECK(wait_child(second) == 0);
  CHECK(std::filesystem::exists(sock));
  ::close(lfd);
}

TEST_CASE("systemd: mgmtd runs under systemd-socket-activate", "[systemd]") {
  const char* activate = "/usr/bin/systemd-socket-activate";
  if (::access(activate, X_OK) != 0) {
    WARN("systemd-socket-activate is not installed: skipped");
    return;
  }
  TempDir dir;
  const std::string sock = dir.file("manager.sock");
  dir.write("mgmt.yaml", "server:\n  socket: " + sock + "\n  write_hint: false\n" + kSleeper +
                             "        env: {OUT: " + dir.file("env") + "}\n");
  Background svc({activate, "-l", sock, MGMTD_BIN, "-c", dir.file("mgmt.yaml")});
  // It listens first and starts mgmtd on the first connection.
  REQUIRE(wait_until([&] { return std::filesystem::exists(sock); }));
  RunResult list;
  REQUIRE(wait_until([&] {
    list = run({MGMTCTL_BIN, "--socket", sock, "list"});
    return list.exit_code == 0;
  }));
  CHECK_THAT(list.out, Catch::Contains("web"));
  // The second connection reaches the same mgmtd.
  CHECK(run({MGMTCTL_BIN, "--socket", sock, "status", "web"}).exit_code == 0);
}
