// What /proc/<pid>/stat says about a process: enough to tell groups, sessions and a reused
// pid apart.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>

namespace mgmt::process {

struct ProcStat {
  char state = '?';  // R, S, D, Z, X, ...
  pid_t ppid = 0;
  pid_t pgrp = 0;
  pid_t session = 0;
  std::uint64_t start_time = 0;  // clock ticks after boot: with the pid, names one process
};

// nullopt when the process does not exist (or /proc is not readable).
std::optional<ProcStat> read_proc_stat(pid_t pid);
std::optional<ProcStat> read_proc_stat(const std::string& pid);

// True when `pid` exists and has not exited (a zombie or a dying process counts as gone).
bool process_running(pid_t pid);

// "pid:[4026531836]": the pid namespace this process lives in ("" when unknown).
std::string own_pid_namespace();

}  // namespace mgmt::process
