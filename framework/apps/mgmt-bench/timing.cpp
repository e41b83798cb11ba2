// Wall-clock measurements of whole programs: start-up to socket ready, and one command's
// run time. Each is repeated; the median, min and max are printed.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "bench.hpp"

extern char** environ;

namespace mgmt::bench {

namespace {

// Splits "opts -- cmd args..." into the options and the command.
std::pair<Args, Args> split_command(const Args& a) {
  const auto dd = std::find(a.begin(), a.end(), "--");
  if (dd == a.end() || dd + 1 == a.end()) throw UsageError("give the command after --");
  return {Args(a.begin(), dd), Args(dd + 1, a.end())};
}

// Starts `cmd` with stdin, stdout and stderr on /dev/null.
pid_t spawn_quiet(const Args& cmd) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  std::vector<char*> argv;
  for (const auto& s : cmd) argv.push_back(const_cast<char*>(s.c_str()));
  argv.push_back(nullptr);
  pid_t pid = 0;
  const int rc = ::posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) throw std::runtime_error("cannot run " + cmd[0] + ": " + std::strerror(rc));
  return pid;
}

int wait_exit(pid_t pid) {
  int st = 0;
  while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

void print_stats(const char* what, std::vector<double>& ms) {
  std::sort(ms.begin(), ms.end());
  std::printf("%s median_ms=%.3f min_ms=%.3f max_ms=%.3f runs=%zu\n", what, ms[ms.size() / 2],
              ms.front(), ms.back(), ms.size());
}

}  // namespace

int cmd_startup(const Args& a) {
  auto [opts, cmd] = split_command(a);
  std::string socket;
  long repeat = 10;
  double timeout = 10;
  for (std::size_t i = 0; i < opts.size(); ++i) {
    if (opts[i] == "--socket") socket = take_value(opts, i);
    else if (opts[i] == "--repeat") repeat = parse_long(take_value(opts, i), "--repeat");
    else if (opts[i] == "--timeout") timeout = parse_double(take_value(opts, i), "--timeout");
    else throw UsageError("startup: unknown option " + opts[i]);
  }
  if (socket.empty() || repeat < 1) throw UsageError("startup: --socket and --repeat N>0 are required");
  std::vector<double> ms;
  for (long r = 0; r < repeat; ++r) {
    ::unlink(socket.c_str());
    const std::int64_t t0 = now_ns();
    const pid_t pid = spawn_quiet(cmd);
    int fd = -1;
    while ((fd = try_connect_unix(socket)) < 0) {
      if (now_ns() - t0 > static_cast<std::int64_t>(timeout * 1e9)) {
        ::kill(pid, SIGKILL);
        wait_exit(pid);
        throw std::runtime_error(cmd[0] + " did not listen on " + socket + " in time");
      }
      int st = 0;
      if (::waitpid(pid, &st, WNOHANG) == pid) {
        throw std::runtime_error(cmd[0] + " exited before listening (see its stderr)");
      }
      sleep_ns(50'000);
    }
    const std::int64_t t1 = now_ns();
    ::close(fd);
    ms.push_back(static_cast<double>(t1 - t0) / 1e6);
    ::kill(pid, SIGTERM);
    wait_exit(pid);
  }
  print_stats("startup", ms);
  return 0;
}

int cmd_wall(const Args& a) {
  auto [opts, cmd] = split_command(a);
  long repeat = 20;
  for (std::size_t i = 0; i < opts.size(); ++i) {
    if (opts[i] == "--repeat") repeat = parse_long(take_value(opts, i), "--repeat");
    else throw UsageError("wall: unknown option " + opts[i]);
  }
  if (repeat < 1) throw UsageError("wall: --repeat must be positive");
  std::vector<double> ms;
  for (long r = 0; r < repeat; ++r) {
    const std::int64_t t0 = now_ns();
    const int rc = wait_exit(spawn_quiet(cmd));
    const std::int64_t t1 = now_ns();
    if (rc != 0) throw std::runtime_error(cmd[0] + " exited with " + std::to_string(rc));
    ms.push_back(static_cast<double>(t1 - t0) / 1e6);
  }
  print_stats("wall", ms);
  return 0;
}

}  // namespace mgmt::bench
