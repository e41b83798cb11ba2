// Hostile and broken clients against the real mgmtd: each test asserts that the server
// kept serving everyone else and lost nothing.
#include <sys/resource.h>

#include <catch2/catch.hpp>

#include <memory>
#include <thread>
#include <vector>

#include "harness.hpp"
#include "wait.hpp"

using namespace mgmt;
using namespace mgmt::test;

namespace {

std::string backend_with(const std::string& extra_processes = "") {
  return "backend:\n"
         "  plugin: process\n"
         "  config:\n"
         "    processes:\n" +
         ticker_processes("web") + extra_processes;
}

// A process that writes 64 KiB lines to stdout as fast as it can.
const std::string kFloodProcess =
    "      - id: flood\n"
    "        command: /bin/sh\n"
    "        args: [-c, 'while true; do head -c 65536 /dev/zero | tr \"\\\\0\" x; echo; done']\n"
    "        stop_timeout: 2s\n";

// mgmtd with the flood process, a 64 KiB queue, a 1 MiB spill quota and
// on_overflow: disconnect; `more_limits` goes into the limits section.
std::string disconnecting_flood(const std::string& more_limits = "") {
  return backend_with(kFloodProcess) + "limits:\n  max_queue: 64KiB\n" + more_limits +
         "streams:\n  spill_quota: 1MiB\n  on_overflow: disconnect\n";
}

// Follows the flood's log on `c`, reading nothing, until mgmtd decides to disconnect it.
void follow_until_disconnect(const Mgmtd& d, RawConn& c) {
  c.send(to_byte(MsgType::LogsRequest), encode(LogsRequest{"flood", 0, true, 0, 0}));
  REQUIRE(wait_until([&] { return d.log().find("disconnecting it") != std::string::npos; }, 20s));
}

// The server answers a status request on a fresh connection.
bool serves(const Mgmtd& d) {
  RawConn c(d.socket());
  c.send(to_byte(MsgType::StatusRequest), encode(StatusRequest{"web"}));
  auto f = c.read(10s);
  if (!f) return false;
  StatusResponse r;
  return decode(f->payload, r).empty() && r.err.empty() && r.entry.id == "web";
}

std::uint64_t vm_rss_kib(pid_t pid) {
  const std::string status = read_file("/proc/" + std::to_string(pid) + "/status");
  const auto at = status.find("VmRSS:");
  return at == std::string::npos ? 0 : std::stoull(status.substr(at + 6));
}

void raise_own_fd_limit() {
  rlimit rl{};
  ::getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &rl);
}

}  // namespace

TEST_CASE("1000 concurrent connections are all served", "[hostile]") {
  raise_own_fd_limit();
  Mgmtd d(backend_with() + "limits:\n  max_connections: 1100\n");
  const auto rss_before = vm_rss_kib(d.pid());
  std::vector<std::unique_ptr<RawConn>> conns;
  for (int i = 0; i < 1000; ++i) conns.push_back(std::make_unique<RawConn>(d.socket()));
  // Every connection sends, then every one reads its own answer.
  for (std::size_t i = 0; i < conns.size(); ++i) {
    conns[i]->send(to_byte(MsgType::StatusRequest), encode(StatusRequest{"web"}), i + 1);
  }
  std::size_t answered = 0;
  for (std::size_t i = 0; i < conns.size(); ++i) {
    auto f = conns[i]->read(20s);
    if (f && f->header.seq == i + 1 && as_status(*f).entry.id == "web") ++answered;
  }
  CHECK(answered == 1000);
  const auto rss_during = vm_rss_kib(d.pid());
  WARN("mgmtd VmRSS: " << rss_before << " KiB before, " << rss_during
                       << " KiB with 1000 open connections");
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
  // Sanitizer shadow memory inflates RSS; there only the report above is meaningful.
  CHECK(rss_during < 64 * 1024);
#endif
  conns.clear();
  CHECK(serves(d));
}

