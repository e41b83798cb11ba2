// mgmt-bench scale: mgmtd supervising N processes (/bin/sleep), measured end to end over
// its socket: spawn to all `running`, memory, idle CPU, list latency, a reload that changes
// one process, one event fanned out to many subscribers, and SIGTERM to exit.
//
// Every figure is timed here (CLOCK_MONOTONIC) from the protocol's own answers, so that the
// polling interval is the only imprecision (a few ms against seconds at 10,000 processes).
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>

#include "bench.hpp"
#include "mgmt/messages.hpp"

extern char** environ;

namespace mgmt::bench {

namespace {

std::string proc_id(long i) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "p%05ld", i);
  return buf;
}

// The whole mgmtd configuration: N idle processes; `changed` (an index, or -1) gets other
// args, which a reload must apply by restarting that one process only.
std::string make_config(const std::string& socket, long n, long changed, long max_conn) {
  std::ostringstream c;
  c << "server:\n  socket: " << socket << "\n  write_hint: false\n"
    << "backend:\n  plugin: process\n  config:\n"
    // /bin/sleep writes nothing; a small ring keeps the figures about supervision.
    << "    log_buffer: 64KiB\n    processes:\n";
  for (long i = 0; i < n; ++i) {
    c << "      - {id: " << proc_id(i) << ", command: /bin/sleep, args: [\""
      << (i == changed ? "100001" : "100000") << "\"], restart: never}\n";
  }
  c << "limits:\n  max_connections: " << max_conn << "\n  max_connections_per_uid: " << max_conn
    << "\nlog:\n  level: warn\n";
  return c.str();
}

// One request/answer connection.
class Control {
 public:
  explicit Control(const std::string& socket) : fd_(connect_unix(socket)) {}
  ~Control() { ::close(fd_); }
  Control(const Control&) = delete;
  Control& operator=(const Control&) = delete;

  // The answer's header and payload (a view into buf_, valid until the next call).
  std::string_view call(std::uint8_t type, std::string_view payload, FrameHeader& h) {
    std::string frame = make_frame(type, ++seq_, payload);
    write_all(fd_, frame.data(), frame.size());
    if (!read_frame(fd_, buf_, h)) throw std::runtime_error("mgmtd closed the connection");
    if (h.seq != seq_) throw std::runtime_error("answer out of order");
    return std::string_view(buf_).substr(kHeaderSize, h.length);
  }
  std::vector<Entry> list() {
    FrameHeader h;
    const auto payload = call(to_byte(MsgType::ListRequest), {}, h);
    ListResponse r;
    if (h.type != to_byte(MsgType::ListResponse) || !decode(payload, r).empty()) {
      throw std::runtime_error("bad list answer");
    }
    return std::move(r.entries);
  }
  // Start or stop; throws when mgmtd answers with an error.
  void op(MsgType t, const std::string& id) {
    FrameHeader h;
    const auto payload = call(to_byte(t), encode(IdRequest{id}), h);
    StatusResponse r;
    if (h.type != to_byte(MsgType::StatusResponse) || !decode(payload, r).empty()) {
      throw std::runtime_error("bad start/stop answer");
    }
    if (!r.err.empty()) throw std::runtime_error(id + ": " + r.err);
  }

 private:
  int fd_;
  std::uint64_t seq_ = 0;
  std::string buf_;
};

long count_running(const std::vector<Entry>& es) {
  return std::count_if(es.begin(), es.end(), [](const Entry& e) { return e.state == state::running; });
}

// utime + stime of every thread of `pid`, in clock ticks (fields 14 and 15 of its stat).
std::uint64_t cpu_ticks(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto close = s.rfind(')');
  if (close == std::string::npos) throw std::runtime_error("cannot read the stat of mgmtd");
  std::istringstream rest(s.substr(close + 2));  // from field 3 (state) on
  std::string f;
  std::uint64_t utime = 0, stime = 0;
  for (int field = 3; field <= 15 && rest >> f; ++field) {
    if (field == 14) utime = std::stoull(f);
    if (field == 15) stime = std::stoull(f);
  }
  return utime + stime;
}

