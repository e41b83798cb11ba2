#include "harness.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "wait.hpp"

extern char** environ;

namespace fs = std::filesystem;

namespace mgmt::test {

TempDir::TempDir() {
  std::string tmpl = (fs::temp_directory_path() / "mgmt-test-XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

void TempDir::write(const std::string& name, const std::string& content) const {
  std::ofstream(file(name), std::ios::trunc) << content;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool pid_alive(pid_t pid) {
  // A zombie still "exists" for kill(); look at its state instead.
  const std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
  if (stat.empty()) return false;
  const auto close_paren = stat.rfind(')');
  return close_paren != std::string::npos && close_paren + 2 < stat.size() &&
         stat[close_paren + 2] != 'Z';
}

namespace {

pid_t spawn(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env,
            const std::string& out_file, const std::string& err_file) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, out_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&fa, 2, err_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);

  std::map<std::string, std::string> merged;
  for (char** e = environ; *e; ++e) {
    std::string kv(*e);
    const auto eq = kv.find('=');
    if (eq != std::string::npos) merged[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  for (const auto& [k, v] : env) merged[k] = v;
  std::vector<std::string> env_strings;
  for (const auto& [k, v] : merged) env_strings.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = argv;
  std::vector<char*> cargv;
  for (auto& a : args) cargv.push_back(a.data());
  cargv.push_back(nullptr);

  pid_t pid = -1;
  const int rc = posix_spawn(&pid, cargv[0], &fa, nullptr, cargv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) throw std::runtime_error("cannot spawn " + argv[0] + ": " + std::strerror(rc));
  return pid;
}

// Waits for `pid` with a deadline; returns the exit code, -1 for a signal or a timeout
// (the process is then killed).
int wait_exit(pid_t pid, std::chrono::milliseconds timeout) {
  int status = 0;
  const bool exited = wait_until(
      [&] {
        const pid_t r = ::waitpid(pid, &status, WNOHANG);
        return r == pid;
      },
      timeout);
  if (!exited) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

RunResult run(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env,
              std::chrono::milliseconds timeout) {
  TempDir io;
  const pid_t pid = spawn(argv, env, io.file("out"), io.file("err"));
  RunResult r;
  r.exit_code = wait_exit(pid, timeout);
  r.out = read_file(io.file("out"));
  r.err = read_file(io.file("err"));
  return r;
}

Background::Background(const std::vector<std::string>& argv,
                       const std::map<std::string, std::string>& env)
    : pid_(spawn(argv, env, io_.file("out"), io_.file("err"))) {}

Background::~Background() {
  if (!reaped_) {
    ::kill(pid_, SIGKILL);
    wait_exit(pid_, 5s);
  }
}

std::string Background::out() const { return read_file(io_.file("out")); }

RunResult Background::wait(std::chrono::milliseconds timeout) {
  RunResult r;
  r.exit_code = wait_exit(pid_, timeout);
  reaped_ = true;
  r.out = read_file(io_.file("out"));
  r.err = read_file(io_.file("err"));
  return r;
}

std::string probe_process(const std::string& id) {
  return "      - id: " + id +
         "\n"
         "        command: /bin/sleep\n"
         "        args: ['100000']\n"
         "        autostart: false\n"
         "        stop_timeout: 5s\n";
}

void confirm_subscription(const std::string& socket, RawConn& sub, const std::string& probe) {
  RawConn ctl(socket);
  const bool seen = wait_until(
      [&] {
        for (const MsgType op : {MsgType::StartRequest, MsgType::StopRequest}) {
          ctl.send(to_byte(op), encode(IdRequest{probe}));
          const auto answer = ctl.read(20s);
          REQUIRE(answer);
          REQUIRE(as_status(*answer).err.empty());
        }
        // The stop was answered after its event was queued to every subscriber.
        while (auto f = sub.read(2s)) {
          EventsStream e;
          REQUIRE(decode(f->payload, e).empty());
          if (e.pid == probe && e.t == event::stopped) return true;
        }
        return false;
      },
      60s);
  REQUIRE(seen);
}

std::string ticker_processes(const std::string& id) {
  return "      - id: " + id +
         "\n"
         "        name: Ticker\n"
         "        command: /bin/sh\n"
         "        args: [-c, 'i=0; while true; do echo \"tick $i\"; echo \"oops $i\" >&2; "
         "i=$((i+1)); sleep 0.1; done']\n"
         "        stop_timeout: 3s\n";
}

Mgmtd::Mgmtd(const std::string& backend_and_more,
             const std::function<void(const std::string& socket)>& prepare,
             const std::vector<std::string>& wrapper) {
  socket_ = dir_.file("run/manager.sock");
  if (prepare) prepare(socket_);
  // MGMT_TEST_IO_THREADS runs every harnessed mgmtd with that server.io_threads (the
  // integration:io2: tests of CMakeLists.txt set it).
  const char* io_threads = std::getenv("MGMT_TEST_IO_THREADS");
  const std::string config = "server:\n  socket: " + socket_ + "\n  write_hint: false\n" +
                             (io_threads && *io_threads
                                  ? std::string("  io_threads: ") + io_threads + "\n"
                                  : std::string()) +
                             backend_and_more;
  dir_.write("mgmt.yaml", config);
  std::vector<std::string> argv = wrapper;
  argv.insert(argv.end(), {MGMTD_BIN, "-c", dir_.file("mgmt.yaml"), "--log-level", "debug"});
  pid_ = spawn(argv,
               {{"HOME", dir_.path()}, {"XDG_CACHE_HOME", dir_.file("cache")}},
               dir_.file("mgmtd.out"), dir_.file("mgmtd.err"));
  const bool ready = wait_until(
      [&] {
        if (!pid_alive(pid_)) return true;
        try {
          Client c(socket_);
          return true;
        } catch (const std::exception&) {
          return false;
        }
      },
      15s);
  if (!ready || !pid_alive(pid_)) {
    const std::string why = log();
    terminate(2s);
    throw std::runtime_error("mgmtd did not become ready:\n" + why);
  }
}

Mgmtd::~Mgmtd() {
  if (!reaped_) terminate(20s);
}

std::string Mgmtd::log() const { return read_file(dir_.file("mgmtd.err")); }

int Mgmtd::terminate(std::chrono::milliseconds timeout) {
  if (reaped_) return -1;
  ::kill(pid_, SIGTERM);
  reaped_ = true;
  return wait_exit(pid_, timeout);
}

RunResult Mgmtd::ctl(const std::vector<std::string>& args) const {
  std::vector<std::string> argv{MGMTCTL_BIN, "--socket", socket_};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv, {{"TZ", "UTC"}});
}

RawConn::RawConn(const std::string& socket) {
  fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, socket.c_str(), sizeof addr.sun_path - 1);
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    const int e = errno;
    ::close(fd_);
    throw std::runtime_error("connect " + socket + ": " + std::strerror(e));
  }
}

RawConn::~RawConn() { ::close(fd_); }

void RawConn::send_bytes(const std::string& bytes) {
  std::size_t off = 0;
  while (off < bytes.size()) {
    const ssize_t n = ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw std::runtime_error(std::string("send: ") + std::strerror(errno));
    }
    off += static_cast<std::size_t>(n);
  }
}

bool RawConn::send_within(const std::string& bytes, std::chrono::milliseconds timeout) {
  std::size_t off = 0;
  while (off < bytes.size()) {
    const ssize_t n =
        ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0) {
      off += static_cast<std::size_t>(n);
      continue;
    }
    if (errno == EINTR) continue;
    if (off == 0 && (errno == EPIPE || errno == ECONNRESET)) return false;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      throw std::runtime_error(std::string("send: ") + std::strerror(errno));
    }
    pollfd p{fd_, POLLOUT, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) == 0) {
      if (off == 0) return false;
      throw std::runtime_error("send: the socket stayed full in the middle of the bytes");
    }
  }
  return true;
}

