#include "spawn_helper.hpp"

#include <dlfcn.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <vector>

#include <nlohmann/json.hpp>

namespace mgmt::process {

namespace {

using json = nlohmann::json;

constexpr std::size_t kMaxFds = 4;                  // a child's: pidfd, out, err, status
constexpr std::uint32_t kMaxMessage = 64u << 20;    // an absurd plan is refused, not read

std::string errno_text(int e) { return std::system_category().message(e); }

// Sends [length][bytes] with `fds` attached to its first byte.
bool send_message(int sock, const std::string& bytes, const std::vector<int>& fds) {
  const auto n = static_cast<std::uint32_t>(bytes.size());
  std::string frame(4, '\0');
  std::memcpy(frame.data(), &n, 4);
  frame += bytes;
  std::size_t off = 0;
  bool first = true;
  while (off < frame.size()) {
    iovec iov{frame.data() + off, frame.size() - off};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)] = {};
    if (first && !fds.empty()) {
      msg.msg_control = control;
      msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
      std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    const ssize_t r = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    off += static_cast<std::size_t>(r);
    first = false;
  }
  return true;
}

// Receives one message and the descriptors attached to it (close-on-exec); `truncated`
// when some did not fit (MSG_CTRUNC: this process is out of descriptors). False at the end
// of the socket or on an error (errno; 0 at a clean end); no descriptor is kept then.
bool receive_message(int sock, std::string& bytes, std::vector<int>& fds, bool* truncated = nullptr) {
  bytes.clear();
  fds.clear();
  if (truncated != nullptr) *truncated = false;
  auto give_up = [&] {
    for (const int fd : fds) ::close(fd);
    fds.clear();
    return false;
  };
  char header[4];
  std::size_t got = 0;
  while (got < sizeof header) {
    iovec iov{header + got, sizeof header - got};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    const ssize_t r = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      if (r == 0) errno = 0;
      return give_up();
    }
    if ((msg.msg_flags & MSG_CTRUNC) != 0 && truncated != nullptr) *truncated = true;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const std::size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (std::size_t i = 0; i < n; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
        fds.push_back(fd);
      }
    }
    got += static_cast<std::size_t>(r);
  }
  std::uint32_t n;
  std::memcpy(&n, header, 4);
  if (n > kMaxMessage) {
    errno = EMSGSIZE;
    return give_up();
  }
  bytes.resize(n);
  for (std::size_t off = 0; off < n;) {
    const ssize_t r = ::recv(sock, bytes.data() + off, n - off, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      if (r == 0) errno = EPIPE;
      return give_up();
    }
    off += static_cast<std::size_t>(r);
  }
  return true;
}

json plan_json(const ExecPlan& p) {
  json rl = json::array();
  for (const auto& r : p.rlimits) rl.push_back({r.resource, r.soft, r.hard});
  return {{"path", p.path},
          {"argv", p.argv},
          {"envp", p.envp},
          {"work_dir", p.work_dir},
          {"rlimits", std::move(rl)},
          {"nice", p.nice ? json(*p.nice) : json(nullptr)},
          {"oom_score_adj", p.oom_score_adj},
          {"umask", p.umask},
          {"user", p.identity.user},
          {"group", p.identity.group},
          {"uid", p.identity.uid},
          {"gid", p.identity.gid},
          {"groups", p.identity.groups},
          {"switch_ids", p.identity.switch_ids},
          {"tty", p.tty},
          {"tty_cols", p.tty_cols},
          {"tty_rows", p.tty_rows},
          {"ready", p.ready_fd >= 0},
          {"ready_fd_number", p.ready_fd_number}};
}

ExecPlan plan_of(const json& j, int ready_fd) {
  ExecPlan p;
  p.path = j.at("path").get<std::string>();
  p.argv = j.at("argv").get<std::vector<std::string>>();
  p.envp = j.at("envp").get<std::vector<std::string>>();
  p.work_dir = j.at("work_dir").get<std::string>();
  for (const auto& r : j.at("rlimits")) {
    p.rlimits.push_back(RLimit{r.at(0).get<int>(), r.at(1).get<std::uint64_t>(),
                               r.at(2).get<std::uint64_t>()});
  }
  if (!j.at("nice").is_null()) p.nice = j.at("nice").get<int>();
  p.oom_score_adj = j.at("oom_score_adj").get<std::string>();
  p.umask = j.at("umask").get<int>();
  p.identity.user = j.at("user").get<std::string>();
  p.identity.group = j.at("group").get<std::string>();
  p.identity.uid = j.at("uid").get<std::uint32_t>();
  p.identity.gid = j.at("gid").get<std::uint32_t>();
  p.identity.groups = j.at("groups").get<std::vector<std::uint32_t>>();
  p.identity.switch_ids = j.at("switch_ids").get<bool>();
  p.tty = j.at("tty").get<bool>();
  p.tty_cols = j.at("tty_cols").get<std::uint16_t>();
  p.tty_rows = j.at("tty_rows").get<std::uint16_t>();
  p.ready_fd = ready_fd;
  p.ready_fd_number = j.at("ready_fd_number").get<int>();
  return p;
}

