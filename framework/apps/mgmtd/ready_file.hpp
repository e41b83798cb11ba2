// --ready-file: tells whoever started mgmtd (a container runtime, a script) that the socket
// is listening and the processes have been started.
#pragma once

#include <optional>
#include <string>

namespace mgmt::daemon {

class ReadyFile {
 public:
  // Removes a file left at `path` by an earlier run, so that nobody mistakes it for ours.
  explicit ReadyFile(std::optional<std::string> path);
  // Removes the file if mark() wrote it.
  ~ReadyFile();
  ReadyFile(const ReadyFile&) = delete;
  ReadyFile& operator=(const ReadyFile&) = delete;

  // Writes "pid=<pid>\nsocket=<socket>\n" to a temporary file beside the path, then renames
  // it into place, so a reader never sees it half-written. Without a path, does nothing.
  // Throws std::runtime_error naming the file and the reason.
  void mark(const std::string& socket);

 private:
  std::optional<std::string> path_;
  bool written_ = false;
};

}  // namespace mgmt::daemon
