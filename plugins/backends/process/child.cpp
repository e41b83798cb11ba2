#include "child.hpp"

#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>

#include "proc_stat.hpp"

namespace mgmt::process {

namespace {

std::string errno_text(int err) { return std::system_category().message(err); }

// What the child writes to the status pipe when it cannot exec.
struct ExecFailure {
  enum Stage : int {
    setup = 0,
    chdir = 1,
    exec = 2,
    tty = 3,
    rlimit = 4,  // detail: the resource
    nice = 5,
    oom_score_adj = 6,
    groups = 7,
    gid = 8,
    uid = 9,
  };
  int stage;
  int err;
  int detail;
};

// What exec_child needs, all prepared before fork (the child must not allocate).
struct ChildSetup {
  const char* path;
  char* const* argv;
  char* const* envp;
  const char* work_dir;
  pid_t parent;
  int devnull, out, err, status;
  int tty;  // the terminal's slave side, -1 without tty
  int ready_fd, ready_fd_number;  // -1: none (ExecPlan::ready_fd)
  const RLimit* rlimits;
  std::size_t rlimit_count;
  bool set_nice;
  int nice;
  const char* oom_score_adj;  // "" = leave it
  int umask;
  bool switch_ids;
  bool set_uid;
  uid_t uid;
  gid_t gid;
  const gid_t* groups;
  std::size_t group_count;
};

// Moves `fd` to a number above stderr so the dup2 calls in the child cannot clobber one
// another (possible when the server runs with 0, 1 or 2 closed).
bool lift(UniqueFd& fd) {
  if (fd.get() > 2) return true;
  const int high = ::fcntl(fd.get(), F_DUPFD_CLOEXEC, 3);
  if (high < 0) return false;
  fd.reset(high);
  return true;
}

bool make_pipe(UniqueFd& read_end, UniqueFd& write_end) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return false;
  read_end.reset(fds[0]);
  write_end.reset(fds[1]);
  return lift(read_end) && lift(write_end);
}

bool set_nonblocking(int fd) {
  const int flags = ::fcntl(fd, F_GETFL);
  return flags >= 0 && ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0;
}

bool is_executable_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(path.c_str(), X_OK) == 0;
}

// Parses a decimal fd number; -1 for anything else ("." and "..").
int parse_fd(const char* s) {
  if (*s == '\0') return -1;
  int n = 0;
  for (; *s != '\0'; ++s) {
    if (*s < '0' || *s > '9' || n > 100'000'000) return -1;
    n = n * 10 + (*s - '0');
  }
  return n;
}

void set_cloexec(int fd) {
  const int flags = ::fcntl(fd, F_GETFD);
  if (flags >= 0 && (flags & FD_CLOEXEC) == 0) ::fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
}

// close_range(from, ~0U, CLOSE_RANGE_CLOEXEC) by hand, for kernels before 5.11 (which
// refuse the flag) and before 5.9 (no close_range): every open fd from `from` on, as
// /proc/self/fd lists them, else every number below the fd limit. In the forked child:
// raw system calls and a stack buffer only.
void cloexec_from(int from) {
  const int dir = ::open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    alignas(8) char buf[4096];
    bool listed = true;
    while (true) {
      const long n = ::syscall(SYS_getdents64, dir, buf, sizeof buf);
      if (n == 0) break;
      if (n < 0) {
        listed = false;
        break;
      }
      for (long off = 0; off < n;) {
        // struct linux_dirent64: u64 d_ino, s64 d_off, u16 d_reclen, u8 d_type, char d_name[].
        unsigned short reclen;
        std::memcpy(&reclen, buf + off + 16, sizeof reclen);
        const int fd = parse_fd(buf + off + 19);
        if (fd >= from && fd != dir) set_cloexec(fd);
        off += reclen;
      }
    }
    ::close(dir);
    if (listed) return;
  }
  rlimit lim{};
  rlim_t top = 1 << 20;  // the kernel's default nr_open
  if (::getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY) top = lim.rlim_cur;
  for (rlim_t fd = static_cast<rlim_t>(from); fd < top; ++fd) set_cloexec(static_cast<int>(fd));
}

