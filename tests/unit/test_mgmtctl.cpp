// mgmtctl: argument parsing, output formatting, the blocking client and whole commands run
// against a scripted in-process server.
#include <catch2/catch.hpp>

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <functional>
#include <limits>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "args.hpp"
#include "cli.hpp"
#include "commands.hpp"
#include "duration.hpp"
#include "format.hpp"
#include "mgmt/client.hpp"
#include "mgmt/commands.hpp"
#include "mgmt/messages.hpp"
#include "mgmt/wire.hpp"

#include <nlohmann/json.hpp>

using namespace std::chrono_literals;
using mgmt::MsgType;
using mgmt::to_byte;

namespace {

// ---------------------------------------------------------------------------------------
// A one-connection server on a real AF_UNIX socket, run by a script on its own thread.
// Scripts never use Catch assertions (not thread-safe); they record what they saw.

bool write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

bool read_exact(int fd, char* buf, std::size_t n) {
  std::size_t got = 0;
  while (got < n) {
    const ssize_t r = ::recv(fd, buf + got, n - got, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    got += static_cast<std::size_t>(r);
  }
  return true;
}

struct Received {
  mgmt::FrameHeader header;
  std::string payload;
};

std::optional<Received> read_frame(int fd) {
  char head[mgmt::kHeaderSize];
  if (!read_exact(fd, head, sizeof head)) return std::nullopt;
  Received r;
  if (mgmt::parse_header(reinterpret_cast<const std::uint8_t*>(head), r.header) !=
      mgmt::HeaderError::none) {
    return std::nullopt;
  }
  r.payload.resize(r.header.length);
  if (!read_exact(fd, r.payload.data(), r.payload.size())) return std::nullopt;
  return r;
}

class FakeServer {
 public:
  using Script = std::function<void(int fd)>;

  explicit FakeServer(Script script) {
    char tmpl[] = "/tmp/mgmtctl-test-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/manager.sock";
    listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(listen_fd_ >= 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path_.c_str(), sizeof(addr.sun_path) - 1);
    REQUIRE(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(listen_fd_, 4) == 0);
    REQUIRE(::pipe(stop_pipe_) == 0);
    thread_ = std::thread([this, script = std::move(script)] {
      pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {stop_pipe_[0], POLLIN, 0}};
      if (::poll(fds, 2, 20'000) <= 0 || (fds[1].revents & POLLIN)) return;
      const int fd = ::accept(listen_fd_, nullptr, nullptr);
      if (fd < 0) return;
      script(fd);
      ::close(fd);
    });
  }
  ~FakeServer() {
    wait();
    ::close(listen_fd_);
    ::close(stop_pipe_[0]);
    ::close(stop_pipe_[1]);
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  FakeServer(const FakeServer&) = delete;
  FakeServer& operator=(const FakeServer&) = delete;

  // Ends the script's run (unblocking a server nobody connected to) and joins it.
  void wait() {
    if (!thread_.joinable()) return;
    [[maybe_unused]] auto n = ::write(stop_pipe_[1], "x", 1);
    thread_.join();
  }
  const std::string& path() const { return path_; }

 private:
  std::string dir_;
  std::string path_;
  int listen_fd_ = -1;
  int stop_pipe_[2] = {-1, -1};
  std::thread thread_;
};

// A script that answers each request in turn with the next canned reply, recording the
// requests, then closes.
struct Exchange {
  std::vector<Received> requests;
  std::vector<std::string> replies;  // complete frames
  FakeServer::Script script() {
    return [this](int fd) {
      for (const auto& reply : replies) {
        auto req = read_frame(fd);
        if (!req) return;
        requests.push_back(std::move(*req));
        if (!write_all(fd, reply)) return;
      }
    };
  }
};

std::string frame(MsgType t, std::string_view payload, std::uint64_t seq = 1) {
  return mgmt::make_frame(to_byte(t), seq, payload);
}

struct CliResult {
  int code;
  std::string out;
  std::string err;
};

CliResult run(std::vector<std::string> args) {
  std::ostringstream out, err;
  const int code = mgmtctl::run_cli(args, out, err);
  return {code, out.str(), err.str()};
}

mgmt::LogsStream chunk(std::uint8_t s, std::string d, bool eof, std::string err = {}) {
  mgmt::LogsStream m;
  m.id = "web";
  m.s = s;
  m.d = std::move(d);
  m.eof = eof;
  m.err = std::move(err);
  return m;
}

mgmt::Entry entry(std::string id, std::string name, std::string state, std::int64_t pid) {
  mgmt::Entry e;
  e.id = std::move(id);
  e.name = std::move(name);
  e.state = std::move(state);
  e.pid = pid;
  return e;
}

}  // namespace

// =======================================================================================
// Durations

TEST_CASE("parse_go_duration accepts Go's syntax", "[mgmtctl]") {
  using mgmtctl::parse_go_duration;
  CHECK(parse_go_duration("1h30m") == std::chrono::nanoseconds(90min));
  CHECK(parse_go_duration("5m") == std::chrono::nanoseconds(5min));
  CHECK(parse_go_duration("500ms") == std::chrono::nanoseconds(500ms));
  CHECK(parse_go_duration("2s") == std::chrono::nanoseconds(2s));
  CHECK(parse_go_duration("0") == std::chrono::nanoseconds(0));
  CHECK(parse_go_duration("1.5h") == std::chrono::nanoseconds(90min));
  CHECK(parse_go_duration(".5s") == std::chrono::nanoseconds(500ms));
  CHECK(parse_go_duration("1.s") == std::chrono::nanoseconds(1s));
  CHECK(parse_go_duration("-2s") == std::chrono::nanoseconds(-2s));
  CHECK(parse_go_duration("+3m") == std::chrono::nanoseconds(3min));
  CHECK(parse_go_duration("1h2m3s4ms5us6ns") ==
        std::chrono::nanoseconds(1h + 2min + 3s + 4ms + 5us + 6ns));
  CHECK(parse_go_duration("7\xC2\xB5s") == std::chrono::nanoseconds(7us));
  CHECK(parse_go_duration("7\xCE\xBCs") == std::chrono::nanoseconds(7us));
  CHECK(parse_go_duration("9223372036854775807ns") ==
        std::chrono::nanoseconds(std::numeric_limits<std::int64_t>::max()));
  CHECK(parse_go_duration("-9223372036854775808ns") ==
        std::chrono::nanoseconds(std::numeric_limits<std::int64_t>::min()));
  CHECK(parse_go_duration("2562047h") == std::chrono::nanoseconds(2562047h));
}

TEST_CASE("parse_go_duration rejects what Go rejects", "[mgmtctl]") {
  using mgmtctl::parse_go_duration;
  for (const char* bad : {"", "5", "1x", "h", ".s", "1..5s", "-", "1h 30m", "s5", "3d",
                          "9223372036854775808ns", "2562048h", "99999999999999999999s"}) {
    INFO(bad);
    CHECK_FALSE(parse_go_duration(bad).has_value());
  }
}

// =======================================================================================
// Arguments

TEST_CASE("parse_args: commands and their arguments", "[mgmtctl]") {
  using mgmtctl::Command;
  using mgmtctl::parse_args;

  auto r = parse_args({"list"});
  REQUIRE(r.ok());
  CHECK(r.options.command == Command::list);
  CHECK_FALSE(r.options.json);
  CHECK_FALSE(r.options.socket);

  r = parse_args({"--socket", "/s.sock", "--runtime-dir=/rt", "status", "web", "--json"});
  REQUIRE(r.ok());
  CHECK(r.options.command == Command::status);
  CHECK(r.options.socket == "/s.sock");
  CHECK(r.options.runtime_dir == "/rt");
  CHECK(r.options.json);
  CHECK(r.options.ids == std::vector<std::string>{"web"});

  // The Go CLI's per-command --runtime-dir keeps working after the command.
  r = parse_args({"stop", "--runtime-dir", "/rt", "a", "b"});
  REQUIRE(r.ok());
  CHECK(r.options.runtime_dir == "/rt");
  CHECK(r.options.ids == std::vector<std::string>{"a", "b"});

  r = parse_args({"start", "a", "b", "c"});
  REQUIRE(r.ok());
  CHECK(r.options.command == Command::start);
  CHECK(r.options.ids.size() == 3);

  r = parse_args({"events", "--process", "a, b,,", "--type=process.started,process.crashed"});
  REQUIRE(r.ok());
  CHECK(r.options.processes == std::vector<std::string>{"a", "b"});
  CHECK(r.options.types == std::vector<std::string>{"process.started", "process.crashed"});

  // "--" ends the flags: an id may start with a dash.
  r = parse_args({"status", "--", "-odd-id"});
  REQUIRE(r.ok());
  CHECK(r.options.ids == std::vector<std::string>{"-odd-id"});
}

TEST_CASE("parse_args: logs options", "[mgmtctl]") {
  using mgmtctl::parse_args;
  using mgmtctl::Stream;

  auto r = parse_args({"logs", "-f", "web"});  // both streams: mgmtctl follows two
  REQUIRE(r.ok());
  CHECK(r.options.stream == Stream::all);
  CHECK(r.options.follow);

  r = parse_args({"logs", "web"});
  REQUIRE(r.ok());
  CHECK(r.options.stream == Stream::all);
  CHECK_FALSE(r.options.follow);
  CHECK_FALSE(r.options.since);
  CHECK(r.options.lines == 0);

  r = parse_args({"logs", "--stream", "stderr", "-f", "--since", "1h30m", "-n", "50", "web"});
  REQUIRE(r.ok());
  CHECK(r.options.stream == Stream::err);
  CHECK(r.options.follow);
  CHECK(r.options.since == std::chrono::nanoseconds(90min));
  CHECK(r.options.lines == 50);
  CHECK(r.options.ids == std::vector<std::string>{"web"});

  // Go flag spellings: single dash, '=' values, explicit booleans.
  r = parse_args({"logs", "-stream=stdout", "-follow=true", "--lines=3", "web"});
  REQUIRE(r.ok());
  CHECK(r.options.stream == Stream::out);
  CHECK(r.options.follow);
  CHECK(r.options.lines == 3);
}

TEST_CASE("parse_args: help and version", "[mgmtctl]") {
  using mgmtctl::Command;
  using mgmtctl::parse_args;
  CHECK(parse_args({"-h"}).options.command == Command::help);
  CHECK(parse_args({"--help"}).options.command == Command::help);
  CHECK(parse_args({"help"}).options.command == Command::help);
  CHECK(parse_args({"status", "--help"}).options.command == Command::help);
  CHECK(parse_args({"--version"}).options.command == Command::version);
  CHECK(parse_args({"version"}).options.command == Command::version);
}

TEST_CASE("parse_args: usage errors name the problem", "[mgmtctl]") {
  using mgmtctl::parse_args;
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{}, "missing command"},
      {{"frobnicate"}, "unknown command \"frobnicate\""},
      {{"list", "--bogus"}, "unknown flag \"--bogus\""},
      {{"list", "extra"}, "list takes no arguments, got \"extra\""},
      {{"status"}, "status needs a process id"},
      {{"status", "a", "b"}, "status takes one process id, got 2"},
      {{"stop"}, "stop needs at least one process id"},
      {{"start"}, "start needs at least one process id"},
      {{"logs"}, "logs needs a process id"},
      {{"logs", "--stream", "both", "web"},
       "unknown --stream value \"both\" (want stdout, stderr or all)"},
      {{"logs", "--since", "5", "web"},
       "invalid --since duration \"5\" (examples: 90s, 5m, 1h30m, 500ms)"},
      {{"logs", "--since", "-5m", "web"}, "--since must not be negative, got \"-5m\""},
      {{"logs", "-n", "-1", "web"}, "invalid --lines value \"-1\": want a number >= 0"},
      {{"logs", "-n", "ten", "web"}, "invalid --lines value \"ten\": want a number >= 0"},
      {{"logs", "web", "--stream"}, "flag --stream needs a value"},
      {{"--socket"}, "flag --socket needs a value"},
      {{"--socket", "", "list"}, "flag --socket needs a non-empty path"},
      {{"status", "-t", "web"}, "flag --timestamps does not apply to status"},
      {{"list", "--follow=maybe"}, "invalid value \"maybe\" for --follow: want true or false"},
  };
  for (const auto& [args, want] : cases) {
    INFO(want);
    const auto r = parse_args(args);
    CHECK_FALSE(r.ok());
    CHECK(r.error == want);
  }
}

TEST_CASE("run_cli: usage errors exit 2 with a pointer to --help", "[mgmtctl]") {
  auto r = run({"logs", "--stream", "both", "web"});
  CHECK(r.code == 2);
  CHECK(r.out.empty());
  CHECK(r.err ==
        "mgmtctl: unknown --stream value \"both\" (want stdout, stderr or all)\n"
        "try 'mgmtctl --help'\n");

  r = run({});
  CHECK(r.code == 2);
  CHECK(r.err == "mgmtctl: missing command\ntry 'mgmtctl --help'\n");

  r = run({"--help"});
  CHECK(r.code == 0);
  CHECK(r.out == mgmtctl::usage_text());
  CHECK(r.err.empty());

  r = run({"--version"});
  CHECK(r.code == 0);
  CHECK(r.out.rfind("mgmtctl ", 0) == 0);
}

// =======================================================================================
// Formatting

TEST_CASE("format_table lays out columns like Go's tabwriter", "[mgmtctl]") {
  using mgmtctl::format_table;
  CHECK(format_table({}) == "ID  NAME  STATE  PID\n");
  CHECK(format_table({entry("web", "Web", "running", 4242), entry("db-primary", "", "stopped", 0)}) ==
        "ID          NAME  STATE    PID\n"
        "web         Web   running  4242\n"
        "db-primary        stopped  0\n");
  // Widths count code points, not bytes: "Überwachung ✓" is 13 wide.
  CHECK(format_table({entry("b-2", "\xC3\x9C" "berwachung \xE2\x9C\x93", "crashed", 70000)}) ==
        "ID   NAME           STATE    PID\n"
        "b-2  \xC3\x9C" "berwachung \xE2\x9C\x93  crashed  70000\n");
}

TEST_CASE("format_status aligns values and shows extensions when set", "[mgmtctl]") {
  using mgmtctl::TimeZone;
  auto e = entry("web", "Web", "running", 4242);
  CHECK(mgmtctl::format_status(e, TimeZone::utc) ==
        "ID:         web\n"
        "Name:       Web\n"
        "State:      running\n"
        "ChildPID:   4242\n");

  e.rss = 12582912;
  e.restarts = 3;
  e.started_at = 1764000000987654321;
  e.exit_signal = 9;
  e.exit_code = 137;
  e.last_error = "exec: no such file";
  CHECK(mgmtctl::format_status(e, TimeZone::utc) ==
        "ID:         web\n"
        "Name:       Web\n"
        "State:      running\n"
        "ChildPID:   4242\n"
        "RSS:        12.0 MiB\n"
        "Restarts:   3\n"
        "Started:    2025-11-24 16:00:00 UTC\n"
        "Last exit:  signal SIGKILL\n"
        "Last error: exec: no such file\n");
}

TEST_CASE("format_bytes and format_exit", "[mgmtctl]") {
  using mgmtctl::format_bytes;
  CHECK(format_bytes(0) == "0 B");
  CHECK(format_bytes(1023) == "1023 B");
  CHECK(format_bytes(1024) == "1.0 KiB");
  CHECK(format_bytes(1536) == "1.5 KiB");
  CHECK(format_bytes(12582912) == "12.0 MiB");
  CHECK(format_bytes(1048575) == "1.0 MiB");
  CHECK(format_bytes(5000000000) == "4.7 GiB");
  CHECK(format_bytes(18446744073709551615ull) == "16.0 EiB");

  mgmt::Entry e;
  CHECK(mgmtctl::format_exit(e).empty());
  e.exit_code = 3;
  CHECK(mgmtctl::format_exit(e) == "code 3");
  e.exit_signal = 15;
  CHECK(mgmtctl::format_exit(e) == "signal SIGTERM");
  e.exit_signal = 200;
  CHECK(mgmtctl::format_exit(e) == "signal 200");
}

TEST_CASE("format_event_line matches the Go CLI's layout", "[mgmtctl]") {
  mgmt::EventsStream ev{"web", "process.crashed", 1764000000987654321, "process.crashed web"};
  CHECK(mgmtctl::format_event_line(ev, mgmtctl::TimeZone::utc) ==
        "16:00:00.987  process.crashed                   web                   "
        "process.crashed web\n");

  // Long values are not cut; an empty summary leaves the separator, as Go's Printf does.
  mgmt::EventsStream longer{"a-very-long-process-id-indeed", "reliability.backpressure_stall",
                            5'000'000, ""};
  CHECK(mgmtctl::format_event_line(longer, mgmtctl::TimeZone::utc) ==
        "00:00:00.005  reliability.backpressure_stall    a-very-long-process-id-indeed  \n");
}

TEST_CASE("format_event_line uses the local zone by default", "[mgmtctl]") {
  const char* old = std::getenv("TZ");
  const std::optional<std::string> saved = old ? std::optional<std::string>(old) : std::nullopt;
  ::setenv("TZ", "JST-9", 1);  // POSIX rule: UTC+9, no tz database needed
  ::tzset();
  mgmt::EventsStream ev{"web", "process.started", 1764000000987654321, "x"};
  const auto line = mgmtctl::format_event_line(ev);
  const auto started = mgmtctl::format_time(1764000000987654321, mgmtctl::TimeZone::local);
  if (saved) {
    ::setenv("TZ", saved->c_str(), 1);
  } else {
    ::unsetenv("TZ");
  }
  ::tzset();
  CHECK(line.substr(0, 14) == "01:00:00.987  ");
  CHECK(started == "2025-11-25 01:00:00 JST");
}

TEST_CASE("JSON output carries every field, extensions only when set", "[mgmtctl]") {
  auto a = entry("web", "Web", "running", 4242);
  a.rss = 300;
  auto b = entry("db", "", "crashed", 0);
  b.restarts = 2;
  b.started_at = 17;
  b.exit_code = 1;
  b.last_error = "boom";
  CHECK(mgmtctl::format_list_json({}) == "[]\n");
  CHECK(mgmtctl::format_list_json({a, b}) == R"([
  {
    "id": "web",
    "name": "Web",
    "state": "running",
    "pid": 4242,
    "rss": 300
  },
  {
    "id": "db",
    "name": "",
    "state": "crashed",
    "pid": 0,
    "rss": 0,
    "restarts": 2,
    "started_at": 17,
    "exit_code": 1,
    "last_error": "boom"
  }
]
)");
  auto c = entry("x", "bad \xFF byte", "stopped", 0);
  c.exit_signal = 9;
  CHECK(mgmtctl::format_status_json(c) ==
        "{\n  \"id\": \"x\",\n  \"name\": \"bad \xEF\xBF\xBD byte\",\n  \"state\": \"stopped\",\n"
        "  \"pid\": 0,\n  \"rss\": 0,\n  \"exit_signal\": 9\n}\n");
}

