// In-place upgrade (SIGUSR2, `mgmtctl upgrade`): mgmtd execs the binary from the build (a
// valid "new" binary) with the same pid, and the children run on with their pids, logs,
// counters and timers; a binary that fails its check changes nothing.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <utility>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include "harness.hpp"
#include "systemd_fakes.hpp"
#include "mgmt/commands.hpp"
#include "mgmt/plugin.hpp"
#include "wait.hpp"

using namespace mgmt;
using namespace mgmt::test;

namespace {

std::vector<Entry> list(const Mgmtd& d) {
  try {
    RawConn c(d.socket());
    c.send(to_byte(MsgType::ListRequest), "");
    auto f = c.read(30s);  // a loaded machine, a sanitizer: slow, not stuck
    if (!f) return {};
    ListResponse r;
    if (!decode(f->payload, r).empty()) return {};
    return r.entries;
  } catch (const std::exception&) {
    return {};  // between two programs
  }
}

std::optional<Entry> find(const Mgmtd& d, const std::string& id) {
  for (auto& e : list(d)) {
    if (e.id == id) return e;
  }
  return std::nullopt;
}

std::string health_of(const Mgmtd& d, const std::string& id) {
  const auto e = find(d, id);
  return e ? e->health : std::string();
}

bool in_state(const Mgmtd& d, const std::string& id, const std::string& state) {
  const auto e = find(d, id);
  return e && e->state == state;
}

// The info answer, or nullopt when the connection was closed first (an upgrade under way
// closes every connection: ask again).
std::optional<InfoResponse> try_info(const Mgmtd& d) {
  try {
    RawConn c(d.socket());
    c.send(kInfoCommandType, "");
    auto f = c.read(30s);  // a loaded machine, a sanitizer: slow, not stuck
    InfoResponse r;
    if (!f || !decode(f->payload, r).empty()) return std::nullopt;
    return r;
  } catch (const std::exception&) {
    return std::nullopt;  // between two programs
  }
}

InfoResponse info(const Mgmtd& d) {
  const auto r = try_info(d);
  REQUIRE(r);
  return *r;
}

std::string logs(const Mgmtd& d, const std::string& id) {
  const auto r = d.ctl({"logs", id});
  return r.exit_code == 0 ? r.out : std::string();
}

// The numbers of the "tick N" lines of `text`, in order.
std::vector<int> ticks(const std::string& text) {
  std::vector<int> out;
  static const std::regex line("tick ([0-9]+)\n");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), line); it != std::sregex_iterator();
       ++it) {
    out.push_back(std::stoi((*it)[1]));
  }
  return out;
}

// Consecutive from the first: nothing repeated, nothing lost.
bool consecutive(const std::vector<int>& v) {
  for (std::size_t i = 1; i < v.size(); ++i) {
    if (v[i] != v[i - 1] + 1) return false;
  }
  return true;
}

std::uint64_t metric(const Mgmtd& d, const std::string& name) {
  const auto r = d.ctl({"metrics"});
  std::istringstream in(r.out);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(name + " ", 0) == 0) return std::stoull(line.substr(name.size() + 1));
  }
  return 0;
}

std::string config(const TempDir& files) {
  const std::string go = files.file("go");
  return "backend:\n  plugin: process\n  config:\n    processes:\n" + ticker_processes() +
         // A restart backoff that outlasts the test: still pending after each upgrade.
         "      - id: backoff\n        command: /bin/sh\n        args: [-c, 'echo boom; exit 3']\n"
         "        restart: always\n        restart_backoff: 10m\n"
         // Stopped by the test before the upgrade; started between the two upgrades.
         "      - id: later\n        command: /bin/sleep\n        args: ['1000']\n"
         // Writes to a log file too.
         "      - id: filed\n        command: /bin/sh\n"
         "        args: [-c, 'i=0; while true; do echo \"line $i\"; i=$((i+1)); sleep 0.1; done']\n"
         "        log_file_dir: " + files.file("logs") + "\n"
         // Exits with 7 once told to (after the upgrade).
         "      - id: exiter\n        command: /bin/sh\n"
         "        args: [-c, 'echo waiting; while [ ! -e " + go + " ]; do sleep 0.05; done; exit 7']\n"
         "        restart: never\n"
         // Ready (s6 protocol) only once told to, after the upgrade: the next program reads
         // the pipe the first one made.
         "      - id: waiter\n        command: /bin/sh\n"
         "        args: [-c, 'while [ ! -e " + files.file("ready") + " ]; do sleep 0.05; done; "
         "echo >&3; exec sleep 1000']\n"
         "        ready: {fd: 3, start_timeout: 10m}\n"
         // Healthy until told otherwise (after the upgrade): its checks go on.
         "      - id: checked\n        command: /bin/sleep\n        args: ['1000']\n"
         "        health: {exec: [/bin/sh, -c, 'test ! -e " + files.file("sick") + "'], "
         "interval: 100ms, retries: 1, on_unhealthy: log}\n"
         "commands:\n  0xAC: info\n  0xAE: {plugin: metrics, config: {listen: off}}\n"
         "  0xAF: upgrade\n";
}

}  // namespace

