// The plugin SDK end to end. Before these run, ctest has installed this build into
// MGMT_SDK_PREFIX (sdk:install) and built examples/hello-command and
// examples/pidfile-backend out of tree against that install (sdk:build:*). Here: the
// installed layout, the installed mgmtd, and both examples loaded by a real mgmtd.
#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "harness.hpp"
#include "mgmt/commands.hpp"
#include "wait.hpp"

using namespace mgmt;
using namespace mgmt::test;
using json = nlohmann::json;

namespace fs = std::filesystem;

namespace {

const std::string kPrefix = MGMT_SDK_PREFIX;
const std::string kHello = std::string(MGMT_SDK_EXAMPLES_BUILD) + "/hello-command/hello.so";
const std::string kPidfile = std::string(MGMT_SDK_EXAMPLES_BUILD) + "/pidfile-backend/pidfile.so";

std::string msgpack(const json& j) {
  const auto bytes = json::to_msgpack(j);
  return std::string(bytes.begin(), bytes.end());
}

json unpack(const std::string& payload) { return json::from_msgpack(payload); }

const std::string kTicker =
    "backend:\n"
    "  plugin: process\n"
    "  config:\n"
    "    processes:\n" +
    ticker_processes("web");

// A daemon "started elsewhere": its own session and process group, its pid in DIR/ID.pid,
// a line in DIR/ID.hup per SIGHUP. `on_term` is the shell's TERM trap action.
std::vector<std::string> daemon_argv(const TempDir& dir, const std::string& id,
                                     const std::string& on_term) {
  const std::string d = dir.path();
  return {"/usr/bin/setsid", "/bin/sh", "-c",
          "trap 'echo hup >> " + d + "/" + id + ".hup' HUP; trap '" + on_term +
              "' TERM; echo $$ > " + d + "/" + id + ".tmp && mv " + d + "/" + id + ".tmp " + d +
              "/" + id + ".pid; while :; do sleep 0.05; done"};
}

std::int64_t pid_in(const TempDir& dir, const std::string& id) {
  const std::string text = read_file(dir.file(id + ".pid"));
  return text.empty() ? 0 : std::stoll(text);
}

}  // namespace

TEST_CASE("the installed SDK has the documented layout", "[sdk]") {
  for (const char* f :
       {"include/mgmt/plugin.hpp", "include/mgmt/backend.hpp", "include/mgmt/handler.hpp",
        "include/mgmt/commands.hpp", "include/mgmt/messages.hpp", "include/mgmt/wire.hpp",
        "include/mgmt/handler_support.hpp", "include/mgmt/server/config.hpp",
        "lib/libmgmt.so", "lib/cmake/mgmt/mgmtConfig.cmake",
        "lib/cmake/mgmt/mgmtConfigVersion.cmake", "lib/cmake/mgmt/mgmtTargets.cmake",
        "lib/cmake/mgmt/MgmtPlugin.cmake", "bin/mgmtd", "bin/mgmtctl"}) {
    INFO(f);
    CHECK(fs::exists(kPrefix + "/" + f));
  }
  for (const char* p : {"process", "list", "status", "logs", "events", "start", "stop",
                        "restart", "signal", "info"}) {
    INFO(p);
    CHECK(fs::exists(kPrefix + "/lib/mgmtd/plugins/" + p + ".so"));
  }
  // Private headers stay private.
  CHECK_FALSE(fs::exists(kPrefix + "/include/mgmt/msgpack_codec.hpp"));
  // The package knows the ABI, and declares the dependencies the public headers need.
  const std::string config = read_file(kPrefix + "/lib/cmake/mgmt/mgmtConfig.cmake");
  CHECK_THAT(config, Catch::Contains("set(MGMT_ABI_VERSION " + std::to_string(MGMT_ABI_VERSION) + ")"));
  CHECK_THAT(config, Catch::Contains("find_dependency(yaml-cpp)") &&
                         Catch::Contains("find_dependency(spdlog)") &&
                         Catch::Contains("find_dependency(Threads)"));
  CHECK_THAT(read_file(kPrefix + "/lib/cmake/mgmt/mgmtTargets.cmake"),
             Catch::Contains("mgmt::framework"));
}

