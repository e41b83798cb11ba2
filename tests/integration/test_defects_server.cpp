// The socket server and the stock logs handler against the defects found by review and by
// attack: ordering of a follow, streams that must notice their client leaving, frame and
// connection limits a client cannot get around, and logs an attacker cannot flood.
#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <atomic>
#include <cctype>
#include <cstdio>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "harness.hpp"
#include "mgmt/handler.hpp"
#include "mgmt/server/plugin_loader.hpp"
#include "wait.hpp"

using namespace mgmt;
using namespace mgmt::test;

namespace {

// ---------------------------------------------------------------------------------------
// The stock logs handler, driven directly: a backend whose chunks arrive at awkward moments
// and an exchange that records what was pushed, in order.

class ScriptedBackend final : public Backend {
 public:
  // Called inside follow_logs() after subscribing, before the snapshot is returned: what a
  // backend thread delivering a chunk at that moment looks like to the handler.
  std::function<void(const std::function<void(std::string_view)>&)> during_follow;
  std::function<void(std::string_view)> subscriber;

  void start_all() override {}
  void shutdown() override {}
  std::vector<Entry> list() override { return {}; }
  std::optional<Entry> status(std::string_view) override { return std::nullopt; }
  void start(std::string_view, OpDone done) override { done(OpResult{}); }
  void stop(std::string_view, OpDone done) override { done(OpResult{}); }
  std::string logs(const LogQuery&, std::string& out) override {
    out = "snapshot";
    return "";
  }
  FollowResult follow_logs(const LogQuery&,
                           std::function<void(std::string_view)> on_chunk) override {
    subscriber = std::move(on_chunk);
    if (during_follow) during_follow(subscriber);
    FollowResult r;
    r.snapshot = "snapshot";
    r.subscription = std::make_unique<Subscription>();
    return r;
  }
  std::unique_ptr<Subscription> subscribe_events(std::function<void(const Event&)>) override {
    return std::make_unique<Subscription>();
  }
};

class RecordingExchange final : public Exchange {
 public:
  explicit RecordingExchange(std::string payload) : payload_(std::move(payload)) {}

  std::uint8_t type() const override { return to_byte(MsgType::LogsRequest); }
  std::uint64_t seq() const override { return 1; }
  std::string_view payload() const override { return payload_; }
  void reply(std::uint8_t, std::string p) override { record(std::move(p)); }
  void begin_stream() override {}
  bool push(std::uint8_t t, std::string p) override { return push_units(t, std::move(p), 1); }
  bool push_units(std::uint8_t, std::string p, std::uint64_t) override {
    record(std::move(p));
    return true;
  }
  void on_stall(StallPayload, std::uint8_t) override {}
  void end_stream() override {}
  void hold(std::shared_ptr<void> r) override { held_.push_back(std::move(r)); }
  bool open() const override { return true; }
  std::int64_t peer_pid() const override { return -1; }
  std::int64_t peer_uid() const override { return -1; }

  // The `d` of every frame pushed so far, in order.
  std::vector<std::string> chunks() const {
    std::lock_guard lock(mu_);
    return chunks_;
  }

 private:
  void record(std::string payload) {
    LogsStream f;
    const std::string err = decode(payload, f);  // (Catch's macros are for one thread only)
    std::lock_guard lock(mu_);
    chunks_.push_back(err.empty() ? f.d : "undecodable: " + err);
  }

  const std::string payload_;
  mutable std::mutex mu_;
  std::vector<std::string> chunks_;
  std::vector<std::shared_ptr<void>> held_;
};

struct LoadedLogsHandler {
  PluginLoader loader{{MGMT_PLUGIN_DIR}};
  PluginRef ref;
  PluginHandle handle;
  std::shared_ptr<Handler> handler;