TEST_CASE("upgrade in place keeps the processes, their output and counters", "[upgrade]") {
  TempDir files;
  Mgmtd d(config(files));
  REQUIRE(wait_until([&] {
    return in_state(d, "ticker", "running") && in_state(d, "filed", "running") &&
           in_state(d, "exiter", "running") && in_state(d, "later", "running") &&
           in_state(d, "backoff", "restarting") && in_state(d, "waiter", "starting") &&
           health_of(d, "checked") == "healthy";
  }, 20s));
  REQUIRE(d.ctl({"stop", "later"}).exit_code == 0);
  REQUIRE(wait_until([&] { return ticks(logs(d, "ticker")).size() >= 3; }));

  const auto before = info(d);
  CHECK(before.upgrades == 0);
  const auto ticker = *find(d, "ticker");
  const auto filed = *find(d, "filed");
  const auto exiter = *find(d, "exiter");
  const auto backoff = *find(d, "backoff");
  const auto later = *find(d, "later");
  const auto waiter = *find(d, "waiter");
  const auto checked = *find(d, "checked");
  REQUIRE(waiter.pid > 0);
  REQUIRE(backoff.restarts == 1);
  const std::string ticker_log = logs(d, "ticker");
  const std::uint64_t accepted = metric(d, "mgmtd_connections_accepted_total");
  REQUIRE(accepted > 0);

  // A follower and a subscriber across the upgrades.
  Background follower({MGMTCTL_BIN, "--socket", d.socket(), "logs", "-f", "ticker"});
  Background events({MGMTCTL_BIN, "--socket", d.socket(), "events"});
  REQUIRE(wait_until([&] { return ticks(follower.out()).size() >= 2; }));

  const auto r = d.ctl({"upgrade"});
  INFO(r.err << d.log());
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Catch::Contains("upgraded: mgmtd") && Catch::Contains("upgrade 1"));

  // The same program keeps the same pid; so do the children.
  CHECK(::kill(d.pid(), 0) == 0);
  const auto after = info(d);
  CHECK(after.pid == d.pid());
  CHECK(after.upgrades == 1);
  CHECK(after.started_at == before.started_at);
  CHECK(after.upgraded_at > before.started_at);
  CHECK(find(d, "ticker")->pid == ticker.pid);
  CHECK(find(d, "ticker")->started_at == ticker.started_at);
  CHECK(find(d, "filed")->pid == filed.pid);
  CHECK(find(d, "exiter")->pid == exiter.pid);
  const auto backoff_after = *find(d, "backoff");
  CHECK(backoff_after.state == "restarting");
  CHECK(backoff_after.restarts == backoff.restarts);
  CHECK(backoff_after.exit_code == backoff.exit_code);
  const auto later_after = *find(d, "later");
  CHECK(later_after.state == "stopped");
  CHECK(later_after.exit_signal == later.exit_signal);
  // Counters go on from where they were.
  CHECK(metric(d, "mgmtd_connections_accepted_total") > accepted);

  // Readiness and health checks go on: the waiter becomes ready now, the checked one is
  // found unhealthy, both with their pids.
  CHECK(find(d, "waiter")->state == "starting");
  std::ofstream(files.file("ready")) << "now\n";
  REQUIRE(wait_until([&] { return in_state(d, "waiter", "running"); }, 20s));
  CHECK(find(d, "waiter")->pid == waiter.pid);
  std::ofstream(files.file("sick")) << "now\n";
  REQUIRE(wait_until([&] { return health_of(d, "checked") == "unhealthy"; }, 20s));
  CHECK(find(d, "checked")->pid == checked.pid);

  // Output from before the upgrade is still there, and output after it arrives.
  const std::string now = logs(d, "ticker");
  CHECK(now.rfind(ticker_log, 0) == 0);
  REQUIRE(wait_until([&] { return ticks(logs(d, "ticker")).size() > ticks(now).size() + 2; }));
  CHECK(consecutive(ticks(logs(d, "ticker"))));
  const std::string file = files.file("logs") + "/filed.stdout.log";
  const auto file_size = read_file(file).size();
  REQUIRE(wait_until([&] { return read_file(file).size() > file_size + 20; }));

  // An exit after the upgrade is seen with its code.
  std::ofstream(files.file("go")) << "go\n";
  REQUIRE(wait_until([&] {
    const auto e = find(d, "exiter");
    return e && e->state != "running";
  }));
  CHECK(find(d, "exiter")->exit_code == 7);

  // A child forked by the new program survives the next upgrade as well (the main thread
  // forked it), and so do those adopted twice.
  REQUIRE(d.ctl({"start", "later"}).exit_code == 0);
  const auto later_pid = find(d, "later")->pid;
  REQUIRE(later_pid > 0);
  ::kill(d.pid(), SIGUSR2);
  REQUIRE(wait_until([&] {
    const auto i = try_info(d);
    return i && i->upgrades == 2;
  }, 60s));
  CHECK(find(d, "later")->pid == later_pid);
  CHECK(find(d, "later")->state == "running");
  CHECK(find(d, "ticker")->pid == ticker.pid);
  CHECK(find(d, "backoff")->restarts == backoff.restarts);
  const std::string third = logs(d, "ticker");
  REQUIRE(wait_until([&] { return ticks(logs(d, "ticker")).size() > ticks(third).size() + 2; }));
  CHECK(consecutive(ticks(logs(d, "ticker"))));

  // The follower and the subscriber resumed: every tick once, in order, and the events of
  // the exit after the first upgrade.
  REQUIRE(wait_until([&] { return ticks(follower.out()).size() > ticks(logs(d, "ticker")).size() - 3; }, 20s));
  const auto followed = ticks(follower.out());
  CHECK(followed.front() == 0);
  CHECK(consecutive(followed));
  // (A line is "time  type  id  summary".)
  auto lines_with = [&](const std::string& type, const std::string& id) {
    std::istringstream in(events.out());
    std::string line;
    int n = 0;
    while (std::getline(in, line)) {
      n += std::regex_search(line, std::regex(" " + type + " +" + id + " ")) ? 1 : 0;
    }
    return n;
  };
  REQUIRE(wait_until([&] { return lines_with("process.crashed", "exiter") == 1; }));
  CHECK(lines_with("process.started", "later") == 1);

  // Shut down as ever: every process stopped, the socket removed. A sanitizer's report in a
  // program that was replaced by exec changes no exit code: look for it in the log.
  CHECK(d.terminate() == 0);
  CHECK(d.log().find("Sanitizer") == std::string::npos);
  CHECK(::access(d.socket().c_str(), F_OK) != 0);
  CHECK(::kill(ticker.pid, 0) != 0);
  CHECK(::kill(later_pid, 0) != 0);
}