TEST_CASE("the installed mgmtd finds its stock plugins under its prefix", "[sdk]") {
  auto r = run({kPrefix + "/bin/mgmtd", "--version"});
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.out, Catch::Contains("plugin ABI " + std::to_string(MGMT_ABI_VERSION)));

  r = run({kPrefix + "/bin/mgmtd", "--check", "-c", MGMT_EXAMPLE_CONFIG});
  INFO(r.err);
  CHECK(r.exit_code == 0);
  const std::string plugins = fs::canonical(kPrefix).string() + "/lib/mgmtd/plugins/";
  CHECK_THAT(r.out, Catch::Contains("backend: process 1.0.0 (" + plugins + "process.so)"));
  CHECK_THAT(r.out, Catch::Contains("0xaa: restart 1.0.0 (" + plugins + "restart.so)"));
  CHECK_THAT(r.out, Catch::Contains("0xac: info 1.0.0 (" + plugins + "info.so)"));
}

TEST_CASE("out-of-tree plugins report their name, kind, version and ABI", "[sdk]") {
  TempDir dir;
  fs::create_directory(dir.file("pids"));
  auto check = [&](const std::string& yaml) {
    dir.write("mgmt.yaml", yaml);
    return run({kPrefix + "/bin/mgmtd", "--check", "-c", dir.file("mgmt.yaml")});
  };
  const std::string backend = "backend:\n  plugin: " + kPidfile + "\n  config: {dir: pids}\n";

  auto r = check(backend + "commands:\n  0xAD: {plugin: " + kHello + ", version: \"^1.0\"}\n");
  INFO(r.err);
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.out, Catch::Contains("backend: pidfile 0.2.0 (" + kPidfile + ")"));
  CHECK_THAT(r.out, Catch::Contains("0xad: hello 1.0.0 (" + kHello + ")"));

  // The version given to mgmt_add_plugin() (or the project's) is what the loader checks.
  r = check("backend:\n  plugin: " + kPidfile + "\n  version: \">=1.0\"\n  config: {dir: pids}\n");
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.err, Catch::Contains(kPidfile) && Catch::Contains("is version 0.2.0") &&
                        Catch::Contains(">=1.0"));

  // The kind is checked too: a command where a handler belongs.
  r = check(backend + "handlers:\n  0xA0: " + kHello + "\n");
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.err, Catch::Contains("is a command plugin, but a handler plugin is needed"));

  // A constructor refusing its configuration.
  r = check(backend + "commands:\n  0xAD: {plugin: " + kHello + ", config: {greeting: \"\"}}\n");
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.err, Catch::Contains("refused to start") &&
                        Catch::Contains("`greeting` must not be empty"));
}

TEST_CASE("hello-command answers on its own type", "[sdk][hello]") {
  Mgmtd d(kTicker + "commands:\n  0xAD: {plugin: " + kHello + ", config: {greeting: Hi}}\n");
  REQUIRE(wait_until([&] { return d.ctl({"status", "web"}).out.find("running") != std::string::npos; }));

  RawConn c(d.socket());
  c.send(0xAD, msgpack({{"name", "Ada"}, {"unknown", 1}}));
  auto f = c.read();
  REQUIRE(f);
  CHECK(int(f->header.type) == 0xAD);
  auto j = unpack(f->payload);
  CHECK(j["err"] == "");
  CHECK(j["greeting"] == "Hi, Ada");
  CHECK(j["processes"] == 1);
  CHECK(j["running"] == 1);

  // No payload: the defaults.
  c.send(0xAD, "");
  f = c.read();
  REQUIRE(f);
  CHECK(unpack(f->payload)["greeting"] == "Hi, world");

  // A field of the wrong kind: the protocol's error reply, and the connection stays usable.
  c.send(0xAD, msgpack({{"name", 5}}));
  f = c.read();
  REQUIRE(f);
  CHECK_THAT(as_status(*f).err, Catch::Contains("field 'name'"));

  const auto r = d.ctl({"call", "0xAD", R"({"name": "Grace"})"});
  CHECK(r.exit_code == 0);
  CHECK(json::parse(r.out)["greeting"] == "Hi, Grace");
}

