#include "probes.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <system_error>

#include "proc_stat.hpp"

namespace mgmt::process {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr std::size_t kOutputKept = 4096;   // of an exec probe's output
constexpr std::size_t kReplyKept = 8192;    // of an HTTP answer, looking for the status line
constexpr std::size_t kResultShown = 240;   // characters of a result in events and status
constexpr int kNoPidfdTickMs = 50;          // exec probes without a pidfd: look this often
constexpr int kNotifyReadsPerWakeup = 64;

std::atomic<std::uint64_t> g_next_token{1};

std::string errno_text(int err) { return std::system_category().message(err); }

long long ms_of(Clock::duration d) {
  return std::chrono::duration_cast<milliseconds>(d).count();
}

// One line of text for events and status: control characters become spaces, bounded.
std::string one_line(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (out.size() >= kResultShown) {
      out += "...";
      break;
    }
    const auto u = static_cast<unsigned char>(c);
    out += u < 0x20 || u == 0x7f ? ' ' : c;
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

bool set_nonblocking(int fd) {
  const int flags = ::fcntl(fd, F_GETFL);
  return flags >= 0 && ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0;
}

// A sockaddr for an IP literal (checked when the config was read).
socklen_t make_address(const Probe& p, sockaddr_storage& ss) {
  std::memset(&ss, 0, sizeof ss);
  auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
  if (::inet_pton(AF_INET, p.host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(p.port);
    return sizeof(sockaddr_in);
  }
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
  if (::inet_pton(AF_INET6, p.host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(p.port);
    return sizeof(sockaddr_in6);
  }
  return 0;
}

// Everything the cloned probe child needs, prepared before the clone.
struct ProbeChild {
  const char* path;
  char* const* argv;
  char* const* envp;
  const char* work_dir;
  pid_t parent;
  int devnull, out;
  int umask;
  bool switch_ids, set_uid;
  uid_t uid;
  gid_t gid;
  const gid_t* groups;
  std::size_t group_count;
};

// In the cloned child: async-signal-safe calls only. Like child.cpp's exec_child, without
// what only the supervised program gets (limits, priority, terminal).
[[noreturn]] void exec_probe(const ProbeChild& c) {
  ::setpgid(0, 0);  // its own group: a timeout kills whatever it started too
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != c.parent) ::_exit(127);
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) ::sigaction(sig, &dfl, nullptr);
  sigset_t none;
  ::sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  auto fail = [&](const char* what) {
    [[maybe_unused]] auto n = ::write(1, what, std::strlen(what));
    n = ::write(1, c.path, std::strlen(c.path));
    ::_exit(127);
  };
  if (::dup2(c.devnull, 0) < 0 || ::dup2(c.out, 1) < 0 || ::dup2(c.out, 2) < 0) ::_exit(127);
  ::syscall(SYS_close_range, 3U, ~0U, 4U /* CLOSE_RANGE_CLOEXEC */);
  if (c.umask >= 0) ::umask(static_cast<mode_t>(c.umask));
  if (c.switch_ids) {
    if (::setgroups(c.group_count, c.groups) != 0) fail("setgroups failed for ");
    if (::setgid(c.gid) != 0) fail("setgid failed for ");
    if (c.set_uid && ::setuid(c.uid) != 0) fail("setuid failed for ");
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != c.parent) ::_exit(127);
  }
  if (c.work_dir[0] != '\0' && ::chdir(c.work_dir) != 0) fail("chdir failed for ");
  ::execve(c.path, c.argv, c.envp);
  fail("exec failed: ");
  ::_exit(127);
}

}  // namespace

struct Prober::Attempt {
  Probe::Kind kind = Probe::Kind::none;
  Clock::time_point started{};
  Clock::time_point deadline{};
  // tcp, http
  UniqueFd sock;
  bool connected = false;
  std::string request;
  std::size_t sent = 0;
  std::string reply;
  // exec
  pid_t pid = 0;
  UniqueFd pidfd;
  UniqueFd out;
  std::string output;
  bool killed = false;
};

struct Prober::Session {
  std::uint64_t token = 0;
  std::string id;
  pid_t pid = 0;  // the child, leader of its group
  uid_t uid = 0;
  std::optional<ReadyCheck> ready;
  std::optional<HealthCheck> health;
  std::variant<ExecPlan, std::string> ready_exec, health_exec;
  UniqueFd notify;
  UniqueFd ready_pipe;
  Clock::time_point born{};
  bool is_ready = false;   // readiness seen (or none configured): health checks run
  bool timed_out = false;  // not_ready reported: nothing more to do until forgotten
  std::optional<Clock::time_point> next;           // next probe
  std::optional<Clock::time_point> watchdog_due;   // WATCHDOG=1 expected by then
  std::uint32_t failures = 0;
  bool unhealthy = false;
  std::string last;  // the last probe's result
  std::optional<Attempt> attempt;