TEST_CASE("an upgrade to a binary that fails its check changes nothing", "[upgrade]") {
  TempDir bin;
  const std::string fails = bin.file("fails-check");
  bin.write("fails-check", "#!/bin/sh\necho \"mgmt.yaml:3:1: not what this version expects\" >&2\nexit 2\n");
  ::chmod(fails.c_str(), 0755);
  const std::string old_abi = bin.file("old-abi");
  bin.write("old-abi",
            "#!/bin/sh\necho \"mgmt.yaml: OK\"\necho \"  plugin ABI: 2\"\n"
            "echo \"  upgrade image: 1\"\necho \"  backend handoff: 2\"\n");
  ::chmod(old_abi.c_str(), 0755);
  const std::string body =
      "backend:\n  plugin: process\n  config:\n    processes:\n" + ticker_processes() +
      "commands:\n  0xAC: info\n  0xAF: upgrade\n";

  for (const auto& [binary, reason] :
       std::map<std::string, std::string>{{fails, "not what this version expects"},
                                          {old_abi, "plugin ABI 2"}}) {
    ScopedEnv env("MGMTD_TEST_UPGRADE_BINARY", binary);
    Mgmtd d(body);
    REQUIRE(wait_until([&] { return in_state(d, "ticker", "running"); }));
    const auto pid = find(d, "ticker")->pid;
    const auto before = info(d);

    const auto r = d.ctl({"upgrade"});
    CHECK(r.exit_code == 1);
    CHECK_THAT(r.err, Catch::Contains("upgrade refused, nothing changed") &&
                          Catch::Contains(reason));
    // SIGUSR2 is refused the same way, with the reason in the log.
    ::kill(d.pid(), SIGUSR2);
    REQUIRE(wait_until([&] {
      const std::string log = d.log();
      std::size_t n = 0;
      for (auto at = log.find("upgrade refused"); at != std::string::npos;
           at = log.find("upgrade refused", at + 1)) {
        ++n;
      }
      return n >= 2;
    }, 30s));
    const auto after = info(d);
    CHECK(after.upgrades == 0);
    CHECK(after.upgraded_at == before.upgraded_at);
    CHECK(find(d, "ticker")->pid == pid);
    const auto n = ticks(logs(d, "ticker")).size();
    REQUIRE(wait_until([&] { return ticks(logs(d, "ticker")).size() > n; }));
    CHECK(d.terminate() == 0);
  }
}