  explicit LoadedLogsHandler(Backend& backend) {
    ref.plugin = "logs";
    ref.origin = "test";
    handle = loader.load(ref, PluginKind::handler);
    PluginEnv env;
    env.backend = &backend;
    handler = loader.make_handler(handle, ref, env);
  }
};

std::shared_ptr<RecordingExchange> follow_request() {
  return std::make_shared<RecordingExchange>(encode(LogsRequest{"p", 0, true, 0, 0}));
}

// ---------------------------------------------------------------------------------------
// A real mgmtd.

// A process that writes `bytes` bytes of x once, then nothing; one that never writes; and
// the metrics command (for the server's counters).
std::string big_and_quiet(std::size_t bytes) {
  return "backend:\n"
         "  plugin: process\n"
         "  config:\n"
         "    processes:\n"
         "      - id: big\n"
         "        command: /bin/sh\n"
         "        args: [-c, 'head -c " +
         std::to_string(bytes) +
         " /dev/zero | tr \"\\\\0\" x; exec sleep 100000']\n"
         "        log_buffer: 8MiB\n"
         "        stop_timeout: 2s\n"
         "      - id: quiet\n"
         "        command: /bin/sleep\n"
         "        args: ['100000']\n"
         "        stop_timeout: 2s\n" +
         probe_process() +
         "commands:\n"
         "  0xAE: {plugin: metrics, config: {listen: \"127.0.0.1:0\"}}\n";
}

// A counter of `mgmtctl metrics` (-1 when it cannot be read).
long metric(const Mgmtd& d, const std::string& name) {
  const auto r = d.ctl({"metrics"});
  if (r.exit_code != 0) return -1;
  const std::string key = "\n" + name + " ";
  const auto at = ("\n" + r.out).find(key);
  if (at == std::string::npos) return -1;
  return std::stol(r.out.substr(at + key.size() - 1));
}

// Connections open besides the one asking.
long other_connections(const Mgmtd& d) { return metric(d, "mgmtd_connections_open") - 1; }

std::string logs_of(const Mgmtd& d, const std::string& id) {
  RawConn c(d.socket());
  c.send(to_byte(MsgType::LogsRequest), encode(LogsRequest{id, 0, false, 0, 0}));
  const auto f = c.read(20s);
  if (!f) return {};
  LogsStream ls;
  return decode(f->payload, ls).empty() ? ls.d : std::string();
}

}  // namespace

TEST_CASE("logs -f: a chunk delivered while the follow is set up comes after the snapshot",
          "[defects][logs]") {
  ScriptedBackend backend;
  backend.during_follow = [](const std::function<void(std::string_view)>& chunk) {
    chunk("early 1");
    chunk("early 2");
  };
  LoadedLogsHandler logs(backend);
  auto ex = follow_request();
  logs.handler->handle(ex);
  backend.subscriber("late");
  CHECK(ex->chunks() == std::vector<std::string>{"snapshot", "early 1", "early 2", "late"});
}

TEST_CASE("logs -f: chunks from another thread racing the snapshot are neither lost, repeated "
          "nor reordered",
          "[defects][logs]") {
  ScriptedBackend backend;
  // A backend thread that starts delivering as soon as the subscription exists, while the
  // handler is still on its way to pushing the snapshot.
  std::thread feeder;
  std::atomic<bool> started{false};
  constexpr int kChunks = 2000;
  backend.during_follow = [&](const std::function<void(std::string_view)>& chunk) {
    feeder = std::thread([&, chunk] {
      started = true;
      for (int i = 0; i < kChunks; ++i) chunk(std::to_string(i));
    });
    wait_until([&] { return started.load(); });
  };
  LoadedLogsHandler logs(backend);
  auto ex = follow_request();
  logs.handler->handle(ex);
  feeder.join();
  const auto got = ex->chunks();
  std::vector<std::string> want{"snapshot"};
  for (int i = 0; i < kChunks; ++i) want.push_back(std::to_string(i));
  CHECK(got.size() == want.size());
  std::size_t first_difference = 0;
  while (first_difference < got.size() && first_difference < want.size() &&
         got[first_difference] == want[first_difference]) {
    ++first_difference;
  }
  INFO("first difference at frame " << first_difference << " of " << got.size());
  const bool same = got == want;
  CHECK(same);
}