  const Probe* probe() const {
    if (!is_ready) return ready ? &ready->probe : nullptr;
    return health ? &health->probe : nullptr;
  }
};

namespace {

// Kills a probe child's group (and the child, wherever its group).
void kill_probe(pid_t pid) {
  ::kill(-pid, SIGKILL);
  ::kill(pid, SIGKILL);
}

// Reaps a probe child (a clone child: __WALL). True once reaped.
bool reap_probe(pid_t pid, int* status, bool block) {
  int st = 0;
  pid_t r;
  do {
    r = ::waitpid(pid, &st, __WALL | (block ? 0 : WNOHANG));
  } while (r < 0 && errno == EINTR);
  if (r == 0) return false;
  if (status != nullptr) *status = r == pid ? st : -1;
  return true;
}

}  // namespace

Prober::Prober(Sink sink) : sink_(std::move(sink)) {}

Prober::~Prober() {
  {
    std::lock_guard lock(mu_);
    quit_ = true;
  }
  if (wake_fd_) {
    const std::uint64_t one = 1;
    [[maybe_unused]] const auto n = ::write(wake_fd_.get(), &one, sizeof one);
  }
  if (thread_.joinable()) thread_.join();
  // Nothing else runs now. Probe children are killed and reaped, none is left a zombie.
  for (auto& [token, s] : sessions_) {
    if (s->attempt && s->attempt->pid > 0) {
      kill_probe(s->attempt->pid);
      reap_probe(s->attempt->pid, nullptr, true);
    }
  }
  for (auto& [pid, fd] : reaping_) reap_probe(pid, nullptr, true);
}

ProbeSetup Prober::prepare(const ProcessSpec& spec) {
  ProbeSetup out;
  out.token = g_next_token.fetch_add(1, std::memory_order_relaxed);
  const bool notify = spec.ready && spec.ready->probe.kind == Probe::Kind::notify;
  if (notify) {
    // An abstract socket of its own per child: nothing to clean up, nothing to collide
    // with. Any process may send to it, so each datagram's sender is checked (SO_PASSCRED).
    out.notify.reset(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    const std::string name = "mgmtd/notify/" + std::to_string(::getpid()) + "/" +
                             std::to_string(out.token);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path + 1, name.data(), name.size());  // sun_path[0] = 0: abstract
    const int on = 1;
    if (!out.notify ||
        ::bind(out.notify.get(), reinterpret_cast<const sockaddr*>(&addr),
               static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size())) != 0 ||
        ::setsockopt(out.notify.get(), SOL_SOCKET, SO_PASSCRED, &on, sizeof on) != 0) {
      out.error = "ready: notify socket: " + errno_text(errno);
      return out;
    }
    out.env.emplace_back("NOTIFY_SOCKET", "@" + name);
    if (spec.health && spec.health->watchdog.count() > 0) {
      out.env.emplace_back("WATCHDOG_USEC", std::to_string(spec.health->watchdog.count() * 1000));
    }
  }
  if (spec.ready && spec.ready->probe.kind == Probe::Kind::fd) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) {
      out.error = "ready: pipe: " + errno_text(errno);
      return out;
    }
    out.ready_pipe.reset(fds[0]);
    out.child_fd.reset(fds[1]);
    out.child_fd_number = spec.ready->probe.fd;
    set_nonblocking(out.ready_pipe.get());
  }
  return out;
}

std::unique_ptr<Prober::Session> Prober::new_session(
    std::uint64_t token, const ProcessSpec& spec, pid_t pid, uid_t uid,
    std::variant<ExecPlan, std::string> ready_exec,
    std::variant<ExecPlan, std::string> health_exec) {
  auto s = std::make_unique<Session>();
  s->token = token;
  s->id = spec.id;
  s->pid = pid;
  s->uid = uid;
  s->ready = spec.ready;
  s->health = spec.health;
  s->ready_exec = std::move(ready_exec);
  s->health_exec = std::move(health_exec);
  return s;
}

