#include "mgmt/server/memory.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21  // Linux 5.4; older C library headers lack the name
#endif

namespace mgmt {
namespace {

struct FileCloser {
  void operator()(std::FILE* f) const noexcept { std::fclose(f); }
};
using File = std::unique_ptr<std::FILE, FileCloser>;

std::uint64_t resident_bytes() {
  File f(std::fopen("/proc/self/statm", "re"));
  unsigned long long size = 0, resident = 0;
  if (!f || std::fscanf(f.get(), "%llu %llu", &size, &resident) != 2) return 0;
  return resident * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
}

}  // namespace

CodePageRelease release_code_pages() {
  CodePageRelease r;
  r.rss_before = resident_bytes();
  // Read whole before advising anything: the advice does not change the mappings, but the
  // file is generated as it is read.
  File maps(std::fopen("/proc/self/maps", "re"));
  if (!maps) {
    r.error = std::string("cannot read /proc/self/maps: ") + std::strerror(errno);
    return r;
  }
  struct Range {
    unsigned long begin, end;
  };
  std::string text;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, maps.get())) > 0) text.append(buf, n);
  maps.reset();

  int refused = 0, last_errno = 0;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    const std::string line = text.substr(pos, eol - pos);
    pos = eol + 1;
    // begin-end perms offset dev inode path
    Range range{};
    char perms[8] = {};
    unsigned long long inode = 0;
    int path_at = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx %7s %*s %*s %llu %n", &range.begin, &range.end, perms,
                    &inode, &path_at) < 4) {
      continue;
    }
    const bool file_backed = inode != 0 && path_at > 0 &&
                             static_cast<std::size_t>(path_at) < line.size() &&
                             line[static_cast<std::size_t>(path_at)] == '/';
    if (!file_backed || perms[1] == 'w' || range.end <= range.begin) continue;
    // NOLINTNEXTLINE(performance-no-int-to-ptr): the kernel's own addresses of our mappings
    if (::madvise(reinterpret_cast<void*>(range.begin), range.end - range.begin, MADV_PAGEOUT) ==
        0) {
      ++r.mappings;
    } else {
      ++refused;  // EINVAL: a kernel without MADV_PAGEOUT, or a locked mapping
      last_errno = errno;
    }
  }
  if (r.mappings == 0 && refused > 0) {
    r.error = std::string("madvise(MADV_PAGEOUT): ") + std::strerror(last_errno) +
              (last_errno == EINVAL ? " (it needs Linux 5.4 or later)" : "");
  }
  r.rss_after = resident_bytes();
  return r;
}

}  // namespace mgmt
