// mgmtd as a container sidecar: PID 1 of a pid namespace (`unshare --pid --fork`), JSON log
// lines on stdout, readiness through --ready-file, and a SIGTERM from outside (what a
// container runtime sends) stopping every supervised process before a clean exit.
#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "harness.hpp"
#include "wait.hpp"

using namespace mgmt;
using namespace mgmt::test;

namespace {

namespace fs = std::filesystem;

struct Proc {
  pid_t pid;
  pid_t ppid;
};

std::vector<Proc> all_procs() {
  std::vector<Proc> out;
  DIR* proc = ::opendir("/proc");
  while (const dirent* e = ::readdir(proc)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    const std::string stat = read_file(std::string("/proc/") + e->d_name + "/stat");
    const auto close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream fields(stat.substr(close + 1));
    char state = 0;
    long ppid = 0;
    if (!(fields >> state >> ppid)) continue;
    out.push_back({static_cast<pid_t>(std::stol(e->d_name)), static_cast<pid_t>(ppid)});
  }
  ::closedir(proc);
  return out;
}

std::vector<pid_t> children_of(pid_t parent) {
  std::vector<pid_t> out;
  for (const auto& p : all_procs()) {
    if (p.ppid == parent) out.push_back(p.pid);
  }
  return out;
}

// The host pid of the mgmtd that `unshare` (host pid `unshare_pid`) forked, or -1.
pid_t mgmtd_under(pid_t unshare_pid) {
  const auto bin = fs::canonical(MGMTD_BIN);
  for (const pid_t kid : children_of(unshare_pid)) {
    std::error_code ec;
    if (fs::read_symlink("/proc/" + std::to_string(kid) + "/exe", ec) == bin) return kid;
  }
  return -1;
}

// The host pid of the `unshare` whose command line names `config`.
pid_t find_unshare(const std::string& config) {
  for (const auto& p : all_procs()) {
    const std::string dir = "/proc/" + std::to_string(p.pid);
    std::error_code ec;
    if (fs::read_symlink(dir + "/exe", ec).filename() != "unshare") continue;
    if (read_file(dir + "/cmdline").find(config) != std::string::npos) return p.pid;
  }
  return -1;
}

std::string state_of(const std::string& socket, const std::string& id) {
  RawConn c(socket);
  c.send(to_byte(MsgType::StatusRequest), encode(StatusRequest{id}));
  const auto f = c.read();
  REQUIRE(f);
  return as_status(*f).entry.state;
}

std::vector<nlohmann::json> json_lines(const std::string& text, std::vector<std::string>& bad) {
  std::vector<nlohmann::json> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      bad.push_back(line);
    } else {
      out.push_back(std::move(j));
    }
  }
  return out;
}

// A process that records the SIGTERM it gets (the shell runs the trap once its sleep ends).
std::string trapper(const std::string& id, const std::string& dir) {
  return "      - id: " + id + "\n"
         "        command: /bin/sh\n"
         "        args: [-c, 'trap \"echo $0 > " + dir + "/got-term-$0; exit 0\" TERM; "
         "while :; do sleep 0.05; done', " + id + "]\n"
         "        stop_timeout: 10s\n";
}

}  // namespace

