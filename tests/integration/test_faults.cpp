// Faults in supervision, seen through the real server: children that die, ignore signals,
// fork and leave, or cannot be executed. The server must report each clearly and go on.
#include <signal.h>
#include <sys/stat.h>

#include <catch2/catch.hpp>

#include "harness.hpp"
#include "wait.hpp"

using namespace mgmt;
using namespace mgmt::test;

namespace {

Entry status_of(const Mgmtd& d, const std::string& id) {
  RawConn c(d.socket());
  c.send(to_byte(MsgType::StatusRequest), encode(StatusRequest{id}));
  auto f = c.read();
  REQUIRE(f);
  auto r = as_status(*f);
  REQUIRE(r.err.empty());
  return r.entry;
}

std::vector<EventsStream> events_until(RawConn& sub, const std::string& type) {
  std::vector<EventsStream> got;
  wait_until([&] {
    auto f = sub.read(5s);
    if (!f) return true;
    EventsStream e;
    REQUIRE(decode(f->payload, e).empty());
    got.push_back(e);
    return e.t == type;
  });
  return got;
}

}  // namespace

TEST_CASE("a child killed with SIGKILL is reported and restarted", "[faults]") {
  Mgmtd d(
      "backend:\n  plugin: process\n  config:\n    processes:\n"
      "      - id: victim\n        command: /bin/sleep\n        args: ['1000']\n"
      "        restart: on_failure\n        restart_backoff: 100ms\n" +
      probe_process());
  REQUIRE(wait_until([&] { return status_of(d, "victim").state == "running"; }));
  RawConn sub(d.socket());
  sub.send(to_byte(MsgType::EventsSubscribe), encode(EventsSubscribe{{"victim", "probe"}, {}}));
  confirm_subscription(d.socket(), sub);
  const auto pid = static_cast<pid_t>(status_of(d, "victim").pid);
  REQUIRE(::kill(pid, SIGKILL) == 0);
  const auto evs = events_until(sub, std::string(event::started));
  REQUIRE(evs.size() >= 3);
  CHECK(evs[0].t == event::crashed);
  CHECK_THAT(evs[0].sum, Catch::Contains("SIGKILL"));
  CHECK(evs[1].t == event::restarting);
  CHECK(evs.back().t == event::started);
  const Entry after = status_of(d, "victim");
  CHECK(after.state == "running");
  CHECK(after.pid != pid);
  CHECK(after.restarts == 1);
  CHECK(after.exit_signal == std::optional<std::int64_t>(SIGKILL));
}

TEST_CASE("a child that forks and exits leaves nothing behind", "[faults]") {
  TempDir scratch;
  Mgmtd d(
      "backend:\n  plugin: process\n  config:\n    processes:\n"
      "      - id: forker\n        command: /bin/sh\n"
      "        args: [-c, 'sleep 1000 & echo $! > " + scratch.file("grandchild") + "; exit 0']\n"
      "        restart: on_failure\n");
  REQUIRE(wait_until([&] { return status_of(d, "forker").state == "stopped"; }));
  std::string pid_text;
  REQUIRE(wait_until([&] {
    pid_text = read_file(scratch.file("grandchild"));
    return !pid_text.empty();
  }));
  const pid_t grandchild = std::stoi(pid_text);
  // The exited program's process group goes with it: no orphan keeps running, no zombie.
  CHECK(wait_until([&] { return !pid_alive(grandchild); }));
  CHECK(status_of(d, "forker").exit_code == std::optional<std::int64_t>(0));
}

TEST_CASE("a command that is missing or not executable fails clearly", "[faults]") {
  TempDir scratch;
  scratch.write("not-executable.sh", "#!/bin/sh\necho hi\n");
  ::chmod(scratch.file("not-executable.sh").c_str(), 0644);
  Mgmtd d(
      "backend:\n  plugin: process\n  config:\n    processes:\n"
      "      - id: missing\n        command: /nonexistent/program\n        restart: always\n"
      "      - id: noexec\n        command: " + scratch.file("not-executable.sh") + "\n"
      "        restart: always\n"
      "      - id: ok\n        command: /bin/sleep\n        args: ['1000']\n");
  REQUIRE(wait_until([&] { return status_of(d, "missing").state == "failed"; }));
  REQUIRE(wait_until([&] { return status_of(d, "noexec").state == "failed"; }));
  const Entry missing = status_of(d, "missing");
  CHECK_THAT(missing.last_error, Catch::Contains("/nonexistent/program") &&
                                     Catch::Contains("No such file or directory"));
  CHECK(missing.pid == 0);
  CHECK_THAT(status_of(d, "noexec").last_error, Catch::Contains("Permission denied"));
  // No restart loop for a program that cannot run, and the rest is unaffected.
  CHECK(status_of(d, "missing").restarts == 0);
  CHECK(wait_until([&] { return status_of(d, "ok").state == "running"; }));
  // Starting it by hand gives the same clear error.
  RawConn c(d.socket());
  c.send(to_byte(MsgType::StartRequest), encode(IdRequest{"missing"}));
  auto f = c.read();
  REQUIRE(f);
  CHECK_THAT(as_status(*f).err, Catch::Contains("No such file or directory"));
}