TEST_CASE("connections beyond max_connections are refused, the rest go on", "[hostile]") {
  Mgmtd d(backend_with() + "limits:\n  max_connections: 3\n");
  RawConn a(d.socket()), b(d.socket()), c(d.socket());
  RawConn extra(d.socket());  // accepted by the kernel, closed by mgmtd
  CHECK(extra.closed_by_server());
  a.send(to_byte(MsgType::StatusRequest), encode(StatusRequest{"web"}));
  REQUIRE(a.read());
  CHECK_THAT(d.log(), Catch::Contains("limits.max_connections"));
}

TEST_CASE("silent and stalled clients are closed by the idle and frame timeouts", "[hostile]") {
  Mgmtd d(backend_with() + "limits:\n  idle_timeout: 400ms\n  frame_timeout: 400ms\n");
  RawConn silent(d.socket());
  RawConn half_header(d.socket());
  half_header.send_bytes(make_frame(0xA2, 1, encode(StatusRequest{"web"})).substr(0, 9));
  RawConn half_payload(d.socket());
  half_payload.send_bytes(make_frame(0xA2, 1, encode(StatusRequest{"web"})).substr(0, 20));
  // A subscriber waits on the server, not the other way round: no timeout applies.
  RawConn subscriber(d.socket());
  subscriber.send(to_byte(MsgType::EventsSubscribe), encode(EventsSubscribe{}));

  CHECK(silent.closed_by_server(10s));
  CHECK(half_header.closed_by_server(10s));
  CHECK(half_payload.closed_by_server(10s));
  CHECK_THAT(d.log(), Catch::Contains("idle timeout") && Catch::Contains("frame timeout"));

  // The subscriber outlived the timeouts and still receives events.
  RawConn ctl(d.socket());
  ctl.send(to_byte(MsgType::StopRequest), encode(IdRequest{"web"}));
  REQUIRE(ctl.read());
  auto ev = subscriber.read(10s);
  REQUIRE(ev);
  CHECK(int(ev->header.type) == 0xA7);
}

TEST_CASE("a client that keeps sending is never timed out", "[hostile]") {
  Mgmtd d(backend_with() + "limits:\n  idle_timeout: 300ms\n");
  RawConn c(d.socket());
  const auto until = std::chrono::steady_clock::now() + 1s;
  int answered = 0;
  while (std::chrono::steady_clock::now() < until) {
    c.send(to_byte(MsgType::StatusRequest), encode(StatusRequest{"web"}));
    auto f = c.read(5s);
    REQUIRE(f);
    ++answered;
  }
  CHECK(answered > 1);
}

TEST_CASE("pipelined requests are answered in order", "[hostile]") {
  Mgmtd d(backend_with());
  RawConn c(d.socket());
  std::string burst;
  for (std::uint64_t seq = 1; seq <= 300; ++seq) {
    burst += make_frame(seq % 3 == 0 ? 0xB0 : 0xA2, seq, encode(StatusRequest{"web"}));
  }
  c.send_bytes(burst);
  for (std::uint64_t seq = 1; seq <= 300; ++seq) {
    auto f = c.read(10s);
    REQUIRE(f);
    CHECK(f->header.seq == seq);
    const auto r = as_status(*f);
    if (seq % 3 == 0) {
      CHECK(r.err == "unknown request type 0xb0");
    } else {
      CHECK(r.entry.id == "web");
    }
  }
}

