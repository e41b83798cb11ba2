// The server seen by a client that speaks only the wire protocol: hand-made frames and the
// Go implementation's own frames, against the real mgmtd with real children.
#include <catch2/catch.hpp>

#include <signal.h>

#include <algorithm>
#include <map>
#include <thread>

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
    "      - id: stubborn\n"
    "        command: /bin/sh\n"
    "        args: [-c, 'trap \"\" TERM; echo ready; while true; do sleep 0.05; done']\n"
    "        stop_timeout: 2s\n"
    "      - id: idle\n"
    "        command: /bin/sleep\n"
    "        args: ['1000']\n"
    "        autostart: false\n";

std::string vector_frame(const std::string& name) {
  return read_file(std::string(MGMT_WIRE_VECTORS_DIR) + "/" + name + ".bin");
}

Entry entry_of(RawConn& c, const std::string& id) {
  c.send(to_byte(MsgType::StatusRequest), encode(StatusRequest{id}));
  auto f = c.read();
  REQUIRE(f);
  auto r = as_status(*f);
  REQUIRE(r.err.empty());
  return r.entry;
}

void wait_state(const std::string& socket, const std::string& id, std::string_view state) {
  RawConn c(socket);
  std::string last;
  const bool ok = wait_until([&] {
    last = entry_of(c, id).state;
    return last == state;
  });
  INFO("process " << id << " is " << last << ", expected " << state);
  REQUIRE(ok);
}

}  // namespace

TEST_CASE("a Go client's list request lists the supervised processes", "[protocol]") {
  Mgmtd d(kBackend);
  wait_state(d.socket(), "web", state::running);
  RawConn c(d.socket());
  c.send_bytes(vector_frame("01_list_request"));  // seq 1, no payload
  auto f = c.read();
  REQUIRE(f);
  CHECK(int(f->header.type) == 0xA1);
  CHECK(f->header.seq == 1);
  ListResponse r;
  REQUIRE(decode(f->payload, r).empty());
  REQUIRE(r.entries.size() == 3);
  auto web = std::find_if(r.entries.begin(), r.entries.end(), [](auto& e) { return e.id == "web"; });
  REQUIRE(web != r.entries.end());
  CHECK(web->name == "Ticker");
  CHECK(web->state == "running");
  CHECK(web->pid > 0);
  CHECK(pid_alive(static_cast<pid_t>(web->pid)));
  CHECK(web->rss > 0);
  auto idle = std::find_if(r.entries.begin(), r.entries.end(), [](auto& e) { return e.id == "idle"; });
  REQUIRE(idle != r.entries.end());
  CHECK(idle->name == "idle");  // name defaults to the id
  CHECK(idle->pid == 0);
  CHECK(idle->state == "pending");
}

TEST_CASE("Go frames for status, stop and start control a real process", "[protocol]") {
  Mgmtd d(kBackend);
  wait_state(d.socket(), "web", state::running);
  RawConn c(d.socket());

  c.send_bytes(vector_frame("05_status_request"));
  auto st = c.read();
  REQUIRE(st);
  CHECK(st->header.seq == 5);
  auto s = as_status(*st);
  CHECK(s.err.empty());
  CHECK(s.entry.id == "web");
  const auto old_pid = static_cast<pid_t>(s.entry.pid);
  REQUIRE(pid_alive(old_pid));

  c.send_bytes(vector_frame("08_stop_request"));
  auto stop = c.read();
  REQUIRE(stop);
  CHECK(stop->header.seq == 8);
  auto sr = as_status(*stop);
  CHECK(sr.err.empty());
  CHECK(sr.entry.state == "stopped");
  CHECK(wait_until([&] { return !pid_alive(old_pid); }));

  c.send_bytes(vector_frame("09_start_request"));
  auto start = c.read();
  REQUIRE(start);
  CHECK(start->header.seq == 9);
  auto str = as_status(*start);
  CHECK(str.err.empty());
  CHECK(str.entry.state == "running");
  CHECK(str.entry.pid > 0);
  CHECK(str.entry.pid != old_pid);
}

TEST_CASE("errors for unknown ids and wrong states keep the connection usable", "[protocol]") {
  Mgmtd d(kBackend);
  RawConn c(d.socket());
  c.send(to_byte(MsgType::StatusRequest), encode(StatusRequest{"nope"}));
  auto f = c.read();
  REQUIRE(f);
  CHECK(as_status(*f).err == kErrNotFound);

  c.send(to_byte(MsgType::StopRequest), encode(IdRequest{"nope"}));
  f = c.read();
  REQUIRE(f);
  CHECK(as_status(*f).err == kErrNotFound);

  c.send(to_byte(MsgType::StopRequest), encode(IdRequest{"idle"}));
  f = c.read();
  REQUIRE(f);
  CHECK_THAT(as_status(*f).err, Catch::Contains("not running"));

  wait_state(d.socket(), "web", state::running);
  c.send(to_byte(MsgType::StartRequest), encode(IdRequest{"web"}));
  f = c.read();
  REQUIRE(f);
  CHECK_THAT(as_status(*f).err, Catch::Contains("already running"));

  CHECK(entry_of(c, "web").state == "running");
}