// Runs in the forked child: async-signal-safe calls only, no allocation, no locks.
[[noreturn]] void exec_child(const ChildSetup& c) {
  auto fail = [&c](int stage, int e, int detail = 0) {
    const ExecFailure f{stage, e, detail};
    [[maybe_unused]] const auto n = ::write(c.status, &f, sizeof f);
    ::_exit(127);
  };
  // On a terminal the child leads a session of its own (and so its own process group, with
  // the same number as with setpgid): a controlling terminal needs a session.
  if (c.tty >= 0) {
    if (::setsid() < 0) fail(ExecFailure::tty, errno);
  } else {
    ::setpgid(0, 0);
  }
  // Dies with the supervisor thread; if the parent is already gone, the signal was missed.
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != c.parent) ::_exit(127);
  // Dispositions first, then the mask: a pending signal must not reach a parent's handler.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) ::sigaction(sig, &dfl, nullptr);
  sigset_t none;
  ::sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  if (c.tty >= 0) {
    if (::ioctl(c.tty, TIOCSCTTY, 0) != 0) fail(ExecFailure::tty, errno);
    if (::dup2(c.tty, 0) < 0 || ::dup2(c.tty, 1) < 0 || ::dup2(c.tty, 2) < 0) {
      fail(ExecFailure::setup, errno);
    }
  } else if (::dup2(c.devnull, 0) < 0 || ::dup2(c.out, 1) < 0 || ::dup2(c.err, 2) < 0) {
    fail(ExecFailure::setup, errno);
  }
  // Whatever else the server had open (without O_CLOEXEC) must not leak into the child.
  if (::close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) != 0) cloexec_from(3);
  // The readiness pipe (s6) stays open across exec as fd N: dup2 clears FD_CLOEXEC on N.
  if (c.ready_fd >= 0) {
    const int done = c.ready_fd == c.ready_fd_number
                         ? ::fcntl(c.ready_fd, F_SETFD, 0)
                         : ::dup2(c.ready_fd, c.ready_fd_number);
    if (done < 0) fail(ExecFailure::setup, errno);
  }
  // Limits and priority while still privileged (raising a hard limit, a negative nice, a
  // lower oom_score_adj need root), then the switch of user.
  for (std::size_t i = 0; i < c.rlimit_count; ++i) {
    const rlimit lim{static_cast<rlim_t>(c.rlimits[i].soft),
                     static_cast<rlim_t>(c.rlimits[i].hard)};
    if (::setrlimit(static_cast<__rlimit_resource_t>(c.rlimits[i].resource), &lim) != 0) {
      fail(ExecFailure::rlimit, errno, c.rlimits[i].resource);
    }
  }
  if (c.set_nice && ::setpriority(PRIO_PROCESS, 0, c.nice) != 0) fail(ExecFailure::nice, errno);
  if (c.oom_score_adj[0] != '\0') {
    const int fd = ::open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
    if (fd < 0) fail(ExecFailure::oom_score_adj, errno);
    const std::size_t len = std::strlen(c.oom_score_adj);
    if (::write(fd, c.oom_score_adj, len) != static_cast<ssize_t>(len)) {
      fail(ExecFailure::oom_score_adj, errno);
    }
    ::close(fd);
  }
  if (c.umask >= 0) ::umask(static_cast<mode_t>(c.umask));
  if (c.switch_ids) {
    // Raw system calls: the child has a single thread, so they change all of it, and they
    // touch no state of glibc's (whose wrappers coordinate the threads of a process).
    if (::syscall(SYS_setgroups, c.group_count, c.groups) != 0) fail(ExecFailure::groups, errno);
    if (::syscall(SYS_setgid, c.gid) != 0) fail(ExecFailure::gid, errno);
    if (c.set_uid && ::syscall(SYS_setuid, c.uid) != 0) fail(ExecFailure::uid, errno);
    // A change of credentials clears the parent-death signal: set it again.
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != c.parent) ::_exit(127);
  }
  // After the switch: the folder is entered with the user's rights.
  if (c.work_dir[0] != '\0' && ::chdir(c.work_dir) != 0) fail(ExecFailure::chdir, errno);
  ::execve(c.path, c.argv, c.envp);
  fail(ExecFailure::exec, errno);
  ::_exit(127);  // not reached
}

}  // namespace