// =======================================================================================
// The client

TEST_CASE("Client sends framed requests with fresh seqs and reads partial replies", "[mgmtctl][client]") {
  std::vector<Received> got;
  const std::string reply = frame(MsgType::ListResponse, "\x81\xA7" "entries\xC0", 42);
  FakeServer srv([&](int fd) {
    for (int i = 0; i < 2; ++i) {
      auto r = read_frame(fd);
      if (!r) return;
      got.push_back(std::move(*r));
    }
    // One byte at a time: the client must assemble the frame across reads.
    for (char ch : reply) {
      if (!write_all(fd, std::string_view(&ch, 1))) return;
      std::this_thread::sleep_for(1ms);
    }
  });
  mgmt::Client c(srv.path());
  CHECK(c.path() == srv.path());
  CHECK(c.send(to_byte(MsgType::ListRequest), {}) == 1);
  CHECK(c.send(to_byte(MsgType::StatusRequest), mgmt::encode(mgmt::StatusRequest{"web"})) == 2);
  auto f = c.receive();
  REQUIRE(f);
  CHECK(f->header.type == to_byte(MsgType::ListResponse));
  CHECK(f->header.seq == 42);
  CHECK(f->payload == "\x81\xA7" "entries\xC0");
  CHECK_FALSE(c.receive());  // the server closed between frames
  srv.wait();

  REQUIRE(got.size() == 2);
  CHECK(got[0].header.type == 0xA0);
  CHECK(got[0].header.seq == 1);
  CHECK(got[0].header.flags == 0);
  CHECK(got[0].payload.empty());
  CHECK(got[1].header.seq == 2);
  mgmt::StatusRequest req;
  CHECK(mgmt::decode(got[1].payload, req).empty());
  CHECK(req.id == "web");
}

