// Process hygiene of the real mgmtd: nothing it started outlives a SIGKILL of mgmtd (at the
// latest once mgmtd is started again, and before that one starts anything), every orphan
// is reaped when mgmtd runs as PID 1, and the extension keys of status reach mgmtctl.
#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "harness.hpp"
#include "wait.hpp"

using namespace mgmt;
using namespace mgmt::test;

namespace {

StatusResponse status_of(const std::string& socket, const std::string& id) {
  RawConn c(socket);
  c.send(to_byte(MsgType::StatusRequest), encode(StatusRequest{id}));
  const auto f = c.read();
  REQUIRE(f);
  return as_status(*f);
}

std::string state_of(const std::string& socket, const std::string& id) {
  return status_of(socket, id).entry.state;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) out.push_back(line);
  }
  return out;
}

struct ProcInfo {
  pid_t pid;
  char state;
  pid_t ppid;
};

// Every process whose parent is `parent` (zombies included), from /proc; not mgmtd's
// spawn helper, which is its child for as long as it runs.
std::vector<ProcInfo> children_of(pid_t parent) {
  std::vector<ProcInfo> out;
  DIR* proc = ::opendir("/proc");
  while (const dirent* e = ::readdir(proc)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    const std::string stat = read_file(std::string("/proc/") + e->d_name + "/stat");
    const auto close = stat.rfind(')');
    if (close == std::string::npos) continue;
    if (stat.find("(mgmtd-spawn)") != std::string::npos) continue;
    std::istringstream fields(stat.substr(close + 1));
    ProcInfo p{static_cast<pid_t>(std::stol(e->d_name)), '?', 0};
    long ppid = 0;
    if (!(fields >> p.state >> ppid)) continue;
    p.ppid = static_cast<pid_t>(ppid);
    if (p.ppid == parent) out.push_back(p);
  }
  ::closedir(proc);
  return out;
}

// The host pid of the mgmtd that `unshare` started with config file `config`, or -1. (Its
// children look the same between their fork and their exec, but their parent is mgmtd.)
pid_t find_mgmtd(const std::string& config) {
  std::error_code ec;
  const auto bin = std::filesystem::canonical(MGMTD_BIN, ec);
  auto exe_of = [&](const std::string& pid) {
    std::error_code e;
    return std::filesystem::read_symlink("/proc/" + pid + "/exe", e);
  };
  DIR* proc = ::opendir("/proc");
  pid_t found = -1;
  while (const dirent* e = ::readdir(proc)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    const std::string dir = std::string("/proc/") + e->d_name;
    if (exe_of(e->d_name) != bin) continue;
    if (read_file(dir + "/cmdline").find(config) == std::string::npos) continue;
    const std::string stat = read_file(dir + "/stat");
    const auto close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream fields(stat.substr(close + 1));
    char state = 0;
    long ppid = 0;
    if (!(fields >> state >> ppid)) continue;
    if (exe_of(std::to_string(ppid)).filename() != "unshare") continue;
    found = static_cast<pid_t>(std::stol(e->d_name));
  }
  ::closedir(proc);
  return found;
}

}  // namespace

TEST_CASE("a SIGKILLed mgmtd leaves nothing running once it is started again",
          "[supervision]") {
  TempDir shared;  // the state dir and the record of what ran, common to both instances
  const std::string pids = shared.file("pids");
  const std::string config =
      "backend:\n"
      "  plugin: process\n"
      "  config:\n"
      "    state_dir: " + shared.file("state") + "\n"
      "    processes:\n"
      "      - id: tree\n"
      "        command: /bin/sh\n"
      "        args: [-c, 'sleep 300 & echo \"$$ $!\" >> \"$PIDS\"; wait']\n"
      "        env: {PIDS: " + pids + "}\n";
  auto record = [&](std::size_t run) {
    const auto lines = lines_of(read_file(pids));
    REQUIRE(lines.size() > run);
    std::istringstream in(lines[run]);
    pid_t leader = 0, grandchild = 0;
    in >> leader >> grandchild;
    return std::make_pair(leader, grandchild);
  };

  Mgmtd first(config);
  REQUIRE(wait_until([&] { return lines_of(read_file(pids)).size() == 1; }));
  const auto [leader1, grandchild1] = record(0);
  REQUIRE(pid_alive(leader1));
  REQUIRE(pid_alive(grandchild1));
  // The child can run (and write its pids) before the backend has recorded its group; a
  // SIGKILL in between is the one window no state file covers. Kill after the record.
  auto recorded = [&](pid_t pgid) {
    for (const auto& f : std::filesystem::directory_iterator(shared.file("state"))) {
      std::istringstream words(read_file(f.path().string()));
      for (std::string w; words >> w;) {
        if (w == std::to_string(pgid)) return true;
      }
    }
    return false;
  };
  REQUIRE(wait_until([&] { return recorded(leader1); }));

  REQUIRE(::kill(first.pid(), SIGKILL) == 0);
  // The direct child dies with mgmtd (parent-death signal).
  CHECK(wait_until([&] { return !pid_alive(leader1); }));
  INFO("the grandchild is " << (pid_alive(grandchild1) ? "still alive" : "gone")
                            << " before the restart");

  Mgmtd second(config);
  REQUIRE(wait_until([&] { return lines_of(read_file(pids)).size() == 2; }));
  // What the first one left was ended before the second started its own copy.
  CHECK_FALSE(pid_alive(grandchild1));
  const auto [leader2, grandchild2] = record(1);
  CHECK(pid_alive(leader2));
  CHECK(pid_alive(grandchild2));
  // The child can write its pids before the backend has logged its spawn: wait for the
  // line rather than reading the log once.
  std::string log;
  REQUIRE(wait_until([&] {
    log = second.log();
    return log.find("process tree: spawned pid") != std::string::npos;
  }));
  const auto killed = log.find("leftover process");
  const auto spawned = log.find("process tree: spawned pid");
  INFO(log);
  CHECK(killed != std::string::npos);
  CHECK(spawned != std::string::npos);
  CHECK(killed < spawned);
  CHECK_THAT(log, Catch::Contains("of tree (process group " + std::to_string(leader1) +
                                  ") left by mgmtd pid " + std::to_string(first.pid())));
  // Exactly one copy runs.
  CHECK(lines_of(read_file(pids)).size() == 2);

  CHECK(second.terminate() == 0);
  CHECK_FALSE(pid_alive(leader2));
  CHECK(wait_until([&] { return !pid_alive(grandchild2); }));
  // A clean exit removes its state file; the first one's was consumed by the second.
  CHECK(std::filesystem::is_empty(shared.file("state")));
}