TEST_CASE("a follow that starts behind a large answer still notices its client leaving",
          "[defects][streaming]") {
  constexpr std::size_t kBig = 2u << 20;  // far more than a socket buffer holds
  Mgmtd d(big_and_quiet(kBig));
  REQUIRE(wait_until([&] { return logs_of(d, "big").size() >= kBig; }, 20s));
  REQUIRE(wait_until([&] { return other_connections(d) == 0; }));
  {
    RawConn c(d.socket());
    // Both at once: the follow is taken while the big answer is still being written.
    c.send_bytes(make_frame(to_byte(MsgType::LogsRequest), 1,
                            encode(LogsRequest{"big", 0, false, 0, 0})) +
                 make_frame(to_byte(MsgType::LogsRequest), 2,
                            encode(LogsRequest{"quiet", 0, true, 0, 0})));
    const auto answer = c.read(20s);
    REQUIRE(answer);
    CHECK(answer->header.seq == 1);
    const auto snapshot = c.read(20s);
    REQUIRE(snapshot);
    CHECK(snapshot->header.seq == 2);
    CHECK(other_connections(d) == 1);
  }
  // The quiet process never writes again: only watching the connection can tell it is gone.
  CHECK(wait_until([&] { return other_connections(d) == 0; }, 10s));
}

namespace {

// Sends `bytes` in pieces of `piece`, waiting `interval` (less than the frame timeout)
// after each one for the server to close the connection. Returns how many bytes had gone
// when it did, or bytes.size() when it never did.
std::size_t drip_until_closed(RawConn& c, const std::string& bytes, std::size_t piece,
                              std::chrono::milliseconds interval) {
  std::size_t sent = 0;
  while (sent < bytes.size()) {
    const std::string next = bytes.substr(sent, piece);
    if (!c.send_within(next, 5s)) return sent;
    sent += next.size();
    if (c.closed_by_server(interval)) return sent;
  }
  return sent;
}

}  // namespace

TEST_CASE("a frame header dripped slower than the frame timeout allows is closed",
          "[defects][timeouts]") {
  Mgmtd d(big_and_quiet(10) + "limits:\n  frame_timeout: 1s\n  idle_timeout: 1h\n");
  RawConn c(d.socket());
  const std::string frame =
      make_frame(to_byte(MsgType::StatusRequest), 1, encode(StatusRequest{"quiet"}));
  // Each byte comes well within the timeout of the previous one, but the header as a whole
  // takes far longer than it.
  const std::size_t sent = drip_until_closed(c, frame.substr(0, kHeaderSize), 1, 400ms);
  CHECK(sent < kHeaderSize);
  CHECK(wait_until([&] { return d.log().find("frame timeout") != std::string::npos; }));
  CHECK(metric(d, "mgmtd_timeouts_total") == 1);
}

TEST_CASE("an oversized payload being skipped must also arrive within the frame timeout",
          "[defects][timeouts]") {
  Mgmtd d(big_and_quiet(10) + "limits:\n  frame_timeout: 1s\n  max_request: 1KiB\n");
  RawConn c(d.socket());
  // Over max_request: the server reads and discards it, 4 KiB at a time.
  const std::string frame =
      make_frame(to_byte(MsgType::StatusRequest), 1, std::string(64 * 1024, 'x'));
  const std::size_t sent = drip_until_closed(c, frame, 4096, 400ms);
  CHECK(sent < frame.size());
}

