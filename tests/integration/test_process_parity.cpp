// The process fields at supervisord and systemd parity, through the real mgmtd: a bad value
// is reported by `mgmtd --check` with file:line:column, and instances on a terminal run,
// log and reload (a policy-only edit keeps their pids).
#include <signal.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <string>

#include "harness.hpp"
#include "wait.hpp"

using namespace mgmt;
using namespace mgmt::test;

namespace {

// The config's head; the process entry's fields follow from line kFieldLine on, indented
// by 8 (column 9).
const std::string kHead =
    "backend:\n"
    "  plugin: process\n"
    "  config:\n"
    "    processes:\n"
    "      - id: web\n"
    "        command: /bin/sleep\n"
    "        args: ['1000']\n";
constexpr int kFieldLine = 8;

RunResult check_config(const TempDir& dir, const std::string& yaml) {
  dir.write("mgmt.yaml", yaml);
  return run({MGMTD_BIN, "--check", "-c", dir.file("mgmt.yaml")});
}

std::vector<Entry> list(const Mgmtd& d) {
  RawConn c(d.socket());
  c.send(to_byte(MsgType::ListRequest), "");
  auto f = c.read();
  REQUIRE(f);
  ListResponse r;
  REQUIRE(decode(f->payload, r).empty());
  return r.entries;
}

std::int64_t pid_in(const std::vector<Entry>& es, const std::string& id) {
  for (const auto& e : es) {
    if (e.id == id && e.state == "running") return e.pid;
  }
  return 0;
}

std::string reload(const Mgmtd& d) {
  RawConn c(d.socket());
  c.send(0xAD, "");
  auto f = c.read(20s);
  REQUIRE(f);
  StatusResponse r;
  REQUIRE(decode(f->payload, r).empty());
  return r.err;
}

}  // namespace

TEST_CASE("mgmtd --check reports a bad process field with file, line and column",
          "[parity][startup]") {
  TempDir dir;
  const std::string file = dir.file("mgmt.yaml");
  struct Bad {
    std::string field;  // the line, without its indentation
    int column;
    std::string message;
  };
  const std::vector<Bad> cases = {
      {"rlimits: {nofile: lots}", 27, "rlimits.nofile must be a number"},
      {"user: no-such-user-mgmt", 15, "user \"no-such-user-mgmt\" does not exist"},
      {"group: no-such-group-mgmt", 16, "group \"no-such-group-mgmt\" does not exist"},
      {"stop_signal: NOPE", 22, "stop_signal must be a signal name or number"},
      {"umask: 999", 16, "umask must be an octal mode"},
      {"nice: -21", 15, "nice must be a whole number from -20 to 19"},
      {"oom_score_adj: 5000", 24, "oom_score_adj must be a whole number from -1000 to 1000"},
      {"success_exit_codes: [0, x]", 33, "each of success_exit_codes must be a whole number"},
      {"instances: 0", 20, "instances must be a whole number from 1 to 1000"},
      {"tty_size: 80x24", 19, "tty_size needs `tty: true`"},
      {"start_seconds: soon", 24, "start_seconds must be a duration"},
  };
  for (const auto& c : cases) {
    INFO(c.field);
    const auto r = check_config(dir, kHead + "        " + c.field + "\n");
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains(file + ":" + std::to_string(kFieldLine) + ":" +
                                      std::to_string(c.column) + ": " + c.message));
  }
  // And every field at once, valid, passes.
  const auto ok = check_config(
      dir, kHead +
               "        user: \"" + std::to_string(::geteuid()) + "\"\n"
               "        group: \"" + std::to_string(::getegid()) + "\"\n"
               "        umask: \"027\"\n"
               "        env_file: -/nonexistent.env\n"
               "        clear_env: true\n"
               "        rlimits: {nofile: 1024, core: unlimited}\n"
               "        nice: 5\n"
               "        oom_score_adj: 100\n"
               "        stop_signal: INT\n"
               "        stop_group: false\n"
               "        start_seconds: 1s\n"
               "        start_retries: 2\n"
               "        success_exit_codes: [0, 3]\n"
               "        instances: 2\n"
               "        tty: true\n"
               "        tty_size: 100x30\n");
  INFO(ok.err);
  CHECK(ok.exit_code == 0);
}

TEST_CASE("instances on a terminal run, log, and keep their pids across a policy-only reload",
          "[parity][reload]") {
  const auto body = [](int instances, const std::string& stop_timeout) {
    return "backend:\n  plugin: process\n  config:\n    processes:\n"
           "      - id: w\n        command: /bin/sh\n"
           "        args: [-c, 'test -t 1 && echo \"on a tty: $MGMT_PROCESS_ID\"; "
           "exec sleep 1000', sh]\n"
           "        instances: " +
           std::to_string(instances) + "\n        tty: true\n        stop_timeout: " +
           stop_timeout + "\ncommands:\n  0xAD: reload\n";
  };
  Mgmtd d(body(2, "5s"));
  REQUIRE(wait_until([&] {
    const auto es = list(d);
    return pid_in(es, "w-0") > 0 && pid_in(es, "w-1") > 0;
  }));
  REQUIRE(wait_until(
      [&] { return d.ctl({"logs", "w-1"}).out.find("on a tty: w-1") != std::string::npos; }));
  const auto before = list(d);

  d.dir().write("mgmt.yaml",
                "server:\n  socket: " + d.socket() + "\n  write_hint: false\n" + body(3, "3s"));
  REQUIRE(reload(d).empty());
  REQUIRE(wait_until([&] { return pid_in(list(d), "w-2") > 0; }));
  const auto after = list(d);
  CHECK(pid_in(after, "w-0") == pid_in(before, "w-0"));
  CHECK(pid_in(after, "w-1") == pid_in(before, "w-1"));
  CHECK_THAT(d.log(), Catch::Contains("process w-0: configuration changed (stop_timeout)"));
  CHECK(d.terminate() == 0);
}