std::string signal_name(int sig) {
  if (const char* abbrev = ::sigabbrev_np(sig)) return std::string("SIG") + abbrev;
  return "signal " + std::to_string(sig);
}

std::string describe(const ExitStatus& s) {
  if (s.signal) return "killed by " + signal_name(*s.signal);
  if (s.code) return "exit code " + std::to_string(*s.code);
  return "exit status unknown";
}

std::variant<ExecPlan, std::string> make_exec_plan(const ProcessSpec& spec,
                                                   const char* const* base_env,
                                                   const EnvVars& file_env) {
  ExecPlan plan;
  plan.work_dir = spec.work_dir;
  plan.argv.reserve(spec.args.size() + 1);
  plan.argv.push_back(spec.command);
  plan.argv.insert(plan.argv.end(), spec.args.begin(), spec.args.end());
  plan.rlimits = spec.rlimits;
  plan.nice = spec.nice;
  if (spec.oom_score_adj) plan.oom_score_adj = std::to_string(*spec.oom_score_adj);
  plan.umask = spec.umask;
  plan.identity = spec.identity;
  plan.tty = spec.tty;
  plan.tty_cols = spec.tty_cols;
  plan.tty_rows = spec.tty_rows;

  std::string path_var = "/usr/local/bin:/usr/bin:/bin";  // execvp's fallback
  auto key_of = [](std::string_view kv) { return kv.substr(0, kv.find('=')); };
  // Later sources win: a key set again replaces the earlier value where it stood.
  auto set = [&](std::string_view key, std::string_view value) {
    std::string kv = std::string(key) + "=" + std::string(value);
    for (auto& e : plan.envp) {
      if (key_of(e) == key) {
        e = std::move(kv);
        return;
      }
    }
    plan.envp.push_back(std::move(kv));
  };
  for (const char* const* e = base_env; e && *e; ++e) {
    const std::string_view kv(*e);
    if (kv.find('=') == std::string_view::npos) continue;
    if (!spec.clear_env || key_of(kv) == "PATH") plan.envp.emplace_back(kv);
  }
  if (!spec.identity.user.empty()) {
    set("HOME", spec.identity.home);
    set("USER", spec.identity.name);
    set("LOGNAME", spec.identity.name);
    set("SHELL", spec.identity.shell);
  }
  for (const auto& [k, v] : file_env) set(k, v);
  for (const auto& [k, v] : spec.env) set(k, v);
  set("MGMT_PROCESS_ID", spec.id);
  if (spec.instance >= 0) set("MGMT_INSTANCE", std::to_string(spec.instance));
  for (const auto& kv : plan.envp) {
    if (key_of(kv) == "PATH") path_var = kv.substr(5);
  }

  if (spec.command.find('/') != std::string::npos) {
    plan.path = spec.command;
    return plan;
  }
  std::size_t begin = 0;
  while (begin <= path_var.size()) {
    const std::size_t end = std::min(path_var.find(':', begin), path_var.size());
    const std::string dir = path_var.substr(begin, end - begin);
    const std::string candidate = (dir.empty() ? std::string(".") : dir) + "/" + spec.command;
    if (is_executable_file(candidate)) {
      plan.path = candidate;
      return plan;
    }
    begin = end + 1;
  }
  return "exec " + spec.command + ": " + errno_text(ENOENT) + " (searched PATH=" + path_var + ")";
}