TEST_CASE("Client reports broken frames as protocol errors", "[mgmtctl][client]") {
  const std::string good = frame(MsgType::StatusResponse, "\x82\xA5" "entry\xC0\xA3" "err\xA1x");
  struct Case {
    const char* name;
    std::string bytes;
    const char* want;
  };
  std::string bad_magic = good;
  bad_magic[0] = 'H';
  std::string bad_version = good;
  bad_version[2] = 0x02;
  std::string too_large = good.substr(0, mgmt::kHeaderSize);
  too_large[13] = 0x01;  // 16 MiB + 1
  too_large[16] = 0x01;
  const std::vector<Case> cases = {
      {"EOF mid-header", good.substr(0, 5), "middle of a frame header (5 of 17 bytes)"},
      {"EOF mid-payload", good.substr(0, good.size() - 2), "middle of a frame ("},
      {"bad magic", bad_magic, "bad magic"},
      {"bad version", bad_version, "unsupported protocol version (0x02)"},
      {"too large", too_large, "(16777217 bytes, at most 16777216 allowed)"},
  };
  for (const auto& tc : cases) {
    INFO(tc.name);
    FakeServer srv([&](int fd) { write_all(fd, tc.bytes); });
    mgmt::Client c(srv.path());
    try {
      c.receive();
      FAIL("no error");
    } catch (const std::runtime_error& e) {
      const std::string what = e.what();
      CHECK_THAT(what, Catch::Contains(tc.want));
      CHECK_THAT(what, Catch::Contains(srv.path()));
      CHECK_THAT(what, Catch::Contains("protocol error"));
    }
  }
}

TEST_CASE("Client::call fails when the server closes instead of answering", "[mgmtctl][client]") {
  FakeServer srv([](int fd) { read_frame(fd); });
  mgmt::Client c(srv.path());
  CHECK_THROWS_WITH(c.call(to_byte(MsgType::ListRequest), {}),
                    srv.path() + " closed the connection without answering");
}

TEST_CASE("Client connection errors say what to do", "[mgmtctl][client]") {
  const std::string missing = "/tmp/mgmtctl-no-such-dir/manager.sock";
  CHECK_THROWS_WITH(mgmt::Client(missing),
                    "cannot connect to " + missing +
                        ": No such file or directory (is mgmtd running? use --socket or --runtime-dir)");

  // A socket file nobody listens on: refused.
  char tmpl[] = "/tmp/mgmtctl-test-XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  const std::string path = std::string(tmpl) + "/stale.sock";
  const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  ::close(fd);
  CHECK_THROWS_WITH(mgmt::Client(path), Catch::Contains("Connection refused (is mgmtd running?"));
  std::filesystem::remove_all(tmpl);

  CHECK_THROWS_WITH(mgmt::Client("/tmp/" + std::string(200, 'x')),
                    Catch::Contains("the limit for a unix socket is 107"));
}

TEST_CASE("Client is movable", "[mgmtctl][client]") {
  Exchange ex;
  ex.replies = {frame(MsgType::ListResponse, "\x80")};
  FakeServer srv(ex.script());
  mgmt::Client a(srv.path());
  const int fd = a.fd();
  mgmt::Client b(std::move(a));
  CHECK(a.fd() == -1);
  CHECK(b.fd() == fd);
  const auto f = b.call(to_byte(MsgType::ListRequest), {});
  CHECK(f.header.type == to_byte(MsgType::ListResponse));
}

// =======================================================================================
// Whole commands against a scripted server

TEST_CASE("mgmtctl list prints the table, or JSON", "[mgmtctl][cli]") {
  mgmt::ListResponse resp;
  resp.entries = {entry("web", "Web", "running", 4242)};
  Exchange ex;
  ex.replies = {frame(MsgType::ListResponse, mgmt::encode(resp))};
  FakeServer srv(ex.script());
  auto r = run({"--socket", srv.path(), "list"});
  srv.wait();
  CHECK(r.code == 0);
  CHECK(r.out == "ID   NAME  STATE    PID\nweb  Web   running  4242\n");
  CHECK(r.err.empty());
  REQUIRE(ex.requests.size() == 1);
  CHECK(ex.requests[0].header.type == 0xA0);
  CHECK(ex.requests[0].payload.empty());

  Exchange ex2;
  ex2.replies = {frame(MsgType::ListResponse, mgmt::encode(resp))};
  FakeServer srv2(ex2.script());
  r = run({"list", "--json", "--socket", srv2.path()});
  CHECK(r.code == 0);
  CHECK(r.out == mgmtctl::format_list_json(resp.entries));
}

