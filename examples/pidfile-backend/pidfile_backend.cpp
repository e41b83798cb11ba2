// pidfile: a backend that supervises nothing itself. It reports, signals and stops daemons
// started elsewhere (by an init script, a container entrypoint, a cron job), found through
// a directory of pid files: <dir>/<id>.pid holds the daemon's pid.
//
//   backend:
//     plugin: /path/to/pidfile.so
//     config:
//       dir: /run/myapp          # required
//       stop_signal: TERM        # default TERM
//       stop_timeout: 10s        # then SIGKILL; 250ms, 5s, or a number of seconds
//
// - list/status: one entry per *.pid file. The state comes from /proc: `running` while the
//   pid exists (and is not a zombie), `stopped` once it is gone, `failed` when the pid file
//   is unreadable (last_error says why). RSS and the start time come from /proc too.
// - stop: stop_signal, then SIGKILL after stop_timeout; completes when the pid is gone.
//   The pid's start time is remembered, so a recycled pid is never mistaken for the daemon.
// - signal: any signal to the daemon or its process group (never to mgmtd's own group).
// - start, logs: refused with a readable error; the daemon is not ours to start or read.
// - events: process.stopping and process.stopped for the stops it performs.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <vector>

#include <spdlog/logger.h>

#include "mgmt/backend.hpp"
#include "mgmt/commands.hpp"  // signal_name()
#include "mgmt/log.hpp"       // mgmt::log::warn(): logs without fmt's engine in this .so
#include "mgmt/plugin.hpp"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::int64_t unix_nanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// What /proc says about a pid; nullopt when there is no such process.
struct ProcStat {
  char state = '?';            // R, S, D, Z, ...
  std::uint64_t starttime = 0;  // clock ticks after boot
  std::string comm;
};

std::optional<ProcStat> proc_stat(pid_t pid) {
  const std::string stat = slurp("/proc/" + std::to_string(pid) + "/stat");
  const auto open = stat.find('(');
  const auto close = stat.rfind(')');
  if (open == std::string::npos || close == std::string::npos || close < open) return std::nullopt;
  ProcStat s;
  s.comm = stat.substr(open + 1, close - open - 1);
  // Fields after the comm: state is field 3, starttime field 22.
  std::istringstream rest(stat.substr(close + 1));
  std::string field;
  for (int i = 3; i <= 22 && rest >> field; ++i) {
    if (i == 3) s.state = field.empty() ? '?' : field[0];
    if (i == 22) s.starttime = std::strtoull(field.c_str(), nullptr, 10);
  }
  return s;
}

bool alive(const std::optional<ProcStat>& s) { return s && s->state != 'Z' && s->state != 'X'; }

std::uint64_t rss_bytes(pid_t pid) {
  std::istringstream statm(slurp("/proc/" + std::to_string(pid) + "/statm"));
  std::uint64_t size = 0, resident = 0;
  if (!(statm >> size >> resident)) return 0;
  return resident * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
}

// Unix nanos of a process start (starttime is in clock ticks after boot).
std::int64_t started_at(std::uint64_t starttime) {
  static const std::int64_t boot_ns = [] {
    std::istringstream stat(slurp("/proc/stat"));
    std::string key;
    std::int64_t value = 0;
    while (stat >> key) {
      if (key == "btime" && stat >> value) return value * 1'000'000'000;
      stat.ignore(1 << 20, '\n');
    }
    return std::int64_t{0};
  }();
  const auto ticks = static_cast<std::int64_t>(::sysconf(_SC_CLK_TCK));
  if (boot_ns == 0 || ticks <= 0) return 0;
  return boot_ns + static_cast<std::int64_t>(starttime) * (1'000'000'000 / ticks);
}

std::chrono::milliseconds parse_duration(const YAML::Node& n, const std::string& file) {
  const std::string text = n.as<std::string>();
  double value = 0;
  std::string_view unit;
  const auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec == std::errc()) unit = std::string_view(p, text.data() + text.size() - p);
  double ms = -1;
  if (ec == std::errc() && value >= 0) {
    if (unit == "ms") ms = value;
    else if (unit == "s" || unit.empty()) ms = value * 1000;
    else if (unit == "m") ms = value * 60'000;
  }
  if (ms < 0) {
    throw std::runtime_error(file + ":" + std::to_string(n.Mark().line + 1) + ":" +
                             std::to_string(n.Mark().column + 1) + ": stop_timeout \"" + text +
                             "\" is not a duration (250ms, 5s, 1m)");
  }
  return std::chrono::milliseconds(static_cast<std::int64_t>(ms));
}