TEST_CASE("sidecar: PID 1 with JSON logs and a ready file, SIGTERM stops the children, exit 0",
          "[sidecar]") {
  TempDir dir;
  const std::string socket = dir.file("shared/manager.sock");
  const std::string config = dir.file("mgmt.yaml");
  const std::string ready = dir.file("ready");
  dir.write("mgmt.yaml",
            "server:\n"
            "  socket: " + socket + "\n"
            "  write_hint: false\n"
            "backend:\n"
            "  plugin: process\n"
            "  config:\n"
            "    state_dir: " + dir.file("state") + "\n"
            "    processes:\n" +
            trapper("app", dir.path()) + trapper("helper", dir.path()) +
            "      - id: odd\n"
            "        command: \"/nonexistent/q\\\"uote\\\\back\\ttab\\u00e9\"\n"
            "        restart: never\n");
  Background ns({"/bin/sh", "-c",
                 "exec unshare --pid --fork --mount-proc --kill-child \"$0\" -c \"$1\" "
                 "--log-format json --log-level debug --ready-file \"$2\"",
                 MGMTD_BIN, config, ready});

  // Ready: the file appears once the socket listens and the processes were started.
  REQUIRE(wait_until([&] { return fs::exists(ready); }, 15s));
  INFO(ns.out());
  const std::string ready_text = read_file(ready);
  CHECK(ready_text == "pid=1\nsocket=" + socket + "\n");  // PID 1 of its namespace
  {
    Client c(socket);  // the socket answers as soon as the file is there
  }
  REQUIRE(wait_until([&] {
    return state_of(socket, "app") == "running" && state_of(socket, "helper") == "running";
  }));

  const pid_t unshare_pid = find_unshare(config);
  REQUIRE(unshare_pid > 0);
  const pid_t mgmtd = mgmtd_under(unshare_pid);
  REQUIRE(mgmtd > 0);
  CHECK_THAT(read_file("/proc/" + std::to_string(mgmtd) + "/status"),
             Catch::Matches("[\\s\\S]*NSpid:\\s+" + std::to_string(mgmtd) + "\\s+1\n[\\s\\S]*"));
  std::vector<pid_t> kids;
  REQUIRE(wait_until([&] {
    kids = children_of(mgmtd);
    return kids.size() >= 2;
  }));

  // What `docker stop` / a pod's termination does: SIGTERM to the container's init.
  REQUIRE(::kill(mgmtd, SIGTERM) == 0);
  const RunResult r = ns.wait(30s);
  INFO("stdout:\n" << r.out << "\nstderr:\n" << r.err);
  CHECK(r.exit_code == 0);
  // The children were stopped by mgmtd (they saw SIGTERM), not killed with the namespace.
  CHECK(read_file(dir.file("got-term-app")) == "app\n");
  CHECK(read_file(dir.file("got-term-helper")) == "helper\n");
  for (const pid_t k : kids) CHECK_FALSE(pid_alive(k));
  CHECK_FALSE(fs::exists(ready));  // removed on exit
  CHECK_FALSE(fs::exists(socket));

  // Logs: JSON lines on stdout only, each with ts, level, logger and msg.
  CHECK(r.err.empty());
  std::vector<std::string> bad;
  const auto lines = json_lines(r.out, bad);
  CHECK(bad.empty());
  REQUIRE(lines.size() > 5);
  bool saw_ready = false, saw_pid1 = false, saw_stop = false, saw_odd = false;
  for (const auto& j : lines) {
    CHECK(j.size() == 4);
    REQUIRE(j.contains("msg"));
    CHECK(j["ts"].is_string());
    CHECK_THAT(j["ts"].get<std::string>(),
               Catch::Matches("\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{6}Z"));
    CHECK(j["level"].is_string());
    CHECK(j["logger"].is_string());
    const auto msg = j["msg"].get<std::string>();
    saw_ready = saw_ready || (j["logger"] == "mgmtd" && msg.find(" ready (") != std::string::npos);
    saw_pid1 = saw_pid1 || msg.find("running as PID 1") != std::string::npos;
    saw_stop = saw_stop || msg.find("SIGTERM: shutting down") != std::string::npos;
    // Quotes, a backslash, a tab and a non-ASCII letter come back intact.
    if (msg.find("exec /nonexistent/") != std::string::npos) {
      saw_odd = true;
      CHECK_THAT(msg, Catch::Contains("exec /nonexistent/q\"uote\\back\ttab\xC3\xA9"));
      CHECK(j["level"] == "error");
    }
  }
  CHECK(saw_ready);
  CHECK(saw_pid1);
  CHECK(saw_stop);
  CHECK(saw_odd);
}

TEST_CASE("sidecar: --ready-file replaces a stale one, and is removed on exit", "[sidecar]") {
  TempDir dir;
  const std::string ready = dir.file("ready");
  dir.write("ready", "pid=999999\nsocket=/stale\n");
  dir.write("mgmt.yaml", "server: {socket: " + dir.file("s.sock") + ", write_hint: false}\n" +
                             "backend:\n  plugin: process\n  config:\n    processes:\n" +
                             ticker_processes("t"));
  Background d({MGMTD_BIN, "-c", dir.file("mgmt.yaml"), "--ready-file", ready});
  std::string text;
  REQUIRE(wait_until([&] {
    text = read_file(ready);
    return text.rfind("pid=999999", 0) != 0 && !text.empty();
  }, 15s));
  CHECK_THAT(text, Catch::EndsWith("\nsocket=" + dir.file("s.sock") + "\n"));
  const pid_t pid = std::stoi(text.substr(4));
  { Client c(dir.file("s.sock")); }
  REQUIRE(::kill(pid, SIGTERM) == 0);
  const auto r = d.wait();
  CHECK(r.exit_code == 0);
  CHECK_FALSE(fs::exists(ready));
  // Text logs (the default) stay on stderr.
  CHECK(r.out.empty());
  CHECK_THAT(r.err, Catch::Contains("ready ("));
}

TEST_CASE("sidecar: a ready file that cannot be written fails the start", "[sidecar]") {
  TempDir dir;
  dir.write("mgmt.yaml", "server: {socket: " + dir.file("s.sock") + ", write_hint: false}\n" +
                             "backend:\n  plugin: process\n  config:\n    processes:\n" +
                             ticker_processes("t"));
  const auto r = run({MGMTD_BIN, "-c", dir.file("mgmt.yaml"), "--ready-file",
                      dir.file("missing/dir/ready")});
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.err, Catch::Contains("--ready-file " + dir.file("missing/dir/ready") +
                                    ": cannot create it: No such file or directory"));

  const auto bad = run({MGMTD_BIN, "-c", dir.file("mgmt.yaml"), "--log-format", "xml"});
  CHECK(bad.exit_code == 2);
  CHECK_THAT(bad.err, Catch::Contains("--log-format must be text or json"));
}

TEST_CASE("sidecar: the example configuration passes --check", "[sidecar]") {
  const auto example = fs::path(MGMT_EXAMPLE_CONFIG).parent_path().parent_path() /
                       "examples" / "sidecar" / "mgmt.yaml";
  TempDir dir;
  const auto r = run({MGMTD_BIN, "--check", "-c", example.string(), "--socket", dir.file("s.sock")});
  INFO(r.err);
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.out, Catch::Contains("0xae: metrics"));
}