namespace {

// Lines of mgmtd's log that contain `needle`.
std::vector<std::string> log_lines(const Mgmtd& d, const std::string& needle) {
  std::vector<std::string> out;
  const std::string log = d.log();
  std::size_t at = 0;
  while (at < log.size()) {
    std::size_t end = log.find('\n', at);
    if (end == std::string::npos) end = log.size();
    const std::string line = log.substr(at, end - at);
    if (line.find(needle) != std::string::npos) out.push_back(line);
    at = end + 1;
  }
  return out;
}

// The sum of N over the summary lines "N more like this in the last second (<what>...".
std::uint64_t summarised(const Mgmtd& d, const std::string& what) {
  const std::string marker = " more like this in the last second (" + what;
  std::uint64_t sum = 0;
  for (const std::string& line : log_lines(d, marker)) {
    std::size_t end = line.find(marker);
    std::size_t begin = end;
    while (begin > 0 && std::isdigit(static_cast<unsigned char>(line[begin - 1]))) --begin;
    if (begin < end) sum += std::stoull(line.substr(begin, end - begin));
  }
  return sum;
}

// Opens a connection to `socket` and sends `bytes`; closes it at once.
void connect_and_send(const std::string& socket, const std::string& bytes) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, socket.c_str(), sizeof addr.sun_path - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    [[maybe_unused]] const auto n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
  }
  ::close(fd);
}

}  // namespace

TEST_CASE("a flood of bad headers is logged a few lines a second plus a count",
          "[defects][log]") {
  Mgmtd d(big_and_quiet(10));
  constexpr std::uint64_t kConnections = 2000;
  const std::string garbage(kHeaderSize, 'G');
  const auto began = std::chrono::steady_clock::now();
  for (std::uint64_t i = 0; i < kConnections; ++i) connect_and_send(d.socket(), garbage);
  REQUIRE(wait_until(
      [&] { return metric(d, "mgmtd_bad_frames_total") == static_cast<long>(kConnections); },
      60s));
  // The flood lasted this many whole seconds at most; each second logs 5 lines of a kind.
  const auto seconds =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - began)
          .count() + 1;
  // Every bad header is accounted for: logged on its own line, or counted in a summary.
  const std::string kLine = "bad magic";
  CHECK(wait_until(
      [&] { return log_lines(d, kLine).size() + summarised(d, "bad frame header") == kConnections; },
      10s));
  const auto lines = log_lines(d, kLine).size();
  INFO(lines << " lines about bad magic, " << summarised(d, "bad frame header") << " summarised");
  CHECK(lines <= static_cast<std::size_t>(5 * (seconds + 1)));
  CHECK(summarised(d, "bad frame header") > 0);
}

namespace {

// Connections held open by a child process running as another user.
class ConnectionsAs {
 public:
  // Opens `n` connections as `uid`, one after the other; each asks for a status (answered:
  // it was accepted) and then subscribes to events, so it stays open.
  ConnectionsAs(uid_t uid, int n, const std::string& socket) {
    int result[2], hold[2];
    REQUIRE(::pipe(result) == 0);
    REQUIRE(::pipe(hold) == 0);
    pid_ = ::fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      ::close(result[0]);
      ::close(hold[1]);
      std::string out;
      std::vector<std::unique_ptr<RawConn>> conns;
      if (::setgroups(0, nullptr) != 0 || ::setgid(uid) != 0 || ::setuid(uid) != 0) {
        out = "setuid failed";
      } else {
        int accepted = 0;
        int refused = 0;
        for (int i = 0; i < n; ++i) {
          try {
            auto c = std::make_unique<RawConn>(socket);
            c->send(to_byte(MsgType::StatusRequest), encode(StatusRequest{"quiet"}));
            if (c->read(20s)) {
              c->send(to_byte(MsgType::EventsSubscribe), encode(EventsSubscribe{}));
              conns.push_back(std::move(c));
              ++accepted;
            } else {
              ++refused;
            }
          } catch (const std::exception&) {
            ++refused;
          }
        }
        out = std::to_string(accepted) + " " + std::to_string(refused);
      }
      (void)!::write(result[1], out.data(), out.size());
      ::close(result[1]);
      char c;
      (void)!::read(hold[0], &c, 1);  // until the test lets go
      ::_exit(0);
    }
    ::close(result[1]);
    ::close(hold[0]);
    hold_ = hold[1];
    char buf[64];
    ssize_t got;
    while ((got = ::read(result[0], buf, sizeof buf)) > 0) {
      report_.append(buf, static_cast<std::size_t>(got));
    }
    ::close(result[0]);
    std::sscanf(report_.c_str(), "%d %d", &accepted_, &refused_);
  }
  ~ConnectionsAs() {
    ::close(hold_);
    int status = 0;
    ::waitpid(pid_, &status, 0);
  }
  ConnectionsAs(const ConnectionsAs&) = delete;
  ConnectionsAs& operator=(const ConnectionsAs&) = delete;

