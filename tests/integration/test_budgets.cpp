// Server-wide bounds under misbehaving clients: the memory that all connections' queued
// answers may take (limits.max_queue_total), the disk that all spill files may take
// (streams.spill_quota_total), and the caps on what a subscription keeps for its life.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>
#include <vector>

#include "harness.hpp"
#include "wait.hpp"

using namespace mgmt;
using namespace mgmt::test;
namespace fs = std::filesystem;

namespace {

// A client that writes list requests back to back and never reads an answer.
class Unread {
 public:
  explicit Unread(const std::string& socket) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, socket.c_str(), sizeof addr.sun_path - 1);
    REQUIRE(::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  }
  ~Unread() { ::close(fd_); }
  Unread(const Unread&) = delete;
  Unread& operator=(const Unread&) = delete;

  // Sends what the socket takes; true if it took anything.
  bool push() {
    static const std::string burst = [] {
      std::string b;
      for (int i = 0; i < 64; ++i) b += make_frame(to_byte(MsgType::ListRequest), 0, {});
      return b;
    }();
    bool any = false;
    while (true) {
      const std::size_t off = sent_ % burst.size();
      const ssize_t n = ::send(fd_, burst.data() + off, burst.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return any;
      sent_ += static_cast<std::size_t>(n);
      any = true;
    }
  }

 private:
  int fd_ = -1;
  std::size_t sent_ = 0;
};

// Pushes requests on every client until none takes a byte for `quiet`: by then the server
// reads none of them (each paused, its socket full).
void fill(std::vector<std::unique_ptr<Unread>>& clients, std::chrono::milliseconds quiet) {
  auto last = std::chrono::steady_clock::now();
  const auto give_up = last + 120s;
  while (std::chrono::steady_clock::now() - last < quiet) {
    REQUIRE(std::chrono::steady_clock::now() < give_up);
    bool any = false;
    for (auto& c : clients) any = c->push() || any;
    if (any) {
      last = std::chrono::steady_clock::now();
    } else {
      std::this_thread::sleep_for(5ms);
    }
  }
}

// A counter of `mgmtctl metrics`: the first sample whose line starts with `prefix`.
double metric(const Mgmtd& d, const std::string& prefix) {
  const auto r = d.ctl({"metrics"});
  REQUIRE(r.exit_code == 0);
  std::istringstream in(r.out);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(prefix, 0) == 0) return std::stod(line.substr(line.rfind(' ') + 1));
  }
  FAIL("no " << prefix << " in the metrics");
  return 0;
}

double lists_served(const Mgmtd& d) {
  return metric(d, "mgmtd_requests_total{type=\"0xa0\"");
}

std::uint64_t wmem_default() {
  std::ifstream in("/proc/sys/net/core/wmem_default");
  std::uint64_t v = 212992;
  in >> v;
  return v;
}

std::string processes(int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s += probe_process("probe-with-a-longish-name-" + std::to_string(i));
  return s;
}

const std::string kMetricsCommand =
    "commands:\n  0xAE: {plugin: metrics, right: read, config: {listen: \"off\"}}\n";

}  // namespace