std::int64_t realtime_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// Many event subscribers read by one epoll thread (this one).
class Subscribers {
 public:
  Subscribers(const std::string& socket, long n) : ep_(::epoll_create1(EPOLL_CLOEXEC)) {
    const std::string sub = make_frame(to_byte(MsgType::EventsSubscribe), 1, encode(EventsSubscribe{}));
    subs_.resize(static_cast<std::size_t>(n));
    for (std::size_t i = 0; i < subs_.size(); ++i) {
      Sub& s = subs_[i];
      s.fd = connect_unix(socket);
      write_all(s.fd, sub.data(), sub.size());
      ::fcntl(s.fd, F_SETFL, ::fcntl(s.fd, F_GETFL) | O_NONBLOCK);
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = i;
      if (::epoll_ctl(ep_, EPOLL_CTL_ADD, s.fd, &ev) != 0) throw std::runtime_error("epoll_ctl");
    }
  }
  ~Subscribers() {
    for (auto& s : subs_) ::close(s.fd);
    ::close(ep_);
  }
  Subscribers(const Subscribers&) = delete;
  Subscribers& operator=(const Subscribers&) = delete;

  // Reads what arrives for up to `ms` (or until `done()` holds); `on_event(i, e)` for each
  // event subscriber i receives.
  template <typename OnEvent, typename Done>
  void pump(int ms, OnEvent&& on_event, Done&& done) {
    const std::int64_t until = now_ns() + std::int64_t{ms} * 1'000'000;
    std::vector<epoll_event> evs(256);
    char chunk[65536];
    while (!done() && now_ns() < until) {
      const int n = ::epoll_wait(ep_, evs.data(), static_cast<int>(evs.size()), 10);
      for (int k = 0; k < n; ++k) {
        const std::size_t i = evs[static_cast<std::size_t>(k)].data.u64;
        Sub& s = subs_[i];
        for (;;) {
          const ssize_t r = ::recv(s.fd, chunk, sizeof chunk, 0);
          if (r < 0 && errno == EINTR) continue;
          if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
          if (r <= 0) throw std::runtime_error("mgmtd closed a subscription");
          s.buf.append(chunk, static_cast<std::size_t>(r));
        }
        std::size_t off = 0;
        FrameHeader h;
        while (s.buf.size() - off >= kHeaderSize) {
          if (parse_header(reinterpret_cast<const std::uint8_t*>(s.buf.data() + off), h) !=
              HeaderError::none) {
            throw std::runtime_error("bad frame on a subscription");
          }
          if (s.buf.size() - off < kHeaderSize + h.length) break;
          EventsStream e;
          if (h.type == to_byte(MsgType::EventsStream) &&
              decode(std::string_view(s.buf).substr(off + kHeaderSize, h.length), e).empty()) {
            on_event(i, e);
          }
          off += kHeaderSize + h.length;
        }
        s.buf.erase(0, off);
      }
    }
  }
  std::size_t size() const { return subs_.size(); }

 private:
  struct Sub {
    int fd = -1;
    std::string buf;
  };
  int ep_;
  std::vector<Sub> subs_;
};

pid_t spawn_mgmtd(const std::string& mgmtd, const std::string& config, const std::string& log) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  std::vector<char*> argv{const_cast<char*>(mgmtd.c_str()), const_cast<char*>("-c"),
                          const_cast<char*>(config.c_str()), nullptr};
  pid_t pid = 0;
  const int rc = ::posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) throw std::runtime_error("cannot run " + mgmtd + ": " + std::strerror(rc));
  return pid;
}

double ms_since(std::int64_t t0) { return static_cast<double>(now_ns() - t0) / 1e6; }

}  // namespace

