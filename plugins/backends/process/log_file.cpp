#include "log_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <system_error>

namespace mgmt::process {

namespace {

std::string errno_text(int err) { return std::system_category().message(err); }

}  // namespace

LogFile::LogFile(std::string path, std::uint64_t max_size, std::uint32_t max_files)
    : path_(std::move(path)), max_size_(max_size), max_files_(max_files) {}

std::string LogFile::open() {
  std::error_code ec;
  const auto dir = std::filesystem::path(path_).parent_path();
  if (!dir.empty()) std::filesystem::create_directories(dir, ec);
  if (ec) return "create " + dir.string() + ": " + ec.message();
  fd_.reset(::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640));
  if (!fd_) return "open " + path_ + ": " + errno_text(errno);
  struct stat st {};
  size_ = ::fstat(fd_.get(), &st) == 0 ? static_cast<std::uint64_t>(st.st_size) : 0;
  return {};
}

std::string LogFile::rotate() {
  fd_.reset();
  if (max_files_ == 0) {
    ::unlink(path_.c_str());
  } else {
    // .N-1 → .N, ..., .1 → .2, live → .1; the oldest (.N) is overwritten.
    for (std::uint32_t i = max_files_ - 1; i >= 1; --i) {
      const std::string from = path_ + "." + std::to_string(i);
      const std::string to = path_ + "." + std::to_string(i + 1);
      if (::rename(from.c_str(), to.c_str()) != 0 && errno != ENOENT) {
        return "rename " + from + ": " + errno_text(errno);
      }
    }
    const std::string first = path_ + ".1";
    if (::rename(path_.c_str(), first.c_str()) != 0 && errno != ENOENT) {
      return "rename " + path_ + ": " + errno_text(errno);
    }
  }
  return open();
}

std::string LogFile::write(std::string_view bytes, std::int64_t ts_ns) {
  if (!timestamps_ || bytes.empty()) return write(bytes);
  // 2026-01-02T03:04:05.123456Z
  std::int64_t secs = ts_ns / 1'000'000'000;
  std::int64_t frac = ts_ns % 1'000'000'000;
  if (frac < 0) {
    frac += 1'000'000'000;
    --secs;
  }
  const auto t = static_cast<std::time_t>(secs);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char stamp[48];
  std::size_t n = std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
  n += static_cast<std::size_t>(std::snprintf(stamp + n, sizeof stamp - n, ".%06lldZ ",
                                              static_cast<long long>(frac / 1000)));
  std::string out;
  out.reserve(bytes.size() + n * 2);
  std::size_t at = 0;
  while (at < bytes.size()) {
    if (at_line_start_) out.append(stamp, n);
    const std::size_t nl = bytes.find('\n', at);
    const std::size_t end = nl == std::string_view::npos ? bytes.size() : nl + 1;
    out.append(bytes.substr(at, end - at));
    at_line_start_ = nl != std::string_view::npos;
    at = end;
  }
  return write(out);
}

std::string LogFile::write(std::string_view bytes) {
  if (!fd_) {
    if (auto err = open(); !err.empty()) return err;
  }
  if (size_ > 0 && size_ + bytes.size() > max_size_) {
    if (auto err = rotate(); !err.empty()) return err;
  }
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd_.get(), bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return "write " + path_ + ": " + errno_text(n < 0 ? errno : EIO);
    bytes.remove_prefix(static_cast<std::size_t>(n));
    size_ += static_cast<std::uint64_t>(n);
  }
  return {};
}

}  // namespace mgmt::process