std::string to_bytes(const json& j) {
  const auto v = json::to_msgpack(j);
  return std::string(v.begin(), v.end());
}

// The helper process: serves requests until its socket ends.
[[noreturn]] void serve(int sock, pid_t parent) {
  // Its own process group: a terminal's ^C (to mgmtd's group) is not for it, and the
  // signals mgmtd acts on are ignored here (the children reset every disposition).
  ::setpgid(0, 0);
  for (const int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGPIPE, SIGTSTP,
                        SIGTTIN, SIGTTOU}) {
    ::signal(sig, SIG_IGN);
  }
  sigset_t none;
  ::sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != parent) ::_exit(0);
  ::prctl(PR_SET_NAME, "mgmtd-spawn", 0, 0, 0);
  // 0-2 open (mgmtd may run with them closed): descriptors received later must not take
  // those numbers, which the children's dup2 calls overwrite.
  for (int fd = 0; fd <= 2; ++fd) {
    if (::fcntl(fd, F_GETFD) < 0 && ::open("/dev/null", O_RDWR) < 0) ::_exit(1);
  }
  // Only the socket stays (as fd 3), besides 0-2.
  if (sock != 3) {
    if (::dup2(sock, 3) < 0) ::_exit(1);
    sock = 3;
  }
  if (::syscall(SYS_close_range, 4U, ~0U, 0U) != 0) {
    for (int fd = 4; fd < 65536; ++fd) ::close(fd);
  }
  // Ready: mgmtd waits for this byte before its first request.
  const char ready = 1;
  if (::send(sock, &ready, 1, MSG_NOSIGNAL) != 1) ::_exit(0);
  std::string req;
  std::vector<int> fds;
  while (receive_message(sock, req, fds)) {
    json answer;
    std::vector<int> out;
    try {
      const json j = json::from_msgpack(req);
      const bool ready = j.at("ready").get<bool>();
      if (ready && fds.empty()) throw std::runtime_error("the readiness pipe did not arrive");
      const ExecPlan plan = plan_of(j, ready ? fds.front() : -1);
      auto r = Child::spawn(plan, true);
      if (auto* err = std::get_if<std::string>(&r)) {
        answer["err"] = *err;
      } else {
        const Child::Handover h = std::get<Child>(r).handover();
        answer = {{"pid", h.pid},
                  {"start_time", h.start_time},
                  {"own_session", h.own_session},
                  {"path", h.path},
                  {"work_dir", h.work_dir},
                  {"oom_score_adj", h.oom_score_adj},
                  {"user", h.user},
                  {"group", h.group},
                  {"nice", h.nice ? json(*h.nice) : json(nullptr)},
                  {"has", {h.pidfd >= 0, h.out >= 0, h.err >= 0, h.status >= 0}}};
        for (const int fd : {h.pidfd, h.out, h.err, h.status}) {
          if (fd >= 0) out.push_back(fd);
        }
      }
    } catch (const std::exception& e) {
      answer = {{"err", std::string("spawn helper: ") + e.what()}};
    }
    const bool sent = send_message(sock, to_bytes(answer), out);
    for (const int fd : out) ::close(fd);  // mgmtd has them now (or nobody will)
    for (const int fd : fds) ::close(fd);
    if (!sent) ::_exit(0);
  }
  ::_exit(0);
}

}  // namespace

std::string spawn_helper_program() {
  // This code is in the process plugin (<prefix>/lib/mgmtd/plugins/process.so) or, linked
  // statically, in a program of the build tree (<build>/bin/...).
  Dl_info info{};
  if (::dladdr(reinterpret_cast<void*>(&spawn_helper_program), &info) == 0 ||
      info.dli_fname == nullptr) {
    return {};
  }
  std::error_code ec;
  const auto self = std::filesystem::weakly_canonical(info.dli_fname, ec);
  if (ec) return {};
  for (const char* rel : {"../mgmtd-spawn", "../lib/mgmtd/mgmtd-spawn"}) {
    const auto p = (self.parent_path() / rel).lexically_normal();
    if (::access(p.c_str(), X_OK) == 0) return p.string();
  }
  return {};
}

int spawn_helper_main(int argc, char** argv) {
  if (argc != 2 || ::fcntl(3, F_GETFD) < 0) {
    const char msg[] = "mgmtd-spawn: the process backend's spawn helper; mgmtd runs it\n";
    [[maybe_unused]] const auto n = ::write(2, msg, sizeof msg - 1);
    return 2;
  }
  serve(3, static_cast<pid_t>(std::atol(argv[1])));
}

