// Regression tests for defects of the process backend found by review and by attack.
//
// Some need a process the rest of the suite must not share: a seccomp filter that makes a
// system call fail (a kill that cannot kill, a kernel without CLOSE_RANGE_CLOEXEC). Those
// run as hidden test cases ("[.]") of this same binary, in a fresh process started by the
// visible test with MGMT_DEFECTS_HELPER set; the filter is installed before any thread.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <future>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include "mgmt/plugin.hpp"
#include "process_backend.hpp"
#include "process_fixture.hpp"
#include "wait.hpp"

using namespace std::chrono_literals;
using mgmt::Entry;
using mgmt::Event;
using mgmt::OpResult;
using mgmt::process::ProcessBackend;
using mgmt::test::wait_until;
namespace state = mgmt::state;
namespace event = mgmt::event;

namespace {

// ---------------------------------------------------------------------------------------
// Helper processes

bool in_helper() { return std::getenv("MGMT_DEFECTS_HELPER") != nullptr; }

struct HelperResult {
  int exit_code = -1;  // -1: killed by a signal, or did not finish in time
  std::string output;
};

// Runs the hidden test case `name` of this binary in a new process; its output for the
// failure message.
HelperResult run_helper(const std::string& name) {
  mgmt::test::TempDir dir;
  const std::string out = dir.file("out");
  std::string asan = "detect_leaks=0";  // LeakSanitizer's stop-the-world and seccomp disagree
  if (const char* a = std::getenv("ASAN_OPTIONS")) asan = std::string(a) + ":" + asan;
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) ::_exit(126);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::setenv("MGMT_DEFECTS_HELPER", "1", 1);
    ::setenv("ASAN_OPTIONS", asan.c_str(), 1);
    char exe[] = "/proc/self/exe";
    std::string test = name;
    char* argv[] = {exe, test.data(), nullptr};
    ::execv(exe, argv);
    ::_exit(127);
  }
  REQUIRE(pid > 0);
  HelperResult r;
  int status = 0;
  const bool exited = wait_until([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, 60s);
  if (!exited) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
  } else if (WIFEXITED(status)) {
    r.exit_code = WEXITSTATUS(status);
  }
  r.output = mgmt::test::read_text(out);
  return r;
}

// Installs a seccomp filter (this thread and those it creates afterwards): `nr` fails with
// `err`; with `arg1` set, only when its second argument equals it.
bool fail_syscall(long nr, int err, long arg1 = -1) {
#if defined(__x86_64__)
  constexpr std::uint32_t kArch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
  constexpr std::uint32_t kArch = AUDIT_ARCH_AARCH64;
#else
  return false;
#endif
  const auto u = [](auto v) { return static_cast<std::uint32_t>(v); };
  const std::uint32_t arg1_low =
      u(offsetof(seccomp_data, args) + sizeof(std::uint64_t));  // little-endian low half
  std::vector<sock_filter> prog = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, u(offsetof(seccomp_data, arch))),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, kArch, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, u(offsetof(seccomp_data, nr))),
  };
  if (arg1 < 0) {
    prog.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, u(nr), 0, 1));
  } else {
    prog.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, u(nr), 0, 3));
    prog.push_back(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, arg1_low));
    prog.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, u(arg1), 0, 1));
  }
  prog.push_back(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (u(err) & SECCOMP_RET_DATA)));
  prog.push_back(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
  sock_fprog fprog{static_cast<unsigned short>(prog.size()), prog.data()};
  return ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 &&
         ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog, 0, 0) == 0;
}

// A backend whose log lines end up in `out`.
std::unique_ptr<ProcessBackend> logged_backend(const std::string& yaml, std::ostringstream& out) {
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out);
  auto log = std::make_shared<spdlog::logger>("process", sink);
  log->set_level(spdlog::level::debug);
  mgmt::PluginEnv env;
  env.config = YAML::Load(yaml);
  env.config_file = "test.yaml";
  env.log = log;
  return std::make_unique<ProcessBackend>(env);
}

}  // namespace

// ---------------------------------------------------------------------------------------
// A stop whose SIGKILL cannot kill

