#include "mgmt/server/memory.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <vector>

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

struct Mapping {
  unsigned long begin = 0, end = 0;
  bool candidate = false;          // file-backed and not writable
  unsigned long long anon_kb = 0;  // pages of it the process wrote (copy-on-write)
};

// The mappings of /proc/self/smaps. A header line is "begin-end perms offset dev inode
// [path]"; the lines after it, up to the next header, are "Field:   value kB".
std::vector<Mapping> read_mappings(int& err) {
  File f(std::fopen("/proc/self/smaps", "re"));
  if (!f) {
    err = errno;
    return {};
  }
  std::vector<Mapping> out;
  char* buf = nullptr;  // getline's: a header's path may be as long as PATH_MAX
  std::size_t cap = 0;
  const std::unique_ptr<char*, void (*)(char**)> free_buf(&buf, [](char** p) { std::free(*p); });
  while (::getline(&buf, &cap, f.get()) > 0) {
    const char* line = buf;
    const char c = line[0];
    const bool header = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
    if (header) {
      Mapping m;
      char perms[8] = {};
      unsigned long long inode = 0;
      int path_at = 0;
      if (std::sscanf(line, "%lx-%lx %7s %*s %*s %llu %n", &m.begin, &m.end, perms, &inode,
                      &path_at) < 4) {
        out.push_back(Mapping{});  // unreadable: left alone, and so are its fields
        continue;
      }
      // path_at stays 0 when the line ends before a path (an anonymous mapping).
      const bool file_backed = inode != 0 && path_at > 0 && line[path_at] == '/';
      m.candidate = file_backed && perms[1] != 'w' && m.end > m.begin;
      out.push_back(m);
    } else if (!out.empty() && std::strncmp(line, "Anonymous:", 10) == 0) {
      out.back().anon_kb = std::strtoull(line + 10, nullptr, 10);
    }
  }
  return out;
}

CodePageRelease release() {
  CodePageRelease r;
  r.rss_before = resident_bytes();
  int err = 0;
  const std::vector<Mapping> mappings = read_mappings(err);
  if (mappings.empty()) {
    r.error_code = err;
    r.error = std::string("cannot read /proc/self/smaps: ") + std::strerror(err);
    return r;
  }
  int refused = 0;
  for (const Mapping& m : mappings) {
    if (!m.candidate || m.anon_kb != 0) continue;
    // NOLINTNEXTLINE(performance-no-int-to-ptr): the kernel's own addresses of our mappings
    void* const at = reinterpret_cast<void*>(m.begin);
    const std::size_t len = m.end - m.begin;
    // Reclaim first: the kernel frees the pages that only this process maps.
    const bool paged_out = ::madvise(at, len, MADV_PAGEOUT) == 0;
    // Then let go of the rest: pages other processes map too, or of files the kernel pages
    // out for their owner only. They stay in the page cache, and a page used again is
    // mapped back on a minor fault, with the file's bytes (the mapping holds no page of the
    // process's own: anon_kb is 0, and it is not writable).
    const bool unmapped = ::madvise(at, len, MADV_DONTNEED) == 0;
    if (paged_out || unmapped) {
      ++r.mappings;
    } else {
      // EINVAL: a locked mapping. ENOMEM: the mapping went away since smaps was read.
      // Either way there is nothing to undo.
      ++refused;
      r.error_code = errno;
    }
  }
  if (r.mappings == 0 && refused > 0) {
    r.error = std::string("madvise: ") + std::strerror(r.error_code);
  } else {
    r.error_code = 0;
  }
  r.rss_after = resident_bytes();
  return r;
}

}  // namespace

CodePageRelease release_code_pages() noexcept {
  try {
    return release();
  } catch (const std::bad_alloc&) {
    CodePageRelease r;
    r.error = "out of memory";
    r.error_code = ENOMEM;
    return r;
  }
}

}  // namespace mgmt
