// The `flood` backend: no processes, only synthetic events, for benchmarks and tests of the
// event stream (mgmt-bench-streams, tests/integration/test_streaming.cpp).
//
//   backend:
//     plugin: flood
//     config:
//       count: 100000        # events per burst (start "flood"); "flood:N" asks for N
//       rate: 0              # events per second, 0 = as fast as possible
//       pids: [flood]        # event i has pid pids[i % len] ...
//       types: [bench.event] # ... and type types[(i / len(pids)) % len]
//       summary_pad: 0       # bytes of padding appended to each summary
//
// `start flood[:N]` publishes a burst on the backend's thread: events whose summary is
// "seq <n>" (n counts every event ever published, so a subscriber can check for gaps and
// order), then one `bench.done` event (pid "flood") whose summary is "done <n>" (the next
// n). `stop flood` ends a burst early. `list` and `status` show one entry, `flood`.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "../process/broadcaster.hpp"
#include "mgmt/backend.hpp"
#include "mgmt/plugin.hpp"

namespace {

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::vector<std::string> strings(const YAML::Node& n, const char* key,
                                 std::vector<std::string> def) {
  if (!n || !n[key]) return def;
  std::vector<std::string> out;
  if (n[key].IsSequence()) {
    for (const auto& v : n[key]) out.push_back(v.as<std::string>());
  } else {
    out.push_back(n[key].as<std::string>());
  }
  if (out.empty()) return def;
  return out;
}

class FloodBackend final : public mgmt::Backend {
 public:
  explicit FloodBackend(const mgmt::PluginEnv& env) {
    const YAML::Node& c = env.config;
    if (c && c["count"]) count_ = c["count"].as<std::uint64_t>();
    if (c && c["rate"]) rate_ = c["rate"].as<std::uint64_t>();
    if (c && c["summary_pad"]) pad_ = c["summary_pad"].as<std::size_t>();
    pids_ = strings(c, "pids", {"flood"});
    types_ = strings(c, "types", {"bench.event"});
    worker_ = std::thread([this] { run(); });
  }

  ~FloodBackend() override { shutdown(); }

  void start_all() override {}

  void shutdown() override {
    {
      std::lock_guard lock(mu_);
      if (quit_) return;
      quit_ = true;
      cancel_ = true;
    }
    cv_.notify_all();
    if (worker_.joinable()) worker_.join();
  }

  std::vector<mgmt::Entry> list() override { return {entry()}; }

  std::optional<mgmt::Entry> status(std::string_view id) override {
    if (id != "flood") return std::nullopt;
    return entry();
  }

  void start(std::string_view id, mgmt::OpDone done) override {
    std::uint64_t n = count_;
    if (id.rfind("flood:", 0) == 0) {
      n = std::stoull(std::string(id.substr(6)));
    } else if (id != "flood") {
      done({"process not found", {}});
      return;
    }
    {
      std::lock_guard lock(mu_);
      bursts_.push_back(n);
      ++pending_;
    }
    cv_.notify_all();
    done({"", entry()});
  }

  void stop(std::string_view id, mgmt::OpDone done) override {
    if (id != "flood") {
      done({"process not found", {}});
      return;
    }
    {
      std::lock_guard lock(mu_);
      pending_ -= static_cast<int>(bursts_.size());
      bursts_.clear();
      cancel_ = true;
    }
    done({"", entry()});
  }

  std::string logs(const mgmt::LogQuery&, std::string&) override {
    return "the flood backend has no logs";
  }

  mgmt::FollowResult follow_logs(const mgmt::LogQuery&,
                                 std::function<void(std::string_view)>) override {
    mgmt::FollowResult r;
    r.err = "the flood backend has no logs";
    return r;
  }

  std::unique_ptr<mgmt::Subscription> subscribe_events(
      std::function<void(const mgmt::Event&)> on_event) override {
    return events_.subscribe(std::move(on_event));
  }

 private:
  mgmt::Entry entry() const {
    mgmt::Entry e;
    e.id = "flood";
    e.name = "flood";
    e.state = pending_.load() > 0 ? "running" : "stopped";  // until the last burst is out
    e.pid = 0;
    return e;
  }

  void run() {
    std::unique_lock lock(mu_);
    while (true) {
      cv_.wait(lock, [&] { return quit_ || !bursts_.empty(); });
      if (quit_) return;
      const std::uint64_t n = bursts_.front();
      bursts_.pop_front();
      cancel_ = false;
      lock.unlock();
      burst(n);
      lock.lock();
      --pending_;
    }
  }

  bool cancelled() {
    std::lock_guard lock(mu_);
    return cancel_;
  }

  void burst(std::uint64_t n) {
    const auto start = std::chrono::steady_clock::now();
    mgmt::Event e;
    const std::string pad(pad_, '.');
    for (std::uint64_t i = 0; i < n; ++i) {
      if ((i & 1023) == 0 && cancelled()) break;
      if (rate_ > 0 && (i & 63) == 0) {
        const auto due = start + std::chrono::nanoseconds(i * 1000000000ull / rate_);
        std::this_thread::sleep_until(due);
      }
      const std::uint64_t s = seq_++;
      e.pid = pids_[s % pids_.size()];
      e.type = types_[(s / pids_.size()) % types_.size()];
      e.ts = now_ns();
      e.summary = "seq " + std::to_string(s);
      if (!pad.empty()) e.summary += " " + pad;
      events_.publish(e);
    }
    mgmt::Event done{"flood", "bench.done", now_ns(), "done " + std::to_string(seq_)};
    events_.publish(done);
  }

  std::uint64_t count_ = 100000;
  std::uint64_t rate_ = 0;
  std::size_t pad_ = 0;
  std::vector<std::string> pids_;
  std::vector<std::string> types_;
  mgmt::process::Broadcaster<const mgmt::Event&> events_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::uint64_t> bursts_;
  bool quit_ = false;
  bool cancel_ = false;
  std::atomic<int> pending_{0};  // bursts asked for and not yet published
  std::uint64_t seq_ = 0;  // worker thread only
  std::thread worker_;
};

}  // namespace

MGMT_BACKEND_PLUGIN(FloodBackend, MGMT_PLUGIN_NAME, MGMT_PLUGIN_VERSION,
                    "synthetic events as fast as asked (benchmarks and tests)")
