// mgmt-bench-streams: starts mgmtd (beside this binary) on a private socket and measures
//   - events: N subscribers (1, 10, 100) fed by the `flood` backend; per subscriber the
//     events/s from the start request to its last event, sequence gaps (lost events) and
//     stall notices; mgmtd's peak private memory (RssAnon);
//   - follow: one `logs -f` follower of a child writing as fast as it can
//     (`head -c SIZE /dev/zero`): MB/s and mgmtd's peak RssAnon.
// Prints a Markdown table. Options: --events N (per burst, default 200000),
// --follow-bytes N (default 1 GiB), --subs 1,10,100.
//
// The clients share the machine with the server, so they are kept cheap: frames are read in
// large gulps and their maps scanned in place (MapScanner) rather than decoded into objects,
// which had made the clients, not mgmtd, the bottleneck with 10 and more subscribers. A
// follow that loses bytes (past the spill quota) ends once every byte has arrived or been
// reported lost by a stall notice.
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <csignal>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "mgmt/messages.hpp"
#include "mgmt/wire.hpp"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

std::string self_dir() { return fs::read_symlink("/proc/self/exe").parent_path().string(); }

// The server's private resident memory (heap, stacks, queues): what a backlog costs. VmRSS
// would add clean code and library pages the kernel can drop and other processes share.
std::uint64_t rss_anon_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("RssAnon:", 0) == 0) return std::stoull(line.substr(8));
  }
  return 0;
}

int connect_to(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

void send_all(int fd, const std::string& s) {
  std::size_t off = 0;
  while (off < s.size()) {
    const ssize_t n = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n <= 0) throw std::runtime_error("send failed");
    off += static_cast<std::size_t>(n);
  }
}

// Buffered frame reader.
class Reader {
 public:
  explicit Reader(int fd) : fd_(fd), buf_(1 << 20) {}
  // Next frame's type and payload view (valid until the next call); false at EOF.
  bool next(std::uint8_t& type, std::string_view& payload) {
    while (true) {
      const std::size_t have = end_ - begin_;
      std::size_t need = mgmt::kHeaderSize;  // bytes of the next frame not yet buffered
      if (have >= mgmt::kHeaderSize) {
        mgmt::FrameHeader h;
        if (mgmt::parse_header(reinterpret_cast<const std::uint8_t*>(&buf_[begin_]), h) !=
            mgmt::HeaderError::none) {
          throw std::runtime_error("bad header");
        }
        const std::size_t total = mgmt::kHeaderSize + h.length;
        if (have >= total) {
          type = h.type;
          payload = std::string_view(&buf_[begin_ + mgmt::kHeaderSize], h.length);
          begin_ += total;
          return true;
        }
        need = total;
        if (total > buf_.size()) buf_.resize(total);
      }
      // The unparsed tail moves to the front only when the space after it runs short (not
      // before every read: with 64 KiB log frames that copied most of the stream again).
      if (have == 0) {
        begin_ = end_ = 0;
      } else if (begin_ > 0 && buf_.size() - begin_ < std::max<std::size_t>(need, 128 << 10)) {
        std::memmove(buf_.data(), &buf_[begin_], have);
        begin_ = 0;
        end_ = have;
      }
      const ssize_t n = ::recv(fd_, &buf_[end_], buf_.size() - end_, 0);
      if (n <= 0) return false;
      end_ += static_cast<std::size_t>(n);
    }
  }

 private:
  int fd_;
  std::vector<char> buf_;
  std::size_t begin_ = 0, end_ = 0;
};

