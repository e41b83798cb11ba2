// The stock extra commands (restart, signal, info) in a real mgmtd, driven with raw frames
// and with mgmtctl, and `mgmtctl call` as a generic client.
#include <catch2/catch.hpp>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "harness.hpp"
#include "mgmt/plugin.hpp"
#include "mgmt/commands.hpp"
#include "wait.hpp"

using namespace mgmt;
using namespace mgmt::test;
using json = nlohmann::json;

namespace {

const std::string kCommands =
    "backend:\n"
    "  plugin: process\n"
    "  config:\n"
    "    processes:\n" +
    ticker_processes("web") +
    "commands:\n"
    "  0xAA: restart\n"
    "  0xAB: {plugin: signal, version: \"^1.0\"}\n"
    "  0xAC: info\n";

Entry status_of(const Mgmtd& d, const std::string& id) {
  RawConn c(d.socket());
  c.send(to_byte(MsgType::StatusRequest), encode(StatusRequest{id}));
  const auto f = c.read();
  REQUIRE(f);
  return as_status(*f).entry;
}

bool running(const Mgmtd& d, const std::string& id) {
  const auto e = status_of(d, id);
  return e.state == state::running && e.pid > 0;
}

std::string base64_decode(const std::string& in) {
  static const std::string kAlphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  std::uint32_t acc = 0;
  int bits = 0;
  for (const char c : in) {
    const auto v = kAlphabet.find(c);
    if (v == std::string::npos) break;  // '=' padding
    acc = acc << 6 | static_cast<std::uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>(acc >> bits & 0xFF);
    }
  }
  return out;
}

}  // namespace

TEST_CASE("info describes the server, its configuration and its plugins", "[commands][info]") {
  Mgmtd d(kCommands);

  RawConn c(d.socket());
  c.send(kInfoCommandType, encode(InfoRequest{}), 41);
  auto f = c.read();
  REQUIRE(f);
  CHECK(int(f->header.type) == kInfoCommandType);  // answered on its own type
  CHECK(f->header.seq == 41);
  InfoResponse info;
  REQUIRE(decode(f->payload, info).empty());
  CHECK(info.err.empty());
  CHECK(info.version == MGMT_PROJECT_VERSION);
  CHECK(info.abi == kAbiVersion);
  CHECK(info.pid == d.pid());
  CHECK(info.config == d.dir().file("mgmt.yaml"));
  CHECK(info.started_at > 0);
  CHECK(info.uptime >= 0);
  REQUIRE(info.plugins.size() == 10);  // the backend, six handlers, three commands
  CHECK(info.plugins[0].kind == "backend");
  CHECK(info.plugins[0].name == "process");
  CHECK(info.plugins[0].type == 0);
  CHECK(info.plugins[0].path == std::string(MGMT_PLUGIN_DIR) + "/process.so");
  CHECK(info.plugins[1].type == 0xA0);
  CHECK(info.plugins[1].kind == "handler");
  CHECK(info.plugins[1].name == "list");
  const auto& last = info.plugins.back();
  CHECK(last.type == 0xAC);
  CHECK(last.kind == "command");
  CHECK(last.name == "info");
  CHECK(last.version == "1.0.0");
  CHECK(last.path == std::string(MGMT_PLUGIN_DIR) + "/info.so");

  // A payload that does not decode: the protocol's generic error, on 0xA3.
  c.send(kInfoCommandType, std::string("\x91\x01", 2));
  f = c.read();
  REQUIRE(f);
  CHECK_THAT(as_status(*f).err, Catch::Contains("cannot decode the 0xac request") &&
                                    Catch::Contains("not a msgpack map"));

  // mgmtctl: the text form and the JSON form.
  auto r = d.ctl({"info"});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Catch::StartsWith("Server:   mgmtd " MGMT_PROJECT_VERSION " (plugin ABI " + std::to_string(kAbiVersion) + "), pid " +
                                      std::to_string(d.pid()) + "\n"));
  CHECK_THAT(r.out, Catch::Contains("Config:   " + d.dir().file("mgmt.yaml") + "\n"));
  CHECK_THAT(r.out, Catch::Contains("  TYPE  KIND     NAME     VERSION  FILE\n"));
  CHECK_THAT(r.out, Catch::Contains("  -     backend  process  1.0.0    " MGMT_PLUGIN_DIR "/process.so\n"));
  CHECK_THAT(r.out, Catch::Contains("  0xab  command  signal   1.0.0    " MGMT_PLUGIN_DIR "/signal.so\n"));

  r = d.ctl({"info", "--json"});
  REQUIRE(r.exit_code == 0);
  const auto j = json::parse(r.out);
  CHECK(j["pid"] == d.pid());
  CHECK(j["plugins"].size() == 10);
  CHECK(j["plugins"][9]["name"] == "info");
}

TEST_CASE("restart stops and starts a process", "[commands][restart]") {
  Mgmtd d(kCommands);
  REQUIRE(wait_until([&] { return running(d, "web"); }));
  const auto before = status_of(d, "web").pid;

  RawConn c(d.socket());
  c.send(kRestartCommandType, encode(RestartRequest{"web"}));
  auto f = c.read();
  REQUIRE(f);
  CHECK(int(f->header.type) == kRestartCommandType);
  RestartResponse resp;
  REQUIRE(decode(f->payload, resp).empty());
  CHECK(resp.err.empty());
  CHECK(resp.entry.id == "web");
  CHECK(resp.entry.state == state::running);
  CHECK(resp.entry.pid > 0);
  CHECK(resp.entry.pid != before);
  CHECK_FALSE(pid_alive(static_cast<pid_t>(before)));

  // Unknown id: the command's own answer with err.
  c.send(kRestartCommandType, encode(RestartRequest{"nope"}));
  f = c.read();
  REQUIRE(f);
  CHECK(int(f->header.type) == kRestartCommandType);
  REQUIRE(decode(f->payload, resp).empty());
  CHECK(resp.err == kErrNotFound);

  // mgmtctl: a line per id; a stopped process is simply started.
  REQUIRE(d.ctl({"stop", "web"}).exit_code == 0);
  auto r = d.ctl({"restart", "web", "nope"});
  CHECK(r.exit_code == 1);
  CHECK(r.out == "restarted web\n");
  CHECK(r.err == "nope: cliwrap: process not found\n");
  CHECK(running(d, "web"));
}