void Prober::watch(ProbeSetup setup, const ProcessSpec& spec, pid_t pid, uid_t uid,
                   std::variant<ExecPlan, std::string> ready_exec,
                   std::variant<ExecPlan, std::string> health_exec) {
  auto s = new_session(setup.token, spec, pid, uid, std::move(ready_exec),
                       std::move(health_exec));
  s->notify = std::move(setup.notify);
  s->ready_pipe = std::move(setup.ready_pipe);
  s->born = Clock::now();
  if (s->ready) {
    const auto k = s->ready->probe.kind;
    // Active probes start at once (a child ready at its first probe is seen at once).
    if (k == Probe::Kind::exec || k == Probe::Kind::tcp || k == Probe::Kind::http ||
        k == Probe::Kind::file) {
      s->next = s->born;
    }
  } else {
    s->is_ready = true;
    if (s->health && s->health->probe.kind != Probe::Kind::none) {
      s->next = s->born + s->health->probe.interval;
    }
  }
  add(std::move(s));
}

void Prober::add(std::unique_ptr<Session> s) {
  std::lock_guard lock(mu_);
  if (!wake_fd_) {
    wake_fd_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    thread_ = std::thread([this] { run(); });
  }
  sessions_[s->token] = std::move(s);
  const std::uint64_t one = 1;
  [[maybe_unused]] const auto n = ::write(wake_fd_.get(), &one, sizeof one);
}

void Prober::ready_seen(std::uint64_t token) {
  std::lock_guard lock(mu_);
  const auto it = sessions_.find(token);
  if (it == sessions_.end() || it->second->is_ready) return;
  Session& s = *it->second;
  s.is_ready = true;
  if (s.attempt && s.attempt->pid > 0) {
    kill_probe(s.attempt->pid);
    reaping_.emplace_back(s.attempt->pid, std::move(s.attempt->pidfd));
  }
  s.attempt.reset();
  const auto now = Clock::now();
  s.next.reset();
  if (s.health && s.health->probe.kind != Probe::Kind::none) {
    s.next = now + s.health->probe.interval;
  }
  if (s.health && s.health->watchdog.count() > 0) s.watchdog_due = now + s.health->watchdog;
  const std::uint64_t one = 1;
  [[maybe_unused]] const auto n = ::write(wake_fd_.get(), &one, sizeof one);
}

void Prober::forget(std::uint64_t token) {
  std::lock_guard lock(mu_);
  const auto it = sessions_.find(token);
  if (it == sessions_.end()) return;
  auto& a = it->second->attempt;
  if (a && a->pid > 0) {
    kill_probe(a->pid);
    reaping_.emplace_back(a->pid, std::move(a->pidfd));
  }
  // The descriptors may be in the poll set of the running poll(): closing them there is
  // harmless (the slots name the session by token, and it is gone).
  sessions_.erase(it);
  const std::uint64_t one = 1;
  [[maybe_unused]] const auto n = ::write(wake_fd_.get(), &one, sizeof one);
}

void Prober::stop() {
  {
    std::lock_guard lock(mu_);
    quit_ = true;
  }
  if (wake_fd_) {
    const std::uint64_t one = 1;
    [[maybe_unused]] const auto n = ::write(wake_fd_.get(), &one, sizeof one);
  }
  if (thread_.joinable()) thread_.join();
}

std::optional<ProbeHandover> Prober::hand_over(std::uint64_t token) {
  std::lock_guard lock(mu_);
  const auto it = sessions_.find(token);
  if (it == sessions_.end()) return std::nullopt;
  Session& s = *it->second;
  const auto now = Clock::now();
  auto ns = [&](Clock::time_point t) {
    return std::max<std::int64_t>(
        0, std::chrono::duration_cast<std::chrono::nanoseconds>(t - now).count());
  };
  ProbeHandover h;
  h.token = token;
  h.notify = s.notify.release();
  h.ready_pipe = s.ready_pipe.release();
  h.age_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(now - s.born).count();
  h.is_ready = s.is_ready;
  h.timed_out = s.timed_out;
  h.unhealthy = s.unhealthy;
  h.failures = s.failures;
  h.last = s.last;
  if (s.attempt) {
    // Abandoned: the next program probes again at once.
    if (s.attempt->pid > 0) {
      kill_probe(s.attempt->pid);
      reap_probe(s.attempt->pid, nullptr, true);
    }
    s.attempt.reset();
    h.next_ns = 0;
  } else if (s.next) {
    h.next_ns = ns(*s.next);
  }
  if (s.watchdog_due) h.watchdog_ns = ns(*s.watchdog_due);
  sessions_.erase(it);
  return h;
}

