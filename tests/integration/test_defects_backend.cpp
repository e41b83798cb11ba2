// Regression tests against the real mgmtd for defects of the process backend found by
// review and by attack.
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "harness.hpp"
#include "wait.hpp"

using namespace mgmt;
using namespace mgmt::test;

namespace {

std::string python3() {
  return std::filesystem::exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
}

// Fields of /proc/<pid>/stat after the command name: state is [0], pgrp [2].
std::vector<std::string> stat_fields(pid_t pid) {
  const std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
  std::vector<std::string> out;
  const auto close = stat.rfind(')');
  if (close == std::string::npos) return out;
  std::istringstream in(stat.substr(close + 1));
  for (std::string f; in >> f;) out.push_back(f);
  return out;
}

Entry entry_of(const std::string& socket, const std::string& id) {
  RawConn c(socket);
  c.send(to_byte(MsgType::StatusRequest), encode(StatusRequest{id}));
  const auto f = c.read();
  REQUIRE(f);
  const auto r = as_status(*f);
  REQUIRE(r.err.empty());
  return r.entry;
}

// One process that ignores SIGTERM and moves itself into mgmtd's process group, then
// writes its new group to `marker`.
std::string runaway_config(const std::string& marker) {
  return "backend:\n"
         "  plugin: process\n"
         "  config:\n"
         "    processes:\n"
         "      - id: runaway\n"
         "        command: " + python3() + "\n"
         "        stop_timeout: 200ms\n"
         "        args:\n"
         "          - -c\n"
         "          - |\n"
         "            import os, signal, time\n"
         "            signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
         "            os.setpgid(0, os.getpgid(os.getppid()))\n"
         "            open('" + marker + ".tmp', 'w').write(str(os.getpgid(0)))\n"
         "            os.rename('" + marker + ".tmp', '" + marker + "')\n"
         "            while True: time.sleep(1)\n";
}

}  // namespace

TEST_CASE("a stop kills a child that left its process group, and mgmtd then shuts down",
          "[defects-backend][supervision]") {
  TempDir tmp;
  const std::string marker = tmp.file("moved");
  Mgmtd d(runaway_config(marker));
  REQUIRE(wait_until([&] { return std::filesystem::exists(marker); }, 20s));
  const auto pid = static_cast<pid_t>(entry_of(d.socket(), "runaway").pid);
  REQUIRE(pid > 0);
  // It really left its own group: a signal to the group no longer reaches it.
  const auto fields = stat_fields(pid);
  REQUIRE(fields.size() > 2);
  CHECK(fields[2] != std::to_string(pid));
  CHECK(fields[2] == read_file(marker));

  RawConn stopper(d.socket());
  stopper.send(to_byte(MsgType::StopRequest), encode(IdRequest{"runaway"}));
  const auto f = stopper.read(15s);
  REQUIRE(f);
  const auto r = as_status(*f);
  CHECK(r.err.empty());
  CHECK(r.entry.state == "stopped");
  CHECK(r.entry.exit_signal == std::optional<std::int64_t>(SIGKILL));
  CHECK_FALSE(pid_alive(pid));

  CHECK(d.terminate(15s) == 0);
  CHECK(d.log().find("did not exit after SIGKILL") == std::string::npos);
}

TEST_CASE("shutdown kills a child that left its process group", "[defects-backend][supervision]") {
  TempDir tmp;
  const std::string marker = tmp.file("moved");
  Mgmtd d(runaway_config(marker));
  REQUIRE(wait_until([&] { return std::filesystem::exists(marker); }, 20s));
  const auto pid = static_cast<pid_t>(entry_of(d.socket(), "runaway").pid);
  REQUIRE(pid > 0);
  CHECK(d.terminate(15s) == 0);
  CHECK_FALSE(pid_alive(pid));
  // Killed by the stop, not abandoned (and then ended by the parent-death signal).
  CHECK(d.log().find("did not exit after SIGKILL") == std::string::npos);
}

namespace {

// The fds of `pid` above stderr that a child would inherit across exec: "fd -> target".
std::vector<std::string> inheritable_fds(pid_t pid) {
  std::vector<std::string> out;
  const std::string dir = "/proc/" + std::to_string(pid) + "/fdinfo";
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (std::stoi(name) <= 2) continue;
    std::istringstream info(read_file(e.path().string()));
    bool cloexec = true;  // gone meanwhile: nothing to inherit
    for (std::string line; std::getline(info, line);) {
      if (line.rfind("flags:", 0) != 0) continue;
      cloexec = (std::stoul(line.substr(6), nullptr, 8) & 02000000) != 0;
    }
    if (cloexec) continue;
    std::error_code link_ec;
    const auto target = std::filesystem::read_symlink(
        "/proc/" + std::to_string(pid) + "/fd/" + name, link_ec);
    out.push_back(name + " -> " + target.string());
  }
  return out;
}

