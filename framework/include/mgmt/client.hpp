// A blocking client for the management socket, and cliwrap's socket discovery.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "mgmt/wire.hpp"

namespace mgmt {

struct Frame {
  FrameHeader header;
  std::string payload;
};

// One connection. Errors throw std::runtime_error with a message fit for the user
// (it names the socket path and, for a refused connection, says the server is not running).
class Client {
 public:
  explicit Client(const std::string& socket_path);
  // A client on a stream that is already connected (mgmtctl's ssh bridge: one end of a
  // socketpair whose other end is ssh's stdin and stdout). Takes ownership of `fd`, which
  // must be a stream socket (send/recv); `label` stands where the socket path would in
  // messages and path().
  static Client adopt(int fd, std::string label);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;
  Client(Client&& o) noexcept;
  Client& operator=(Client&& o) noexcept;

  // Sends one frame with a fresh seq; returns the seq used.
  std::uint64_t send(std::uint8_t type, std::string_view payload);
  // Reads one frame. nullopt on a clean end of stream between frames.
  std::optional<Frame> receive();
  // send + receive; throws if the server closes the connection instead of answering.
  Frame call(std::uint8_t type, std::string_view payload);

  int fd() const noexcept { return fd_; }
  const std::string& path() const noexcept { return path_; }

 private:
  Client() = default;  // for adopt()

  int fd_ = -1;
  std::uint64_t next_seq_ = 1;
  std::string path_;
};

// cliwrap's user cache dir: $XDG_CACHE_HOME, else $HOME/.cache.
std::string user_cache_dir();
// The hint file the server writes on start: <user cache dir>/cliwrap/runtime-dir.
std::string hint_file_path();
// The socket a client should use, in cliwrap's order: explicit runtime dir, then
// $CLIWRAP_RUNTIME_DIR, then the hint file, then $TMPDIR/cliwrap (/tmp when unset).
std::string discover_socket(const std::optional<std::string>& runtime_dir_flag);
// The runtime dir a server uses when its config names none: $CLIWRAP_RUNTIME_DIR, else
// $TMPDIR/cliwrap.
std::string default_runtime_dir();

}  // namespace mgmt
