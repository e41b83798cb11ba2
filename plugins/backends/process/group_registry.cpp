#include "group_registry.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <system_error>
#include <thread>

#include "proc_stat.hpp"

namespace mgmt::process {

namespace {

constexpr const char* kMagic = "mgmtd-process-state 1";
// How long open() waits for killed leftovers to be gone, so that what is started next
// finds their ports and files released.
constexpr auto kLeftoverWait = std::chrono::seconds(2);

std::string errno_text(int err) { return std::system_category().message(err); }

struct StateFile {
  pid_t owner = 0;
  std::uint64_t owner_start = 0;
  std::string pid_ns;
  std::vector<GroupRecord> groups;
};

bool parse_state(const std::string& path, StateFile& out) {
  std::ifstream in(path);
  std::string line;
  if (!std::getline(in, line) || line != kMagic) return false;
  bool have_owner = false;
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string kind;
    f >> kind;
    if (kind == "owner") {
      long pid = 0;
      if (!(f >> pid >> out.owner_start >> out.pid_ns)) return false;
      out.owner = static_cast<pid_t>(pid);
      have_owner = true;
    } else if (kind == "group") {
      GroupRecord g;
      long pgid = 0, sid = 0;
      if (!(f >> pgid >> g.start_time >> sid >> g.id)) return false;
      g.pgid = static_cast<pid_t>(pgid);
      g.session = static_cast<pid_t>(sid);
      if (g.pgid > 1) out.groups.push_back(std::move(g));
    }
  }
  return have_owner;
}

bool owner_alive(const StateFile& s) {
  const auto st = read_proc_stat(s.owner);
  return st && st->state != 'Z' && st->state != 'X' && st->start_time == s.owner_start;
}

// Every running process, by pid.
std::map<pid_t, ProcStat> scan_proc() {
  std::map<pid_t, ProcStat> out;
  DIR* proc = ::opendir("/proc");
  if (!proc) return out;
  while (const dirent* e = ::readdir(proc)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    const auto st = read_proc_stat(std::string(e->d_name));
    if (st && st->state != 'Z' && st->state != 'X') {
      out.emplace(static_cast<pid_t>(std::stol(e->d_name)), *st);
    }
  }
  ::closedir(proc);
  return out;
}

}  // namespace

GroupRegistry::GroupRegistry(std::string dir) : dir_(std::move(dir)) {
  // Numbered too: a process may hold more than one backend (the unit tests do).
  static std::atomic<unsigned> instances{0};
  file_ = dir_ + "/process-" + std::to_string(::getpid()) + "-" +
          std::to_string(instances.fetch_add(1)) + ".state";
}

std::string GroupRegistry::open(std::vector<std::string>& notes) {
  std::error_code ec;
  const std::filesystem::path parent = std::filesystem::path(dir_).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  if (::mkdir(dir_.c_str(), 0700) != 0 && errno != EEXIST) {
    return "cannot create state_dir " + dir_ + ": " + errno_text(errno);
  }
  struct stat st {};
  if (::lstat(dir_.c_str(), &st) != 0) return "state_dir " + dir_ + ": " + errno_text(errno);
  if (!S_ISDIR(st.st_mode)) return "state_dir " + dir_ + " is not a folder";
  if (st.st_uid != ::geteuid()) {
    return "state_dir " + dir_ + " belongs to uid " + std::to_string(st.st_uid) + ", not to us";
  }
  if ((st.st_mode & 022) != 0) return "state_dir " + dir_ + " is writable by other users";

  const pid_t self = ::getpid();
  const auto self_stat = read_proc_stat(self);
  const std::string pid_ns = own_pid_namespace();
  owner_line_ = "owner " + std::to_string(self) + " " +
                std::to_string(self_stat ? self_stat->start_time : 0) + " " +
                (pid_ns.empty() ? std::string("-") : pid_ns);

  // What gone instances of this namespace left behind.
  std::vector<std::pair<std::string, StateFile>> stale;
  for (const auto& entry : std::filesystem::directory_iterator(dir_, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("process-", 0) != 0 || entry.path().extension() != ".state") continue;
    StateFile s;
    if (!parse_state(entry.path().string(), s)) continue;
    if (s.pid_ns != (pid_ns.empty() ? std::string("-") : pid_ns)) continue;
    if (owner_alive(s)) continue;  // a live instance (maybe another backend in this process)
    stale.emplace_back(entry.path().string(), std::move(s));
  }

  std::set<pid_t> victims;
  if (!stale.empty()) {
    const auto procs = scan_proc();
    for (const auto& [path, s] : stale) {
      for (const auto& g : s.groups) {
        int count = 0;
        for (const auto& [pid, ps] : procs) {
          if (pid == self || ps.pgrp != g.pgid || ps.session != g.session ||
              ps.start_time < g.start_time) {
            continue;
          }
          ::kill(pid, SIGKILL);
          victims.insert(pid);
          ++count;
        }
        if (count > 0) {
          notes.push_back("killed " + std::to_string(count) + " leftover process" +
                          (count == 1 ? "" : "es") + " of " + g.id + " (process group " +
                          std::to_string(g.pgid) + ") left by mgmtd pid " +
                          std::to_string(s.owner));
        }
      }
      ::unlink(path.c_str());
    }
  }
  const auto deadline = std::chrono::steady_clock::now() + kLeftoverWait;
  for (auto it = victims.begin(); it != victims.end();) {
    if (!process_running(*it) || std::chrono::steady_clock::now() >= deadline) {
      it = victims.erase(it);
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  usable_ = true;
  return {};
}

void GroupRegistry::save(const std::vector<GroupRecord>& groups) {
  if (!usable_) return;
  std::string text = std::string(kMagic) + "\n" + owner_line_ + "\n";
  for (const auto& g : groups) {
    text += "group " + std::to_string(g.pgid) + " " + std::to_string(g.start_time) + " " +
            std::to_string(g.session) + " " + g.id + "\n";
  }
  const std::string tmp = file_ + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return;
  std::size_t off = 0;
  while (off < text.size()) {
    const ssize_t n = ::write(fd, text.data() + off, text.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    off += static_cast<std::size_t>(n);
  }
  ::close(fd);
  if (off == text.size()) ::rename(tmp.c_str(), file_.c_str());
  else ::unlink(tmp.c_str());
}

void GroupRegistry::remove() {
  if (usable_) ::unlink(file_.c_str());
}

}  // namespace mgmt::process