// A TCP connection to 127.0.0.1:`port` that has had one keep-alive HTTP exchange, so the
// server holds the accepted socket.
int http_keepalive(const std::string& port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(std::stoi(port)));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  const std::string req = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  REQUIRE(::write(fd, req.data(), req.size()) == static_cast<ssize_t>(req.size()));
  char buf[256];
  REQUIRE(::read(fd, buf, sizeof buf) > 0);  // the answer has started: it was accepted
  return fd;
}

}  // namespace

TEST_CASE("every descriptor of a running mgmtd is close-on-exec", "[defects-backend]") {
  TempDir logs;
  Mgmtd d("backend:\n"
          "  plugin: process\n"
          "  config:\n"
          "    log_file_dir: " + logs.path() + "\n"
          "    processes:\n" +
          ticker_processes("ticker") +
          "commands:\n"
          "  0xAE: {plugin: metrics, right: read, config: {listen: \"127.0.0.1:0\"}}\n");
  REQUIRE(wait_until([&] { return entry_of(d.socket(), "ticker").state == "running"; }));
  // A client connected to the control socket, one following a log, one on the metrics port.
  RawConn client(d.socket());
  client.send(to_byte(MsgType::StatusRequest), encode(StatusRequest{"ticker"}));
  REQUIRE(client.read());
  RawConn follower(d.socket());
  LogsRequest follow;
  follow.id = "ticker";
  follow.f = true;
  follower.send(to_byte(MsgType::LogsRequest), encode(follow));
  REQUIRE(follower.read());
  std::string addr;
  REQUIRE(wait_until([&] {
    const auto r = d.ctl({"call", "0xAE"});
    const auto at = r.out.find("127.0.0.1:");
    if (r.exit_code != 0 || at == std::string::npos) return false;
    const auto end = r.out.find('"', at);
    addr = r.out.substr(at + 10, end - at - 10);
    return true;
  }));
  const int http = http_keepalive(addr);

  // What mgmtd inherited from whoever runs the tests is not its own doing.
  std::vector<std::string> leaks;
  const auto ours = inheritable_fds(::getpid());
  for (const auto& l : inheritable_fds(d.pid())) {
    if (std::find(ours.begin(), ours.end(), l) == ours.end()) leaks.push_back(l);
  }
  INFO("inheritable: " << [&] {
    std::string s;
    for (const auto& l : leaks) s += l + "; ";
    return s;
  }());
  CHECK(leaks.empty());
  ::close(http);
}

namespace {

// The next event on `c`'s subscription other than the probe's ("" when none came).
std::string next_event(RawConn& c) {
  while (true) {
    const auto f = c.read(10s);
    if (!f) return "";
    EventsStream e;
    REQUIRE(decode(f->payload, e).empty());
    if (e.pid != "probe") return e.pid + " " + e.t;
  }
}

}  // namespace

TEST_CASE("event filters of a thousand entries match exactly like short ones",
          "[defects-backend][events]") {
  std::string processes;
  for (const char* id : {"other", "web", "sentinel", "probe"}) {
    processes += std::string("      - id: ") + id +
                 "\n        command: /bin/sleep\n        args: ['1000']\n";
  }
  Mgmtd d("backend:\n  plugin: process\n  config:\n    processes:\n" + processes);
  for (const char* id : {"other", "web", "sentinel", "probe"}) {
    REQUIRE(wait_until([&] { return entry_of(d.socket(), id).state == "running"; }));
  }
  // As long as the server's caps on a subscription allow (1024 ids, 64 types).
  std::vector<std::string> many_pids, many_types;
  for (int i = 0; i < 1000; ++i) many_pids.push_back("p" + std::to_string(i));
  for (int i = 0; i < 60; ++i) many_types.push_back("type." + std::to_string(i));

  // web among 1002 ids (in the middle), its stopping and stopped among 62 types.
  EventsSubscribe a{many_pids, many_types};
  a.pids.insert(a.pids.begin() + 500, "web");
  a.types.insert(a.types.begin() + 30, std::string(event::stopped));
  a.types.push_back(std::string(event::stopping));
  // Only the sentinel among 1002 ids; every type.
  EventsSubscribe b{many_pids, {}};
  b.pids.push_back("sentinel");
  // Every process; only stopped among 61 types.
  EventsSubscribe c{{}, many_types};
  c.types.insert(c.types.begin(), std::string(event::stopped));
  // Each also lets the probe through: its events say the subscription is in place.
  a.pids.push_back("probe");
  b.pids.push_back("probe");

  RawConn sa(d.socket()), sb(d.socket()), sc(d.socket());
  sa.send(to_byte(MsgType::EventsSubscribe), encode(a));
  sb.send(to_byte(MsgType::EventsSubscribe), encode(b));
  sc.send(to_byte(MsgType::EventsSubscribe), encode(c));
  RawConn ctl(d.socket());
  auto call = [&](MsgType type, const char* id) {
    ctl.send(to_byte(type), encode(IdRequest{id}));
    const auto f = ctl.read(15s);
    REQUIRE(f);
    REQUIRE(as_status(*f).err.empty());
  };
  std::vector<RawConn*> waiting{&sa, &sb, &sc};
  for (int round = 0; !waiting.empty() && round < 50; ++round) {
    call(MsgType::StopRequest, "probe");
    call(MsgType::StartRequest, "probe");
    std::erase_if(waiting, [](RawConn* s) { return s->read(200ms).has_value(); });
  }
  REQUIRE(waiting.empty());

  for (const char* id : {"other", "web", "sentinel"}) call(MsgType::StopRequest, id);
  // Events reach each subscriber in the order they happened, so what a filter wrongly let
  // through would come before what it rightly did.
  CHECK(next_event(sa) == "web " + std::string(event::stopping));
  CHECK(next_event(sa) == "web " + std::string(event::stopped));
  CHECK(next_event(sb) == "sentinel " + std::string(event::stopping));
  CHECK(next_event(sb) == "sentinel " + std::string(event::stopped));
  CHECK(next_event(sc) == "other " + std::string(event::stopped));
  CHECK(next_event(sc) == "web " + std::string(event::stopped));
  CHECK(next_event(sc) == "sentinel " + std::string(event::stopped));
}

