#include "proc_stat.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <system_error>

namespace mgmt::process {

std::optional<ProcStat> read_proc_stat(const std::string& pid) {
  // Plain read(2) and strtoull: this runs for every process on each RSS sample and each
  // list, where iostreams cost several times more.
  const std::string path = "/proc/" + pid + "/stat";
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  char buf[1024];
  ssize_t n;
  do {
    n = ::read(fd, buf, sizeof buf - 1);
  } while (n < 0 && errno == EINTR);
  ::close(fd);
  if (n <= 0) return std::nullopt;
  buf[n] = '\0';
  // The command name (field 2) may hold spaces and ')': the fields after it start after
  // the last ')'.
  char* p = std::strrchr(buf, ')');
  if (p == nullptr || p[1] != ' ' || p[2] == '\0') return std::nullopt;
  ProcStat s;
  s.state = p[2];
  p += 3;
  // Fields 4 (ppid) to 22 (starttime); we keep 4, 5, 6 and 22.
  unsigned long long field[19];
  for (int i = 0; i < 19; ++i) {
    char* end = nullptr;
    // Signed fields (tty_nr, the priorities) read as huge unsigned values: never used.
    field[i] = std::strtoull(p, &end, 10);
    if (end == p) return std::nullopt;
    p = end;
  }
  s.ppid = static_cast<pid_t>(field[0]);
  s.pgrp = static_cast<pid_t>(field[1]);
  s.session = static_cast<pid_t>(field[2]);
  s.start_time = field[18];
  return s;
}

std::optional<ProcStat> read_proc_stat(pid_t pid) { return read_proc_stat(std::to_string(pid)); }

bool process_running(pid_t pid) {
  const auto s = read_proc_stat(pid);
  return s && s->state != 'Z' && s->state != 'X';
}

std::string own_pid_namespace() {
  std::error_code ec;
  const auto target = std::filesystem::read_symlink("/proc/self/ns/pid", ec);
  return ec ? std::string() : target.string();
}

}  // namespace mgmt::process