struct Server {
  pid_t pid = -1;
  std::string dir, socket;
  ~Server() { stop(); }
  void start(const std::string& backend_yaml) {
    char tmpl[] = "/tmp/mgmt-bench-streams-XXXXXX";
    dir = ::mkdtemp(tmpl);
    socket = dir + "/manager.sock";
    std::ofstream(dir + "/mgmt.yaml") << "server:\n  socket: " << socket
                                      << "\n  write_hint: false\n"
                                      << backend_yaml << "log:\n  level: warn\n";
    const std::string exe = self_dir() + "/mgmtd";
    pid = ::fork();
    if (pid == 0) {
      const std::string cfg = dir + "/mgmt.yaml";
      ::execl(exe.c_str(), exe.c_str(), "-c", cfg.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    for (int i = 0; i < 1000; ++i) {
      const int fd = connect_to(socket);
      if (fd >= 0) {
        ::close(fd);
        return;
      }
      std::this_thread::sleep_for(10ms);
    }
    throw std::runtime_error("mgmtd did not start");
  }
  void stop() {
    if (pid > 0) {
      ::kill(pid, SIGTERM);
      ::waitpid(pid, nullptr, 0);
      pid = -1;
      std::error_code ec;
      fs::remove_all(dir, ec);
    }
  }
  void request(std::uint8_t type, const std::string& payload) const {
    const int fd = connect_to(socket);
    send_all(fd, mgmt::make_frame(type, 1, payload));
    Reader r(fd);
    std::uint8_t t;
    std::string_view p;
    r.next(t, p);
    ::close(fd);
  }
  void start_id(const std::string& id) const {
    request(mgmt::to_byte(mgmt::MsgType::StartRequest), mgmt::encode(mgmt::IdRequest{id}));
  }
};

struct RssSampler {
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> peak{0};
  std::thread t;
  explicit RssSampler(pid_t pid) {
    t = std::thread([this, pid] {
      while (!stop.load()) {
        peak = std::max<std::uint64_t>(peak.load(), rss_anon_kib(pid));
        std::this_thread::sleep_for(10ms);
      }
    });
  }
  std::uint64_t finish() {
    stop = true;
    t.join();
    return peak.load();
  }
};

// The number after the first space: "seq 12" → 12, "dropped 12 bytes" → 12.
std::uint64_t number_in(std::string_view s) {
  const std::size_t sp = s.find(' ');
  std::uint64_t v = 0;
  if (sp == std::string_view::npos ||
      std::from_chars(s.data() + sp + 1, s.data() + s.size(), v).ec != std::errc()) {
    throw std::runtime_error("no number in \"" + std::string(s.substr(0, 80)) + "\"");
  }
  return v;
}

// The fields of a MessagePack map with str keys, as views into the payload, without the
// object tree (and its allocations) that mgmt::decode builds: decoding that way, the
// benchmark's own clients, not the server, were the bottleneck on a 2-core machine. False
// on anything unexpected; the callers then fall back to mgmt::decode.
struct Field {
  enum Kind { nil, boolean, uint, sint, str, bin } kind = nil;
  std::string_view s;
  std::uint64_t u = 0;
};

class MapScanner {
 public:
  explicit MapScanner(std::string_view d)
      : p_(reinterpret_cast<const std::uint8_t*>(d.data())), end_(p_ + d.size()) {}

  template <class F>
  bool fields(F&& f) {
    std::uint64_t n = 0;
    if (!need(1)) return false;
    const std::uint8_t b = *p_++;
    if ((b & 0xf0) == 0x80) {
      n = b & 0x0f;
    } else if (b == 0xde && need(2)) {
      n = be(2);
    } else if (b == 0xdf && need(4)) {
      n = be(4);
    } else {
      return false;
    }
    for (std::uint64_t i = 0; i < n; ++i) {
      Field k, v;
      if (!value(k) || k.kind != Field::str || !value(v)) return false;
      f(k.s, v);
    }
    return p_ == end_;
  }

 private:
  bool need(std::size_t n) const { return static_cast<std::size_t>(end_ - p_) >= n; }
  std::uint64_t be(int n) {
    std::uint64_t v = 0;
    for (int i = 0; i < n; ++i) v = (v << 8) | *p_++;
    return v;
  }
  bool bytes(Field& f, Field::Kind k, std::size_t len) {
    if (!need(len)) return false;
    f.kind = k;
    f.s = std::string_view(reinterpret_cast<const char*>(p_), len);
    p_ += len;
    return true;
  }
  bool sized(Field& f, Field::Kind k, int len_bytes) {
    if (!need(static_cast<std::size_t>(len_bytes))) return false;
    return bytes(f, k, static_cast<std::size_t>(be(len_bytes)));
  }
  bool number(Field& f, Field::Kind k, int n) {
    if (!need(static_cast<std::size_t>(n))) return false;
    f.kind = k;
    f.u = be(n);
    if (k == Field::sint && n < 8) {  // sign-extend
      const int shift = 64 - 8 * n;
      f.u = static_cast<std::uint64_t>(static_cast<std::int64_t>(f.u << shift) >> shift);
    }
    return true;
  }
  bool value(Field& f) {
    if (!need(1)) return false;
    const std::uint8_t b = *p_++;
    if (b <= 0x7f) {
      f.kind = Field::uint;
      f.u = b;
      return true;
    }
    if (b >= 0xe0) {
      f.kind = Field::sint;
      f.u = static_cast<std::uint64_t>(static_cast<std::int64_t>(static_cast<std::int8_t>(b)));
      return true;
    }
    if ((b & 0xe0) == 0xa0) return bytes(f, Field::str, b & 0x1f);
    switch (b) {
      case 0xc0: f.kind = Field::nil; return true;
      case 0xc2: f.kind = Field::boolean; f.u = 0; return true;
      case 0xc3: f.kind = Field::boolean; f.u = 1; return true;
      case 0xc4: return sized(f, Field::bin, 1);
      case 0xc5: return sized(f, Field::bin, 2);
      case 0xc6: return sized(f, Field::bin, 4);
      case 0xd9: return sized(f, Field::str, 1);
      case 0xda: return sized(f, Field::str, 2);
      case 0xdb: return sized(f, Field::str, 4);
      case 0xcc: return number(f, Field::uint, 1);
      case 0xcd: return number(f, Field::uint, 2);
      case 0xce: return number(f, Field::uint, 4);
      case 0xcf: return number(f, Field::uint, 8);
      case 0xd0: return number(f, Field::sint, 1);
      case 0xd1: return number(f, Field::sint, 2);
      case 0xd2: return number(f, Field::sint, 4);
      case 0xd3: return number(f, Field::sint, 8);
      default: return false;
    }
  }

  const std::uint8_t* p_;
  const std::uint8_t* end_;
};

// The `t` and `sum` of an EventsStream payload; false when it does not decode.
bool event_fields(std::string_view payload, std::string_view& t, std::string_view& sum,
                  mgmt::EventsStream& scratch) {
  t = sum = {};
  const bool ok = MapScanner(payload).fields([&](std::string_view k, const Field& v) {
    if (v.kind != Field::str && v.kind != Field::bin) return;
    if (k == "t") t = v.s;
    else if (k == "sum") sum = v.s;
  });
  if (ok) return true;
  if (!mgmt::decode(payload, scratch).empty()) return false;
  t = scratch.t;
  sum = scratch.sum;
  return true;
}

// The `d` of a LogsStream payload; false when it does not decode.
bool log_data(std::string_view payload, std::string_view& d, mgmt::LogsStream& scratch) {
  d = {};
  const bool ok = MapScanner(payload).fields([&](std::string_view k, const Field& v) {
    if (k == "d" && (v.kind == Field::str || v.kind == Field::bin)) d = v.s;
  });
  if (ok) return true;
  if (!mgmt::decode(payload, scratch).empty()) return false;
  d = scratch.d;
  return true;
}

struct SubResult {
  std::uint64_t events = 0, gaps = 0, stalls = 0;
  Clock::time_point end;
};

void bench_events(std::size_t nsubs, std::uint64_t count) {
  Server s;
  s.start("backend:\n  plugin: flood\n");
  std::vector<int> fds;
  for (std::size_t i = 0; i < nsubs; ++i) {
    const int fd = connect_to(s.socket);
    send_all(fd, mgmt::make_frame(mgmt::to_byte(mgmt::MsgType::EventsSubscribe), 1,
                                  mgmt::encode(mgmt::EventsSubscribe{})));
    fds.push_back(fd);
  }
  // Warm-up: empty bursts until every subscriber has seen one (its subscription is live).
  std::vector<SubResult> res(nsubs);
  std::vector<std::unique_ptr<Reader>> readers;
  for (int fd : fds) readers.push_back(std::make_unique<Reader>(fd));
  for (std::size_t i = 0; i < nsubs; ++i) {
    while (true) {
      s.start_id("flood:0");
      pollfd p{fds[i], POLLIN, 0};
      if (::poll(&p, 1, 200) <= 0) continue;
      std::uint8_t t;
      std::string_view pl;
      if (!readers[i]->next(t, pl)) throw std::runtime_error("subscriber closed");
      break;
    }
  }
  RssSampler rss(s.pid);
  const auto t0 = Clock::now();
  s.start_id("flood:" + std::to_string(count));
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < nsubs; ++i) {
    threads.emplace_back([&, i] {
      std::uint64_t next = 0;
      std::uint8_t t;
      std::string_view pl, type, sum;
      mgmt::EventsStream e;
      while (readers[i]->next(t, pl)) {
        if (!event_fields(pl, type, sum, e)) continue;
        if (type == "bench.done") {
          if (number_in(sum) == count) break;
          continue;
        }
        if (type == "reliability.backpressure_stall") {
          ++res[i].stalls;
          continue;
        }
        const std::uint64_t n = number_in(sum);
        if (n != next) res[i].gaps += n > next ? n - next : 1;
        next = n + 1;
        ++res[i].events;
      }
      res[i].gaps += count - std::min(count, next);
      res[i].end = Clock::now();
    });
  }
  for (auto& t : threads) t.join();
  const std::uint64_t peak = rss.finish();
  double min_rate = 1e18, sum_rate = 0;
  std::uint64_t lost = 0, stalls = 0;
  for (const auto& r : res) {
    const double secs = std::chrono::duration<double>(r.end - t0).count();
    const double rate = static_cast<double>(r.events) / secs;
    min_rate = std::min(min_rate, rate);
    sum_rate += rate;
    lost += r.gaps;
    stalls += r.stalls;
  }
  for (int fd : fds) ::close(fd);
  std::printf("| events, %zu subscriber%s | %llu per subscriber | %.0f | %.0f | %.0f | %llu | "
              "%llu | %.1f |\n",
              nsubs, nsubs == 1 ? "" : "s", static_cast<unsigned long long>(count),
              sum_rate / static_cast<double>(nsubs), min_rate, sum_rate,
              static_cast<unsigned long long>(lost), static_cast<unsigned long long>(stalls),
              static_cast<double>(peak) / 1024.0);
  std::fflush(stdout);
}

void bench_follow(std::uint64_t bytes) {
  Server s;
  s.start("backend:\n  plugin: process\n  config:\n    processes:\n"
          "      - id: gen\n        command: /bin/sh\n"
          "        args: [-c, 'head -c " + std::to_string(bytes) + " /dev/zero; exec sleep 600']\n"
          "        autostart: false\n        restart: never\n        stop_timeout: 1s\n");
  const int fd = connect_to(s.socket);
  send_all(fd, mgmt::make_frame(mgmt::to_byte(mgmt::MsgType::LogsRequest), 1,
                                mgmt::encode(mgmt::LogsRequest{"gen", 0, true, 0, 0})));
  Reader r(fd);
  std::uint8_t t;
  std::string_view pl;
  if (!r.next(t, pl)) throw std::runtime_error("no snapshot");
  RssSampler rss(s.pid);
  const auto t0 = Clock::now();
  s.start_id("gen");
  // A stall notice says how many bytes were dropped: the run ends when every byte has
  // arrived or been reported lost (rather than waiting forever for the lost ones).
  std::uint64_t got = 0, notices = 0, reported_lost = 0;
  mgmt::LogsStream m;
  std::string_view d;
  constexpr std::string_view kNotice = "\n[mgmtd: dropped ";
  while (got + reported_lost < bytes && r.next(t, pl)) {
    if (!log_data(pl, d, m)) continue;
    if (d.starts_with(kNotice)) {
      ++notices;
      reported_lost += number_in(d.substr(d.find("dropped ")));
      continue;
    }
    got += d.size();
  }
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  const std::uint64_t peak = rss.finish();
  ::close(fd);
  std::printf("| follow, 1 follower | %.0f MiB | %.0f MB/s | | | %llu bytes | %llu | %.1f |\n",
              static_cast<double>(bytes) / (1 << 20), static_cast<double>(got) / secs / 1e6,
              static_cast<unsigned long long>(bytes - got),
              static_cast<unsigned long long>(notices), static_cast<double>(peak) / 1024.0);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  std::uint64_t events = 200000;
  std::uint64_t follow_bytes = 1ull << 30;
  std::vector<std::size_t> subs = {1, 10, 100};
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--events") {
      events = std::stoull(v);
    } else if (a == "--follow-bytes") {
      follow_bytes = std::stoull(v);
    } else if (a == "--subs") {
      subs.clear();
      std::stringstream ss(v);
      std::string x;
      while (std::getline(ss, x, ',')) subs.push_back(std::stoul(x));
    } else {
      std::cerr << "usage: mgmt-bench-streams [--events N] [--follow-bytes N] [--subs 1,10,100]\n";
      return 2;
    }
  }
  try {
    std::printf("| run | load | events/s per subscriber (mean) | slowest subscriber | total "
                "events/s | lost | stall notices | mgmtd peak RssAnon (MiB) |\n");
    std::printf("|---|---|---|---|---|---|---|---|\n");
    for (std::size_t n : subs) bench_events(n, n >= 100 ? events / 4 : events);
    bench_follow(follow_bytes);
  } catch (const std::exception& e) {
    std::cerr << "mgmt-bench-streams: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