TEST_CASE("mgmtd --check reports what an upgrade needs to know", "[upgrade]") {
  TempDir dir;
  dir.write("mgmt.yaml", "server:\n  socket: " + dir.file("s.sock") +
                             "\nbackend:\n  plugin: process\n  config:\n    processes: []\n");
  const auto r = run({MGMTD_BIN, "--check", "-c", dir.file("mgmt.yaml")});
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Catch::Contains("  plugin ABI: " + std::to_string(kAbiVersion) + "\n") &&
                        Catch::Contains("  upgrade image: 1\n") &&
                        Catch::Contains("  backend handoff: 2\n"));
}

TEST_CASE("under systemd an upgrade is RELOADING=1, then READY=1 from the new program",
          "[upgrade][systemd]") {
  TempDir dir;
  NotifySocket notify(dir.file("notify.sock"));
  ScopedEnv socket_env("NOTIFY_SOCKET", dir.file("notify.sock"));
  ScopedEnv watchdog_env("WATCHDOG_USEC", "200000");  // a ping every 100 ms
  Mgmtd d("backend:\n  plugin: process\n  config:\n    processes:\n" + ticker_processes() +
          "commands:\n  0xAC: info\n  0xAF: upgrade\n");
  int pings = 0;
  auto m = notify.next_state(pings, 30s);
  REQUIRE(m);
  CHECK(m->text.find("READY=1") != std::string::npos);
  REQUIRE(wait_until([&] { return in_state(d, "ticker", "running"); }));
  const auto pid = find(d, "ticker")->pid;

  const auto r = d.ctl({"upgrade"});
  INFO(r.err << d.log());
  REQUIRE(r.exit_code == 0);
  // Status lines may come between; the order is RELOADING=1 (with MONOTONIC_USEC), then
  // READY=1, both from mgmtd's pid.
  std::optional<NotifySocket::Message> reloading;
  while (auto n = notify.next_state(pings, 30s)) {
    if (n->text.find("RELOADING=1") != std::string::npos) {
      reloading = n;
      break;
    }
  }
  REQUIRE(reloading);
  CHECK(reloading->sender == d.pid());
  CHECK(reloading->text.find("MONOTONIC_USEC=") != std::string::npos);
  std::optional<NotifySocket::Message> ready;
  while (auto n = notify.next_state(pings, 30s)) {
    if (n->text.find("READY=1") != std::string::npos) {
      ready = n;
      break;
    }
  }
  REQUIRE(ready);
  CHECK(ready->sender == d.pid());
  CHECK(find(d, "ticker")->pid == pid);
  // The new program keeps the watchdog going (WATCHDOG_USEC and WATCHDOG_PID passed on).
  const int before = pings;
  REQUIRE(wait_until([&] {
    (void)notify.next_state(pings, 200ms);
    return pings >= before + 3;
  }, 20s));
  CHECK(d.terminate() == 0);
  CHECK(d.log().find("Sanitizer") == std::string::npos);
}

