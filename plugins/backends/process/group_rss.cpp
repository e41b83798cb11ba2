#include "group_rss.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

namespace mgmt::process {

namespace {

// Reads a small /proc file into `buf` (NUL-terminated) with plain syscalls: this runs for
// every process on the machine, so no streams, no allocation. Returns the length, or -1.
ssize_t read_small(int dir_fd, const char* pid, const char* file, char* buf, std::size_t cap) {
  char path[64];
  const std::size_t n = std::strlen(pid);
  if (n + std::strlen(file) + 2 > sizeof path) return -1;
  std::memcpy(path, pid, n);
  path[n] = '/';
  std::strcpy(path + n + 1, file);
  const int fd = ::openat(dir_fd, path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  const ssize_t r = ::read(fd, buf, cap - 1);
  ::close(fd);
  if (r < 0) return -1;
  buf[r] = '\0';
  return r;
}

// The process group from /proc/<pid>/stat, or -1. The fields after the command name,
// which may itself hold spaces and ')', start after the last ')'.
pid_t pgrp_of(int proc_fd, const char* pid) {
  char buf[512];
  if (read_small(proc_fd, pid, "stat", buf, sizeof buf) <= 0) return -1;
  const char* close = std::strrchr(buf, ')');
  if (!close) return -1;
  // ") S <ppid> <pgrp>"
  char* p = const_cast<char*>(close) + 1;
  while (*p == ' ') ++p;
  if (*p == '\0') return -1;
  ++p;  // state
  char* end = nullptr;
  std::strtol(p, &end, 10);  // ppid
  if (end == p) return -1;
  p = end;
  const long pgrp = std::strtol(p, &end, 10);
  if (end == p) return -1;
  return static_cast<pid_t>(pgrp);
}

std::uint64_t resident_bytes(int proc_fd, const char* pid) {
  static const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  char buf[128];
  if (read_small(proc_fd, pid, "statm", buf, sizeof buf) <= 0) return 0;
  char* end = nullptr;
  std::strtoull(buf, &end, 10);  // size
  const char* p = end;
  const unsigned long long resident = std::strtoull(p, &end, 10);
  if (end == p) return 0;
  return resident * page;
}

}  // namespace

std::map<pid_t, std::uint64_t> group_rss(const std::set<pid_t>& pgids) {
  std::map<pid_t, std::uint64_t> out;
  if (pgids.empty()) return out;
  DIR* proc = ::opendir("/proc");
  if (!proc) return out;
  const int proc_fd = ::dirfd(proc);
  while (const dirent* e = ::readdir(proc)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    const pid_t pgrp = pgrp_of(proc_fd, e->d_name);
    if (pgids.count(pgrp) == 0) continue;
    out[pgrp] += resident_bytes(proc_fd, e->d_name);
  }
  ::closedir(proc);
  return out;
}

}  // namespace mgmt::process