TEST_CASE("mgmtctl: an error reply where another type was expected", "[mgmtctl][cli]") {
  Exchange ex;
  ex.replies = {mgmt::make_frame(0xA3, 1, mgmt::error_reply("unknown request type 0xa0"))};
  FakeServer srv(ex.script());
  const auto r = run({"--socket", srv.path(), "list"});
  CHECK(r.code == 1);
  CHECK(r.out.empty());
  CHECK(r.err == "unknown request type 0xa0\n");
}

TEST_CASE("mgmtctl: a reply of the wrong type is a protocol error", "[mgmtctl][cli]") {
  Exchange ex;
  ex.replies = {frame(MsgType::EventsStream, mgmt::encode(mgmt::EventsStream{}))};
  FakeServer srv(ex.script());
  const auto r = run({"--socket", srv.path(), "list"});
  CHECK(r.code == 1);
  CHECK(r.err == "mgmtctl: protocol error from " + srv.path() +
                     ": got message type 0xa7 where 0xa1 was expected\n");
}

TEST_CASE("mgmtctl: no server is a runtime failure", "[mgmtctl][cli]") {
  const auto r = run({"--socket", "/tmp/mgmtctl-nowhere/manager.sock", "list"});
  CHECK(r.code == 1);
  CHECK(r.err == "mgmtctl: cannot connect to /tmp/mgmtctl-nowhere/manager.sock: No such file or "
                 "directory (is mgmtd running? use --socket or --runtime-dir)\n");
}

TEST_CASE("mgmtctl --runtime-dir finds DIR/manager.sock", "[mgmtctl][cli]") {
  Exchange ex;
  ex.replies = {frame(MsgType::ListResponse, mgmt::encode(mgmt::ListResponse{}))};
  FakeServer srv(ex.script());
  const auto dir = std::filesystem::path(srv.path()).parent_path().string();
  const auto r = run({"--runtime-dir", dir, "list"});
  CHECK(r.code == 0);
  CHECK(r.out == "ID  NAME  STATE  PID\n");
}

TEST_CASE("mgmtctl status prints the entry or the server's error", "[mgmtctl][cli]") {
  mgmt::StatusResponse ok;
  ok.entry = entry("web", "Web", "running", 4242);
  Exchange ex;
  ex.replies = {frame(MsgType::StatusResponse, mgmt::encode(ok))};
  FakeServer srv(ex.script());
  auto r = run({"--socket", srv.path(), "status", "web"});
  srv.wait();
  CHECK(r.code == 0);
  CHECK(r.out == mgmtctl::format_status(ok.entry));
  REQUIRE(ex.requests.size() == 1);
  CHECK(ex.requests[0].header.type == 0xA2);
  mgmt::StatusRequest req;
  CHECK(mgmt::decode(ex.requests[0].payload, req).empty());
  CHECK(req.id == "web");

  Exchange ex2;
  ex2.replies = {frame(MsgType::StatusResponse, mgmt::error_reply(mgmt::kErrNotFound))};
  FakeServer srv2(ex2.script());
  r = run({"--socket", srv2.path(), "status", "nope"});
  CHECK(r.code == 1);
  CHECK(r.out.empty());
  CHECK(r.err == "cliwrap: process not found\n");
}

TEST_CASE("mgmtctl stop and start: a line per id, errors as <id>: <err>", "[mgmtctl][cli]") {
  Exchange ex;
  ex.replies = {frame(MsgType::StatusResponse, mgmt::encode(mgmt::StatusResponse{})),
                frame(MsgType::StatusResponse, mgmt::error_reply(mgmt::kErrNotFound)),
                frame(MsgType::StatusResponse, mgmt::encode(mgmt::StatusResponse{}))};
  FakeServer srv(ex.script());
  auto r = run({"--socket", srv.path(), "stop", "a", "b", "c"});
  srv.wait();
  CHECK(r.code == 1);
  CHECK(r.out == "stopped a\nstopped c\n");
  CHECK(r.err == "b: cliwrap: process not found\n");
  REQUIRE(ex.requests.size() == 3);
  for (std::size_t i = 0; i < 3; ++i) {
    CHECK(ex.requests[i].header.type == 0xA9);
    CHECK(ex.requests[i].header.seq == i + 1);
  }
  mgmt::IdRequest id;
  CHECK(mgmt::decode(ex.requests[1].payload, id).empty());
  CHECK(id.id == "b");

  // What the Go server answers to a start request.
  Exchange ex2;
  ex2.replies = {frame(MsgType::StatusResponse, mgmt::error_reply("unknown request type 0xa8"))};
  FakeServer srv2(ex2.script());
  r = run({"--socket", srv2.path(), "start", "web"});
  srv2.wait();
  CHECK(r.code == 1);
  CHECK(r.err == "web: unknown request type 0xa8\n");
  REQUIRE(ex2.requests.size() == 1);
  CHECK(ex2.requests[0].header.type == 0xA8);

  Exchange ex3;
  ex3.replies = {frame(MsgType::StatusResponse, mgmt::encode(mgmt::StatusResponse{}))};
  FakeServer srv3(ex3.script());
  r = run({"--socket", srv3.path(), "start", "web"});
  CHECK(r.code == 0);
  CHECK(r.out == "started web\n");
}

TEST_CASE("mgmtctl stop: a dropped connection fails the id and stops", "[mgmtctl][cli]") {
  Exchange ex;
  ex.replies = {frame(MsgType::StatusResponse, mgmt::encode(mgmt::StatusResponse{}))};
  FakeServer srv(ex.script());  // answers one request, then closes
  const auto r = run({"--socket", srv.path(), "stop", "a", "b", "c"});
  CHECK(r.code == 1);
  CHECK(r.out == "stopped a\n");
  // Depending on timing the send or the read notices the closed connection.
  CHECK_THAT(r.err, Catch::StartsWith("b: ") && Catch::Contains(srv.path()) &&
                        Catch::EndsWith("\n") && !Catch::Contains("c: "));
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
}