TEST_CASE("as PID 1 of a pid namespace (a container) an upgrade keeps the pid and the children",
          "[upgrade][sidecar]") {
  TempDir dir;
  const std::string socket = dir.file("shared/manager.sock");
  const std::string config = dir.file("mgmt.yaml");
  const std::string ready = dir.file("ready");
  dir.write("mgmt.yaml", "server:\n  socket: " + socket + "\n  write_hint: false\n" +
                             "backend:\n  plugin: process\n  config:\n    state_dir: " +
                             dir.file("state") + "\n    processes:\n" + ticker_processes() +
                             "commands:\n  0xAC: info\n  0xAF: upgrade\n");
  Background ns({"/bin/sh", "-c",
                 "exec unshare --pid --fork --mount-proc --kill-child \"$0\" -c \"$1\" "
                 "--log-format json --log-level debug --ready-file \"$2\"",
                 MGMTD_BIN, config, ready});
  REQUIRE(wait_until([&] { return ::access(ready.c_str(), F_OK) == 0; }, 15s));
  auto ctl = [&](const std::vector<std::string>& args) {
    std::vector<std::string> argv{MGMTCTL_BIN, "--socket", socket};
    argv.insert(argv.end(), args.begin(), args.end());
    return run(argv, {{"TZ", "UTC"}});
  };
  auto ticker_pid = [&] {
    const auto r = ctl({"status", "--json", "ticker"});
    std::smatch m;
    return std::regex_search(r.out, m, std::regex("\"pid\": *([0-9]+)")) ? m[1].str()
                                                                            : std::string();
  };
  REQUIRE(wait_until([&] { return ctl({"status", "ticker"}).out.find("running") != std::string::npos; }));
  const std::string pid = ticker_pid();
  REQUIRE_FALSE(pid.empty());

  for (int upgrade = 1; upgrade <= 2; ++upgrade) {
    const auto r = ctl({"upgrade"});
    INFO(r.err << ns.out());
    REQUIRE(r.exit_code == 0);
    CHECK_THAT(r.out, Catch::Contains(", pid 1, upgrade " + std::to_string(upgrade)));
  }
  CHECK(ticker_pid() == pid);
  const auto info = ctl({"info"});
  CHECK_THAT(info.out, Catch::Contains("pid 1\n") && Catch::Contains("(upgrade 2)"));

  // The container ends as ever: SIGTERM to its init (mgmtd, still the same process; its
  // host pid is found by its binary and configuration).
  const RunResult r = [&] {
    for (const auto& e : std::filesystem::directory_iterator("/proc")) {
      const std::string name = e.path().filename().string();
      if (name.empty() || name[0] < '0' || name[0] > '9') continue;
      std::error_code ec;
      if (std::filesystem::read_symlink(e.path() / "exe", ec) != std::filesystem::canonical(MGMTD_BIN)) continue;
      if (read_file((e.path() / "cmdline").string()).find(config) == std::string::npos) continue;
      ::kill(std::stoi(name), SIGTERM);
    }
    return ns.wait(30s);
  }();
  INFO(r.out << r.err);
  CHECK(r.exit_code == 0);
  CHECK(::access(socket.c_str(), F_OK) != 0);
  CHECK(r.out.find("Sanitizer") == std::string::npos);
  CHECK(r.err.find("Sanitizer") == std::string::npos);
}

TEST_CASE("the configuration changed on disk since it was read is applied by the upgrade, like a reload",
          "[upgrade]") {
  const std::string head = "backend:\n  plugin: process\n  config:\n    processes:\n";
  const std::string tail = "commands:\n  0xAC: info\n  0xAD: reload\n  0xAF: upgrade\n";
  const std::string sleeper = "      - id: added\n        command: /bin/sleep\n        args: ['1000']\n";
  Mgmtd d(head + ticker_processes() + tail);
  REQUIRE(wait_until([&] { return in_state(d, "ticker", "running"); }));
  const auto pid = find(d, "ticker")->pid;
  // Edited, not reloaded: the running program does not know of `added`.
  d.dir().write("mgmt.yaml", "server:\n  socket: " + d.socket() + "\n  write_hint: false\n" +
                                 head + ticker_processes() + sleeper + tail);
  REQUIRE_FALSE(find(d, "added"));
  const auto r = d.ctl({"upgrade"});
  INFO(r.err << d.log());
  REQUIRE(r.exit_code == 0);
  REQUIRE(wait_until([&] { return in_state(d, "added", "running"); }));
  CHECK(find(d, "ticker")->pid == pid);  // unchanged: kept running
  // A reload after the upgrade compares with what the new program runs.
  CHECK(d.ctl({"reload"}).exit_code == 0);
  CHECK(find(d, "ticker")->pid == pid);
  CHECK(d.terminate() == 0);
  CHECK(d.log().find("Sanitizer") == std::string::npos);
}