  int accepted() const { return accepted_; }
  int refused() const { return refused_; }
  const std::string& report() const { return report_; }

 private:
  pid_t pid_ = -1;
  int hold_ = -1;
  std::string report_;
  int accepted_ = -1;
  int refused_ = -1;
};

}  // namespace

TEST_CASE("other users cannot take more than their share of connections, nor the owner's "
          "reserved ones",
          "[defects][access]") {
  if (::geteuid() != 0) {
    WARN("this test opens connections as other users and needs root");
    return;
  }
  Mgmtd d(big_and_quiet(10) +
              "limits:\n"
              "  max_connections: 30\n"
              "  max_connections_per_uid: 10\n"
              "  reserved_connections: 4\n"
              "access:\n"
              "  socket_mode: \"0666\"\n"
              "  rules:\n"
              "    - users: [nobody, \"4343\", \"4344\", \"4345\"]\n"
              "      allow: [read]\n",
          [](const std::string& socket) {
            ::chmod(std::filesystem::path(socket).parent_path().parent_path().c_str(), 0755);
          });
  REQUIRE(wait_until([&] { return other_connections(d) == 0; }));

  // One user past its cap.
  ConnectionsAs nobody(65534, 12, d.socket());
  INFO("nobody: " << nobody.report());
  CHECK(nobody.accepted() == 10);
  CHECK(nobody.refused() == 2);
  // Others fill what is left but the reserved slots (30 - 4 = 26, so 16 more at most).
  ConnectionsAs second(4343, 10, d.socket());
  INFO("4343: " << second.report());
  CHECK(second.accepted() == 10);
  ConnectionsAs third(4344, 10, d.socket());
  INFO("4344: " << third.report());
  CHECK(third.accepted() <= 6);
  CHECK(third.refused() >= 4);
  ConnectionsAs fourth(4345, 1, d.socket());
  CHECK(fourth.refused() == 1);

  // The owner still gets in.
  const auto list = d.ctl({"list"});
  INFO(list.err);
  CHECK(list.exit_code == 0);
  CHECK_THAT(list.out, Catch::Contains("quiet"));
  CHECK_THAT(d.log(), Catch::Contains("limits.max_connections_per_uid") &&
                          Catch::Contains("limits.reserved_connections"));
  CHECK(metric(d, "mgmtd_connections_refused_total") >= 2 + 4 + 1);
}

TEST_CASE("a stream client that keeps sending data is closed", "[defects][streaming]") {
  Mgmtd d(big_and_quiet(10));
  RawConn sub(d.socket());
  sub.send(to_byte(MsgType::EventsSubscribe), encode(EventsSubscribe{}));
  confirm_subscription(d.socket(), sub);
  // A little is tolerated: the stream goes on (an event still arrives).
  sub.send_bytes(std::string(1024, 'z'));
  REQUIRE(wait_until([&] {
    RawConn ctl(d.socket());
    ctl.send(to_byte(MsgType::StopRequest), encode(IdRequest{"quiet"}));
    return ctl.read().has_value();
  }));
  const auto event = sub.read(10s);
  REQUIRE(event);
  CHECK(int(event->header.type) == 0xA7);
  // Far more than any client has a reason to send on a stream.
  const std::string chunk(16 * 1024, 'z');
  bool closed = false;
  for (int i = 0; i < 64 && !closed; ++i) {
    try {
      if (!sub.send_within(chunk, 5s)) closed = true;
    } catch (const std::exception&) {
      closed = true;  // reset by the server mid-send
    }
  }
  CHECK((closed || sub.closed_by_server(10s)));
  CHECK(wait_until(
      [&] { return d.log().find("stream client sent") != std::string::npos; }, 10s));
}
