// Runs the real mgmtd and mgmtctl for integration tests, and talks raw frames to the socket.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "mgmt/client.hpp"
#include "mgmt/messages.hpp"
#include "mgmt/wire.hpp"

namespace mgmt::test {

using namespace std::chrono_literals;

// A private temporary folder, removed with everything in it.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  void write(const std::string& name, const std::string& content) const;

 private:
  std::string path_;
};

struct RunResult {
  int exit_code = -1;  // -1 when killed by a signal or timed out
  std::string out;
  std::string err;
};

// Runs a program to completion (killed after `timeout`), capturing stdout and stderr.
RunResult run(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env = {},
              std::chrono::milliseconds timeout = 20s);

// A program running in the background whose output can be read while it runs.
class Background {
 public:
  explicit Background(const std::vector<std::string>& argv,
                      const std::map<std::string, std::string>& env = {});
  ~Background();
  std::string out() const;
  RunResult wait(std::chrono::milliseconds timeout = 20s);

 private:
  TempDir io_;
  pid_t pid_ = -1;
  bool reaped_ = false;
};

std::string read_file(const std::string& path);
bool pid_alive(pid_t pid);

// The processes section of a config: one shell "ticker" writing to stdout and stderr.
std::string ticker_processes(const std::string& id = "ticker");

// A running mgmtd on a private socket in a temp folder.
class Mgmtd {
 public:
  // `backend_and_more` is YAML appended after the generated `server:` section; it must at
  // least contain `backend:`.
  // `prepare` runs before mgmtd starts, with the socket path it will use. `wrapper`: a
  // command line mgmtd's own is appended to (it must exec mgmtd, keeping the pid).
  explicit Mgmtd(const std::string& backend_and_more,
                 const std::function<void(const std::string& socket)>& prepare = {},
                 const std::vector<std::string>& wrapper = {});
  ~Mgmtd();

  const std::string& socket() const { return socket_; }
  const TempDir& dir() const { return dir_; }
  pid_t pid() const { return pid_; }
  std::string log() const;

  // SIGTERM, then waits for exit; returns the exit code (-1 on signal/timeout).
  int terminate(std::chrono::milliseconds timeout = 20s);
  // mgmtctl --socket <ours> args...
  RunResult ctl(const std::vector<std::string>& args) const;

 private:
  TempDir dir_;
  std::string socket_;
  pid_t pid_ = -1;
  bool reaped_ = false;
};

// A raw protocol connection with deadlines, for hand-made frames.
class RawConn {
 public:
  explicit RawConn(const std::string& socket);
  ~RawConn();
  RawConn(const RawConn&) = delete;
  RawConn& operator=(const RawConn&) = delete;

  void send_bytes(const std::string& bytes);
  void send(std::uint8_t type, const std::string& payload, std::uint64_t seq = 7);
  // Sends all of `bytes`, unless the socket stays full for `timeout` before any of it could
  // go, or the server has closed the connection: false then, and nothing was sent.
  bool send_within(const std::string& bytes, std::chrono::milliseconds timeout);
  // Half-closes the connection: the server sees the end of the requests, answers can still
  // be read.
  void shutdown_write();
  // Next frame, or nullopt when the server closed the connection or nothing came in time.
  std::optional<Frame> read(std::chrono::milliseconds timeout = 10s);
  // True when the server closes the connection within `timeout` (reading and discarding).
  bool closed_by_server(std::chrono::milliseconds timeout = 10s);

 private:
  bool read_exact(char* p, std::size_t n, std::chrono::steady_clock::time_point deadline);
  int fd_ = -1;
  bool eof_ = false;
};

// Convenience: the StatusResponse in `f` (fails the test if it is another type).
StatusResponse as_status(const Frame& f);

// The YAML of a process that only serves as a probe: `sleep`, not started by itself.
std::string probe_process(const std::string& id = "probe");

// Returns once the server has registered the events subscription just sent on `sub`.
// Requests on different connections are served in no promised order, so a round trip on
// another connection proves nothing; instead the probe process `probe` (which the
// subscription's filter must let through, with its `process.stopped`) is started and
// stopped until `sub` sees it stopped. The probe's events are consumed; the next frame on
// `sub` is an event that happened after them.
void confirm_subscription(const std::string& socket, RawConn& sub,
                          const std::string& probe = "probe");

}  // namespace mgmt::test