TEST_CASE("an unknown message type gets the protocol's error reply", "[protocol]") {
  Mgmtd d(kBackend);
  RawConn c(d.socket());
  c.send(0xB3, "", 42);
  auto f = c.read();
  REQUIRE(f);
  CHECK(f->header.seq == 42);
  CHECK(as_status(*f).err == "unknown request type 0xb3");
  // An unmapped command type too.
  c.send(0xAC, "");
  f = c.read();
  REQUIRE(f);
  CHECK(as_status(*f).err == "unknown request type 0xac");
  CHECK(entry_of(c, "web").id == "web");
}

TEST_CASE("an undecodable payload gets an error naming the problem", "[protocol]") {
  Mgmtd d(kBackend);
  RawConn c(d.socket());
  SECTION("not a map") {
    c.send(to_byte(MsgType::StatusRequest), std::string("\x92\x01\x02", 3));
    auto f = c.read();
    REQUIRE(f);
    CHECK_THAT(as_status(*f).err, Catch::Contains("not a msgpack map"));
  }
  SECTION("wrong field type") {
    c.send(to_byte(MsgType::StatusRequest), std::string("\x81\xa2id\x05", 5));
    auto f = c.read();
    REQUIRE(f);
    CHECK_THAT(as_status(*f).err, Catch::Contains("'id'"));
  }
  SECTION("truncated") {
    c.send(to_byte(MsgType::LogsRequest), std::string("\x83\xa2id\xa3w", 6));
    auto f = c.read();
    REQUIRE(f);
    CHECK_THAT(as_status(*f).err, Catch::Contains("cannot decode the 0xa4 request"));
  }
  SECTION("random bytes") {
    c.send(to_byte(MsgType::EventsSubscribe), std::string("\xc1\xff\x00garbage", 10));
    auto f = c.read();
    REQUIRE(f);
    CHECK_FALSE(as_status(*f).err.empty());
  }
  // Either way the connection goes on taking requests.
  CHECK(entry_of(c, "web").id == "web");
}

TEST_CASE("a frame that cannot be resynchronised closes only that connection", "[protocol]") {
  Mgmtd d(kBackend);
  RawConn other(d.socket());
  SECTION("bad magic") {
    RawConn bad(d.socket());
    bad.send_bytes(std::string("\xde\xad\x01\xa0\0\0\0\0\0\0\0\0\1\0\0\0\0", 17));
    CHECK(bad.closed_by_server());
  }
  SECTION("bad version") {
    RawConn bad(d.socket());
    std::string frame = make_frame(0xA0, 1, "");
    frame[2] = 2;
    bad.send_bytes(frame);
    CHECK(bad.closed_by_server());
  }
  SECTION("length over 16 MiB") {
    RawConn bad(d.socket());
    std::string frame = make_frame(0xA0, 1, "");
    frame[13] = 0x01;
    frame[14] = 0x00;
    frame[15] = 0x00;
    frame[16] = 0x01;  // 16 MiB + 1
    bad.send_bytes(frame);
    CHECK(bad.closed_by_server());
  }
  SECTION("client leaves mid-frame") {
    {
      RawConn bad(d.socket());
      bad.send_bytes(make_frame(0xA2, 1, encode(StatusRequest{"web"})).substr(0, 20));
    }
  }
  CHECK(entry_of(other, "web").id == "web");
  RawConn fresh(d.socket());
  CHECK(entry_of(fresh, "web").id == "web");
}

TEST_CASE("a request over the server's limit is skipped and answered", "[protocol]") {
  Mgmtd d(kBackend + "limits:\n  max_request: 1KiB\n");
  RawConn c(d.socket());
  std::string big = encode(StatusRequest{std::string(5000, 'x')});
  c.send(to_byte(MsgType::StatusRequest), big, 3);
  auto f = c.read();
  REQUIRE(f);
  CHECK(f->header.seq == 3);
  CHECK_THAT(as_status(*f).err, Catch::Contains("limits.max_request"));
  CHECK(entry_of(c, "web").id == "web");
}

