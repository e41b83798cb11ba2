// The stock extra commands' payloads (framework/src/commands.cpp), signal names, and the
// Backend::signal default.
#include <catch2/catch.hpp>

#include <signal.h>

#include <string>

#include "mgmt/backend.hpp"
#include "mgmt/commands.hpp"

using namespace mgmt;

namespace {

// msgpack bytes written by hand, so the tests do not trust the encoder they check.
std::string bytes(std::initializer_list<int> b) {
  std::string s;
  for (const int c : b) s.push_back(static_cast<char>(c));
  return s;
}
std::string fixstr(std::string_view v) {
  return static_cast<char>(0xA0 | v.size()) + std::string(v);
}

InfoResponse sample_info() {
  InfoResponse m;
  m.version = "0.1.0";
  m.abi = 1;
  m.started_at = 1'732'464'000'123'456'789;
  m.uptime = 90'000'000'000;
  m.pid = 4242;
  m.config = "/etc/mgmtd/mgmt.yaml";
  m.plugins = {{0, "process", "backend", "1.0.0", "/usr/lib/mgmtd/plugins/process.so"},
               {0xAC, "info", "command", "1.0.0", "/usr/lib/mgmtd/plugins/info.so"}};
  return m;
}

}  // namespace

TEST_CASE("SignalRequest round-trips and decodes tolerantly", "[commands]") {
  SignalRequest in{"web", "SIGHUP", true};
  SignalRequest out;
  REQUIRE(decode(encode(in), out).empty());
  CHECK(out.id == "web");
  CHECK(out.sig == "SIGHUP");
  CHECK(out.group);

  // {"id": "web", "sig": "HUP", "x": 1}: no group (false), an unknown key ignored.
  const std::string p = bytes({0x83}) + fixstr("id") + fixstr("web") + fixstr("sig") + fixstr("HUP") +
                        fixstr("x") + bytes({0x01});
  REQUIRE(decode(p, out).empty());
  CHECK(out.id == "web");
  CHECK(out.sig == "HUP");
  CHECK_FALSE(out.group);

  // A value of the wrong kind names the field.
  const std::string bad = bytes({0x81}) + fixstr("group") + fixstr("yes");
  CHECK(decode(bad, out) == "field 'group': expected a bool, got str");
}

TEST_CASE("InfoResponse round-trips, plugins included", "[commands]") {
  const InfoResponse in = sample_info();
  InfoResponse out;
  REQUIRE(decode(encode(in), out).empty());
  CHECK(out.version == in.version);
  CHECK(out.abi == in.abi);
  CHECK(out.started_at == in.started_at);
  CHECK(out.uptime == in.uptime);
  CHECK(out.pid == in.pid);
  CHECK(out.config == in.config);
  CHECK(out.err.empty());
  REQUIRE(out.plugins.size() == 2);
  CHECK(out.plugins[1].type == 0xAC);
  CHECK(out.plugins[1].name == "info");
  CHECK(out.plugins[1].kind == "command");
  CHECK(out.plugins[1].version == "1.0.0");
  CHECK(out.plugins[1].path == "/usr/lib/mgmtd/plugins/info.so");

  // Every answer of a command carries err, even on success.
  CHECK(encode(in).find(fixstr("err") + fixstr("")) != std::string::npos);
}

TEST_CASE("InfoResponse decoding: defaults, nil, and errors naming the field", "[commands]") {
  InfoResponse out;
  REQUIRE(decode("", out).empty());
  CHECK(out.plugins.empty());
  // {"plugins": nil, "abi": 1}
  REQUIRE(decode(bytes({0x82}) + fixstr("plugins") + bytes({0xC0}) + fixstr("abi") + bytes({0x01}), out)
              .empty());
  CHECK(out.abi == 1);
  // {"plugins": [{"type": 300}]}
  CHECK(decode(bytes({0x81}) + fixstr("plugins") + bytes({0x91, 0x81}) + fixstr("type") +
                   bytes({0xCD, 0x01, 0x2C}),
               out) == "field 'plugins[0].type': value 300 out of range");
  CHECK(decode(bytes({0x81}) + fixstr("plugins") + fixstr("all"), out) ==
        "field 'plugins': expected an array of plugins, got str");
  CHECK(decode(bytes({0x92, 0x01, 0x02}), out) == "payload is not a msgpack map (got array)");
  CHECK(decode(bytes({0x81}) + fixstr("abi"), out) == "payload is truncated msgpack");
}

