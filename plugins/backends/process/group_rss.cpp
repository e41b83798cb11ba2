#include "group_rss.hpp"

#include <dirent.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

namespace mgmt::process {

namespace {

// The process group from /proc/<pid>/stat, or -1. The fields after the command name,
// which may itself hold spaces and ')', start after the last ')'.
pid_t pgrp_of(const std::string& pid) {
  std::ifstream in("/proc/" + pid + "/stat");
  std::string line;
  if (!std::getline(in, line)) return -1;
  const auto close = line.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream fields(line.substr(close + 1));
  char state = 0;
  long ppid = 0, pgrp = -1;
  if (!(fields >> state >> ppid >> pgrp)) return -1;
  return static_cast<pid_t>(pgrp);
}

std::uint64_t resident_bytes(const std::string& pid) {
  std::ifstream in("/proc/" + pid + "/statm");
  std::uint64_t size = 0, resident = 0;
  if (!(in >> size >> resident)) return 0;
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
    const pid_t pgrp = pgrp_of(pid);
    if (pgids.count(pgrp) == 0) continue;
    out[pgrp] += resident_bytes(pid);
  }
  ::closedir(proc);
  return out;
}

}  // namespace mgmt::process