void Prober::adopt(const ProbeHandover& h, const ProcessSpec& spec, pid_t pid, uid_t uid,
                   std::variant<ExecPlan, std::string> ready_exec,
                   std::variant<ExecPlan, std::string> health_exec) {
  // Later children's tokens (and notify socket names) must not collide with this one's.
  std::uint64_t next = g_next_token.load(std::memory_order_relaxed);
  while (next <= h.token &&
         !g_next_token.compare_exchange_weak(next, h.token + 1, std::memory_order_relaxed)) {
  }
  const auto now = Clock::now();
  auto s = new_session(h.token, spec, pid, uid, std::move(ready_exec), std::move(health_exec));
  s->notify.reset(h.notify);
  s->ready_pipe.reset(h.ready_pipe);
  s->born = now - std::chrono::nanoseconds(h.age_ns);
  s->is_ready = h.is_ready || !s->ready;
  s->timed_out = h.timed_out;
  s->unhealthy = h.unhealthy;
  s->failures = h.failures;
  s->last = h.last;
  if (h.next_ns) s->next = now + std::chrono::nanoseconds(*h.next_ns);
  if (h.watchdog_ns && s->health && s->health->watchdog.count() > 0) {
    s->watchdog_due = now + std::chrono::nanoseconds(*h.watchdog_ns);
  }
  add(std::move(s));
}