std::unique_ptr<SpawnHelper> SpawnHelper::start(std::string& error, const std::string& program) {
  if (program.empty()) {
    error = "mgmtd-spawn was not found beside the plugins";
    return nullptr;
  }
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    error = "socketpair: " + errno_text(errno);
    return nullptr;
  }
  UniqueFd ours(sv[0]), theirs(sv[1]);
  const pid_t parent = ::getpid();
  // Everything the child needs before its exec is made here: after fork only
  // async-signal-safe calls.
  const std::string parent_arg = std::to_string(parent);
  char* const argv[] = {const_cast<char*>("mgmtd-spawn"), const_cast<char*>(parent_arg.c_str()),
                        nullptr};
  const pid_t pid = ::fork();
  if (pid < 0) {
    error = "fork: " + errno_text(errno);
    return nullptr;
  }
  if (pid == 0) {
    // The socket becomes fd 3, open across the exec (dup2 clears FD_CLOEXEC; on fd 3
    // already, fcntl does).
    const int s = theirs.get();
    if (s == 3 ? ::fcntl(3, F_SETFD, 0) == 0 : ::dup2(s, 3) == 3) ::execv(program.c_str(), argv);
    ::_exit(127);
  }
  theirs.reset();
  // Wait until it serves (its first byte), so a helper that cannot start is known now.
  pollfd p{ours.get(), POLLIN, 0};
  char ready = 0;
  int r;
  do {
    r = ::poll(&p, 1, 10000);
  } while (r < 0 && errno == EINTR);
  if (r <= 0 || ::recv(ours.get(), &ready, 1, 0) != 1 || ready != 1) {
    error = program + (r == 0 ? " did not answer within 10 s" : " exited at once");
    ::kill(pid, SIGKILL);
    int status;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return nullptr;
  }
  return std::unique_ptr<SpawnHelper>(new SpawnHelper(pid, std::move(ours)));
}

SpawnHelper::~SpawnHelper() {
  sock_.reset();  // the helper reads the end and exits
  if (reaped_) return;  // its pid may name another process by now
  int status;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
}

std::variant<Child, std::string> SpawnHelper::spawn(const ExecPlan& plan) {
  std::vector<int> attach;
  if (plan.ready_fd >= 0) attach.push_back(plan.ready_fd);
  std::string bytes;
  std::vector<int> fds;
  bool truncated = false;
  if (!send_message(sock_.get(), to_bytes(plan_json(plan)), attach) ||
      !receive_message(sock_.get(), bytes, fds, &truncated)) {
    // Nothing was started, or (the helper died between its clone and its answer) a child
    // we cannot name: it is still ours, reaped as an orphan when it exits.
    broken_ = true;
    return "spawn helper (pid " + std::to_string(pid_) + "): " +
           (errno != 0 ? errno_text(errno) : std::string("it has exited"));
  }
  std::vector<UniqueFd> owned;
  for (const int fd : fds) owned.emplace_back(fd);
  pid_t started = 0;
  try {
    const json j = json::from_msgpack(bytes);
    if (j.contains("err")) return j.at("err").get<std::string>();
    Child::Handover h;
    h.pid = j.at("pid").get<pid_t>();
    started = h.pid;
    if (truncated) {
      throw std::runtime_error("its descriptors did not fit: " + errno_text(EMFILE));
    }
    h.start_time = j.at("start_time").get<std::uint64_t>();
    h.own_session = j.at("own_session").get<bool>();
    h.path = j.at("path").get<std::string>();
    h.work_dir = j.at("work_dir").get<std::string>();
    h.oom_score_adj = j.at("oom_score_adj").get<std::string>();
    h.user = j.at("user").get<std::string>();
    h.group = j.at("group").get<std::string>();
    if (!j.at("nice").is_null()) h.nice = j.at("nice").get<int>();
    const auto has = j.at("has").get<std::array<bool, 4>>();
    std::size_t next = 0;
    std::array<int, 4> slot{-1, -1, -1, -1};
    for (std::size_t i = 0; i < 4; ++i) {
      if (!has[i]) continue;
      if (next >= owned.size()) throw std::runtime_error("descriptors missing from the answer");
      slot[i] = owned[next++].release();
    }
    h.pidfd = slot[0];
    h.out = slot[1];
    h.err = slot[2];
    h.status = slot[3];
    // As a fork would: set here too, so kill(-pid) works before the child has run (not on
    // a terminal: the child calls setsid). The child is ours, so we may.
    if (!h.own_session) ::setpgid(h.pid, h.pid);
    return Child::adopt(h);
  } catch (const std::exception& e) {
    // A child we cannot watch must not run: it is ours, so killed and reaped here (rather
    // than started a second time by the caller).
    if (started > 0) {
      ::kill(started, SIGKILL);
      int status;
      while (::waitpid(started, &status, 0) < 0 && errno == EINTR) {
      }
      return std::string("the child's answer from the spawn helper: ") + e.what();
    }
    broken_ = true;
    return std::string("spawn helper: malformed answer: ") + e.what();
  }
}

}  // namespace mgmt::process