TEST_CASE("restart and signal answer with StatusResponse-shaped maps", "[commands]") {
  RestartResponse r;
  r.entry.id = "web";
  r.entry.state = "running";
  r.entry.pid = 7;
  StatusResponse s;
  REQUIRE(decode(encode(r), s).empty());
  CHECK(s.entry.pid == 7);
  CHECK(s.err.empty());

  RestartRequest q{"web"};
  IdRequest id;
  REQUIRE(decode(encode(q), id).empty());
  CHECK(id.id == "web");
}

TEST_CASE("command_error is a map with err only, InfoRequest is an empty map", "[commands]") {
  CHECK(command_error("nope") == bytes({0x81}) + fixstr("err") + fixstr("nope"));
  StatusResponse s;
  REQUIRE(decode(command_error("nope"), s).empty());
  CHECK(s.err == "nope");
  CHECK(encode(InfoRequest{}) == bytes({0x80}));
  InfoRequest q;
  CHECK(decode(bytes({0x81}) + fixstr("x") + bytes({0x01}), q).empty());
}

TEST_CASE("signal names and numbers", "[commands][signals]") {
  CHECK(signal_number("HUP") == SIGHUP);
  CHECK(signal_number("SIGHUP") == SIGHUP);
  CHECK(signal_number("sighup") == SIGHUP);
  CHECK(signal_number("hup") == SIGHUP);
  CHECK(signal_number("1") == SIGHUP);
  CHECK(signal_number("9") == SIGKILL);
  CHECK(signal_number("TERM") == SIGTERM);
  CHECK(signal_number("USR1") == SIGUSR1);
  CHECK(signal_number("SIGUSR2") == SIGUSR2);
  CHECK(signal_number("IOT") == SIGABRT);
  CHECK(signal_number("CLD") == SIGCHLD);
  CHECK(signal_number("RTMIN") == SIGRTMIN);
  CHECK(signal_number("SIGRTMIN+2") == SIGRTMIN + 2);
  CHECK(signal_number("RTMAX-1") == SIGRTMAX - 1);
  for (const char* bad : {"", "0", "SIG", "BOGUS", "SIGBOGUS", "-9", "65", "99999", "RTMIN-1",
                          "RTMAX+1", "RTMIN+x", "HUP ", "1.5", "SIGHUPHUPHUPHUPHUP"}) {
    INFO(bad);
    CHECK(signal_number(bad) == 0);
  }
  CHECK(signal_name(SIGHUP) == "SIGHUP");
  CHECK(signal_name(SIGKILL) == "SIGKILL");
  CHECK(signal_name(SIGRTMIN) == "SIGRTMIN");
  CHECK(signal_name(SIGRTMIN + 3) == "SIGRTMIN+3");
  CHECK(signal_name(SIGRTMAX) == "SIGRTMAX");
  CHECK(signal_name(0) == "signal 0");
  CHECK(signal_name(200) == "signal 200");
  // Every name maps back to its number.
  for (int s = 1; s <= SIGRTMAX; ++s) {
    if (s > 31 && s < SIGRTMIN) continue;  // reserved by glibc, unnamed
    INFO(s);
    CHECK(signal_number(signal_name(s)) == s);
  }
}

namespace {
// A backend written before Backend::signal existed: it does not override it.
class OldBackend final : public Backend {
 public:
  void start_all() override {}
  void shutdown() override {}
  std::vector<Entry> list() override { return {}; }
  std::optional<Entry> status(std::string_view) override { return std::nullopt; }
  void start(std::string_view, OpDone done) override { done({}); }
  void stop(std::string_view, OpDone done) override { done({}); }
  std::string logs(const LogQuery&, std::string&) override { return {}; }
  FollowResult follow_logs(const LogQuery&, std::function<void(std::string_view)>) override {
    return {};
  }
  std::unique_ptr<Subscription> subscribe_events(std::function<void(const Event&)>) override {
    return nullptr;
  }
};
}  // namespace

TEST_CASE("Backend::signal answers 'not supported' unless a backend implements it", "[commands]") {
  OldBackend b;
  int calls = 0;
  OpResult got;
  b.signal("web", SIGHUP, false, [&](OpResult r) {
    ++calls;
    got = std::move(r);
  });
  CHECK(calls == 1);
  CHECK(got.err == "sending signals is not supported by this backend");
}