void Prober::start_attempt(Session& s, Clock::time_point now) {
  const Probe& p = *s.probe();
  Attempt a;
  a.kind = p.kind;
  a.started = now;
  a.deadline = now + p.timeout;
  s.attempt.emplace(std::move(a));
  Attempt& at = *s.attempt;
  auto fail_now = [&](std::string why) {
    at.reply = std::move(why);
    at.deadline = now;  // finished at once, as a failure: see finish_now below
    at.killed = true;
  };
  switch (p.kind) {
    case Probe::Kind::tcp:
    case Probe::Kind::http: {
      sockaddr_storage ss;
      const socklen_t len = make_address(p, ss);
      at.sock.reset(::socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
      if (!at.sock) return fail_now("socket: " + errno_text(errno));
      int r;
      do {
        r = ::connect(at.sock.get(), reinterpret_cast<const sockaddr*>(&ss), len);
      } while (r != 0 && errno == EINTR);
      if (r != 0 && errno != EINPROGRESS) {
        return fail_now("connect " + p.host + ":" + std::to_string(p.port) + ": " +
                        errno_text(errno));
      }
      if (p.kind == Probe::Kind::http) {
        const std::string host =
            p.host.find(':') != std::string::npos ? "[" + p.host + "]" : p.host;
        at.request = "GET " + p.path + " HTTP/1.0\r\nHost: " + host + ":" +
                     std::to_string(p.port) +
                     "\r\nUser-Agent: mgmtd-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n";
      }
      return;
    }
    case Probe::Kind::exec: {
      const auto& plan_v = s.is_ready ? s.health_exec : s.ready_exec;
      if (const auto* err = std::get_if<std::string>(&plan_v)) return fail_now(*err);
      const ExecPlan& plan = std::get<ExecPlan>(plan_v);
      int pipefd[2];
      if (::pipe2(pipefd, O_CLOEXEC) != 0) return fail_now("pipe: " + errno_text(errno));
      UniqueFd out_r(pipefd[0]), out_w(pipefd[1]);
      UniqueFd devnull(::open("/dev/null", O_RDONLY | O_CLOEXEC));
      if (!devnull) return fail_now("open /dev/null: " + errno_text(errno));
      set_nonblocking(out_r.get());
      std::vector<char*> argv;
      for (const auto& x : plan.argv) argv.push_back(const_cast<char*>(x.c_str()));
      argv.push_back(nullptr);
      std::vector<char*> envp;
      for (const auto& x : plan.envp) envp.push_back(const_cast<char*>(x.c_str()));
      envp.push_back(nullptr);
      const std::vector<gid_t> groups(plan.identity.groups.begin(), plan.identity.groups.end());
      // The descriptors the child dup2s must not be 0, 1 or 2 (mgmtd may run with them
      // closed); pipe2 and open return the lowest free numbers.
      const ProbeChild c{plan.path.c_str(),
                         argv.data(),
                         envp.data(),
                         plan.work_dir.c_str(),
                         ::getpid(),
                         devnull.get(),
                         out_w.get(),
                         plan.umask,
                         plan.identity.switch_ids,
                         !plan.identity.user.empty(),
                         static_cast<uid_t>(plan.identity.uid),
                         static_cast<gid_t>(plan.identity.gid),
                         groups.data(),
                         groups.size()};
      if (c.devnull <= 2 || c.out <= 2) return fail_now("descriptors 0-2 are not open in mgmtd");
      sigset_t all, old;
      ::sigfillset(&all);
      ::pthread_sigmask(SIG_SETMASK, &all, &old);
      // No exit signal: a clone child, invisible to the supervisor's waitid(P_ALL).
      const long pid = ::syscall(SYS_clone, 0UL, nullptr, nullptr, nullptr, nullptr);
      if (pid == 0) exec_probe(c);
      const int clone_errno = errno;
      ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
      if (pid < 0) return fail_now("clone: " + errno_text(clone_errno));
      at.pid = static_cast<pid_t>(pid);
      ::setpgid(at.pid, at.pid);
      at.pidfd.reset(static_cast<int>(::syscall(SYS_pidfd_open, at.pid, 0)));
      at.out = std::move(out_r);
      return;
    }
    case Probe::Kind::file: {
      struct stat st {};
      if (::stat(p.path.c_str(), &st) == 0) {
        at.reply = "exists";
        at.connected = true;  // passed
      } else {
        at.reply = p.path + ": " + errno_text(errno);
      }
      at.deadline = now;
      at.killed = !at.connected;
      return;
    }
    default:
      s.attempt.reset();
      return;
  }
}

void Prober::run() {
  enum Which { wake, notify, ready_pipe, sock, out, pidfd };
  struct Slot {
    std::uint64_t token;
    Which which;
  };
  std::vector<pollfd> fds;
  std::vector<Slot> slots;
  std::vector<ProbeReport> reports;

  auto report = [&](const Session& s, ProbeReport::Kind kind) -> ProbeReport& {
    ProbeReport r;
    r.kind = kind;
    r.token = s.token;
    r.id = s.id;
    reports.push_back(std::move(r));
    return reports.back();
  };

  // The end of a probe of `s`: `ok` or not, with `text`.
  // `text` is a copy: it may be the attempt's, which ends here.
  auto finish = [&](Session& s, bool ok, std::string text, Clock::time_point now) {
    s.attempt.reset();
    s.last = (ok ? "ok: " : "failed: ") + one_line(text);
    if (!s.is_ready) {
      if (!ok) {
        s.next = now + s.ready->probe.interval;
        return;
      }
      s.is_ready = true;
      s.next.reset();
      ProbeReport& r = report(s, ProbeReport::Kind::ready);
      r.ok = true;
      r.text = describe(s.ready->probe) + ": " + one_line(text);
      r.last = s.last;
      r.took = std::chrono::duration_cast<milliseconds>(now - s.born);
      if (s.health && s.health->probe.kind != Probe::Kind::none) {
        s.next = now + s.health->probe.interval;
      }
      if (s.health && s.health->watchdog.count() > 0) s.watchdog_due = now + s.health->watchdog;
      return;
    }
    s.next = now + s.health->probe.interval;
    ProbeReport& r = report(s, ProbeReport::Kind::health);
    r.ok = ok;
    r.text = r.last = s.last;
    if (ok) {
      s.failures = 0;
      r.changed = s.unhealthy;
      s.unhealthy = false;
      return;
    }
    ++s.failures;
    if (s.failures >= s.health->retries && !s.unhealthy) {
      s.unhealthy = true;
      r.changed = true;
      r.text = describe(s.health->probe) + " failed " + std::to_string(s.failures) + " time" +
               (s.failures == 1 ? "" : "s") + " in a row; last: " + one_line(text);
    }
  };

  // Drives the tcp/http attempt of `s` after its socket reported `revents`.
  auto on_socket = [&](Session& s, short revents, Clock::time_point now) {
    Attempt& a = *s.attempt;
    const Probe& p = *s.probe();
    if (!a.connected) {
      int err = 0;
      socklen_t len = sizeof err;
      if (::getsockopt(a.sock.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
      if (err == 0 && (revents & (POLLOUT | POLLERR | POLLHUP)) == 0) return;
      if (err != 0) {
        return finish(s, false,
                      "connect " + p.host + ":" + std::to_string(p.port) + ": " + errno_text(err),
                      now);
      }
      a.connected = true;
      if (p.kind == Probe::Kind::tcp) {
        return finish(s, true, "connected to " + p.host + ":" + std::to_string(p.port), now);
      }
    }
    while (a.sent < a.request.size()) {
      const ssize_t n = ::send(a.sock.get(), a.request.data() + a.sent, a.request.size() - a.sent,
                               MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) return;
      if (n < 0) return finish(s, false, "send: " + errno_text(errno), now);
      a.sent += static_cast<std::size_t>(n);
    }
    char buf[4096];
    while (true) {
      const ssize_t n = ::recv(a.sock.get(), buf, sizeof buf, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) break;
      if (n < 0) return finish(s, false, "recv: " + errno_text(errno), now);
      if (n > 0 && a.reply.size() < kReplyKept) a.reply.append(buf, static_cast<std::size_t>(n));
      const auto eol = a.reply.find('\n');
      if (eol == std::string::npos && n > 0 && a.reply.size() < kReplyKept) continue;
      std::string line = a.reply.substr(0, std::min(eol, a.reply.size()));
      if (!line.empty() && line.back() == '\r') line.pop_back();
      // "HTTP/1.1 200 OK": the status is the second word.
      int code = 0;
      if (line.rfind("HTTP/", 0) == 0) {
        const auto sp = line.find(' ');
        if (sp != std::string::npos && sp + 4 <= line.size()) {
          for (std::size_t i = sp + 1; i < sp + 4; ++i) {
            code = line[i] >= '0' && line[i] <= '9' ? code * 10 + (line[i] - '0') : -1000;
          }
        }
      }
      if (eol == std::string::npos && n == 0 && line.empty()) {
        return finish(s, false, "connection closed before an HTTP status line", now);
      }
      if (code < 100) return finish(s, false, "not an HTTP answer: " + line, now);
      return finish(s, code >= 200 && code <= 299, line, now);
    }
  };

  auto drain_output = [&](Attempt& a) {
    char buf[4096];
    while (a.out) {
      const ssize_t n = ::read(a.out.get(), buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) return;
      if (n <= 0) {
        a.out.reset();
        return;
      }
      if (a.output.size() < kOutputKept) {
        a.output.append(buf, std::min(static_cast<std::size_t>(n), kOutputKept - a.output.size()));
      }
    }
  };

  // The exec attempt of `s`, once its child may have exited.
  auto on_exec_exit = [&](Session& s, Clock::time_point now) {
    Attempt& a = *s.attempt;
    int status = 0;
    if (!reap_probe(a.pid, &status, false)) return;
    drain_output(a);
    std::string text;
    bool ok = false;
    if (a.killed) {
      text = "timed out after " + std::to_string(ms_of(s.probe()->timeout)) + " ms (killed)";
    } else if (status >= 0 && WIFEXITED(status)) {
      ok = WEXITSTATUS(status) == 0;
      text = "exit code " + std::to_string(WEXITSTATUS(status));
    } else if (status >= 0 && WIFSIGNALED(status)) {
      text = "killed by signal " + std::to_string(WTERMSIG(status));
    } else {
      text = "exit status unknown";
    }
    const std::string said = one_line(a.output);
    if (!said.empty()) text += ": " + said;
    a.pid = 0;
    finish(s, ok, text, now);
  };

  // Datagrams on the notify socket of `s`.
  auto on_notify = [&](Session& s, Clock::time_point now) {
    for (int i = 0; i < kNotifyReadsPerWakeup && s.notify; ++i) {
      char buf[4096];
      alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(ucred)) + CMSG_SPACE(sizeof(int) * 16)];
      iovec iov{buf, sizeof buf};
      msghdr m{};
      m.msg_iov = &iov;
      m.msg_iovlen = 1;
      m.msg_control = ctrl;
      m.msg_controllen = sizeof ctrl;
      const ssize_t n = ::recvmsg(s.notify.get(), &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return;
      std::optional<ucred> cred;
      for (cmsghdr* c = CMSG_FIRSTHDR(&m); c != nullptr; c = CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_level != SOL_SOCKET) continue;
        if (c->cmsg_type == SCM_CREDENTIALS && c->cmsg_len >= CMSG_LEN(sizeof(ucred))) {
          ucred u;
          std::memcpy(&u, CMSG_DATA(c), sizeof u);
          cred = u;
        } else if (c->cmsg_type == SCM_RIGHTS) {
          // BARRIER=1 (sd_notify_barrier, systemd-notify): the sender waits until we have
          // closed the descriptor it passed.
          const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
          for (std::size_t k = 0; k < count; ++k) {
            int fd;
            std::memcpy(&fd, CMSG_DATA(c) + k * sizeof(int), sizeof fd);
            ::close(fd);
          }
        }
      }
      // From the child, something in its process group (systemd-notify, a child shell), or
      // one of its descendants; a sender that has exited already is taken on its uid.
      bool trusted = false;
      if (cred) {
        pid_t p = cred->pid;
        trusted = p == s.pid || ::getpgid(p) == s.pid;
        for (int depth = 0; !trusted && depth < 32 && p > 1; ++depth) {
          const auto st = read_proc_stat(p);
          if (!st) {
            trusted = depth == 0 && cred->uid == s.uid;
            break;
          }
          p = st->ppid;
          trusted = p == s.pid;
        }
      }
      if (!trusted) continue;
      std::string_view text(buf, static_cast<std::size_t>(n));
      while (!text.empty()) {
        const auto nl = text.find('\n');
        const std::string_view line = text.substr(0, nl);
        text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
        if (line == "READY=1" && !s.is_ready && !s.timed_out) {
          s.is_ready = true;
          s.next.reset();
          ProbeReport& r = report(s, ProbeReport::Kind::ready);
          r.ok = true;
          r.text = "notify: READY=1";
          r.last = s.last = "ok: READY=1";
          r.took = std::chrono::duration_cast<milliseconds>(now - s.born);
          if (s.health && s.health->probe.kind != Probe::Kind::none) {
            s.next = now + s.health->probe.interval;
          }
          if (s.health && s.health->watchdog.count() > 0) {
            s.watchdog_due = now + s.health->watchdog;
          }
        } else if (line.rfind("STATUS=", 0) == 0) {
          report(s, ProbeReport::Kind::status).text = one_line(line.substr(7));
        } else if (line == "WATCHDOG=1" && s.health && s.health->watchdog.count() > 0) {
          s.watchdog_due = now + s.health->watchdog;
          if (s.unhealthy && s.health->probe.kind == Probe::Kind::none) {
            s.unhealthy = false;
            ProbeReport& r = report(s, ProbeReport::Kind::health);
            r.ok = true;
            r.changed = true;
            r.text = r.last = s.last = "ok: WATCHDOG=1";
          }
        }
      }
    }
  };

  // s6: a newline on the pipe.
  auto on_ready_pipe = [&](Session& s, Clock::time_point now) {
    char buf[512];
    while (s.ready_pipe) {
      const ssize_t n = ::read(s.ready_pipe.get(), buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) return;
      if (n <= 0) {
        s.ready_pipe.reset();  // closed without a newline: only start_timeout is left
        return;
      }
      if (std::memchr(buf, '\n', static_cast<std::size_t>(n)) != nullptr && !s.is_ready &&
          !s.timed_out) {
        s.ready_pipe.reset();
        finish(s, true, "a newline on fd " + std::to_string(s.ready->probe.fd), now);
        return;
      }
    }
  };

  std::unique_lock lock(mu_);
  while (!quit_) {
    auto now = Clock::now();
    // 1. What the last poll reported.
    for (std::size_t i = 0; i < fds.size(); ++i) {
      if (fds[i].revents == 0) continue;
      if (slots[i].which == wake) {
        std::uint64_t v;
        [[maybe_unused]] const auto r = ::read(wake_fd_.get(), &v, sizeof v);
        continue;
      }
      const auto it = sessions_.find(slots[i].token);
      if (it == sessions_.end()) continue;  // forgotten meanwhile
      Session& s = *it->second;
      Attempt* a = s.attempt ? &*s.attempt : nullptr;
      switch (slots[i].which) {
        case notify:
          if (s.notify.get() == fds[i].fd) on_notify(s, now);
          break;
        case ready_pipe:
          if (s.ready_pipe.get() == fds[i].fd) on_ready_pipe(s, now);
          break;
        case sock:
          if (a && a->sock.get() == fds[i].fd) on_socket(s, fds[i].revents, now);
          break;
        case out:
          if (a && a->out.get() == fds[i].fd) drain_output(*a);
          break;
        case pidfd:
          if (a && a->pidfd.get() == fds[i].fd) on_exec_exit(s, now);
          break;
        default:
          break;
      }
    }
    std::erase_if(reaping_, [](const auto& r) { return reap_probe(r.first, nullptr, false); });

    // 2. Timers: probe timeouts, start_timeout, the watchdog, probes that are due.
    now = Clock::now();
    bool tick = !reaping_.empty();
    for (auto& [token, sp] : sessions_) {
      Session& s = *sp;
      if (s.attempt && s.attempt->pid > 0 && !s.attempt->pidfd) {
        on_exec_exit(s, now);
        tick = tick || s.attempt.has_value();
      }
      if (s.attempt && now >= s.attempt->deadline) {
        Attempt& a = *s.attempt;
        if (a.kind == Probe::Kind::exec && a.pid > 0) {
          if (!a.killed) {
            a.killed = true;
            kill_probe(a.pid);  // finished once reaped (on_exec_exit)
          }
        } else if (a.killed || a.kind == Probe::Kind::file) {
          finish(s, a.connected, a.reply, now);  // decided when it started
        } else {
          finish(s, false, "timed out after " + std::to_string(ms_of(s.probe()->timeout)) + " ms",
                 now);
        }
      }
      if (!s.is_ready && !s.timed_out && now >= s.born + s.ready->start_timeout) {
        s.timed_out = true;
        s.next.reset();
        if (s.attempt && s.attempt->pid > 0) {
          kill_probe(s.attempt->pid);
          reaping_.emplace_back(s.attempt->pid, std::move(s.attempt->pidfd));
        }
        s.attempt.reset();
        ProbeReport& r = report(s, ProbeReport::Kind::not_ready);
        r.last = s.last;
        r.text = "not ready after " + std::to_string(ms_of(s.ready->start_timeout)) +
                 " ms (start_timeout; " + describe(s.ready->probe) +
                 (s.last.empty() ? std::string(")") : "; last probe " + s.last + ")");
      }
      if (s.is_ready && s.watchdog_due && now >= *s.watchdog_due) {
        const auto wd = s.health->watchdog;
        s.watchdog_due = now + wd;
        if (!s.unhealthy) {
          s.unhealthy = true;
          ProbeReport& r = report(s, ProbeReport::Kind::health);
          r.changed = true;
          r.last = s.last = "failed: no WATCHDOG=1 for " + std::to_string(ms_of(wd)) + " ms";
          r.text = "watchdog: no WATCHDOG=1 for " + std::to_string(ms_of(wd)) + " ms";
        }
      }
      if (!s.attempt && s.next && now >= *s.next && !s.timed_out && s.probe() != nullptr) {
        s.next.reset();
        start_attempt(s, now);
        if (s.attempt && s.attempt->deadline <= now) {
          finish(s, s.attempt->connected, s.attempt->reply, now);  // decided at once
        }
      }
    }

    // 3. The next poll.
    fds.clear();
    slots.clear();
    fds.push_back({wake_fd_.get(), POLLIN, 0});
    slots.push_back({0, wake});
    std::optional<Clock::time_point> next;
    auto consider = [&](const std::optional<Clock::time_point>& t) {
      if (t && (!next || *t < *next)) next = t;
    };
    for (auto& [token, sp] : sessions_) {
      Session& s = *sp;
      auto add = [&](int fd, short events, Which w) {
        if (fd < 0) return;
        fds.push_back({fd, events, 0});
        slots.push_back({token, w});
      };
      add(s.notify.get(), POLLIN, notify);
      if (!s.is_ready) add(s.ready_pipe.get(), POLLIN, ready_pipe);
      if (s.attempt) {
        const Attempt& a = *s.attempt;
        const bool writing = !a.connected || a.sent < a.request.size();
        add(a.sock.get(), writing ? POLLOUT : POLLIN, sock);
        add(a.out.get(), POLLIN, out);
        add(a.pidfd.get(), POLLIN, pidfd);
        if (!a.killed || a.pid == 0) consider(a.deadline);
      }
      consider(s.next);
      if (!s.is_ready && !s.timed_out && s.ready) consider(s.born + s.ready->start_timeout);
      if (s.is_ready) consider(s.watchdog_due);
    }
    int timeout = -1;
    if (next) {
      const auto ms = std::chrono::ceil<milliseconds>(*next - Clock::now()).count();
      timeout = static_cast<int>(std::clamp<long long>(ms, 0, 24 * 3600 * 1000));
    }
    if (tick) timeout = timeout < 0 ? kNoPidfdTickMs : std::min(timeout, kNoPidfdTickMs);

    lock.unlock();
    if (!reports.empty()) {
      sink_(reports);
      reports.clear();
    }
    const int n = ::poll(fds.data(), fds.size(), timeout);
    if (n < 0) {
      for (auto& f : fds) f.revents = 0;
    }
    lock.lock();
  }
}

}  // namespace mgmt::process