TEST_CASE("mgmtctl logs snapshot: stdout and stderr to their own streams", "[mgmtctl][cli]") {
  const auto out_chunk = chunk(0, std::string("out\0line\n", 9), true);
  const auto err_chunk = chunk(1, "err line\n", true);
  Exchange ex;
  ex.replies = {frame(MsgType::LogsStream, mgmt::encode(out_chunk)),
                frame(MsgType::LogsStream, mgmt::encode(err_chunk))};
  FakeServer srv(ex.script());
  const auto before = std::chrono::system_clock::now();
  auto r = run({"--socket", srv.path(), "logs", "--since", "1h", "-n", "20", "web"});
  srv.wait();
  CHECK(r.code == 0);
  CHECK(r.out == std::string("out\0line\n", 9));
  CHECK(r.err == "err line\n");
  REQUIRE(ex.requests.size() == 2);
  for (std::uint8_t s = 0; s < 2; ++s) {
    mgmt::LogsRequest req;
    CHECK(ex.requests[s].header.type == 0xA4);
    CHECK(mgmt::decode(ex.requests[s].payload, req).empty());
    CHECK(req.id == "web");
    CHECK(req.s == s);
    CHECK_FALSE(req.f);
    CHECK(req.ln == 20);
    const auto want = std::chrono::duration_cast<std::chrono::nanoseconds>(
                          (before - 1h).time_since_epoch()).count();
    CHECK(req.sn >= want);
    CHECK(req.sn < want + std::int64_t{60'000'000'000});
  }

  // One stream only, no filters.
  Exchange ex2;
  ex2.replies = {frame(MsgType::LogsStream, mgmt::encode(err_chunk))};
  FakeServer srv2(ex2.script());
  r = run({"--socket", srv2.path(), "logs", "--stream", "stderr", "web"});
  srv2.wait();
  CHECK(r.code == 0);
  CHECK(r.out.empty());
  CHECK(r.err == "err line\n");
  REQUIRE(ex2.requests.size() == 1);
  mgmt::LogsRequest req;
  CHECK(mgmt::decode(ex2.requests[0].payload, req).empty());
  CHECK(req.s == 1);
  CHECK(req.sn == 0);
  CHECK(req.ln == 0);
}

TEST_CASE("mgmtctl logs: an unknown id is the server's error", "[mgmtctl][cli]") {
  Exchange ex;
  ex.replies = {frame(MsgType::StatusResponse, mgmt::error_reply(mgmt::kErrNotFound))};
  FakeServer srv(ex.script());
  const auto r = run({"--socket", srv.path(), "logs", "nope"});
  CHECK(r.code == 1);
  CHECK(r.out.empty());
  CHECK(r.err == "cliwrap: process not found\n");
}

TEST_CASE("mgmtctl logs: a LogsStream with err set is the server's error", "[mgmtctl][cli]") {
  Exchange ex;
  ex.replies = {frame(MsgType::LogsStream, mgmt::encode(chunk(0, "no such process", true,
                                                              "cliwrap: process not found")))};
  FakeServer srv(ex.script());
  auto r = run({"--socket", srv.path(), "logs", "nope"});
  CHECK(r.code == 1);
  CHECK(r.out.empty());
  CHECK(r.err == "cliwrap: process not found\n");

  FakeServer srv2([&](int fd) {
    if (!read_frame(fd)) return;
    write_all(fd, frame(MsgType::LogsStream,
                        mgmt::encode(chunk(0, "gone", true, "cliwrap: process not found"))));
  });
  r = run({"--socket", srv2.path(), "logs", "-f", "--stream", "stdout", "nope"});
  CHECK(r.code == 1);
  CHECK(r.out.empty());
  CHECK(r.err == "cliwrap: process not found\n");
}

TEST_CASE("mgmtctl logs --follow writes every chunk until the server closes", "[mgmtctl][cli]") {
  std::vector<Received> requests;
  FakeServer srv([&](int fd) {
    auto req = read_frame(fd);
    if (!req) return;
    requests.push_back(std::move(*req));
    for (const char* d : {"snapshot\n", "", "new 1\n", "new 2\n"}) {
      if (!write_all(fd, frame(MsgType::LogsStream, mgmt::encode(chunk(0, d, false))))) return;
    }
  });
  const auto r = run({"--socket", srv.path(), "logs", "-f", "--stream", "stdout", "web"});
  srv.wait();
  CHECK(r.code == 0);
  CHECK(r.out == "snapshot\nnew 1\nnew 2\n");
  CHECK(r.err.empty());
  REQUIRE(requests.size() == 1);
  mgmt::LogsRequest req;
  CHECK(mgmt::decode(requests[0].payload, req).empty());
  CHECK(req.f);
  CHECK(req.s == 0);
}

TEST_CASE("mgmtctl logs --follow stops at eof", "[mgmtctl][cli]") {
  FakeServer srv([&](int fd) {
    if (!read_frame(fd)) return;
    write_all(fd, frame(MsgType::LogsStream, mgmt::encode(chunk(1, "a\n", false))));
    write_all(fd, frame(MsgType::LogsStream, mgmt::encode(chunk(1, "b\n", true))));
    // Keep the connection open: the client must stop on eof, not on close.
    char buf[1];
    while (::recv(fd, buf, 1, 0) > 0) {
    }
  });
  const auto r = run({"--socket", srv.path(), "logs", "--follow", "--stream=stderr", "web"});
  CHECK(r.code == 0);
  CHECK(r.out.empty());
  CHECK(r.err == "a\nb\n");
}

TEST_CASE("mgmtctl logs --follow: an error frame fails", "[mgmtctl][cli]") {
  FakeServer srv([&](int fd) {
    if (!read_frame(fd)) return;
    write_all(fd, frame(MsgType::LogsStream,
                        mgmt::encode(chunk(2, "invalid stream 2", true))));
  });
  const auto r = run({"--socket", srv.path(), "logs", "-f", "--stream", "stdout", "web"});
  CHECK(r.code == 1);
  CHECK(r.out.empty());
  CHECK(r.err == "invalid stream 2\n");
}

TEST_CASE("mgmtctl events prints one line per event until the server closes", "[mgmtctl][cli]") {
  std::vector<Received> requests;
  const mgmt::EventsStream e1{"web", "process.started", 1764000000000000000, "started"};
  const mgmt::EventsStream e2{"db", "process.crashed", 1764000001500000000, "exit 3"};
  FakeServer srv([&](int fd) {
    auto req = read_frame(fd);
    if (!req) return;
    requests.push_back(std::move(*req));
    write_all(fd, frame(MsgType::EventsStream, mgmt::encode(e1)));
    write_all(fd, frame(MsgType::EventsStream, mgmt::encode(e2)));
  });
  const auto r = run({"--socket", srv.path(), "events", "--process", "web,db", "--type",
                      "process.started,process.crashed"});
  srv.wait();
  CHECK(r.code == 0);
  CHECK(r.out == mgmtctl::format_event_line(e1) + mgmtctl::format_event_line(e2));
  REQUIRE(requests.size() == 1);
  CHECK(requests[0].header.type == 0xA6);
  mgmt::EventsSubscribe sub;
  CHECK(mgmt::decode(requests[0].payload, sub).empty());
  CHECK(sub.pids == std::vector<std::string>{"web", "db"});
  CHECK(sub.types == std::vector<std::string>{"process.started", "process.crashed"});
}

TEST_CASE("mgmtctl events: a refused subscription is the server's error", "[mgmtctl][cli]") {
  FakeServer srv([&](int fd) {
    if (!read_frame(fd)) return;
    write_all(fd, frame(MsgType::StatusResponse, mgmt::error_reply("unknown request type 0xa6")));
  });
  const auto r = run({"--socket", srv.path(), "events"});
  CHECK(r.code == 1);
  CHECK(r.err == "unknown request type 0xa6\n");
}

// =======================================================================================
// Extra commands: restart, signal, info, call

namespace {

std::string raw_frame(std::uint8_t type, std::string_view payload, std::uint64_t seq = 1) {
  return mgmt::make_frame(type, seq, payload);
}

mgmt::InfoResponse sample_info() {
  mgmt::InfoResponse m;
  m.version = "0.1.0";
  m.abi = 1;
  m.started_at = 1764000000987654321;
  m.uptime = (3600 + 2 * 60 + 3) * 1'000'000'000ll + 999;
  m.pid = 4242;
  m.config = "/etc/mgmtd/mgmt.yaml";
  m.plugins = {{0, "process", "backend", "1.0.0", "/usr/lib/mgmtd/plugins/process.so"},
               {0xA0, "list", "handler", "1.0.0", "/usr/lib/mgmtd/plugins/list.so"},
               {0xAC, "info", "command", "1.2.0", "/opt/info.so"}};
  return m;
}

}  // namespace

TEST_CASE("parse_args: restart, signal, info and call", "[mgmtctl]") {
  using mgmtctl::Command;
  using mgmtctl::parse_args;

  auto r = parse_args({"restart", "a", "b"});
  REQUIRE(r.ok());
  CHECK(r.options.command == Command::restart);
  CHECK(r.options.ids == std::vector<std::string>{"a", "b"});
  CHECK_FALSE(r.options.msg_type);

  r = parse_args({"restart", "--type", "0xAE", "a"});
  REQUIRE(r.ok());
  CHECK(r.options.msg_type == 0xAE);

  r = parse_args({"signal", "hup", "web"});
  REQUIRE(r.ok());
  CHECK(r.options.command == Command::signal);
  CHECK(r.options.signal == "SIGHUP");  // canonical spelling on the wire
  CHECK(r.options.ids == std::vector<std::string>{"web"});
  CHECK_FALSE(r.options.group);

  r = parse_args({"signal", "--group", "--type=171", "9", "web"});
  REQUIRE(r.ok());
  CHECK(r.options.signal == "SIGKILL");
  CHECK(r.options.group);
  CHECK(r.options.msg_type == 0xAB);

  r = parse_args({"info", "--json"});
  REQUIRE(r.ok());
  CHECK(r.options.command == Command::info);
  CHECK(r.options.json);

  r = parse_args({"call", "0xa0"});
  REQUIRE(r.ok());
  CHECK(r.options.command == Command::call);
  CHECK(r.options.msg_type == 0xA0);
  CHECK(r.options.json_payload.empty());

  r = parse_args({"call", "170", R"({"id": "web"})"});
  REQUIRE(r.ok());
  CHECK(r.options.msg_type == 0xAA);
  CHECK(r.options.json_payload == R"({"id": "web"})");

  // events keeps its own --type: event types.
  r = parse_args({"events", "--type", "process.started"});
  REQUIRE(r.ok());
  CHECK(r.options.types == std::vector<std::string>{"process.started"});
  CHECK_FALSE(r.options.msg_type);

  CHECK(mgmtctl::parse_type("0xff") == 0xFF);
  CHECK(mgmtctl::parse_type("0") == 0);
  CHECK_FALSE(mgmtctl::parse_type("0x100"));
  CHECK_FALSE(mgmtctl::parse_type("256"));
  CHECK_FALSE(mgmtctl::parse_type("0x"));
  CHECK_FALSE(mgmtctl::parse_type("-1"));
  CHECK_FALSE(mgmtctl::parse_type("AA"));
}

TEST_CASE("parse_args: extra-command usage errors", "[mgmtctl]") {
  using mgmtctl::parse_args;
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"restart"}, "restart needs at least one process id"},
      {{"info", "x"}, "info takes no arguments, got \"x\""},
      {{"signal", "HUP"}, "signal needs a signal name and a process id (signal [--group] HUP web)"},
      {{"signal", "HUP", "a", "b"},
       "signal needs a signal name and a process id (signal [--group] HUP web)"},
      {{"signal", "FOO", "web"}, "unknown signal \"FOO\" (examples: HUP, SIGTERM, USR1, 9)"},
      {{"signal", "--group=maybe", "HUP", "web"},
       "invalid value \"maybe\" for --group: want true or false"},
      {{"restart", "--type", "0xZZ", "web"},
       "invalid --type value \"0xZZ\": want a message type such as 0xAA"},
      {{"call"}, "call needs a message type and optionally a JSON object (call 0xAC '{}')"},
      {{"call", "0xAC", "{}", "extra"},
       "call needs a message type and optionally a JSON object (call 0xAC '{}')"},
      {{"call", "0x1AC"}, "invalid message type \"0x1AC\" (want 0x00..0xff or 0..255)"},
      {{"call", "0xAC", "{oops"}, "the request is not valid JSON: {oops"},
      {{"call", "0xAC", "42"}, "the request must be a JSON object (payloads are maps), got 42"},
      {{"call", "--type", "0xAC", "0xAC"}, "flag --type does not apply to call"},
      {{"list", "--group"}, "flag --group does not apply to list"},
      {{"metrics", "--json"}, "flag --json does not apply to metrics"},
      {{"metrics", "x"}, "metrics takes no arguments, got \"x\""},
      {{"status", "--ids", "web"}, "flag --ids does not apply to status"},
      {{"help", "bogus"}, "no help for unknown command \"bogus\""},
  };
  for (const auto& [args, want] : cases) {
    INFO(want);
    const auto r = parse_args(args);
    CHECK_FALSE(r.ok());
    CHECK(r.error == want);
  }
}