int cmd_scale(const Args& a) {
  std::string mgmtd, dir;
  long n = 100, subs = 1000;
  double idle = 10, duration = 3, timeout = 600;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i] == "--mgmtd") mgmtd = take_value(a, i);
    else if (a[i] == "--dir") dir = take_value(a, i);
    else if (a[i] == "--procs" || a[i] == "-n") n = parse_long(take_value(a, i), "--procs");
    else if (a[i] == "--subscribers") subs = parse_long(take_value(a, i), "--subscribers");
    else if (a[i] == "--idle") idle = parse_double(take_value(a, i), "--idle");
    else if (a[i] == "--duration") duration = parse_double(take_value(a, i), "--duration");
    else if (a[i] == "--timeout") timeout = parse_double(take_value(a, i), "--timeout");
    else throw UsageError("scale: unknown option " + a[i]);
  }
  if (mgmtd.empty() || dir.empty()) throw UsageError("scale: --mgmtd and --dir are required");
  if (n < 3) throw UsageError("scale: --procs must be at least 3");
  const std::string socket = dir + "/mgmtd.sock";
  const std::string config = dir + "/mgmt.yaml";
  const long max_conn = subs + 64;
  const long changed = n / 2;
  const std::int64_t limit_ns = static_cast<std::int64_t>(timeout * 1e9);
  auto say = [](const std::string& s) { std::cerr << "scale: " << s << std::endl; };
  std::map<std::string, std::string> out;  // figure -> value, printed as key=value
  auto put = [&](const std::string& k, double v, int prec = 1) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f", prec, v);
    out[k] = buf;
  };

  write_file(config, make_config(socket, n, -1, max_conn));
  ::unlink(socket.c_str());

  // 1. Spawn → every process `running`, by list over the socket. The polling interval
  //    grows with the wait (1% of it, 5..50 ms): each list of 10,000 entries costs mgmtd
  //    some CPU, which polling too often would take from the start itself.
  const std::int64_t t_spawn = now_ns();
  const pid_t pid = spawn_mgmtd(mgmtd, config, dir + "/mgmtd.log");
  auto check_alive = [&] {
    int st = 0;
    if (::waitpid(pid, &st, WNOHANG) == pid) {
      throw std::runtime_error("mgmtd exited (see " + dir + "/mgmtd.log)");
    }
  };
  int probe_fd = -1;
  while ((probe_fd = try_connect_unix(socket)) < 0) {
    check_alive();
    if (now_ns() - t_spawn > limit_ns) throw std::runtime_error("mgmtd did not listen");
    sleep_ns(1'000'000);
  }
  ::close(probe_fd);
  put("listen_ms", ms_since(t_spawn));
  std::vector<Entry> entries;
  {
    Control ctl(socket);
    for (;;) {
      entries = ctl.list();
      if (static_cast<long>(entries.size()) == n && count_running(entries) == n) break;
      for (const auto& e : entries) {
        if (e.state == state::failed) throw std::runtime_error(e.id + " failed: " + e.last_error);
      }
      check_alive();
      if (now_ns() - t_spawn > limit_ns) throw std::runtime_error("not all running in time");
      sleep_ns(std::clamp<std::int64_t>((now_ns() - t_spawn) / 100, 5'000'000, 50'000'000));
    }
  }
  put("running_ms", ms_since(t_spawn));
  say("all " + std::to_string(n) + " running after " + out["running_ms"] + " ms");

  // 2. Idle: a second to settle, then CPU over `idle` seconds and memory.
  sleep_ns(1'000'000'000);
  const long hz = ::sysconf(_SC_CLK_TCK);
  const std::uint64_t c0 = cpu_ticks(pid);
  const std::int64_t ti = now_ns();
  sleep_ns(static_cast<std::int64_t>(idle * 1e9));
  const std::uint64_t c1 = cpu_ticks(pid);
  const double idle_s = static_cast<double>(now_ns() - ti) / 1e9;
  const double cpu_ms = static_cast<double>(c1 - c0) * 1000.0 / static_cast<double>(hz);
  put("idle_cpu_ms", cpu_ms, 0);
  put("idle_cpu_pct", cpu_ms / 10.0 / idle_s, 2);
  put("idle_s", idle_s, 1);
  const MemoryFigures mem = memory_of(pid);
  out["rss_anon_kib"] = std::to_string(mem.rss_anon_kib);
  out["pss_kib"] = std::to_string(mem.pss_kib);
  say("idle CPU " + out["idle_cpu_ms"] + " ms in " + out["idle_s"] + " s; RssAnon " +
      out["rss_anon_kib"] + " KiB, PSS " + out["pss_kib"] + " KiB");

  // 3. list latency, 1 and 4 clients.
  for (long c : {1L, 4L}) {
    const LoadStats st = run_load(socket, "list", "", c, duration, 0.5);
    if (st.errors != 0) throw std::runtime_error("list answered out of order");
    const std::string k = "list" + std::to_string(c);
    put(k + "_p50_us", st.p50_us);
    put(k + "_p99_us", st.p99_us);
    put(k + "_rps", static_cast<double>(st.requests) / st.seconds, 0);
    out["list_bytes"] = std::to_string(st.reply_bytes);
    say("list, " + std::to_string(c) + " client(s): p50 " + out[k + "_p50_us"] + " us, p99 " +
        out[k + "_p99_us"] + " us");
  }

  // 4. Reload changing one process's args: SIGHUP → that process running with a new pid,
  //    every other one with the pid it had.
  {
    Control ctl(socket);
    std::map<std::string, std::int64_t> before;
    for (const auto& e : ctl.list()) before[e.id] = e.pid;
    const std::string cid = proc_id(changed);
    write_file(config, make_config(socket, n, changed, max_conn));
    const std::int64_t t0 = now_ns();
    ::kill(pid, SIGHUP);
    for (;;) {
      entries = ctl.list();
      const auto it = std::find_if(entries.begin(), entries.end(), [&](const Entry& e) { return e.id == cid; });
      if (it != entries.end() && it->state == state::running && it->pid != before[cid] && it->pid > 0) break;
      check_alive();
      if (now_ns() - t0 > limit_ns) throw std::runtime_error("the reload did not restart " + cid);
      sleep_ns(1'000'000);
    }
    put("reload_ms", ms_since(t0));
    long others = 0;
    for (const auto& e : entries) others += e.id != cid && e.pid != before[e.id];
    out["reload_others_restarted"] = std::to_string(others);
    say("reload: " + cid + " restarted after " + out["reload_ms"] + " ms, " +
        std::to_string(others) + " others restarted");
  }

  // 5. One event to `subs` subscribers. Each subscription is confirmed live by a probe
  //    (events of process p00000, stopped and started until every subscriber has seen one);
  //    then p00001 is stopped and the time taken until every subscriber has its
  //    process.stopped event.
  if (subs > 0) {
    Control ctl(socket);
    Subscribers ss(socket, subs);
    const std::string probe = proc_id(0), target = proc_id(1);
    std::vector<bool> live(ss.size(), false);
    std::size_t nlive = 0;
    auto on_probe = [&](std::size_t i, const EventsStream& e) {
      if (e.pid == probe && !live[i]) {
        live[i] = true;
        ++nlive;
      }
    };
    const std::int64_t tp = now_ns();
    bool up = true;
    while (nlive < ss.size()) {
      ctl.op(up ? MsgType::StopRequest : MsgType::StartRequest, probe);
      up = !up;
      ss.pump(1000, on_probe, [&] { return nlive == ss.size(); });
      if (now_ns() - tp > limit_ns) throw std::runtime_error("subscriptions not live in time");
    }
    if (!up) ctl.op(MsgType::StartRequest, probe);
    ss.pump(200, [](std::size_t, const EventsStream&) {}, [] { return false; });  // quiet
    say(std::to_string(ss.size()) + " subscriptions live");

    std::vector<std::int64_t> got(ss.size(), 0);
    std::size_t ngot = 0;
    std::int64_t ev_ts = 0, real_last = 0, t0 = 0;
    const std::string stop = make_frame(to_byte(MsgType::StopRequest), 1000, encode(IdRequest{target}));
    {
      // Its answer is not waited for (it comes once the child is reaped): the events are.
      const int fd = connect_unix(socket);
      t0 = now_ns();
      write_all(fd, stop.data(), stop.size());
      ss.pump(static_cast<int>(timeout * 1000),
              [&](std::size_t i, const EventsStream& e) {
                if (e.pid != target || e.t != event::stopped || got[i] != 0) return;
                got[i] = now_ns();
                real_last = realtime_ns();
                ev_ts = e.ts;
                ++ngot;
              },
              [&] { return ngot == ss.size(); });
      ::close(fd);
    }
    if (ngot != ss.size()) throw std::runtime_error("not every subscriber got the event");
    std::sort(got.begin(), got.end());
    put("events_first_ms", static_cast<double>(got.front() - t0) / 1e6, 2);
    put("events_all_ms", static_cast<double>(got.back() - t0) / 1e6, 2);
    // From the event's timestamp (taken as mgmtd published it) to the last delivery.
    put("events_fanout_ms", static_cast<double>(real_last - ev_ts) / 1e6, 2);
    out["subscribers"] = std::to_string(ss.size());
    say("event to " + out["subscribers"] + " subscribers: first " + out["events_first_ms"] +
        " ms, all " + out["events_all_ms"] + " ms after the stop request (fan-out " +
        out["events_fanout_ms"] + " ms)");
  }

  // 6. SIGTERM → exit: every child stopped and reaped.
  const std::int64_t ts = now_ns();
  ::kill(pid, SIGTERM);
  int st = 0;
  while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  put("stop_ms", ms_since(ts));
  out["exit"] = std::to_string(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
  say("stopped after " + out["stop_ms"] + " ms");

  std::cout << "procs=" << n;
  for (const auto& [k, v] : out) std::cout << ' ' << k << '=' << v;
  std::cout << std::endl;
  return 0;
}

}  // namespace mgmt::bench