TEST_CASE("mgmtd warns when the open-file limit is below what its configuration needs",
          "[defects-backend][startup]") {
  REQUIRE(::access("/usr/bin/prlimit", X_OK) == 0);  // util-linux
  TempDir dir;
  dir.write("mgmt.yaml", "server:\n  socket: " + dir.file("run/m.sock") +
                             "\n  write_hint: false\n"
                             "limits:\n  max_connections: 1000\n"
                             "backend:\n  plugin: process\n  config:\n    processes:\n" +
                             ticker_processes("ticker"));
  // JSON lines on stdout, readable while it runs.
  Background d({"/usr/bin/prlimit", "--nofile=64:64", MGMTD_BIN, "-c", dir.file("mgmt.yaml"),
                "--log-format", "json"},
               {{"HOME", dir.path()}, {"XDG_CACHE_HOME", dir.file("cache")}});
  std::string out;
  REQUIRE(wait_until([&] {
    out = d.out();
    return out.find("ready (") != std::string::npos || out.find("\"error\"") != std::string::npos;
  }, 20s));
  INFO(out);
  CHECK(out.find("open-file limit is 64 (hard limit 64), below the 1068 that "
                 "limits.max_connections (1000) and 1 process need") != std::string::npos);
  const auto at = out.find("pid ", out.find("ready ("));
  REQUIRE(at != std::string::npos);
  REQUIRE(::kill(static_cast<pid_t>(std::stol(out.substr(at + 4))), SIGTERM) == 0);
  CHECK(d.wait().exit_code == 0);
}

TEST_CASE("mgmtd raises a low soft open-file limit to the hard one, and says so",
          "[defects-backend][startup]") {
  REQUIRE(::access("/usr/bin/prlimit", X_OK) == 0);  // util-linux
  TempDir dir;
  dir.write("mgmt.yaml", "server:\n  socket: " + dir.file("run/m.sock") +
                             "\n  write_hint: false\n"
                             "limits:\n  max_connections: 1000\n"
                             "backend:\n  plugin: process\n  config:\n    processes:\n" +
                             ticker_processes("ticker"));
  Background d({"/usr/bin/prlimit", "--nofile=64:4096", MGMTD_BIN, "-c", dir.file("mgmt.yaml"),
                "--log-format", "json"},
               {{"HOME", dir.path()}, {"XDG_CACHE_HOME", dir.file("cache")}});
  std::string out;
  REQUIRE(wait_until([&] {
    out = d.out();
    return out.find("ready (") != std::string::npos || out.find("\"error\"") != std::string::npos;
  }, 20s));
  INFO(out);
  CHECK(out.find("raised the open-file limit (RLIMIT_NOFILE) from 64 to the hard limit 4096") !=
        std::string::npos);
  CHECK(out.find("open-file limit is") == std::string::npos);  // enough now: no warning
  const auto at = out.find("pid ", out.find("ready ("));
  REQUIRE(at != std::string::npos);
  REQUIRE(::kill(static_cast<pid_t>(std::stol(out.substr(at + 4))), SIGTERM) == 0);
  CHECK(d.wait().exit_code == 0);
}
