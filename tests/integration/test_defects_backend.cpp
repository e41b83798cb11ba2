// Regression tests against the real mgmtd for defects of the process backend found by
// review and by attack.
#include <catch2/catch.hpp>

#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <sstream>
#include <string>

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