TEST_CASE("log snapshots honour stream, line count and since", "[protocol][logs]") {
  Mgmtd d(kBackend);
  RawConn c(d.socket());
  auto snapshot = [&](std::uint8_t s, std::int64_t ln, std::int64_t sn) {
    LogsRequest req{"web", s, false, sn, ln};
    c.send(to_byte(MsgType::LogsRequest), encode(req));
    auto f = c.read();
    REQUIRE(f);
    REQUIRE(int(f->header.type) == 0xA5);
    LogsStream ls;
    REQUIRE(decode(f->payload, ls).empty());
    CHECK(ls.eof);
    CHECK(ls.id == "web");
    CHECK(int(ls.s) == s);
    return ls.d;
  };
  REQUIRE(wait_until([&] { return snapshot(0, 0, 0).find("tick 3\n") != std::string::npos; }));
  const std::string out = snapshot(0, 0, 0);
  CHECK(out.rfind("tick 0\n", 0) == 0);
  CHECK(out.find("oops") == std::string::npos);
  const std::string err = snapshot(1, 0, 0);
  CHECK(err.rfind("oops 0\n", 0) == 0);
  CHECK(err.find("tick") == std::string::npos);

  const std::string last2 = snapshot(0, 2, 0);
  CHECK(std::count(last2.begin(), last2.end(), '\n') == 2);
  CHECK(out.find(last2) != std::string::npos);

  const auto future = std::chrono::duration_cast<std::chrono::nanoseconds>(
                          std::chrono::system_clock::now().time_since_epoch() + std::chrono::hours(1))
                          .count();
  CHECK(snapshot(0, 0, future).empty());

  // A stream above 1: one frame, eof, with a readable error.
  c.send(to_byte(MsgType::LogsRequest), encode(LogsRequest{"web", 2, false, 0, 0}));
  auto f = c.read();
  REQUIRE(f);
  LogsStream bad;
  REQUIRE(decode(f->payload, bad).empty());
  CHECK(bad.eof);
  CHECK_THAT(bad.d, Catch::Contains("invalid stream 2"));
  CHECK(bad.err == bad.d);
}

TEST_CASE("log follow streams the snapshot and then every new chunk", "[protocol][logs]") {
  Mgmtd d(kBackend);
  RawConn c(d.socket());
  c.send_bytes(vector_frame("11_logs_request_follow"));  // id web, stdout, follow
  auto first = c.read();
  REQUIRE(first);
  CHECK(first->header.seq == 11);
  LogsStream ls;
  REQUIRE(decode(first->payload, ls).empty());
  CHECK_FALSE(ls.eof);
  std::string all = ls.d;
  // Keep reading until several more ticks arrived, each as its own frame.
  int frames = 0;
  REQUIRE(wait_until([&] {
    auto f = c.read(5s);
    if (!f) return true;
    LogsStream more;
    REQUIRE(decode(f->payload, more).empty());
    CHECK_FALSE(more.eof);
    all += more.d;
    ++frames;
    return frames >= 5;
  }));
  CHECK(frames >= 5);
  // In order, nothing lost or repeated: consecutive tick numbers.
  int expect = -1;
  std::size_t pos = 0;
  bool ordered = true;
  while ((pos = all.find("tick ", pos)) != std::string::npos) {
    const int n = std::stoi(all.substr(pos + 5));
    if (expect >= 0 && n != expect) ordered = false;
    expect = n + 1;
    pos += 5;
  }
  CHECK(ordered);
}