void RawConn::shutdown_write() {
  ::shutdown(fd_, SHUT_WR);
}

void RawConn::send(std::uint8_t type, const std::string& payload, std::uint64_t seq) {
  send_bytes(make_frame(type, seq, payload));
}

bool RawConn::read_exact(char* p, std::size_t n, std::chrono::steady_clock::time_point deadline) {
  std::size_t got = 0;
  while (got < n) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd pfd{fd_, POLLIN, 0};
    if (::poll(&pfd, 1, static_cast<int>(left.count())) <= 0) continue;
    const ssize_t r = ::recv(fd_, p + got, n - got, 0);
    if (r == 0) {
      eof_ = true;
      return false;
    }
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      eof_ = true;
      return false;
    }
    got += static_cast<std::size_t>(r);
  }
  return true;
}

std::optional<Frame> RawConn::read(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::uint8_t hdr[kHeaderSize];
  if (!read_exact(reinterpret_cast<char*>(hdr), kHeaderSize, deadline)) return std::nullopt;
  Frame f;
  if (parse_header(hdr, f.header) != HeaderError::none) {
    throw std::runtime_error("server sent a bad frame header");
  }
  f.payload.resize(f.header.length);
  if (!read_exact(f.payload.data(), f.payload.size(), deadline)) return std::nullopt;
  return f;
}

bool RawConn::closed_by_server(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  char buf[4096];
  while (!eof_) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd pfd{fd_, POLLIN, 0};
    if (::poll(&pfd, 1, static_cast<int>(left.count())) <= 0) continue;
    const ssize_t r = ::recv(fd_, buf, sizeof buf, 0);
    if (r <= 0 && !(r < 0 && errno == EINTR)) eof_ = true;
  }
  return true;
}

StatusResponse as_status(const Frame& f) {
  REQUIRE(int(f.header.type) == int(to_byte(MsgType::StatusResponse)));
  StatusResponse r;
  REQUIRE(decode(f.payload, r).empty());
  return r;
}

}  // namespace mgmt::test