TEST_CASE("pidfile-backend reports, signals and stops daemons started elsewhere", "[sdk][pidfile]") {
  TempDir pids;
  Background web(daemon_argv(pids, "web", "exit 0"));
  Background stubborn(daemon_argv(pids, "stubborn", ""));  // ignores SIGTERM
  pids.write("stale.pid", "4194303\n");                     // above any pid_max default
  pids.write("garbage.pid", "not a pid\n");
  REQUIRE(wait_until([&] { return pid_in(pids, "web") > 0 && pid_in(pids, "stubborn") > 0; }));
  const auto web_pid = pid_in(pids, "web");

  Mgmtd d("backend:\n  plugin: " + kPidfile + "\n  config:\n    dir: " + pids.path() +
          "\n    stop_timeout: 300ms\n"
          "commands:\n  0xAA: restart\n  0xAB: signal\n  0xAC: info\n");

  SECTION("list and status read /proc") {
    auto r = d.ctl({"list", "--json"});
    REQUIRE(r.exit_code == 0);
    const auto list = json::parse(r.out);
    REQUIRE(list.size() == 4);
    CHECK(list[0]["id"] == "garbage");
    CHECK(list[0]["state"] == "failed");
    CHECK_THAT(list[0]["last_error"].get<std::string>(), Catch::Contains("does not hold a pid"));
    CHECK(list[1]["id"] == "stale");
    CHECK(list[1]["state"] == "stopped");
    CHECK(list[2]["id"] == "stubborn");
    CHECK(list[2]["state"] == "running");
    CHECK(list[3]["id"] == "web");
    CHECK(list[3]["pid"] == web_pid);
    CHECK(list[3]["rss"].get<std::uint64_t>() > 0);
    const auto now_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
    const auto started = list[3]["started_at"].get<std::int64_t>();
    CHECK(started > now_ns - std::int64_t{120'000'000'000});
    CHECK(started <= now_ns + std::int64_t{1'000'000'000});

    r = d.ctl({"status", "nope"});
    CHECK(r.exit_code == 1);
    CHECK(r.err == "cliwrap: process not found\n");
  }

  SECTION("signal reaches the daemon, or its process group") {
    auto r = d.ctl({"signal", "HUP", "web"});
    INFO(r.err);
    CHECK(r.exit_code == 0);
    CHECK(r.out == "sent SIGHUP to web\n");
    CHECK(wait_until([&] { return read_file(pids.file("web.hup")) == "hup\n"; }));

    r = d.ctl({"signal", "--group", "sighup", "web"});
    CHECK(r.exit_code == 0);
    CHECK(r.out == "sent SIGHUP to the process group of web\n");
    CHECK(wait_until([&] { return read_file(pids.file("web.hup")) == "hup\nhup\n"; }));

    r = d.ctl({"signal", "HUP", "stale"});
    CHECK(r.exit_code == 1);
    CHECK(r.err == "stale: process stale is not running (state stopped)\n");
  }

  SECTION("stop: the stop signal, then SIGKILL after the timeout") {
    RawConn events(d.socket());
    events.send(to_byte(MsgType::EventsSubscribe), encode(EventsSubscribe{{"web"}, {}}));

    auto r = d.ctl({"stop", "web"});
    INFO(r.err);
    CHECK(r.exit_code == 0);
    CHECK(r.out == "stopped web\n");
    CHECK(web.wait(5s).exit_code == 0);  // its TERM trap ran
    CHECK_THAT(d.ctl({"status", "web"}).out, Catch::Contains("stopped"));
    std::vector<std::string> seen;
    while (seen.size() < 2) {
      const auto f = events.read(5s);
      REQUIRE(f);
      EventsStream ev;
      REQUIRE(decode(f->payload, ev).empty());
      seen.push_back(ev.t);
    }
    CHECK(seen == std::vector<std::string>{"process.stopping", "process.stopped"});

    const auto t0 = std::chrono::steady_clock::now();
    r = d.ctl({"stop", "stubborn"});
    CHECK(r.exit_code == 0);
    CHECK(std::chrono::steady_clock::now() - t0 >= 300ms);
    CHECK(stubborn.wait(5s).exit_code == -1);  // SIGKILL

    r = d.ctl({"stop", "web"});
    CHECK(r.exit_code == 1);
    CHECK(r.err == "web: process web is not running (state stopped)\n");
  }

  SECTION("start and logs are refused with a reason; restart stops, then reports the refusal") {
    auto r = d.ctl({"start", "web"});
    CHECK(r.exit_code == 1);
    CHECK_THAT(r.err, Catch::Contains("does not start processes"));
    r = d.ctl({"logs", "web"});
    CHECK(r.exit_code == 1);
    CHECK_THAT(r.err, Catch::Contains("keeps no logs"));
    r = d.ctl({"restart", "web"});
    CHECK(r.exit_code == 1);
    CHECK_THAT(r.err, Catch::StartsWith("web: ") && Catch::Contains("does not start processes"));
    CHECK(web.wait(5s).exit_code == 0);
  }

  SECTION("info names the backend and its file") {
    const auto r = d.ctl({"info", "--json"});
    REQUIRE(r.exit_code == 0);
    const auto info = json::parse(r.out);
    CHECK(info["plugins"][0]["kind"] == "backend");
    CHECK(info["plugins"][0]["name"] == "pidfile");
    CHECK(info["plugins"][0]["version"] == "0.2.0");
    CHECK(info["plugins"][0]["path"] == kPidfile);
  }
}