// Letters, digits, '.', '_', '-', not starting with '.': a file name, never a path.
bool valid_id(std::string_view id) {
  if (id.empty() || id[0] == '.') return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
  });
}

// Subscribers of the event stream. Shared with the subscriptions so that either may go
// first; publish() and unsubscribing take the same lock, so once a Subscription is
// destroyed its callback is never invoked again.
struct EventHub {
  std::mutex mu;
  std::map<std::uint64_t, std::function<void(const mgmt::Event&)>> subscribers;
  std::uint64_t next = 0;

  void publish(const mgmt::Event& e) {
    std::lock_guard lock(mu);
    for (auto& [id, cb] : subscribers) cb(e);
  }
};

class HubSubscription final : public mgmt::Subscription {
 public:
  HubSubscription(std::shared_ptr<EventHub> hub, std::uint64_t id) : hub_(std::move(hub)), id_(id) {}
  ~HubSubscription() override {
    std::lock_guard lock(hub_->mu);
    hub_->subscribers.erase(id_);
  }

 private:
  std::shared_ptr<EventHub> hub_;
  std::uint64_t id_;
};

class PidfileBackend final : public mgmt::Backend {
 public:
  explicit PidfileBackend(const mgmt::PluginEnv& env) : log_(env.log) {
    const auto& cfg = env.config;
    if (!cfg || !cfg["dir"]) {
      throw std::runtime_error(env.config_file + ": the pidfile backend needs `config: {dir: DIR}`");
    }
    dir_ = fs::absolute(fs::path(env.config_file).parent_path() / cfg["dir"].as<std::string>())
               .lexically_normal();
    std::error_code ec;
    if (!fs::is_directory(dir_, ec)) {
      throw std::runtime_error(env.config_file + ":" + std::to_string(cfg["dir"].Mark().line + 1) +
                               ": pid file directory " + dir_.string() + " does not exist");
    }
    if (cfg["stop_signal"]) {
      const auto name = cfg["stop_signal"].as<std::string>();
      stop_signal_ = mgmt::signal_number(name);
      if (stop_signal_ == 0) {
        throw std::runtime_error(env.config_file + ":" +
                                 std::to_string(cfg["stop_signal"].Mark().line + 1) +
                                 ": unknown stop_signal \"" + name + "\"");
      }
    }
    if (cfg["stop_timeout"]) stop_timeout_ = parse_duration(cfg["stop_timeout"], env.config_file);
    worker_ = std::thread([this] { watch_stops(); });
  }

  ~PidfileBackend() override { shutdown(); }

  void start_all() override {}  // nothing of ours to start

  // The daemons are not ours: leave them running. Stops still under way are abandoned.
  void shutdown() override {
    std::vector<mgmt::OpDone> abandoned;
    {
      std::lock_guard lock(mu_);
      if (quit_) return;
      quit_ = true;
      for (auto& [id, s] : stops_) {
        for (auto& d : s.waiters) abandoned.push_back(std::move(d));
      }
      stops_.clear();
    }
    wake_.notify_all();
    worker_.join();
    for (auto& d : abandoned) d({"the server is shutting down", {}});
  }

  std::vector<mgmt::Entry> list() override {
    std::vector<mgmt::Entry> out;
    std::error_code ec;
    for (const auto& f : fs::directory_iterator(dir_, ec)) {
      if (f.path().extension() != ".pid") continue;
      const std::string id = f.path().stem().string();
      if (valid_id(id)) out.push_back(entry(id));
    }
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
    return out;
  }

  std::optional<mgmt::Entry> status(std::string_view id) override {
    if (!known(id)) return std::nullopt;
    return entry(std::string(id));
  }

