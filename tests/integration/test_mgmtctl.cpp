// mgmtctl against the real mgmtd: output formats, exit codes, discovery.
#include <catch2/catch.hpp>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "harness.hpp"
#include "wait.hpp"

using namespace mgmt;
using namespace mgmt::test;

namespace {

const std::string kBackend =
    "backend:\n"
    "  plugin: process\n"
    "  config:\n"
    "    processes:\n" +
    ticker_processes("web") +
    "      - id: batch-job\n"
    "        name: Nightly batch\n"
    "        command: /bin/sleep\n"
    "        args: ['1000']\n"
    "        autostart: false\n";

std::vector<std::string> lines(const std::string& s) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start < s.size()) {
    auto nl = s.find('\n', start);
    if (nl == std::string::npos) nl = s.size();
    out.push_back(s.substr(start, nl - start));
    start = nl + 1;
  }
  return out;
}

void wait_running(const Mgmtd& d, const std::string& id) {
  REQUIRE(wait_until([&] { return d.ctl({"status", id}).out.find("running") != std::string::npos; }));
}

}  // namespace

TEST_CASE("mgmtctl list prints cliwrap's table", "[mgmtctl]") {
  Mgmtd d(kBackend);
  wait_running(d, "web");
  const auto r = d.ctl({"list"});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const auto ls = lines(r.out);
  REQUIRE(ls.size() == 3);
  // Columns are as wide as their widest cell plus two spaces.
  CHECK(ls[0].rfind("ID         NAME           STATE    PID", 0) == 0);
  CHECK(ls[1].rfind("web        Ticker         running  ", 0) == 0);
  CHECK(ls[2] == "batch-job  Nightly batch  pending  0");
}

TEST_CASE("mgmtctl list --json and status --json carry every field", "[mgmtctl]") {
  Mgmtd d(kBackend);
  wait_running(d, "web");
  const auto r = d.ctl({"list", "--json"});
  REQUIRE(r.exit_code == 0);
  const auto j = nlohmann::json::parse(r.out);
  REQUIRE(j.is_array());
  REQUIRE(j.size() == 2);
  CHECK(j[0]["id"] == "web");
  CHECK(j[0]["state"] == "running");
  CHECK(j[0]["pid"].get<long>() > 0);
  CHECK(j[0]["rss"].get<unsigned long>() > 0);
  CHECK(j[0]["started_at"].get<long>() > 0);
  const auto s = d.ctl({"status", "--json", "batch-job"});
  REQUIRE(s.exit_code == 0);
  const auto sj = nlohmann::json::parse(s.out);
  CHECK(sj["name"] == "Nightly batch");
  CHECK(sj["state"] == "pending");
}

TEST_CASE("mgmtctl status, stop and start", "[mgmtctl]") {
  Mgmtd d(kBackend);
  wait_running(d, "web");
  auto st = d.ctl({"status", "web"});
  REQUIRE(st.exit_code == 0);
  CHECK_THAT(st.out, Catch::Contains("ID:") && Catch::Contains("web") && Catch::Contains("Name:") &&
                         Catch::Contains("Ticker") && Catch::Contains("State:") &&
                         Catch::Contains("ChildPID:"));

  auto stop = d.ctl({"stop", "web"});
  INFO(stop.err);
  CHECK(stop.exit_code == 0);
  CHECK(stop.out == "stopped web\n");
  CHECK_THAT(d.ctl({"status", "web"}).out, Catch::Contains("stopped"));

  auto again = d.ctl({"stop", "web"});
  CHECK(again.exit_code == 1);
  CHECK_THAT(again.err, Catch::Contains("web") && Catch::Contains("not running"));

  auto start = d.ctl({"start", "web", "batch-job"});
  INFO(start.err);
  CHECK(start.exit_code == 0);
  CHECK(start.out == "started web\nstarted batch-job\n");
  CHECK_THAT(d.ctl({"status", "batch-job"}).out, Catch::Contains("running"));

  auto missing = d.ctl({"status", "nope"});
  CHECK(missing.exit_code == 1);
  CHECK_THAT(missing.err, Catch::Contains("process not found"));
}