std::variant<Child, std::string> Child::spawn(const ExecPlan& plan, bool as_sibling) {
  Child c;
  UniqueFd out_w, err_w, status_w, tty;
  if (!make_pipe(c.status_, status_w)) return "pipe: " + errno_text(errno);
  if (plan.tty) {
    // The terminal is made here: ptsname and friends are not async-signal-safe. The slave
    // is opened here too (O_NOCTTY: never mgmtd's terminal), and the child makes it its
    // controlling terminal; our copy is closed on return, so the master reads EIO (the
    // end) once the child and whatever inherited it are gone.
    UniqueFd master(::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC));
    char name[128];
    if (!master || ::grantpt(master.get()) != 0 || ::unlockpt(master.get()) != 0 ||
        ::ptsname_r(master.get(), name, sizeof name) != 0) {
      return "pseudo-terminal: " + errno_text(errno);
    }
    tty.reset(::open(name, O_RDWR | O_NOCTTY | O_CLOEXEC));
    if (!tty || !lift(tty) || !lift(master)) {
      return "open " + std::string(name) + ": " + errno_text(errno);
    }
    // Output goes to logs, not to a screen: newlines stay "\n" (no CR LF).
    termios t{};
    if (::tcgetattr(tty.get(), &t) == 0) {
      t.c_oflag &= ~static_cast<tcflag_t>(ONLCR);
      ::tcsetattr(tty.get(), TCSANOW, &t);
    }
    winsize ws{};
    ws.ws_col = plan.tty_cols;
    ws.ws_row = plan.tty_rows;
    if (::ioctl(master.get(), TIOCSWINSZ, &ws) != 0) return "tty_size: " + errno_text(errno);
    c.streams_[out] = std::move(master);
  } else if (!make_pipe(c.streams_[out], out_w) || !make_pipe(c.streams_[err], err_w)) {
    return "pipe: " + errno_text(errno);
  }
  UniqueFd devnull(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (!devnull || !lift(devnull)) return "open /dev/null: " + errno_text(errno);
  // The status pipe is written after the readiness pipe has become fd N: keep it off N.
  if (plan.ready_fd >= 0 && status_w.get() == plan.ready_fd_number) {
    const int moved = ::fcntl(status_w.get(), F_DUPFD_CLOEXEC, plan.ready_fd_number + 1);
    if (moved < 0) return "fcntl: " + errno_text(errno);
    status_w.reset(moved);
  }
  for (const UniqueFd* fd : {&c.streams_[out], &c.streams_[err], &c.status_}) {
    if (*fd && !set_nonblocking(fd->get())) return "fcntl: " + errno_text(errno);
  }

  std::vector<char*> argv;
  for (const auto& a : plan.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (const auto& e : plan.envp) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  const std::vector<gid_t> groups(plan.identity.groups.begin(), plan.identity.groups.end());
  const ChildSetup setup{
      plan.path.c_str(),
      argv.data(),
      envp.data(),
      plan.work_dir.c_str(),
      as_sibling ? ::getppid() : ::getpid(),  // whom the child's parent-death check expects
      devnull.get(),
      out_w.get(),
      err_w.get(),
      status_w.get(),
      tty.get(),
      plan.ready_fd,
      plan.ready_fd_number,
      plan.rlimits.data(),
      plan.rlimits.size(),
      plan.nice.has_value(),
      plan.nice.value_or(0),
      plan.oom_score_adj.c_str(),
      plan.umask,
      plan.identity.switch_ids,
      !plan.identity.user.empty(),
      static_cast<uid_t>(plan.identity.uid),
      static_cast<gid_t>(plan.identity.gid),
      groups.data(),
      groups.size(),
  };

  // Signals stay blocked across fork so no handler of the server runs in the child before
  // it has reset them.
  sigset_t all, old;
  ::sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  // The spawn helper (as_sibling) clones the child as mgmtd's (CLONE_PARENT). A plain copy
  // otherwise, as fork: the helper is a small program of its own, so copying it costs
  // little, and the helper never waits on the child (a child stuck before its exec, in a
  // chdir to a hung mount, say, holds up nothing but itself).
  pid_t pid;
  if (as_sibling) {
    pid = static_cast<pid_t>(
        ::syscall(SYS_clone, CLONE_PARENT | SIGCHLD, nullptr, nullptr, nullptr, nullptr));
  } else {
    pid = ::fork();
  }
  if (pid == 0) exec_child(setup);
  const int fork_errno = errno;
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (pid < 0) return "fork: " + errno_text(fork_errno);

  c.pid_ = pid;
  c.own_session_ = plan.tty;
  // Also set here, so that kill(-pid) works even before the child has run. Not on a
  // terminal: setsid() fails in a process that already leads a group.
  // (The spawn helper cannot: the child is not its; mgmtd does it on receipt.)
  if (!plan.tty && !as_sibling) ::setpgid(pid, pid);
  // Through syscall(): glibc 2.36's <sys/pidfd.h> lacks extern "C" and does not link from C++.
  c.pidfd_.reset(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  // The child cannot be reaped before we are done here, so /proc/<pid> is still its.
  if (const auto st = read_proc_stat(pid)) c.start_time_ = st->start_time;
  c.path_ = plan.path;
  c.work_dir_ = plan.work_dir;
  c.nice_ = plan.nice;
  c.oom_score_adj_ = plan.oom_score_adj;
  c.user_ = plan.identity.user;
  c.group_ = plan.identity.group;
  return c;
}

std::optional<std::string> Child::read_exec_status() {
  ExecFailure f{};
  const ssize_t n = ::read(status_.get(), &f, sizeof f);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return std::nullopt;
  status_.reset();
  if (n != static_cast<ssize_t>(sizeof f)) return std::string();
  const std::string err = errno_text(f.err);
  switch (f.stage) {
    case ExecFailure::chdir: return "chdir " + work_dir_ + ": " + err;
    case ExecFailure::exec: return "exec " + path_ + ": " + err;
    case ExecFailure::tty: return "controlling terminal: " + err;
    case ExecFailure::rlimit: return "rlimits." + std::string(rlimit_name(f.detail)) + ": " + err;
    case ExecFailure::nice: return "nice " + std::to_string(nice_.value_or(0)) + ": " + err;
    case ExecFailure::oom_score_adj: return "oom_score_adj " + oom_score_adj_ + ": " + err;
    case ExecFailure::groups: return "setgroups for user " + user_ + ": " + err;
    case ExecFailure::gid:
      return "setgid to group " + (group_.empty() ? "of user " + user_ : group_) + ": " + err;
    case ExecFailure::uid: return "setuid to user " + user_ + ": " + err;
    default: return "redirecting stdio: " + err;
  }
}

void Child::signal(int sig, bool group) const noexcept {
  if (group) {
    signal_group(sig);
  } else if (pid_ > 0) {
    ::kill(pid_, sig);
  }
}

void Child::signal_group(int sig) const noexcept {
  if (pid_ <= 0) return;
  ::kill(-pid_, sig);
  // The leader may have moved itself to another group (setpgid): it is still ours, and
  // until it is reaped its pid is too.
  ::kill(pid_, sig);
}

bool Child::has_exited() const noexcept {
  siginfo_t info{};
  int r;
  do {
    r = ::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT);
  } while (r < 0 && errno == EINTR);
  return r < 0 || info.si_pid == pid_;  // r < 0 (ECHILD): reaped elsewhere
}

std::optional<ExitStatus> Child::try_reap() {
  int status = 0;
  pid_t r;
  do {
    r = ::waitpid(pid_, &status, WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == 0) return std::nullopt;
  ExitStatus s;
  if (r == pid_) {
    if (WIFEXITED(status)) s.code = WEXITSTATUS(status);
    if (WIFSIGNALED(status)) s.signal = WTERMSIG(status);
  }
  return s;  // r < 0 (ECHILD): someone else reaped it; nothing more to learn
}

}  // namespace mgmt::process