TEST_CASE("a client that sends requests without reading the answers is held back, not buffered",
          "[hostile]") {
  Mgmtd d(backend_with() + "limits:\n  max_queue: 64KiB\n");
  RawConn c(d.socket());
  // Requests go in until the server stops taking them: it reads no more once 64 KiB of
  // answers wait unread (plus what the kernel buffers hold), rather than queueing them all.
  constexpr std::uint64_t kMax = 200000;
  std::uint64_t sent = 0;
  while (sent < kMax &&
         c.send_within(make_frame(0xA2, sent + 1, encode(StatusRequest{"web"})), 2s)) {
    ++sent;
  }
  INFO("requests taken before the server held back: " << sent);
  CHECK(sent < kMax);
  CHECK(sent > 300);  // 32 KiB of answers at least: it held back because of them
  CHECK(serves(d));  // others are served meanwhile

  // Reading resumes the connection: every answer comes, whole and in order, and then the
  // connection takes requests again.
  for (std::uint64_t seq = 1; seq <= sent; ++seq) {
    auto f = c.read(10s);
    REQUIRE(f);
    REQUIRE(f->header.seq == seq);
    REQUIRE(as_status(*f).entry.id == "web");
  }
  c.send(to_byte(MsgType::StatusRequest), encode(StatusRequest{"web"}), 1);
  auto f = c.read(10s);
  REQUIRE(f);
  CHECK(as_status(*f).entry.id == "web");
}

TEST_CASE("a client that half-closes after its requests still gets every answer", "[hostile]") {
  Mgmtd d(backend_with());
  RawConn c(d.socket());
  // More answers than the socket buffers hold: some are still queued in the server when it
  // reads the end of the requests.
  constexpr std::uint64_t kCount = 5000;
  std::string burst;
  for (std::uint64_t seq = 1; seq <= kCount; ++seq) {
    burst += make_frame(0xA2, seq, encode(StatusRequest{"web"}));
  }
  c.send_bytes(burst);
  c.shutdown_write();
  std::this_thread::sleep_for(300ms);
  for (std::uint64_t seq = 1; seq <= kCount; ++seq) {
    auto f = c.read(10s);
    REQUIRE(f);
    REQUIRE(f->header.seq == seq);
  }
  CHECK(c.closed_by_server(10s));
}

TEST_CASE("a client that stops reading its answers is closed by the idle timeout", "[hostile]") {
  Mgmtd d(backend_with() + "limits:\n  max_queue: 64KiB\n  idle_timeout: 2s\n");
  RawConn c(d.socket());
  std::uint64_t sent = 0;
  while (sent < 200000 &&
         c.send_within(make_frame(0xA2, sent + 1, encode(StatusRequest{"web"})), 2s)) {
    ++sent;
  }
  REQUIRE(wait_until(
      [&] { return d.log().find("client stopped reading its answers") != std::string::npos; },
      10s));
  CHECK(c.closed_by_server(10s));
  CHECK(serves(d));
}

TEST_CASE("a stream reader that never reads is disconnected, others are unaffected",
          "[hostile]") {
  Mgmtd d(disconnecting_flood());
  RawConn stuck(d.socket());
  // Never read: the kernel buffers fill, then the server's queue, then it lets go.
  follow_until_disconnect(d, stuck);
  CHECK(stuck.closed_by_server(10s));
  CHECK(serves(d));
}

TEST_CASE("a reader being disconnected that reads nothing at all is closed after frame_timeout",
          "[hostile]") {
  Mgmtd d(disconnecting_flood("  frame_timeout: 1s\n"));
  RawConn stuck(d.socket());
  // It never reads: its notice cannot be delivered, so it is not waited for forever.
  follow_until_disconnect(d, stuck);
  CHECK(wait_until(
      [&] { return d.log().find("to be disconnected reads nothing") != std::string::npos; }, 10s));
  CHECK(stuck.closed_by_server(10s));
  CHECK(serves(d));
}

TEST_CASE("clients that leave mid-request or mid-stream do not disturb the server", "[hostile]") {
  Mgmtd d(backend_with());
  for (int i = 0; i < 20; ++i) {
    {
      RawConn c(d.socket());
      c.send_bytes(make_frame(0xA2, 1, encode(StatusRequest{"web"})).substr(0, 5 + i));
    }
    {
      RawConn c(d.socket());
      c.send(to_byte(MsgType::LogsRequest), encode(LogsRequest{"web", 0, true, 0, 0}));
      REQUIRE(c.read());  // the snapshot; then leave while chunks flow
    }
    {
      RawConn c(d.socket());
      c.send(to_byte(MsgType::StopRequest), encode(IdRequest{"web"}));  // leave before the answer
    }
    RawConn s(d.socket());
    s.send(to_byte(MsgType::StartRequest), encode(IdRequest{"web"}));
    REQUIRE(s.read());
  }
  CHECK(serves(d));
  CHECK(wait_until([&] { return d.log().find("stream client closed") != std::string::npos; }));
}

