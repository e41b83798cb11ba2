// One stream of one process written to a file, rotated by size:
// <dir>/<id>.stdout.log, then <id>.stdout.log.1 (the newest rotated) ... .<max_files>.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "unique_fd.hpp"

namespace mgmt::process {

// Not thread-safe; the backend's supervisor thread is its only user.
class LogFile {
 public:
  LogFile(std::string path, std::uint64_t max_size, std::uint32_t max_files);

  // Appends `bytes`, rotating first when they would take the file past max_size (a single
  // chunk larger than max_size is written whole into a fresh file). Opens the file, and
  // creates its folder, on first use; a file left by an earlier run is appended to.
  // Returns "" or what failed ("open /var/log/x/web.stdout.log: Permission denied").
  std::string write(std::string_view bytes);
  // write() with, when timestamps are on, the capture time `ts_ns` (RFC 3339, UTC,
  // microseconds, then a space) before each line that starts in `bytes`.
  std::string write(std::string_view bytes, std::int64_t ts_ns);
  void set_timestamps(bool on) noexcept { timestamps_ = on; }

  const std::string& path() const noexcept { return path_; }
  // Closes the file; the next write opens it again (by its path: after logrotate moved it
  // away, a new file).
  void close() noexcept { fd_.reset(); }

 private:
  std::string open();
  std::string rotate();

  std::string path_;
  std::uint64_t max_size_;
  std::uint32_t max_files_;
  UniqueFd fd_;
  std::uint64_t size_ = 0;
  bool timestamps_ = false;
  bool at_line_start_ = true;  // the next byte written starts a line
};

}  // namespace mgmt::process
