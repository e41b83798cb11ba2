#include "group_rss.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "proc_stat.hpp"

namespace mgmt::process {

namespace {

std::uint64_t resident_bytes(const std::string& pid) {
  const std::string path = "/proc/" + pid + "/statm";
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char buf[256];
  const ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return 0;
  buf[n] = '\0';
  char* p = buf;
  std::strtoull(p, &p, 10);  // size
  const std::uint64_t resident = std::strtoull(p, nullptr, 10);
  return resident * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
}

}  // namespace

std::map<pid_t, std::uint64_t> group_rss(const std::set<pid_t>& pgids) {
  std::map<pid_t, std::uint64_t> out;
  if (pgids.empty()) return out;
  DIR* proc = ::opendir("/proc");
  if (!proc) return out;
  while (const dirent* e = ::readdir(proc)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    const std::string pid(e->d_name);
    const auto st = read_proc_stat(pid);
    if (!st || pgids.count(st->pgrp) == 0) continue;
    out[st->pgrp] += resident_bytes(pid);
  }
  ::closedir(proc);
  return out;
}

}  // namespace mgmt::process