// SIGKILL is made to fail (EPERM) by a seccomp filter, which is what a child in
// uninterruptible sleep looks like to the supervisor: signalled, and still there.
TEST_CASE("defects helper: a stop that cannot kill answers and shutdown finishes",
          "[.][defects-helper]") {
  if (!in_helper()) return;
  REQUIRE(fail_syscall(SYS_kill, EPERM, SIGKILL));
  std::ostringstream log_text;
  auto b = logged_backend(
      "processes:\n" +
          mgmt::test::sh_process("stuck",
                                 "trap '' TERM; echo ready $$; while true; do sleep 0.05; done",
                                 "    stop_timeout: 100ms\n    autostart: false\n"),
      log_text);
  mgmt::test::EventLog events(*b);
  b->start_all();
  // Ignoring SIGTERM (the ring keeps what earlier runs wrote).
  auto ready = [&](pid_t p) {
    return mgmt::test::logs_of(*b, "stuck").find("ready " + std::to_string(p)) != std::string::npos;
  };

  // 1. Given up outside shutdown: the stop is answered with the reason.
  REQUIRE(mgmt::test::start(*b, "stuck").err.empty());
  const auto pid = static_cast<pid_t>(mgmt::test::pid_of(*b, "stuck"));
  REQUIRE(wait_until([&] { return ready(pid); }));
  OpResult r = mgmt::test::stop(*b, "stuck");
  CHECK(r.err.find("did not exit after SIGKILL") != std::string::npos);
  CHECK_FALSE(mgmt::test::process_gone(pid));
  // A second stop is answered at once, with the same reason.
  CHECK(mgmt::test::stop(*b, "stuck").err.find("did not exit after SIGKILL") != std::string::npos);

  // 2. It exits after all (by a signal the filter lets through): reaped and recorded.
  REQUIRE(::kill(-pid, SIGUSR1) == 0);
  REQUIRE(wait_until([&] { return mgmt::test::state_of(*b, "stuck") == state::stopped; }));
  const auto e = b->status("stuck");
  REQUIRE(e);
  CHECK(e->pid == 0);
  CHECK(e->exit_signal == std::optional<std::int64_t>(SIGUSR1));
  CHECK(wait_until([] { return mgmt::test::zombies() == 0; }));
  CHECK(events.has("stuck", event::stopped));

  // 3. Given up again, then shutdown: it finishes, naming what it leaves behind.
  REQUIRE(mgmt::test::start(*b, "stuck").err.empty());
  const auto pid2 = static_cast<pid_t>(mgmt::test::pid_of(*b, "stuck"));
  REQUIRE(wait_until([&] { return ready(pid2); }));
  CHECK(mgmt::test::stop(*b, "stuck").err.find("did not exit after SIGKILL") != std::string::npos);
  auto done = std::async(std::launch::async, [&] { b->shutdown(); });
  REQUIRE(done.wait_for(30s) == std::future_status::ready);
  CHECK(log_text.str().find("shutdown: process stuck (pid " + std::to_string(pid2) +
                            ") did not exit after SIGKILL") != std::string::npos);
  bool incomplete = false;
  for (const auto& ev : events.all()) incomplete = incomplete || ev.type == event::shutdown_incomplete;
  CHECK(incomplete);
  // The kernel's parent-death signal is no kill(): it ends the child with the supervisor.
  CHECK(wait_until([&] { return mgmt::test::process_gone(pid2); }));
}

TEST_CASE("a stop whose SIGKILL cannot kill is answered, and shutdown still finishes",
          "[process][defects-backend]") {
  const auto r = run_helper("defects helper: a stop that cannot kill answers and shutdown finishes");
  INFO(r.output);
  CHECK(r.exit_code == 0);
}

// ---------------------------------------------------------------------------------------
// Descriptors a child must not inherit