  void start(std::string_view id, mgmt::OpDone done) override {
    if (!known(id)) return done({std::string(mgmt::kErrNotFound), {}});
    done({"the pidfile backend does not start processes: " + std::string(id) +
              " is started by whatever wrote its pid file",
          entry(std::string(id))});
  }

  void stop(std::string_view sv, mgmt::OpDone done) override {
    const std::string id(sv);
    if (!known(id)) return done({std::string(mgmt::kErrNotFound), {}});
    mgmt::Entry e = entry(id);
    const auto st = e.pid > 0 ? proc_stat(static_cast<pid_t>(e.pid)) : std::nullopt;
    {
      std::lock_guard lock(mu_);
      if (auto it = stops_.find(id); it != stops_.end()) {  // a stop is under way: join it
        it->second.waiters.push_back(std::move(done));
        return;
      }
      if (e.state == mgmt::state::running && alive(st) && !quit_) {
        if (::kill(static_cast<pid_t>(e.pid), stop_signal_) == 0) {
          Stop& s = stops_[id];
          s.pid = static_cast<pid_t>(e.pid);
          s.starttime = st->starttime;
          s.kill_at = Clock::now() + stop_timeout_;
          s.waiters.push_back(std::move(done));
          events_->publish({id, std::string(mgmt::event::stopping), unix_nanos(),
                            mgmt::signal_name(stop_signal_) + " to " + std::to_string(e.pid) +
                                ", SIGKILL in " + std::to_string(stop_timeout_.count()) + " ms"});
          wake_.notify_all();
          return;
        }
        e.last_error = std::strerror(errno);
      }
    }
    done({"process " + id + " is not running (state " + e.state + ")" +
              (e.last_error.empty() ? "" : ": " + e.last_error),
          e});
  }

  void signal(std::string_view sv, int signo, bool group, mgmt::OpDone done) override {
    const std::string id(sv);
    if (!known(id)) return done({std::string(mgmt::kErrNotFound), {}});
    const mgmt::Entry e = entry(id);
    if (e.state != mgmt::state::running) {
      return done({"process " + id + " is not running (state " + e.state + ")", e});
    }
    const auto pid = static_cast<pid_t>(e.pid);
    int rc = 0;
    if (group) {
      const pid_t pgid = ::getpgid(pid);
      if (pgid == ::getpgrp()) {
        return done({"process " + id + " is in mgmtd's own process group: refusing to signal it", e});
      }
      rc = pgid > 0 ? ::kill(-pgid, signo) : -1;
    } else {
      rc = ::kill(pid, signo);
    }
    if (rc != 0) {
      return done({mgmt::signal_name(signo) + " to " + id + ": " + std::strerror(errno), e});
    }
    done({"", entry(id)});
  }

  std::string logs(const mgmt::LogQuery& q, std::string&) override { return no_logs(q.id); }

  mgmt::FollowResult follow_logs(const mgmt::LogQuery& q,
                                 std::function<void(std::string_view)>) override {
    mgmt::FollowResult r;
    r.err = no_logs(q.id);
    return r;
  }

  std::unique_ptr<mgmt::Subscription> subscribe_events(
      std::function<void(const mgmt::Event&)> on_event) override {
    std::lock_guard lock(events_->mu);
    const auto id = events_->next++;
    events_->subscribers.emplace(id, std::move(on_event));
    return std::make_unique<HubSubscription>(events_, id);
  }

 private:
  struct Stop {
    pid_t pid = 0;
    std::uint64_t starttime = 0;  // tells the daemon from a process that reuses its pid
    Clock::time_point kill_at;
    std::optional<Clock::time_point> give_up_at;  // SIGKILL sent
    std::vector<mgmt::OpDone> waiters;
  };

  std::string pid_file(const std::string& id) const { return (dir_ / (id + ".pid")).string(); }

  bool known(std::string_view id) const {
    std::error_code ec;
    return valid_id(id) && fs::exists(pid_file(std::string(id)), ec);
  }