TEST_CASE("an exec that fails after the check falls back to the running program", "[upgrade]") {
  TempDir bin;
  // Passes the check, then is gone: its exec fails with ENOENT.
  const std::string vanishing = bin.file("vanishing");
  bin.write("vanishing",
            "#!/bin/sh\nrm -f \"$0\"\necho \"mgmt.yaml: OK\"\necho \"  plugin ABI: 3\"\n"
            "echo \"  upgrade image: 1\"\necho \"  backend handoff: 2\"\n");
  ::chmod(vanishing.c_str(), 0755);
  ScopedEnv env("MGMTD_TEST_UPGRADE_BINARY", vanishing);
  Mgmtd d("backend:\n  plugin: process\n  config:\n    processes:\n" + ticker_processes() +
          "commands:\n  0xAC: info\n  0xAF: upgrade\n");
  REQUIRE(wait_until([&] { return in_state(d, "ticker", "running"); }));
  const auto pid = find(d, "ticker")->pid;
  const auto r = d.ctl({"upgrade"});
  INFO(r.err << d.log());
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Catch::Contains("upgrade 1"));
  CHECK_THAT(d.log(), Catch::Contains("executing the running program again"));
  CHECK(find(d, "ticker")->pid == pid);
  CHECK(d.terminate() == 0);
  CHECK(d.log().find("Sanitizer") == std::string::npos);
}

TEST_CASE("a socket from socket activation is served across an upgrade and still never removed",
          "[upgrade][systemd]") {
  TempDir dir;
  const std::string sock = dir.file("manager.sock");
  // The service manager's part: a listening socket, handed to mgmtd as descriptor 3.
  const int lfd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  REQUIRE(lfd >= 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, sock.c_str(), sizeof addr.sun_path - 1);
  REQUIRE(::bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  REQUIRE(::listen(lfd, 64) == 0);
  dir.write("mgmt.yaml", "server:\n  socket: " + sock + "\n  write_hint: false\n" +
                             "backend:\n  plugin: process\n  config:\n    processes:\n" +
                             ticker_processes() + "commands:\n  0xAC: info\n  0xAF: upgrade\n");
  const std::string log = dir.file("mgmtd.log");
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    const int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    ::dup2(out, 1);
    ::dup2(out, 2);
    if (lfd != 3) {
      ::dup2(lfd, 3);
      ::close(lfd);
    }
    ::setenv("LISTEN_FDS", "1", 1);
    ::setenv("LISTEN_PID", std::to_string(::getpid()).c_str(), 1);
    ::execl(MGMTD_BIN, MGMTD_BIN, "-c", dir.file("mgmt.yaml").c_str(), "--log-level", "debug",
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  auto ctl = [&](const std::vector<std::string>& args) {
    std::vector<std::string> argv{MGMTCTL_BIN, "--socket", sock};
    argv.insert(argv.end(), args.begin(), args.end());
    return run(argv, {{"TZ", "UTC"}});
  };
  REQUIRE(wait_until([&] { return ctl({"status", "ticker"}).out.find("running") != std::string::npos; }, 20s));
  const auto r = ctl({"upgrade"});
  INFO(r.err << read_file(log));
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(read_file(log), Catch::Contains("(socket activation)"));
  CHECK(ctl({"status", "ticker"}).out.find("running") != std::string::npos);

  REQUIRE(::kill(pid, SIGTERM) == 0);
  int status = 0;
  REQUIRE(wait_until([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, 30s));
  CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 0));
  CHECK(std::filesystem::exists(sock));  // the service manager's, as before the upgrade
  CHECK(read_file(log).find("Sanitizer") == std::string::npos);
  ::close(lfd);
}
