// Live reload of mgmt.yaml (SIGHUP or the reload command) against the real mgmtd.
#include <signal.h>

#include <catch2/catch.hpp>

#include <algorithm>

#include "harness.hpp"
#include "wait.hpp"

using namespace mgmt;
using namespace mgmt::test;

namespace {

std::string sleeper(const std::string& id, const std::string& seconds) {
  return "      - id: " + id + "\n        command: /bin/sleep\n        args: ['" + seconds +
         "']\n        stop_timeout: 2s\n";
}

std::string body(const std::string& processes, const std::string& extra = "") {
  return "backend:\n  plugin: process\n  config:\n    processes:\n" + processes +
         "commands:\n  0xAD: reload\n" + extra;
}

void rewrite(const Mgmtd& d, const std::string& b) {
  d.dir().write("mgmt.yaml",
                "server:\n  socket: " + d.socket() + "\n  write_hint: false\n" + b);
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

std::optional<Entry> find(const std::vector<Entry>& es, const std::string& id) {
  for (const auto& e : es) {
    if (e.id == id) return e;
  }
  return std::nullopt;
}

std::string reload(const Mgmtd& d) {
  RawConn c(d.socket());
  c.send(0xAD, "");
  auto f = c.read(20s);
  REQUIRE(f);
  REQUIRE(int(f->header.type) == 0xAD);
  StatusResponse r;  // a command answer is a map with `err`
  REQUIRE(decode(f->payload, r).empty());
  return r.err;
}

bool running(const Mgmtd& d, const std::string& id) {
  auto e = find(list(d), id);
  return e && e->state == "running";
}

}  // namespace

TEST_CASE("reload adds, removes and restarts only what changed", "[reload]") {
  Mgmtd d(body(sleeper("keep", "1000") + sleeper("change", "1000") + sleeper("drop", "1000") +
               probe_process()));
  REQUIRE(wait_until([&] { return running(d, "keep") && running(d, "change") && running(d, "drop"); }));
  const auto before = list(d);
  const auto keep_pid = find(before, "keep")->pid;
  const auto change_pid = find(before, "change")->pid;
  const auto drop_pid = find(before, "drop")->pid;

  // A subscriber connected across the reload keeps its stream.
  RawConn sub(d.socket());
  sub.send(to_byte(MsgType::EventsSubscribe), encode(EventsSubscribe{}));
  confirm_subscription(d.socket(), sub);

  rewrite(d, body(sleeper("keep", "1000") + sleeper("change", "2000") + sleeper("added", "1000")));
  CHECK(reload(d).empty());

  REQUIRE(wait_until([&] { return running(d, "added"); }));
  REQUIRE(wait_until([&] {
    auto e = find(list(d), "change");
    return e && e->state == "running" && e->pid != change_pid;
  }));
  REQUIRE(wait_until([&] { return !find(list(d), "drop").has_value(); }));
  CHECK(find(list(d), "keep")->pid == keep_pid);
  CHECK_FALSE(pid_alive(static_cast<pid_t>(drop_pid)));
  CHECK_FALSE(pid_alive(static_cast<pid_t>(change_pid)));

  // The old subscription saw it all happen.
  bool saw_registered = false;
  REQUIRE(wait_until([&] {
    auto f = sub.read(5s);
    if (!f) return true;
    EventsStream e;
    REQUIRE(decode(f->payload, e).empty());
    saw_registered = saw_registered || (e.pid == "added" && e.t == event::registered);
    return saw_registered;
  }));
  CHECK(saw_registered);
}

TEST_CASE("an invalid configuration is refused whole and the running one stays", "[reload]") {
  Mgmtd d(body(sleeper("keep", "1000")));
  REQUIRE(wait_until([&] { return running(d, "keep"); }));
  SECTION("invalid YAML") {
    rewrite(d, body(sleeper("keep", "1000")) + "limits: [unclosed\n");
    const auto err = reload(d);
    CHECK_THAT(err, Catch::Contains(d.dir().file("mgmt.yaml") + ":") && Catch::Contains("YAML"));
  }
  SECTION("a backend error") {
    rewrite(d, body(sleeper("keep", "1000") +
                    "      - id: bad\n        command: /bin/true\n        restart: sometimes\n"));
    CHECK_THAT(reload(d), Catch::Contains("sometimes"));
  }
  SECTION("a plugin that does not exist") {
    rewrite(d, body(sleeper("keep", "1000") + sleeper("new", "1000"), "handlers:\n  0xA0: lisst\n"));
    CHECK_THAT(reload(d), Catch::Contains("\"lisst\" not found"));
    CHECK_FALSE(find(list(d), "new").has_value());  // the backend was not touched either
  }
  SECTION("a socket that would move") {
    d.dir().write("mgmt.yaml", "server:\n  socket: " + d.dir().file("other.sock") + "\n" +
                                   body(sleeper("keep", "1000")));
    CHECK_THAT(reload(d), Catch::Contains("restart mgmtd"));
  }
  CHECK(running(d, "keep"));
  CHECK_THAT(d.log(), Catch::Contains("reload of") && Catch::Contains("refused"));
}

TEST_CASE("SIGHUP reloads and remaps handlers", "[reload]") {
  Mgmtd d(body(sleeper("keep", "1000")));
  REQUIRE(wait_until([&] { return running(d, "keep"); }));
  // Map only list, status and reload: stop (0xA9) is no longer served.
  rewrite(d, body(sleeper("keep", "1000") + sleeper("more", "1000"),
                  "handlers:\n  0xA0: list\n  0xA2: status\n"));
  REQUIRE(::kill(d.pid(), SIGHUP) == 0);
  REQUIRE(wait_until([&] { return running(d, "more"); }));
  RawConn c(d.socket());
  c.send(to_byte(MsgType::StopRequest), encode(IdRequest{"keep"}));
  auto f = c.read();
  REQUIRE(f);
  CHECK(as_status(*f).err == "unknown request type 0xa9");
  CHECK(running(d, "keep"));
}

TEST_CASE("mgmtctl reload reports the outcome", "[reload]") {
  Mgmtd d(body(sleeper("keep", "1000")));
  rewrite(d, body(sleeper("keep", "1000") + sleeper("more", "1000")));
  auto ok = d.ctl({"reload"});
  INFO(ok.err);
  CHECK(ok.exit_code == 0);
  CHECK(ok.out == "reloaded\n");
  rewrite(d, body(sleeper("keep", "1000")) + "limits: {max_queue: 1}\n");
  auto bad = d.ctl({"reload"});
  CHECK(bad.exit_code == 1);
  CHECK_THAT(bad.err, Catch::Contains("reload refused") && Catch::Contains("max_queue"));
  REQUIRE(wait_until([&] { return running(d, "more"); }));
}