TEST_CASE("signal: unknown names are refused by the client and by the command", "[commands][signal]") {
  Mgmtd d(kCommands);
  auto r = d.ctl({"signal", "SIGBOGUS", "web"});
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.err, Catch::Contains("unknown signal \"SIGBOGUS\""));

  RawConn c(d.socket());
  c.send(kSignalCommandType, encode(SignalRequest{"web", "BOGUS", false}));
  auto f = c.read();
  REQUIRE(f);
  CHECK(int(f->header.type) == kSignalCommandType);
  SignalResponse resp;
  REQUIRE(decode(f->payload, resp).empty());
  CHECK(resp.err == "unknown signal \"BOGUS\" (examples: HUP, SIGTERM, USR1, 9)");

  c.send(kSignalCommandType, encode(SignalRequest{"nope", "HUP", false}));
  f = c.read();
  REQUIRE(f);
  REQUIRE(decode(f->payload, resp).empty());
  CHECK_FALSE(resp.err.empty());
}

TEST_CASE("signal reaches a process of the process backend, or its group", "[commands][signal]") {
  TempDir marks;
  Mgmtd d("backend:\n  plugin: process\n  config:\n    processes:\n"
          "      - id: web\n        command: /bin/sh\n"
          "        args: [-c, 'trap \"echo hup >> " + marks.file("hup") +
          "\" HUP; while true; do sleep 0.05; done']\n" +
          "commands:\n  0xAB: signal\n");
  REQUIRE(wait_until([&] { return running(d, "web"); }));
  auto r = d.ctl({"signal", "HUP", "web"});
  INFO(r.err);
  CHECK(r.exit_code == 0);
  CHECK(r.out == "sent SIGHUP to web\n");
  CHECK(wait_until([&] { return read_file(marks.file("hup")) == "hup\n"; }));
  r = d.ctl({"signal", "--group", "HUP", "web"});
  CHECK(r.exit_code == 0);
  CHECK(wait_until([&] { return read_file(marks.file("hup")) == "hup\nhup\n"; }));
  CHECK(running(d, "web"));
  r = d.ctl({"signal", "KILL", "web"});
  CHECK(r.exit_code == 0);
  CHECK(wait_until([&] { return status_of(d, "web").exit_signal == 9; }));
}

TEST_CASE("extra commands on an unmapped type get the protocol's error", "[commands]") {
  Mgmtd d(kCommands);
  auto r = d.ctl({"info", "--type", "0xAF"});
  CHECK(r.exit_code == 1);
  CHECK(r.err == "unknown request type 0xaf\n");
  r = d.ctl({"restart", "--type=0xAE", "web"});
  CHECK(r.exit_code == 1);
  CHECK(r.err == "web: unknown request type 0xae\n");
}

TEST_CASE("mgmtctl call sends any request as JSON and prints the answer as JSON", "[commands][call]") {
  Mgmtd d(kCommands);
  REQUIRE(wait_until([&] { return running(d, "web"); }));

  auto r = d.ctl({"call", "0xA0"});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  auto j = json::parse(r.out);
  REQUIRE(j["entries"].size() == 1);
  CHECK(j["entries"][0]["id"] == "web");

  r = d.ctl({"call", "162", R"({"id": "web"})"});
  REQUIRE(r.exit_code == 0);
  j = json::parse(r.out);
  CHECK(j["err"] == "");
  CHECK(j["entry"]["state"] == "running");

  // An answer with err set: printed all the same, exit 1.
  r = d.ctl({"call", "0xA2", R"({"id": "nope"})"});
  CHECK(r.exit_code == 1);
  CHECK(json::parse(r.out)["err"] == "cliwrap: process not found");
  r = d.ctl({"call", "0xAF"});
  CHECK(r.exit_code == 1);
  CHECK(json::parse(r.out)["err"] == "unknown request type 0xaf");

  // Byte data (msgpack bin) comes out as base64.
  REQUIRE(wait_until([&] {
    const auto out = d.ctl({"logs", "--stream", "stdout", "web"}).out;
    return out.find("tick 1") != std::string::npos;
  }));
  r = d.ctl({"call", "0xA4", R"({"id": "web", "s": 0})"});
  REQUIRE(r.exit_code == 0);
  j = json::parse(r.out);
  CHECK(j["eof"] == true);
  REQUIRE(j["d"].is_string());
  CHECK_THAT(base64_decode(j["d"].get<std::string>()), Catch::Contains("tick 1\n"));

  // The stock commands through call.
  r = d.ctl({"call", "0xAC", "{}"});
  REQUIRE(r.exit_code == 0);
  CHECK(json::parse(r.out)["abi"] == kAbiVersion);

  // JSON that is not an object is a usage error.
  r = d.ctl({"call", "0xA2", "[1, 2]"});
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.err, Catch::Contains("must be a JSON object"));
}