TEST_CASE("clients that never read their answers are held together to limits.max_queue_total",
          "[budgets][hostile]") {
  constexpr std::uint64_t kBudget = 1u << 20;
  constexpr std::uint64_t kMaxQueue = 1u << 20;  // alone, a client pauses at half of it
  constexpr int kClients = 24;
  Mgmtd d("backend:\n  plugin: process\n  config:\n    processes:\n" + processes(30) +
          kMetricsCommand + "limits:\n  max_queue: 1MiB\n  max_queue_total: 1MiB\n");
  // The size of one answer, as each client is owed it.
  RawConn probe(d.socket());
  probe.send(to_byte(MsgType::ListRequest), "");
  const auto first = probe.read(10s);
  REQUIRE(first);
  const std::uint64_t answer = kHeaderSize + first->payload.size();
  REQUIRE(answer > 2000);

  std::vector<std::unique_ptr<Unread>> clients;
  for (int i = 0; i < kClients; ++i) clients.push_back(std::make_unique<Unread>(d.socket()));
  fill(clients, 1500ms);

  // Every answer served is held by mgmtd (queued) or by the kernel (the socket's send
  // buffer, wmem_default at most): without a server-wide budget each client took its own
  // max_queue / 2, 12 MiB here; with it, all together take the budget, each past it by at
  // most the answer that crossed it.
  const double served = lists_served(d) - 1;
  const double owed = served * static_cast<double>(answer);
  const double bound = static_cast<double>(kBudget) +
                       kClients * static_cast<double>(wmem_default() + answer);
  INFO("answers served " << served << " of " << answer << " bytes: " << owed << " bytes owed, bound "
                         << bound);
  CHECK(owed <= bound);
  CHECK(owed >= static_cast<double>(kBudget));
  CHECK_THAT(d.log(), Catch::Contains("limits.max_queue_total"));
  // A client that reads its answers is served meanwhile.
  const auto list = d.ctl({"list"});
  CHECK(list.exit_code == 0);

  // They leave: their share of the budget is given back. A new client alone gets its own
  // max_queue / 2 again (a budget left charged would stop it at the kernel's buffer).
  clients.clear();
  // Open: the probe and the metrics request itself.
  REQUIRE(wait_until([&] { return metric(d, "mgmtd_connections_open") <= 2; }, 20s));
  const double before = lists_served(d);
  clients.push_back(std::make_unique<Unread>(d.socket()));
  fill(clients, 1500ms);
  const double alone = (lists_served(d) - before - 1) * static_cast<double>(answer);
  INFO("one client alone: " << alone << " bytes owed");
  CHECK(alone >= static_cast<double>(kMaxQueue / 2));
}

namespace {

std::string flood_backend(const std::string& config) {
  return "backend:\n  plugin: flood\n  config:\n" + config;
}

void start(const Mgmtd& d, const std::string& what) {
  RawConn c(d.socket());
  c.send(to_byte(MsgType::StartRequest), encode(IdRequest{what}));
  auto f = c.read(10s);
  REQUIRE(f);
  REQUIRE(as_status(*f).err.empty());
}

std::optional<EventsStream> next_event(RawConn& c, std::chrono::milliseconds timeout = 10s) {
  auto f = c.read(timeout);
  if (!f) return std::nullopt;
  REQUIRE(int(f->header.type) == 0xA7);
  EventsStream e;
  REQUIRE(decode(f->payload, e).empty());
  return e;
}

std::uint64_t number_in(const std::string& summary) {
  return std::stoull(summary.substr(summary.find(' ') + 1));
}

// Waits until the subscription on `c` is live (a `flood:0` burst's bench.done arrives).
void await_live(const Mgmtd& d, RawConn& c) {
  REQUIRE(wait_until(
      [&] {
        start(d, "flood:0");
        while (auto e = next_event(c, 500ms)) {
          if (e->t == "bench.done") return true;
        }
        return false;
      },
      30s));
}

std::uintmax_t spill_bytes(const Mgmtd& d) {
  std::uintmax_t n = 0;
  std::error_code ec;
  for (fs::directory_iterator it(d.dir().file("run/spill"), ec), end; !ec && it != end;
       it.increment(ec)) {
    std::error_code size_ec;
    const auto size = fs::file_size(it->path(), size_ec);
    if (!size_ec && it->path().extension() == ".spill") n += size;
  }
  return n;
}

}  // namespace

