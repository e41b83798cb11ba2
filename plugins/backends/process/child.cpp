#include "child.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
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
  enum Stage : int { setup = 0, chdir = 1, exec = 2 };
  int stage;
  int err;
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
[[noreturn]] void exec_child(const char* path, char* const* argv, char* const* envp,
                             const char* work_dir, pid_t parent, int devnull, int out, int err,
                             int status) {
  auto fail = [status](int stage, int e) {
    const ExecFailure f{stage, e};
    [[maybe_unused]] const auto n = ::write(status, &f, sizeof f);
    ::_exit(127);
  };
  ::setpgid(0, 0);
  // Dies with the supervisor thread; if the parent is already gone, the signal was missed.
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != parent) ::_exit(127);
  // Dispositions first, then the mask: a pending signal must not reach a parent's handler.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) ::sigaction(sig, &dfl, nullptr);
  sigset_t none;
  ::sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  if (::dup2(devnull, 0) < 0 || ::dup2(out, 1) < 0 || ::dup2(err, 2) < 0) {
    fail(ExecFailure::setup, errno);
  }
  // Whatever else the server had open (without O_CLOEXEC) must not leak into the child.
  if (::close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) != 0) cloexec_from(3);
  if (work_dir[0] != '\0' && ::chdir(work_dir) != 0) fail(ExecFailure::chdir, errno);
  ::execve(path, argv, envp);
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
                                                   const char* const* base_env) {
  ExecPlan plan;
  plan.work_dir = spec.work_dir;
  plan.argv.reserve(spec.args.size() + 1);
  plan.argv.push_back(spec.command);
  plan.argv.insert(plan.argv.end(), spec.args.begin(), spec.args.end());

  std::string path_var = "/usr/local/bin:/usr/bin:/bin";  // execvp's fallback
  auto key_of = [](std::string_view kv) { return kv.substr(0, kv.find('=')); };
  for (const char* const* e = base_env; e && *e; ++e) {
    const std::string_view kv(*e);
    bool overridden = false;
    for (const auto& [k, v] : spec.env) overridden = overridden || key_of(kv) == k;
    if (!overridden) plan.envp.emplace_back(kv);
  }
  for (const auto& [k, v] : spec.env) plan.envp.push_back(k + "=" + v);
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

std::variant<Child, std::string> Child::spawn(const ExecPlan& plan) {
  Child c;
  UniqueFd out_w, err_w, status_w;
  if (!make_pipe(c.streams_[out], out_w) || !make_pipe(c.streams_[err], err_w) ||
      !make_pipe(c.status_, status_w)) {
    return "pipe: " + errno_text(errno);
  }
  UniqueFd devnull(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (!devnull || !lift(devnull)) return "open /dev/null: " + errno_text(errno);
  for (const UniqueFd* fd : {&c.streams_[out], &c.streams_[err], &c.status_}) {
    if (!set_nonblocking(fd->get())) return "fcntl: " + errno_text(errno);
  }

  std::vector<char*> argv;
  for (const auto& a : plan.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (const auto& e : plan.envp) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  const pid_t parent = ::getpid();

  // Signals stay blocked across fork so no handler of the server runs in the child before
  // it has reset them.
  sigset_t all, old;
  ::sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  const pid_t pid = ::fork();
  if (pid == 0) {
    exec_child(plan.path.c_str(), argv.data(), envp.data(), plan.work_dir.c_str(), parent,
               devnull.get(), out_w.get(), err_w.get(), status_w.get());
  }
  const int fork_errno = errno;
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (pid < 0) return "fork: " + errno_text(fork_errno);

  c.pid_ = pid;
  // Also set here, so that kill(-pid) works even before the child has run.
  ::setpgid(pid, pid);
  // Through syscall(): glibc 2.36's <sys/pidfd.h> lacks extern "C" and does not link from C++.
  c.pidfd_.reset(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  // The child cannot be reaped before we are done here, so /proc/<pid> is still its.
  if (const auto st = read_proc_stat(pid)) c.start_time_ = st->start_time;
  c.path_ = plan.path;
  c.work_dir_ = plan.work_dir;
  return c;
}

std::optional<std::string> Child::read_exec_status() {
  ExecFailure f{};
  const ssize_t n = ::read(status_.get(), &f, sizeof f);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return std::nullopt;
  status_.reset();
  if (n != static_cast<ssize_t>(sizeof f)) return std::string();
  switch (f.stage) {
    case ExecFailure::chdir: return "chdir " + work_dir_ + ": " + errno_text(f.err);
    case ExecFailure::exec: return "exec " + path_ + ": " + errno_text(f.err);
    default: return "redirecting stdio: " + errno_text(f.err);
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