  std::string no_logs(const std::string& id) const {
    if (!known(id)) return std::string(mgmt::kErrNotFound);
    return "the pidfile backend keeps no logs: " + id + " writes its own";
  }

  mgmt::Entry entry(const std::string& id) const {
    mgmt::Entry e;
    e.id = id;
    e.name = id;
    e.state = std::string(mgmt::state::stopped);
    const std::string text = slurp(pid_file(id));
    const auto first = text.find_first_not_of(" \t\r\n");
    const auto last = text.find_last_not_of(" \t\r\n");
    long long pid = 0;
    const char* b = first == std::string::npos ? text.data() : text.data() + first;
    const char* end = last == std::string::npos ? text.data() : text.data() + last + 1;
    const auto [p, ec] = std::from_chars(b, end, pid);
    if (ec != std::errc() || p != end || pid <= 1) {
      e.state = std::string(mgmt::state::failed);
      e.last_error = "pid file " + pid_file(id) + " does not hold a pid";
      return e;
    }
    const auto st = proc_stat(static_cast<pid_t>(pid));
    if (!alive(st)) return e;  // a stale pid file: the daemon is gone
    e.state = std::string(mgmt::state::running);
    e.pid = pid;
    e.name = st->comm;
    e.rss = rss_bytes(static_cast<pid_t>(pid));
    e.started_at = started_at(st->starttime);
    return e;
  }

  // The worker: follows every stop under way until its process is gone, SIGKILLs those
  // that outlive their timeout, and completes the waiters (outside the lock).
  void watch_stops() {
    std::unique_lock lock(mu_);
    while (!quit_) {
      if (stops_.empty()) {
        wake_.wait(lock);
        continue;
      }
      std::vector<std::pair<std::vector<mgmt::OpDone>, mgmt::OpResult>> done;
      const auto now = Clock::now();
      for (auto it = stops_.begin(); it != stops_.end();) {
        const std::string& id = it->first;
        Stop& s = it->second;
        const auto st = proc_stat(s.pid);
        const bool same = alive(st) && st->starttime == s.starttime;
        if (!same) {
          mgmt::Entry e;
          e.id = e.name = id;
          e.state = std::string(mgmt::state::stopped);
          events_->publish({id, std::string(mgmt::event::stopped), unix_nanos(),
                            "pid " + std::to_string(s.pid) + " is gone"});
          done.emplace_back(std::move(s.waiters), mgmt::OpResult{"", e});
          it = stops_.erase(it);
          continue;
        }
        if (!s.give_up_at && now >= s.kill_at) {
          if (log_)
            mgmt::log::warn(*log_, "{} (pid {}) outlived its stop timeout: SIGKILL", id, s.pid);
          ::kill(s.pid, SIGKILL);
          s.give_up_at = now + std::chrono::seconds(2);
        } else if (s.give_up_at && now >= *s.give_up_at) {
          mgmt::Entry e;
          e.id = e.name = id;
          e.state = std::string(mgmt::state::running);
          e.pid = s.pid;
          done.emplace_back(std::move(s.waiters),
                            mgmt::OpResult{"process " + id + " did not exit after SIGKILL", e});
          it = stops_.erase(it);
          continue;
        }
        ++it;
      }
      if (!done.empty()) {
        lock.unlock();
        for (auto& [waiters, result] : done) {
          for (auto& w : waiters) w(result);
        }
        lock.lock();
        continue;
      }
      wake_.wait_for(lock, std::chrono::milliseconds(20));  // /proc has no change notification
    }
  }

  std::shared_ptr<spdlog::logger> log_;
  fs::path dir_;
  int stop_signal_ = SIGTERM;
  std::chrono::milliseconds stop_timeout_{10'000};
  std::shared_ptr<EventHub> events_ = std::make_shared<EventHub>();

  std::mutex mu_;
  std::condition_variable wake_;
  std::map<std::string, Stop> stops_;  // by id
  bool quit_ = false;
  std::thread worker_;
};

}  // namespace

MGMT_BACKEND_PLUGIN(PidfileBackend, MGMT_PLUGIN_NAME, MGMT_PLUGIN_VERSION,
                    "reports, signals and stops daemons started elsewhere, from pid files")