TEST_CASE("mgmtctl logs splits stdout and stderr and honours -n", "[mgmtctl]") {
  Mgmtd d(kBackend);
  REQUIRE(wait_until([&] { return d.ctl({"logs", "web"}).out.find("tick 3") != std::string::npos; }));
  const auto all = d.ctl({"logs", "web"});
  CHECK(all.exit_code == 0);
  CHECK(all.out.rfind("tick 0\n", 0) == 0);
  CHECK(all.err.rfind("oops 0\n", 0) == 0);
  const auto out_only = d.ctl({"logs", "--stream", "stdout", "-n", "2", "web"});
  CHECK(out_only.exit_code == 0);
  CHECK(lines(out_only.out).size() == 2);
  CHECK(out_only.err.empty());
  const auto err_only = d.ctl({"logs", "--stream", "stderr", "--since", "1h", "web"});
  CHECK(err_only.out.empty());
  CHECK(err_only.err.rfind("oops 0\n", 0) == 0);

  CHECK(d.ctl({"logs", "--since", "soon", "web"}).exit_code == 2);
  const auto missing = d.ctl({"logs", "nope"});
  CHECK(missing.exit_code == 1);
  CHECK_THAT(missing.err, Catch::Contains("process not found"));
  CHECK(d.ctl({"logs", "-f", "nope"}).exit_code == 1);

  // Without --stream, -f follows both streams (two connections), each to its own fd, until
  // the server closes them.
  Background follow({MGMTCTL_BIN, "--socket", d.socket(), "logs", "-f", "web"});
  REQUIRE(wait_until([&] {
    const std::string o = follow.out();
    return o.find("tick 0\n") != std::string::npos && o.find("tick 4\n") != std::string::npos;
  }, 20s));
  CHECK(d.terminate() == 0);
  const auto followed = follow.wait();
  CHECK(followed.exit_code == 0);
  CHECK(followed.out.rfind("tick 0\n", 0) == 0);
  CHECK(followed.err.rfind("oops 0\n", 0) == 0);
}

TEST_CASE("mgmtctl events prints one line per event until the server closes", "[mgmtctl]") {
  Mgmtd d(kBackend);
  wait_running(d, "web");
  Background events({MGMTCTL_BIN, "--socket", d.socket(), "events", "--process", "web"},
                    {{"TZ", "UTC"}});
  // Cycle the process until the subscriber has printed a stop (it may subscribe late).
  REQUIRE(wait_until([&] {
    d.ctl({"stop", "web"});
    d.ctl({"start", "web"});
    return events.out().find("process.stopped") != std::string::npos;
  }));
  d.terminate();
  const auto r = events.wait();
  INFO(r.err);
  CHECK(r.exit_code == 0);
  bool saw_stopped = false;
  for (const auto& line : lines(r.out)) {
    // HH:MM:SS.mmm  <type padded 32>  <pid padded 20>  <summary>
    REQUIRE(line.size() > 12 + 2 + 32 + 2 + 20 + 2);
    CHECK(line[2] == ':');
    CHECK(line[8] == '.');
    CHECK(line.substr(12, 2) == "  ");
    CHECK(line.substr(14 + 32 + 2, 3) == "web");
    if (line.substr(14, 15) == "process.stopped") saw_stopped = true;
  }
  CHECK(saw_stopped);
}

TEST_CASE("mgmtctl exit codes and socket discovery", "[mgmtctl]") {
  TempDir dir;
  const auto nobody = run({MGMTCTL_BIN, "--socket", dir.file("none.sock"), "list"});
  CHECK(nobody.exit_code == 1);
  CHECK_THAT(nobody.err, Catch::Contains(dir.file("none.sock")));
  CHECK(run({MGMTCTL_BIN, "frobnicate"}).exit_code == 2);
  CHECK(run({MGMTCTL_BIN, "status"}).exit_code == 2);

  Mgmtd d(kBackend);
  const std::string runtime_dir = d.dir().file("run");
  // --runtime-dir, then CLIWRAP_RUNTIME_DIR, then the hint file.
  CHECK(run({MGMTCTL_BIN, "--runtime-dir", runtime_dir, "list"}).exit_code == 0);
  CHECK(run({MGMTCTL_BIN, "list"}, {{"CLIWRAP_RUNTIME_DIR", runtime_dir}}).exit_code == 0);
  std::filesystem::create_directories(dir.file("cache/cliwrap"));
  dir.write("cache/cliwrap/runtime-dir", runtime_dir + "\n");
  CHECK(run({MGMTCTL_BIN, "list"}, {{"XDG_CACHE_HOME", dir.file("cache")}, {"CLIWRAP_RUNTIME_DIR", ""}})
            .exit_code == 0);
}