TEST_CASE("frames at the size limit are served, one byte over closes", "[hostile]") {
  Mgmtd d(backend_with() + "limits:\n  max_request: 16MiB\n");
  RawConn c(d.socket());
  // A status request whose payload is exactly 16 MiB: a map with one long unknown key value
  // and the id.
  const std::size_t target = kMaxPayload;
  std::string payload = "\x82\xa2id\xa3web\xa1x";  // map(2) "id":"web" "x":...
  const std::size_t str_len = target - payload.size() - 5;  // str32 header is 5 bytes
  payload += '\xdb';
  for (int shift = 24; shift >= 0; shift -= 8) payload += static_cast<char>((str_len >> shift) & 0xFF);
  payload.append(str_len, 'y');
  REQUIRE(payload.size() == target);
  c.send(to_byte(MsgType::StatusRequest), payload, 11);
  auto f = c.read(30s);
  REQUIRE(f);
  CHECK(f->header.seq == 11);
  CHECK(as_status(*f).entry.id == "web");

  RawConn over(d.socket());
  std::string frame = make_frame(0xA2, 1, "");
  frame[13] = 0x01;
  frame[16] = 0x01;  // 16 MiB + 1
  over.send_bytes(frame);
  CHECK(over.closed_by_server());
  CHECK(serves(d));
}

TEST_CASE("deep and huge msgpack inside the limit gets an error, not a crash", "[hostile]") {
  Mgmtd d(backend_with());
  RawConn c(d.socket());
  SECTION("deeply nested") {
    std::string payload = "\x82\xa2id\xa3web\xa1z";
    payload.append(200000, '\x91');  // array(1) of array(1) of ...
    payload += '\xc0';
    c.send(to_byte(MsgType::StatusRequest), payload);
    auto f = c.read();
    REQUIRE(f);
    CHECK_FALSE(as_status(*f).err.empty());
  }
  SECTION("a million tiny elements") {
    std::string payload("\x82\xa2id\xa3web\xa1z\xdd\x00\x0f\x42\x40", 15);  // array32 of 1e6
    payload.append(1000000, '\x01');
    c.send(to_byte(MsgType::StatusRequest), payload);
    auto f = c.read();
    REQUIRE(f);
    // 1,000,015 bytes: inside limits.max_request (1 MiB by default), so it is decoded.
    const auto r = as_status(*f);
    INFO(r.err);
    CHECK(r.entry.id == "web");
  }
  CHECK(serves(d));
}

TEST_CASE("a handler that throws costs only its client an error reply", "[hostile]") {
  Mgmtd d(backend_with() + "plugin_dirs: [" + std::string(MGMT_TEST_PLUGIN_DIR) +
          "]\ncommands:\n  0xAF: throws_in_handle\n");
  RawConn c(d.socket());
  RawConn other(d.socket());
  c.send(0xAF, "", 5);
  auto f = c.read();
  REQUIRE(f);
  CHECK(f->header.seq == 5);
  CHECK_THAT(as_status(*f).err, Catch::Contains("internal error in the handler for 0xaf") &&
                                    Catch::Contains("the disk is on fire"));
  // The same connection and the others go on.
  c.send(to_byte(MsgType::StatusRequest), encode(StatusRequest{"web"}));
  f = c.read();
  REQUIRE(f);
  CHECK(as_status(*f).entry.id == "web");
  CHECK(serves(d));
  CHECK_THAT(d.log(), Catch::Contains("handler for 0xaf failed"));
}