// Kernels before 5.11 refuse CLOSE_RANGE_CLOEXEC (EINVAL), and before 5.9 have no
// close_range at all: a seccomp filter makes this one answer like them.
TEST_CASE("defects helper: without close_range a child inherits no descriptor",
          "[.][defects-helper]") {
  if (!in_helper()) return;
  REQUIRE(fail_syscall(SYS_close_range, EINVAL));
  REQUIRE(::syscall(SYS_close_range, 1000, 1000, 0) == -1);
  REQUIRE(errno == EINVAL);
  // Descriptors left open across exec, as Asio's sockets were, at numbers no child opens.
  const int file = ::open("/dev/null", O_RDONLY);
  REQUIRE(file >= 0);
  REQUIRE(::dup2(file, 200) == 200);
  REQUIRE(::dup2(file, 300) == 300);
  ::close(file);
  auto b = mgmt::test::make_backend(
      "processes:\n"
      "  - id: lister\n"
      "    command: /bin/ls\n"
      "    args: ['-1', /proc/self/fd]\n");
  b->start_all();
  REQUIRE(wait_until([&] { return mgmt::test::state_of(*b, "lister") == state::stopped; }));
  std::istringstream out(mgmt::test::logs_of(*b, "lister"));
  std::vector<std::string> fds;
  for (std::string line; std::getline(out, line);) fds.push_back(line);
  INFO("open in the child: " << mgmt::test::logs_of(*b, "lister"));
  // 0-2, and the directory ls itself opened to list them.
  CHECK(fds.size() == 4);
  for (const auto& fd : fds) CHECK((fd == "0" || fd == "1" || fd == "2" || fd == "3"));
  b->shutdown();
  ::close(200);
  ::close(300);
}

TEST_CASE("a child inherits no descriptor of the server when close_range is refused",
          "[process][defects-backend]") {
  const auto r = run_helper("defects helper: without close_range a child inherits no descriptor");
  INFO(r.output);
  CHECK(r.exit_code == 0);
}

// ---------------------------------------------------------------------------------------
// Shutdown's last reaping against clients still being served

// The last reaping, after the supervisor thread is gone, changes records (an abandoned
// child ended by the parent-death signal is reaped and recorded; orphans are reaped) while
// the I/O thread may still answer list and status. Under ThreadSanitizer this is a data
// race unless the records are changed under the lock; without it, the test checks that the
// abandoned child is reaped and recorded.
TEST_CASE("defects helper: shutdown's last reaping races no reader", "[.][defects-helper]") {
  if (!in_helper()) return;
  REQUIRE(fail_syscall(SYS_kill, EPERM, SIGKILL));
  auto b = mgmt::test::make_backend(
      "processes:\n" +
      mgmt::test::sh_process("stuck",
                             "trap '' TERM; echo ready $$; while true; do sleep 0.05; done",
                             "    stop_timeout: 100ms\n") +
      // Leaves a grandchild behind (same group) for the last reaping to collect.
      mgmt::test::sh_process("parent", "sh -c 'sleep 1000' & echo ready; exec sleep 1000"));
  b->start_all();
  REQUIRE(wait_until([&] {
    return mgmt::test::logs_of(*b, "stuck").find("ready") != std::string::npos &&
           mgmt::test::logs_of(*b, "parent").find("ready") != std::string::npos;
  }));  // one run each: any "ready" is this run's
  const auto stuck = static_cast<pid_t>(mgmt::test::pid_of(*b, "stuck"));
  CHECK(mgmt::test::stop(*b, "stuck").err.find("did not exit after SIGKILL") != std::string::npos);

  std::atomic<bool> stop_reading{false};
  std::atomic<long> reads{0};
  std::thread reader([&] {
    while (!stop_reading.load()) {
      for (const auto& e : b->list()) {
        if (e.pid < 0) FAIL_CHECK("negative pid");
      }
      const auto s = b->status("stuck");
      if (!s) FAIL_CHECK("stuck is gone");
      reads.fetch_add(1);
    }
  });
  REQUIRE(wait_until([&] { return reads.load() > 0; }));
  b->shutdown();
  stop_reading = true;
  reader.join();

  // Killed by the parent-death signal with the supervisor thread; reaped and recorded.
  CHECK(mgmt::test::process_gone(stuck));
  const auto e = b->status("stuck");
  REQUIRE(e);
  CHECK(e->state == std::string(state::stopped));
  CHECK(e->pid == 0);
  CHECK(e->exit_signal == std::optional<std::int64_t>(SIGKILL));
  CHECK(mgmt::test::zombies() == 0);
}

TEST_CASE("shutdown's last reaping changes records under the lock while clients read them",
          "[process][defects-backend]") {
  const auto r = run_helper("defects helper: shutdown's last reaping races no reader");
  INFO(r.output);
  CHECK(r.exit_code == 0);
}