TEST_CASE("as PID 1 of a pid namespace, mgmtd reaps every orphan", "[supervision]") {
  TempDir dir;
  const std::string socket = dir.file("run/manager.sock");
  const std::string config = dir.file("mgmt.yaml");
  // One grandchild stays in the group (killed with it when the shell exits), two leave it
  // (setsid; the shell waits until they have) and end once the test says so: all three
  // are re-parented to PID 1, mgmtd.
  dir.write("mgmt.yaml",
            "server:\n"
            "  socket: " + socket + "\n"
            "  write_hint: false\n"
            "backend:\n"
            "  plugin: process\n"
            "  config:\n"
            "    state_dir: " + dir.file("state") + "\n"
            "    processes:\n"
            "      - id: spawner\n"
            "        command: /bin/sh\n"
            "        args: [-c, \"sleep 30 & "
            "setsid sh -c 'touch a; while [ ! -e release ]; do sleep 0.01; done' & "
            "setsid sh -c 'touch b; while [ ! -e release ]; do sleep 0.01; done' & "
            "while [ ! -e a ] || [ ! -e b ]; do sleep 0.01; done; exit 0\"]\n"
            "        work_dir: " + dir.path() + "\n"
            "        restart: never\n");
  // stderr (mgmtd's log) joins stdout, which Background captures.
  Background ns({"/bin/sh", "-c",
                 "exec unshare --pid --fork --mount-proc --kill-child \"$0\" -c \"$1\" "
                 "--log-level debug 2>&1",
                 MGMTD_BIN, config});
  pid_t mgmtd = -1;
  const bool ready = wait_until(
      [&] {
        mgmtd = find_mgmtd(config);
        if (mgmtd < 0) return false;
        try {
          Client c(socket);
          return true;
        } catch (const std::exception&) {
          return false;
        }
      },
      15s);
  INFO(ns.out());
  REQUIRE(ready);
  // It is PID 1 in its namespace.
  CHECK_THAT(read_file("/proc/" + std::to_string(mgmtd) + "/status"),
             Catch::Matches("[\\s\\S]*NSpid:\\s+" + std::to_string(mgmtd) + "\\s+1\n[\\s\\S]*"));

  REQUIRE(wait_until([&] { return state_of(socket, "spawner") == "stopped"; }));
  // The two that left the group now belong to mgmtd; the one killed with the group was
  // reaped (no zombie among mgmtd's children).
  std::string seen;
  const bool adopted = wait_until([&] {
    const auto kids = children_of(mgmtd);
    int live = 0, zombies = 0;
    seen.clear();
    for (const auto& k : kids) {
      (k.state == 'Z' ? zombies : live) += 1;
      seen += std::to_string(k.pid) + ":" + k.state + " ";
    }
    return live == 2 && zombies == 0;
  });
  INFO("children of mgmtd: " << seen);
  CHECK(adopted);
  // Once they end, they are reaped too: mgmtd has no children left at all.
  dir.write("release", "");
  CHECK(wait_until([&] { return children_of(mgmtd).empty(); }));
  CHECK_THAT(ns.out(), Catch::Contains("running as PID 1: reaping every orphan"));
  CHECK_THAT(ns.out(), Catch::Contains("reaped orphan pid"));

  REQUIRE(::kill(mgmtd, SIGTERM) == 0);
  CHECK(ns.wait().exit_code == 0);
}