TEST_CASE("all spill files together stay within streams.spill_quota_total, readers are told "
          "what they lost",
          "[budgets][streaming]") {
  constexpr std::uintmax_t kTotal = 2u << 20;
  Mgmtd d(flood_backend("    summary_pad: 200\n") +
          "limits:\n  max_queue: 64KiB\nstreams:\n  spill_quota: 2MiB\n  spill_quota_total: 2MiB\n");
  constexpr int kReaders = 4;
  std::vector<std::unique_ptr<RawConn>> readers;
  for (int i = 0; i < kReaders; ++i) {
    readers.push_back(std::make_unique<RawConn>(d.socket()));
    readers.back()->send(to_byte(MsgType::EventsSubscribe), encode(EventsSubscribe{}));
    await_live(d, *readers.back());
  }
  // ~260 bytes an event: 4 MB for each reader, which alone its quota would let spill 2 MiB
  // of (8 MiB in all without the total).
  constexpr std::uint64_t kCount = 16000;
  std::atomic<bool> done{false};
  std::atomic<std::uintmax_t> peak{0};
  std::thread watch([&] {
    while (!done.load()) {
      peak = std::max(peak.load(), spill_bytes(d));
      std::this_thread::sleep_for(2ms);
    }
  });
  start(d, "flood:" + std::to_string(kCount));
  REQUIRE(wait_until(
      [&] {
        RawConn c(d.socket());
        c.send(to_byte(MsgType::StatusRequest), encode(StatusRequest{"flood"}));
        auto f = c.read(10s);
        return f && as_status(*f).entry.state == "stopped";
      },
      60s));
  const std::uintmax_t at_end = spill_bytes(d);
  done = true;
  watch.join();
  INFO("spill files: peak " << peak.load() << " bytes, " << at_end << " at the end of the burst");
  CHECK(at_end > kTotal / 2);  // they did spill
  CHECK(peak.load() <= kTotal);
  CHECK(at_end <= kTotal);

  // Each reader now drains: every event of the burst (its bench.done included), or a
  // notice counting it.
  for (auto& r : readers) {
    std::uint64_t delivered = 0, dropped = 0, notices = 0;
    while (delivered + dropped < kCount + 1) {
      auto e = next_event(*r, 30s);
      REQUIRE(e);
      if (e->t == "reliability.backpressure_stall") {
        ++notices;
        dropped += number_in("x " + e->sum.substr(8));
        continue;
      }
      if (e->t == "bench.done" && number_in(e->sum) < kCount) continue;  // of the warm-up
      ++delivered;
    }
    CHECK(notices >= 1);
    CHECK(delivered + dropped == kCount + 1);
  }
  CHECK_THAT(d.log(), Catch::Contains("streams.spill_quota_total"));
}

TEST_CASE("an events filter longer than its caps is refused with an answer naming the cap",
          "[budgets][events]") {
  Mgmtd d("backend:\n  plugin: process\n  config:\n    processes:\n" + probe_process());
  RawConn c(d.socket());
  auto refused = [&](const EventsSubscribe& req) {
    c.send(to_byte(MsgType::EventsSubscribe), encode(req));
    const auto f = c.read(10s);
    REQUIRE(f);
    return as_status(*f).err;
  };
  std::vector<std::string> pids;
  for (int i = 0; i < 1025; ++i) pids.push_back("p" + std::to_string(i));
  CHECK_THAT(refused({pids, {}}), Catch::Contains("too many pids") &&
                                      Catch::Contains("1025") && Catch::Contains("at most 1024"));
  std::vector<std::string> types;
  for (int i = 0; i < 65; ++i) types.push_back("t" + std::to_string(i));
  CHECK_THAT(refused({{}, types}), Catch::Contains("too many types") &&
                                       Catch::Contains("at most 64"));
  std::vector<std::string> long_names(100, std::string(400, 'x'));
  CHECK_THAT(refused({long_names, {}}), Catch::Contains("at most 32768"));

  // The connection is still usable: the largest filter allowed matches exactly.
  pids.resize(1023);
  pids.push_back("probe");
  c.send(to_byte(MsgType::EventsSubscribe), encode(EventsSubscribe{pids, {}}));
  confirm_subscription(d.socket(), c);
}

TEST_CASE("a log follow request padded past 16 KiB is refused", "[budgets][logs]") {
  Mgmtd d("backend:\n  plugin: process\n  config:\n    processes:\n" + probe_process());
  RawConn c(d.socket());
  c.send(to_byte(MsgType::LogsRequest), encode(LogsRequest{std::string(20000, 'p'), 0, true, 0, 0}));
  const auto f = c.read(10s);
  REQUIRE(f);
  LogsStream s;
  REQUIRE(decode(f->payload, s).empty());
  CHECK(s.eof);
  CHECK_THAT(s.err, Catch::Contains("at most 16384"));
}