TEST_CASE("format_info and format_uptime", "[mgmtctl]") {
  using mgmtctl::format_uptime;
  CHECK(format_uptime(0) == "0s");
  CHECK(format_uptime(-5) == "0s");
  CHECK(format_uptime(59'999'999'999) == "59s");
  CHECK(format_uptime(240'000'000'000) == "4m0s");
  CHECK(format_uptime(3723'000'000'000) == "1h2m3s");
  CHECK(format_uptime(180000'000'000'000) == "50h0m0s");

  CHECK(mgmtctl::format_info(sample_info(), mgmtctl::TimeZone::utc) ==
        "Server:   mgmtd 0.1.0 (plugin ABI 1), pid 4242\n"
        "Started:  2025-11-24 16:00:00 UTC (up 1h2m3s)\n"
        "Config:   /etc/mgmtd/mgmt.yaml\n"
        "Plugins:\n"
        "  TYPE  KIND     NAME     VERSION  FILE\n"
        "  -     backend  process  1.0.0    /usr/lib/mgmtd/plugins/process.so\n"
        "  0xa0  handler  list     1.0.0    /usr/lib/mgmtd/plugins/list.so\n"
        "  0xac  command  info     1.2.0    /opt/info.so\n");

  auto info = sample_info();
  info.plugins.resize(1);
  CHECK(mgmtctl::format_info_json(info) == R"({
  "version": "0.1.0",
  "abi": 1,
  "pid": 4242,
  "started_at": 1764000000987654321,
  "uptime": 3723000000999,
  "config": "/etc/mgmtd/mgmt.yaml",
  "plugins": [
    {
      "type": 0,
      "kind": "backend",
      "name": "process",
      "version": "1.0.0",
      "path": "/usr/lib/mgmtd/plugins/process.so"
    }
  ]
}
)");
}

TEST_CASE("JSON <-> MessagePack for call, bytes as base64", "[mgmtctl]") {
  using mgmtctl::base64;
  CHECK(base64("") == "");
  CHECK(base64("f") == "Zg==");
  CHECK(base64("fo") == "Zm8=");
  CHECK(base64("foo") == "Zm9v");
  CHECK(base64("foob") == "Zm9vYg==");
  CHECK(base64(std::string("\xFF\x00\xFE", 3)) == "/wD+");

  // Keys in the given order, strings as str, small integers in one byte.
  CHECK(mgmtctl::json_to_msgpack(R"({"id": "web", "s": 1, "f": false})") ==
        std::string("\x83\xA2id\xA3web\xA1s\x01\xA1" "f\xC2", 14));
  // The codec of the protocol reads it.
  mgmt::LogsRequest req;
  CHECK(mgmt::decode(mgmtctl::json_to_msgpack(R"({"id": "web", "s": 1, "ln": 300})"), req).empty());
  CHECK(req.id == "web");
  CHECK(req.s == 1);
  CHECK(req.ln == 300);
  CHECK_THROWS_AS(mgmtctl::json_to_msgpack("{"), std::invalid_argument);

  mgmt::LogsStream chunk;
  chunk.id = "web";
  chunk.d = std::string("a\0b\n", 4);
  chunk.eof = true;
  CHECK(mgmtctl::msgpack_to_json(mgmt::encode(chunk)) ==
        "{\n  \"id\": \"web\",\n  \"s\": 0,\n  \"d\": \"YQBiCg==\",\n  \"eof\": true\n}\n");
  CHECK(mgmtctl::msgpack_to_json("") == "{}\n");
  CHECK_THROWS_AS(mgmtctl::msgpack_to_json("\xC1"), std::invalid_argument);
}

TEST_CASE("mgmtctl restart: a line per id, on 0xAA unless --type says otherwise", "[mgmtctl][cli]") {
  mgmt::RestartResponse ok;
  ok.entry = entry("a", "A", "running", 7);
  Exchange ex;
  ex.replies = {raw_frame(0xAA, mgmt::encode(ok)),
                raw_frame(0xAA, mgmt::command_error(mgmt::kErrNotFound)),
                // The generic error (e.g. nothing mapped there) names no id: each id gets it.
                frame(MsgType::StatusResponse, mgmt::error_reply("unknown request type 0xaa"))};
  FakeServer srv(ex.script());
  auto r = run({"--socket", srv.path(), "restart", "a", "b", "c"});
  srv.wait();
  CHECK(r.code == 1);
  CHECK(r.out == "restarted a\n");
  CHECK(r.err == "b: cliwrap: process not found\nc: unknown request type 0xaa\n");
  REQUIRE(ex.requests.size() == 3);
  CHECK(ex.requests[0].header.type == 0xAA);
  mgmt::RestartRequest req;
  CHECK(mgmt::decode(ex.requests[1].payload, req).empty());
  CHECK(req.id == "b");

  Exchange ex2;
  ex2.replies = {raw_frame(0xAE, mgmt::encode(ok))};
  FakeServer srv2(ex2.script());
  r = run({"--socket", srv2.path(), "restart", "--type", "0xAE", "a"});
  srv2.wait();
  CHECK(r.code == 0);
  CHECK(r.out == "restarted a\n");
  REQUIRE(ex2.requests.size() == 1);
  CHECK(ex2.requests[0].header.type == 0xAE);

  // An answer on a type that is neither the command's nor 0xA3.
  Exchange ex3;
  ex3.replies = {raw_frame(0xAB, mgmt::encode(ok))};
  FakeServer srv3(ex3.script());
  r = run({"--socket", srv3.path(), "restart", "a"});
  CHECK(r.code == 1);
  CHECK(r.err == "a: protocol error from " + srv3.path() +
                     ": got message type 0xab where 0xaa was expected\n");
}

TEST_CASE("mgmtctl signal sends the canonical name and reports the outcome", "[mgmtctl][cli]") {
  Exchange ex;
  ex.replies = {raw_frame(0xAB, mgmt::encode(mgmt::SignalResponse{}))};
  FakeServer srv(ex.script());
  auto r = run({"--socket", srv.path(), "signal", "--group", "usr1", "web"});
  srv.wait();
  CHECK(r.code == 0);
  CHECK(r.out == "sent SIGUSR1 to the process group of web\n");
  REQUIRE(ex.requests.size() == 1);
  CHECK(ex.requests[0].header.type == 0xAB);
  mgmt::SignalRequest req;
  CHECK(mgmt::decode(ex.requests[0].payload, req).empty());
  CHECK(req.id == "web");
  CHECK(req.sig == "SIGUSR1");
  CHECK(req.group);

  Exchange ex2;
  ex2.replies = {raw_frame(0xAB, mgmt::command_error("sending signals is not supported by this backend"))};
  FakeServer srv2(ex2.script());
  r = run({"--socket", srv2.path(), "signal", "HUP", "web"});
  CHECK(r.code == 1);
  CHECK(r.out.empty());
  CHECK(r.err == "web: sending signals is not supported by this backend\n");
}

TEST_CASE("mgmtctl info prints the server, or JSON", "[mgmtctl][cli]") {
  Exchange ex;
  ex.replies = {raw_frame(0xAC, mgmt::encode(sample_info()))};
  FakeServer srv(ex.script());
  std::ostringstream out, err;
  mgmtctl::Options o;
  o.socket = srv.path();
  o.command = mgmtctl::Command::info;
  const int code = mgmtctl::run_command(o, out, err, mgmtctl::TimeZone::utc);
  srv.wait();
  CHECK(code == 0);
  CHECK(out.str() == mgmtctl::format_info(sample_info(), mgmtctl::TimeZone::utc));
  REQUIRE(ex.requests.size() == 1);
  CHECK(ex.requests[0].header.type == 0xAC);
  CHECK(ex.requests[0].payload == "\x80");

  Exchange ex2;
  ex2.replies = {raw_frame(0xAD, mgmt::encode(sample_info()))};
  FakeServer srv2(ex2.script());
  auto r = run({"--socket", srv2.path(), "info", "--json", "--type", "0xAD"});
  CHECK(r.code == 0);
  CHECK(r.out == mgmtctl::format_info_json(sample_info()));

  Exchange ex3;
  ex3.replies = {raw_frame(0xAC, mgmt::command_error("no"))};
  FakeServer srv3(ex3.script());
  r = run({"--socket", srv3.path(), "info"});
  CHECK(r.code == 1);
  CHECK(r.err == "no\n");
}

TEST_CASE("mgmtctl call: JSON in, JSON out, exit 1 when err is set", "[mgmtctl][cli]") {
  mgmt::StatusResponse resp;
  resp.entry = entry("web", "Web", "running", 42);
  Exchange ex;
  ex.replies = {raw_frame(0xA3, mgmt::encode(resp)),
                raw_frame(0xA3, mgmt::error_reply("cliwrap: process not found"))};
  FakeServer srv(ex.script());
  auto r = run({"--socket", srv.path(), "call", "0xA2", R"({"id": "web"})"});
  CHECK(r.code == 0);
  CHECK(r.out == mgmtctl::msgpack_to_json(mgmt::encode(resp)));
  CHECK_THAT(r.out, Catch::Contains("\"pid\": 42") && Catch::Contains("\"err\": \"\""));
  srv.wait();
  REQUIRE(ex.requests.size() == 1);
  CHECK(ex.requests[0].header.type == 0xA2);
  mgmt::StatusRequest req;
  CHECK(mgmt::decode(ex.requests[0].payload, req).empty());
  CHECK(req.id == "web");

  // No JSON: an empty payload.
  Exchange ex2;
  ex2.replies = {raw_frame(0xA3, mgmt::error_reply("cliwrap: process not found"))};
  FakeServer srv2(ex2.script());
  r = run({"--socket", srv2.path(), "call", "0xAA"});
  srv2.wait();
  CHECK(r.code == 1);
  CHECK(r.out == mgmtctl::msgpack_to_json(mgmt::error_reply("cliwrap: process not found")));
  REQUIRE(ex2.requests.size() == 1);
  CHECK(ex2.requests[0].payload.empty());

  // An answer that is not MessagePack is a protocol error.
  Exchange ex3;
  ex3.replies = {raw_frame(0xAA, "\xC1")};
  FakeServer srv3(ex3.script());
  r = run({"--socket", srv3.path(), "call", "0xAA", "{}"});
  CHECK(r.code == 1);
  CHECK_THAT(r.err, Catch::StartsWith("mgmtctl: protocol error from " + srv3.path() +
                                      ": 0xaa answer: the reply is not MessagePack"));
}

// =======================================================================================
// CLI polish: metrics, per-command help, colour, --json everywhere, list --ids

namespace {

std::string strip_ansi(std::string s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\x1b') {
      while (i < s.size() && s[i] != 'm') ++i;
      continue;
    }
    out += s[i];
  }
  return out;
}

std::string msgpack_of(const nlohmann::json& j) {
  const auto b = nlohmann::json::to_msgpack(j);
  return std::string(b.begin(), b.end());
}

}  // namespace

TEST_CASE("parse_args: metrics, list --ids, --json on more commands, help topics", "[mgmtctl]") {
  using mgmtctl::Command;
  using mgmtctl::parse_args;

  auto r = parse_args({"metrics"});
  REQUIRE(r.ok());
  CHECK(r.options.command == Command::metrics);
  CHECK_FALSE(r.options.msg_type);
  r = parse_args({"metrics", "--type", "0xAF"});
  REQUIRE(r.ok());
  CHECK(r.options.msg_type == 0xAF);

  r = parse_args({"list", "--ids"});
  REQUIRE(r.ok());
  CHECK(r.options.ids_only);

  for (const char* cmd : {"start", "stop", "restart"}) {
    r = parse_args({cmd, "--json", "a"});
    INFO(cmd);
    REQUIRE(r.ok());
    CHECK(r.options.json);
  }
  CHECK(parse_args({"signal", "--json", "HUP", "web"}).options.json);
  CHECK(parse_args({"events", "--json"}).options.json);

  r = parse_args({"status", "--help"});
  REQUIRE(r.ok());
  CHECK(r.options.command == Command::help);
  CHECK(r.options.help_topic == Command::status);
  r = parse_args({"help", "logs"});
  REQUIRE(r.ok());
  CHECK(r.options.command == Command::help);
  CHECK(r.options.help_topic == Command::logs);
  r = parse_args({"--help"});
  CHECK(r.options.help_topic == Command::none);
  // A usage error elsewhere on the line does not hide the help.
  r = parse_args({"logs", "-h"});
  REQUIRE(r.ok());
  CHECK(r.options.help_topic == Command::logs);
}

TEST_CASE("mgmtctl <command> --help prints that command's help", "[mgmtctl]") {
  for (const auto& name : mgmtctl::command_names()) {
    if (name == "help" || name == "version") continue;
    INFO(name);
    const auto r = run({name, "--help"});
    CHECK(r.code == 0);
    CHECK_THAT(r.out, Catch::StartsWith("usage: mgmtctl " + name));
    CHECK(r.out != mgmtctl::usage_text());
    CHECK(run({"help", name}).out == r.out);
    // Every command is in the general usage too.
    CHECK_THAT(mgmtctl::usage_text(), Catch::Contains("\n  " + name));
  }
  CHECK(run({"help"}).out == mgmtctl::usage_text());
  const auto bad = run({"help", "bogus"});
  CHECK(bad.code == 2);
}

TEST_CASE("colour: the state column, only when asked for, layout unchanged", "[mgmtctl]") {
  const std::vector<mgmt::Entry> entries = {entry("web", "Web", "running", 4242),
                                            entry("db", "DB", "crashed", 0),
                                            entry("q", "Q", "restarting", 0),
                                            entry("old", "Old", "stopped", 0)};
  const auto plain = mgmtctl::format_table(entries);
  const auto colored = mgmtctl::format_table(entries, true);
  CHECK(plain.find('\x1b') == std::string::npos);
  CHECK_THAT(colored, Catch::Contains("\x1b[32mrunning\x1b[0m") &&
                          Catch::Contains("\x1b[31mcrashed\x1b[0m") &&
                          Catch::Contains("\x1b[33mrestarting\x1b[0m"));
  CHECK_THAT(colored, !Catch::Contains("\x1b[0mSTATE") && !Catch::Contains("m\x1b[0mstopped"));
  CHECK(strip_ansi(colored) == plain);
  CHECK(mgmtctl::color_state("stopped") == "stopped");
  const auto st = mgmtctl::format_status(entries[0], mgmtctl::TimeZone::utc, true);
  CHECK_THAT(st, Catch::Contains("\x1b[32mrunning\x1b[0m"));
  CHECK(strip_ansi(st) == mgmtctl::format_status(entries[0], mgmtctl::TimeZone::utc));

  // run_cli colours only when the environment says so (main: a terminal, no NO_COLOR).
  mgmt::ListResponse resp;
  resp.entries = entries;
  for (const bool color : {false, true}) {
    Exchange ex;
    ex.replies = {frame(MsgType::ListResponse, mgmt::encode(resp))};
    FakeServer srv(ex.script());
    std::ostringstream out, err;
    const int code = mgmtctl::run_cli({"--socket", srv.path(), "list"}, out, err,
                                      mgmtctl::CliEnv{color});
    CHECK(code == 0);
    CHECK(out.str() == (color ? colored : plain));
  }
}

TEST_CASE("detect_env: no colour without a terminal or with NO_COLOR", "[mgmtctl]") {
  // The test's stdout is not a terminal under ctest; NO_COLOR wins anyway.
  ::setenv("NO_COLOR", "1", 1);
  CHECK_FALSE(mgmtctl::detect_env().color);
  ::unsetenv("NO_COLOR");
  if (!::isatty(STDOUT_FILENO)) CHECK_FALSE(mgmtctl::detect_env().color);
}

TEST_CASE("mgmtctl list --ids prints one id per line", "[mgmtctl][cli]") {
  mgmt::ListResponse resp;
  resp.entries = {entry("web", "Web", "running", 1), entry("db", "DB", "stopped", 0)};
  Exchange ex;
  ex.replies = {frame(MsgType::ListResponse, mgmt::encode(resp))};
  FakeServer srv(ex.script());
  const auto r = run({"--socket", srv.path(), "list", "--ids"});
  CHECK(r.code == 0);
  CHECK(r.out == "web\ndb\n");
}

TEST_CASE("mgmtctl metrics prints the plugin's text", "[mgmtctl][cli]") {
  Exchange ex;
  ex.replies = {raw_frame(0xAE, msgpack_of({{"err", ""}, {"text", "# TYPE up gauge\nup 1\n"}}))};
  FakeServer srv(ex.script());
  auto r = run({"--socket", srv.path(), "metrics"});
  srv.wait();
  CHECK(r.code == 0);
  CHECK(r.out == "# TYPE up gauge\nup 1\n");
  REQUIRE(ex.requests.size() == 1);
  CHECK(ex.requests[0].header.type == 0xAE);

  Exchange ex2;
  ex2.replies = {raw_frame(0xAF, msgpack_of({{"err", ""}, {"text", "x 2\n"}}))};
  FakeServer srv2(ex2.script());
  r = run({"--socket", srv2.path(), "metrics", "--type", "0xAF"});
  CHECK(r.code == 0);
  CHECK(r.out == "x 2\n");

  Exchange ex3;
  ex3.replies = {frame(MsgType::StatusResponse, mgmt::error_reply("unknown request type 0xae"))};
  FakeServer srv3(ex3.script());
  r = run({"--socket", srv3.path(), "metrics"});
  CHECK(r.code == 1);
  CHECK(r.err == "unknown request type 0xae\n");

  // Another command mapped there: no text.
  Exchange ex4;
  ex4.replies = {raw_frame(0xAE, msgpack_of({{"err", ""}}))};
  FakeServer srv4(ex4.script());
  r = run({"--socket", srv4.path(), "metrics"});
  CHECK(r.code == 1);
  CHECK_THAT(r.err, Catch::Contains("has no text"));
}

TEST_CASE("mgmtctl --json: start, stop and restart print an array of outcomes", "[mgmtctl][cli]") {
  mgmt::StatusResponse ok;
  ok.entry = entry("a", "A", "stopped", 0);
  Exchange ex;
  ex.replies = {frame(MsgType::StatusResponse, mgmt::encode(ok)),
                frame(MsgType::StatusResponse, mgmt::error_reply(mgmt::kErrNotFound))};
  FakeServer srv(ex.script());
  auto r = run({"--socket", srv.path(), "stop", "--json", "a", "b"});
  srv.wait();
  CHECK(r.code == 1);
  CHECK(r.err.empty());
  auto j = nlohmann::json::parse(r.out);
  REQUIRE(j.is_array());
  REQUIRE(j.size() == 2);
  CHECK(j[0]["id"] == "a");
  CHECK(j[0]["ok"] == true);
  CHECK(j[0]["entry"]["state"] == "stopped");
  CHECK_FALSE(j[0].contains("err"));
  CHECK(j[1]["id"] == "b");
  CHECK(j[1]["ok"] == false);
  CHECK(j[1]["err"] == mgmt::kErrNotFound);

  mgmt::RestartResponse rok;
  rok.entry = entry("a", "A", "running", 9);
  Exchange ex2;
  ex2.replies = {raw_frame(0xAA, mgmt::encode(rok)), raw_frame(0xAA, mgmt::command_error("nope"))};
  FakeServer srv2(ex2.script());
  r = run({"--socket", srv2.path(), "restart", "--json", "a", "b"});
  srv2.wait();
  CHECK(r.code == 1);
  j = nlohmann::json::parse(r.out);
  REQUIRE(j.size() == 2);
  CHECK(j[0]["entry"]["pid"] == 9);
  CHECK(j[1]["err"] == "nope");

  // A dropped connection still ends with valid JSON naming the id that failed.
  Exchange ex3;
  ex3.replies = {frame(MsgType::StatusResponse, mgmt::encode(ok))};
  FakeServer srv3(ex3.script());
  r = run({"--socket", srv3.path(), "start", "--json", "a", "b", "c"});
  CHECK(r.code == 1);
  j = nlohmann::json::parse(r.out);
  REQUIRE(j.size() == 2);
  CHECK(j[1]["id"] == "b");
  CHECK(j[1]["ok"] == false);
}

TEST_CASE("mgmtctl --json: signal and events", "[mgmtctl][cli]") {
  mgmt::SignalResponse resp;
  resp.entry = entry("web", "Web", "running", 5);
  Exchange ex;
  ex.replies = {raw_frame(0xAB, mgmt::encode(resp))};
  FakeServer srv(ex.script());
  auto r = run({"--socket", srv.path(), "signal", "--json", "--group", "term", "web"});
  CHECK(r.code == 0);
  auto j = nlohmann::json::parse(r.out);
  CHECK(j["id"] == "web");
  CHECK(j["signal"] == "SIGTERM");
  CHECK(j["group"] == true);
  CHECK(j["ok"] == true);
  CHECK(j["entry"]["pid"] == 5);

  Exchange ex2;
  ex2.replies = {raw_frame(0xAB, mgmt::command_error("not running"))};
  FakeServer srv2(ex2.script());
  r = run({"--socket", srv2.path(), "signal", "--json", "HUP", "web"});
  CHECK(r.code == 1);
  CHECK(nlohmann::json::parse(r.out)["err"] == "not running");

  const mgmt::EventsStream e1{"web", "process.started", 1764000000000000000, "pid 4\n\"x\""};
  const mgmt::EventsStream e2{"", "system.shutdown_requested", 1764000001500000000, "SIGTERM"};
  FakeServer srv3([&](int fd) {
    if (!read_frame(fd)) return;
    write_all(fd, frame(MsgType::EventsStream, mgmt::encode(e1)));
    write_all(fd, frame(MsgType::EventsStream, mgmt::encode(e2)));
  });
  r = run({"--socket", srv3.path(), "events", "--json"});
  CHECK(r.code == 0);
  std::istringstream lines(r.out);
  std::vector<nlohmann::json> events;
  for (std::string line; std::getline(lines, line);) events.push_back(nlohmann::json::parse(line));
  REQUIRE(events.size() == 2);
  CHECK(events[0]["ts"] == 1764000000000000000);
  CHECK(events[0]["pid"] == "web");
  CHECK(events[0]["type"] == "process.started");
  CHECK(events[0]["summary"] == "pid 4\n\"x\"");
  CHECK(events[1]["type"] == "system.shutdown_requested");
}