TEST_CASE("status extension keys reach mgmtctl, plain and --json", "[supervision]") {
  Mgmtd m("backend:\n"
          "  plugin: process\n"
          "  config:\n"
          "    processes:\n"
          "      - id: crashy\n"
          "        command: /bin/sh\n"
          "        args: [-c, 'exit 3']\n"
          "        restart_backoff: 1h\n");
  REQUIRE(wait_until([&] { return state_of(m.socket(), "crashy") == "restarting"; }));
  const auto plain = m.ctl({"status", "crashy"});
  CHECK(plain.exit_code == 0);
  CHECK_THAT(plain.out, Catch::Contains("State:") && Catch::Contains("restarting"));
  CHECK_THAT(plain.out, Catch::Contains("Restarts:") && Catch::Contains("Last exit:") &&
                            Catch::Contains("code 3") && Catch::Contains("Started:"));
  const auto json = m.ctl({"status", "crashy", "--json"});
  CHECK(json.exit_code == 0);
  CHECK_THAT(json.out, Catch::Contains("\"restarts\": 1") && Catch::Contains("\"exit_code\": 3") &&
                           Catch::Contains("\"started_at\": "));
  const auto list = m.ctl({"list", "--json"});
  CHECK_THAT(list.out, Catch::Contains("\"restarts\": 1"));
}

namespace {

// mgmtd's spawn helper: its child named mgmtd-spawn, or -1.
pid_t spawn_helper_of(pid_t mgmtd) {
  DIR* proc = ::opendir("/proc");
  pid_t found = -1;
  while (const dirent* e = ::readdir(proc)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    const std::string stat = read_file(std::string("/proc/") + e->d_name + "/stat");
    if (stat.find("(mgmtd-spawn)") == std::string::npos) continue;
    std::istringstream fields(stat.substr(stat.rfind(')') + 1));
    char state = '?';
    long ppid = 0;
    if ((fields >> state >> ppid) && ppid == mgmtd && state != 'Z') {
      found = static_cast<pid_t>(std::stol(e->d_name));
    }
  }
  ::closedir(proc);
  return found;
}

pid_t parent_of(pid_t pid) {
  const std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
  const auto close = stat.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream fields(stat.substr(close + 1));
  char state = '?';
  long ppid = 0;
  return fields >> state >> ppid ? static_cast<pid_t>(ppid) : -1;
}

std::int64_t pid_in_list(const Mgmtd& d, const std::string& id) {
  return status_of(d.socket(), id).entry.pid;
}

}  // namespace

TEST_CASE("children forked through the spawn helper are mgmtd's, and a helper that dies is replaced",
          "[supervision]") {
  Mgmtd d("backend:\n  plugin: process\n  config:\n    processes:\n"
          "      - {id: a, command: /bin/sleep, args: ['1000']}\n"
          "      - {id: b, command: /bin/sleep, args: ['1000'], autostart: false}\n"
          "      - {id: c, command: /bin/sleep, args: ['1000'], autostart: false}\n");
  REQUIRE(wait_until([&] { return pid_in_list(d, "a") > 0; }));
  const pid_t helper = spawn_helper_of(d.pid());
  REQUIRE(helper > 0);
  // The child's parent is mgmtd, not the helper; the helper is out of mgmtd's group.
  const auto a = static_cast<pid_t>(pid_in_list(d, "a"));
  CHECK(parent_of(a) == d.pid());
  // A program of its own (found beside the plugins), not a copy of mgmtd.
  std::error_code ec;
  CHECK(std::filesystem::read_symlink("/proc/" + std::to_string(helper) + "/exe", ec)
            .filename() == "mgmtd-spawn");
  CHECK(::getpgid(helper) == helper);
  CHECK(::getpgid(a) == a);

  // The helper killed: the next start still works (forked directly), and the one after
  // it goes through a new helper.
  REQUIRE(::kill(helper, SIGKILL) == 0);
  REQUIRE(wait_until([&] { return spawn_helper_of(d.pid()) < 0; }));
  const auto b = d.ctl({"start", "b"});
  INFO(b.err << d.log());
  REQUIRE(b.exit_code == 0);
  CHECK(parent_of(static_cast<pid_t>(pid_in_list(d, "b"))) == d.pid());
  REQUIRE(d.ctl({"start", "c"}).exit_code == 0);
  const pid_t again = spawn_helper_of(d.pid());
  CHECK(again > 0);
  CHECK(again != helper);
  CHECK(parent_of(static_cast<pid_t>(pid_in_list(d, "c"))) == d.pid());
  CHECK_THAT(d.log(), Catch::Contains("is gone; starting another"));

  // At shutdown the helper ends with mgmtd.
  CHECK(d.terminate() == 0);
  CHECK_FALSE(pid_alive(again));
}