TEST_CASE("events reach subscribers, filtered by process and type", "[protocol][events]") {
  Mgmtd d(kBackend + probe_process());
  wait_state(d.socket(), "web", state::running);
  // The wire vector's subscription (nil pids, no types), then one filtered by process and
  // type; each confirmed by the probe's events before anything else happens (`all` sees
  // the probe again while `filtered` is confirmed: it keeps only web's events below).
  RawConn all(d.socket());
  all.send_bytes(vector_frame("16_events_subscribe_all"));
  confirm_subscription(d.socket(), all);
  RawConn filtered(d.socket());
  filtered.send(to_byte(MsgType::EventsSubscribe),
                encode(EventsSubscribe{{"web", "probe"}, {std::string(event::stopped)}}));
  confirm_subscription(d.socket(), filtered);

  RawConn ctl(d.socket());
  ctl.send(to_byte(MsgType::StopRequest), encode(IdRequest{"idle"}));  // not running: no event
  REQUIRE(ctl.read());
  // A process outside the filter's list: `all` sees its events, `filtered` does not.
  ctl.send(to_byte(MsgType::StartRequest), encode(IdRequest{"idle"}));
  REQUIRE(ctl.read());
  ctl.send(to_byte(MsgType::StopRequest), encode(IdRequest{"idle"}));
  REQUIRE(ctl.read());
  ctl.send(to_byte(MsgType::StopRequest), encode(IdRequest{"web"}));
  REQUIRE(ctl.read());

  std::vector<EventsStream> got;
  bool saw_idle_stopped = false;
  REQUIRE(wait_until([&] {
    auto f = all.read(5s);
    if (!f) return true;
    CHECK(int(f->header.type) == 0xA7);
    EventsStream e;
    REQUIRE(decode(f->payload, e).empty());
    saw_idle_stopped = saw_idle_stopped || (e.pid == "idle" && e.t == event::stopped);
    if (e.pid == "web") got.push_back(e);
    return e.t == event::stopped && e.pid == "web";
  }));
  CHECK(saw_idle_stopped);
  REQUIRE(got.size() >= 2);
  CHECK(got[got.size() - 2].t == event::stopping);
  CHECK(got.back().t == event::stopped);
  CHECK(got.back().ts >= got[got.size() - 2].ts);

  auto f = filtered.read(5s);
  REQUIRE(f);
  EventsStream e;
  REQUIRE(decode(f->payload, e).empty());
  CHECK(e.pid == "web");
  CHECK(e.t == event::stopped);
  CHECK_FALSE(filtered.read(300ms));  // the stopping event was filtered out
}

TEST_CASE("a slow stop does not hold up other clients", "[protocol]") {
  Mgmtd d(kBackend);
  wait_state(d.socket(), "stubborn", state::running);
  // Running is forked, not yet ignoring SIGTERM: the shell says "ready" once it does.
  REQUIRE(wait_until([&] {
    return d.ctl({"logs", "stubborn"}).out.find("ready") != std::string::npos;
  }));
  RawConn stopper(d.socket());
  stopper.send(to_byte(MsgType::StopRequest), encode(IdRequest{"stubborn"}));
  // While the stop waits out its 2 s timeout, another client is answered; the answer
  // must come while the stop is still pending.
  RawConn other(d.socket());
  CHECK(wait_until([&] { return entry_of(other, "stubborn").state == "stopping"; }));
  auto f = stopper.read(10s);
  REQUIRE(f);
  auto r = as_status(*f);
  CHECK(r.err.empty());
  CHECK(r.entry.state == "stopped");
  CHECK(r.entry.exit_signal == std::optional<std::int64_t>(9));
}

TEST_CASE("list and status never answer with a stale reply once something changed",
          "[protocol]") {
  Mgmtd d(kBackend);
  wait_state(d.socket(), "web", state::running);
  RawConn c(d.socket());
  auto list = [&] {
    c.send(to_byte(MsgType::ListRequest), "");
    auto f = c.read();
    REQUIRE(f);
    ListResponse r;
    REQUIRE(decode(f->payload, r).empty());
    std::map<std::string, Entry> by_id;
    for (auto& e : r.entries) by_id[e.id] = e;
    return by_id;
  };
  // Repeated requests (the replies may be reused) agree with each other...
  const auto first = list();
  const Entry web = entry_of(c, "web");
  for (int i = 0; i < 20; ++i) {
    CHECK(list().at("web").pid == web.pid);
    CHECK(entry_of(c, "web").pid == web.pid);
  }
  CHECK(first.at("idle").state == "pending");
  // ...and each change shows in the very next answer of both, on any connection.
  RawConn ctl(d.socket());
  ctl.send(to_byte(MsgType::StartRequest), encode(IdRequest{"idle"}));
  auto started = ctl.read();
  REQUIRE(started);
  REQUIRE(as_status(*started).entry.state == "running");
  const auto idle_pid = as_status(*started).entry.pid;
  CHECK(list().at("idle").state == "running");
  CHECK(list().at("idle").pid == idle_pid);
  CHECK(entry_of(c, "idle").pid == idle_pid);

  ctl.send(to_byte(MsgType::StopRequest), encode(IdRequest{"web"}));
  auto stopped = ctl.read();
  REQUIRE(stopped);
  REQUIRE(as_status(*stopped).entry.state == "stopped");
  CHECK(list().at("web").state == "stopped");
  CHECK(list().at("web").pid == 0);
  CHECK(entry_of(c, "web").state == "stopped");
  CHECK(entry_of(c, "web").exit_signal.has_value());  // SIGTERM; now reported

  // A process that dies on its own: the next answers say so.
  const auto killed = static_cast<pid_t>(entry_of(c, "idle").pid);
  REQUIRE(::kill(killed, SIGKILL) == 0);
  REQUIRE(wait_until([&] { return entry_of(c, "idle").pid != killed; }));
  CHECK(list().at("idle").pid != killed);
}
