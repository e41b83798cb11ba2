// The process backend against real /bin/sh children: lifecycle, signals, restarts, logs
// and events. No fixed sleeps: every wait is a condition with a deadline.
#include <catch2/catch.hpp>

#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <string>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "mgmt/plugin.hpp"
#include "process_backend.hpp"
#include "wait.hpp"

using namespace std::chrono_literals;
using mgmt::Entry;
using mgmt::Event;
using mgmt::LogQuery;
using mgmt::LogStream;
using mgmt::OpResult;
using mgmt::process::ProcessBackend;
using mgmt::test::wait_until;
namespace state = mgmt::state;
namespace event = mgmt::event;

namespace {

// Children of this test process that exited and were never reaped.
int zombies() {
  int count = 0;
  const std::string me = std::to_string(::getpid());
  DIR* proc = ::opendir("/proc");
  while (const dirent* e = ::readdir(proc)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    std::ifstream in(std::string("/proc/") + e->d_name + "/stat");
    std::string line;
    if (!std::getline(in, line)) continue;
    const auto close = line.rfind(')');
    if (close == std::string::npos) continue;
    char st = 0;
    std::string ppid;
    std::istringstream fields(line.substr(close + 1));
    fields >> st >> ppid;
    if (st == 'Z' && ppid == me) ++count;
  }
  ::closedir(proc);
  return count;
}

// True when `pid` no longer runs (gone, or a zombie some other parent has yet to reap).
bool process_gone(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return true;
  const auto close = line.rfind(')');
  return close != std::string::npos && close + 2 < line.size() && line[close + 2] == 'Z';
}

// A scratch directory for marker files, removed at the end of the test.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    char tmpl[] = "/tmp/mgmt-process-test-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

void touch(const std::string& path) { std::ofstream(path) << ""; }

// Collects events from the backend's subscription.
class EventLog {
 public:
  explicit EventLog(mgmt::Backend& b)
      : sub_(b.subscribe_events([this](const Event& e) {
          std::lock_guard lock(mu_);
          events_.push_back(e);
        })) {}

  std::vector<std::string> types(const std::string& pid) const {
    std::lock_guard lock(mu_);
    std::vector<std::string> out;
    for (const auto& e : events_) {
      if (e.pid == pid) out.push_back(e.type);
    }
    return out;
  }
  std::vector<Event> all() const {
    std::lock_guard lock(mu_);
    return events_;
  }
  bool has(const std::string& pid, std::string_view type) const {
    for (const auto& t : types(pid)) {
      if (t == type) return true;
    }
    return false;
  }
  std::string summary_of(const std::string& pid, std::string_view type) const {
    std::lock_guard lock(mu_);
    for (const auto& e : events_) {
      if (e.pid == pid && e.type == type) return e.summary;
    }
    return "(none)";
  }

 private:
  mutable std::mutex mu_;
  std::vector<Event> events_;
  std::unique_ptr<mgmt::Subscription> sub_;
};

std::unique_ptr<ProcessBackend> make_backend(const std::string& yaml) {
  mgmt::PluginEnv env;
  env.config = YAML::Load(yaml);
  env.config_file = "test.yaml";
  return std::make_unique<ProcessBackend>(env);
}

// One process running `script` under /bin/sh -c, plus extra YAML lines for its entry.
std::string sh_process(const std::string& id, const std::string& script,
                       const std::string& extra = "") {
  YAML::Emitter quoted;
  quoted << YAML::DoubleQuoted << script;
  return "  - id: " + id + "\n    command: /bin/sh\n    args: [-c, " + quoted.c_str() + "]\n" +
         extra;
}

OpResult call(bool start, mgmt::Backend& b, const std::string& id) {
  auto promise = std::make_shared<std::promise<OpResult>>();
  auto future = promise->get_future();
  auto done = [promise](OpResult r) { promise->set_value(std::move(r)); };
  if (start) b.start(id, done);
  else b.stop(id, done);
  REQUIRE(future.wait_for(20s) == std::future_status::ready);
  return future.get();
}
OpResult start(mgmt::Backend& b, const std::string& id) { return call(true, b, id); }
OpResult stop(mgmt::Backend& b, const std::string& id) { return call(false, b, id); }

std::string state_of(mgmt::Backend& b, const std::string& id) { return b.status(id)->state; }

std::string logs_of(mgmt::Backend& b, const std::string& id, LogStream s = LogStream::out) {
  std::string out;
  LogQuery q;
  q.id = id;
  q.stream = s;
  REQUIRE(b.logs(q, out).empty());
  return out;
}

}  // namespace

TEST_CASE("process backend: start, run, capture both streams, stop with SIGTERM",
          "[process][backend]") {
  {
    auto b = make_backend("processes:\n" +
                          sh_process("web", "echo out; echo err >&2; exec sleep 30", "    name: Web\n"));
    EventLog events(*b);
    REQUIRE(b->status("web")->state == state::pending);
    b->start_all();
    REQUIRE(wait_until([&] { return state_of(*b, "web") == state::running; }));
    const Entry e = *b->status("web");
    CHECK(e.name == "Web");
    CHECK(e.pid > 0);
    CHECK(e.started_at > 0);
    const auto list = b->list();
    REQUIRE(list.size() == 1);
    CHECK(list[0].rss > 0);
    CHECK(list[0].pid == e.pid);

    REQUIRE(wait_until([&] { return logs_of(*b, "web") == "out\n"; }));
    REQUIRE(wait_until([&] { return logs_of(*b, "web", LogStream::err) == "err\n"; }));

    const OpResult r = stop(*b, "web");
    CHECK(r.err.empty());
    CHECK(r.entry.state == state::stopped);
    CHECK(r.entry.pid == 0);
    CHECK(r.entry.exit_signal == SIGTERM);
    CHECK_FALSE(r.entry.exit_code);
    CHECK(process_gone(static_cast<pid_t>(e.pid)));
    CHECK(events.types("web") == std::vector<std::string>{std::string(event::starting),
                                                          std::string(event::started),
                                                          std::string(event::stopping),
                                                          std::string(event::stopped)});
    CHECK(events.summary_of("web", event::stopped) == "killed by SIGTERM");
    CHECK(events.summary_of("web", event::started) == "pid " + std::to_string(e.pid));
    // Logs outlive the process.
    CHECK(logs_of(*b, "web") == "out\n");
  }
  CHECK(zombies() == 0);
}

TEST_CASE("process backend: a child that ignores SIGTERM is killed after stop_timeout",
          "[process][backend]") {
  {
    auto b = make_backend("processes:\n" +
                          sh_process("stubborn", "trap '' TERM; echo ready; exec sleep 30",
                                     "    stop_timeout: 300ms\n"));
    b->start_all();
    REQUIRE(wait_until([&] { return logs_of(*b, "stubborn") == "ready\n"; }));
    const auto t0 = std::chrono::steady_clock::now();
    const OpResult r = stop(*b, "stubborn");
    const auto took = std::chrono::steady_clock::now() - t0;
    CHECK(r.err.empty());
    CHECK(r.entry.state == state::stopped);
    CHECK(r.entry.exit_signal == SIGKILL);
    CHECK(took >= 300ms);
    CHECK(took < 5s);
  }
  CHECK(zombies() == 0);
}

TEST_CASE("process backend: stop kills the whole process group", "[process][backend]") {
  {
    // The grandchild ignores SIGTERM, so only the group's SIGKILL can end it.
    auto b = make_backend("processes:\n" +
                          sh_process("tree", "(trap '' TERM; exec sleep 30) & echo $!; wait",
                                     "    stop_timeout: 5s\n"));
    b->start_all();
    REQUIRE(wait_until([&] { return !logs_of(*b, "tree").empty(); }));
    const pid_t grandchild = std::stoi(logs_of(*b, "tree"));
    REQUIRE(grandchild > 0);
    CHECK_FALSE(process_gone(grandchild));
    const OpResult r = stop(*b, "tree");
    CHECK(r.err.empty());
    CHECK(wait_until([&] { return process_gone(grandchild); }));
  }
  CHECK(zombies() == 0);
}

TEST_CASE("process backend: a crash is restarted and counted", "[process][backend]") {
  TempDir dir;
  const std::string marker = dir.file("ran-once");
  {
    auto b = make_backend(
        "processes:\n" +
        sh_process("flaky", "if [ -e \"$MARKER\" ]; then exec sleep 30; fi; touch \"$MARKER\"; exit 3",
                   "    restart_backoff: 50ms\n    env: {MARKER: " + marker + "}\n"));
    EventLog events(*b);
    b->start_all();
    REQUIRE(wait_until([&] {
      const auto e = b->status("flaky");
      return e->state == state::running && e->restarts == 1;
    }));
    const Entry e = *b->status("flaky");
    CHECK(e.exit_code == 3);
    CHECK(e.pid > 0);
    CHECK(events.types("flaky") ==
          std::vector<std::string>{std::string(event::starting), std::string(event::started),
                                   std::string(event::crashed), std::string(event::restarting),
                                   std::string(event::starting), std::string(event::started)});
    CHECK(events.summary_of("flaky", event::crashed) == "exit code 3");
    CHECK(events.summary_of("flaky", event::restarting) == "restart 1 in 50 ms");
  }
  CHECK(zombies() == 0);
}

TEST_CASE("process backend: max_restarts gives up with state failed", "[process][backend]") {
  {
    auto b = make_backend("processes:\n" +
                          sh_process("doomed", "exit 1",
                                     "    restart_backoff: 20ms\n    max_restarts: 2\n"));
    EventLog events(*b);
    b->start_all();
    REQUIRE(wait_until([&] { return state_of(*b, "doomed") == state::failed; }));
    const Entry e = *b->status("doomed");
    CHECK(e.restarts == 2);
    CHECK(e.exit_code == 1);
    CHECK(e.pid == 0);
    CHECK(e.last_error == "gave up after 2 restarts");
    const std::string s = std::string(event::starting), st = std::string(event::started),
                      c = std::string(event::crashed), r = std::string(event::restarting),
                      f = std::string(event::failed);
    CHECK(events.types("doomed") == std::vector<std::string>{s, st, c, r, s, st, c, r, s, st, c, f});
    CHECK(events.summary_of("doomed", event::failed) == "gave up after 2 restarts");
    // The backoff doubles: the second restart waits twice as long as the first.
    std::vector<std::string> restarting;
    for (const auto& ev : events.all()) {
      if (ev.type == event::restarting) restarting.push_back(ev.summary);
    }
    CHECK(restarting == std::vector<std::string>{"restart 1 in 20 ms", "restart 2 in 40 ms"});
  }
  CHECK(zombies() == 0);
}

TEST_CASE("process backend: restart never leaves a crash crashed", "[process][backend]") {
  {
    auto b = make_backend("processes:\n" + sh_process("once", "echo bye; kill -SEGV $$",
                                                        "    restart: never\n"));
    EventLog events(*b);
    b->start_all();
    REQUIRE(wait_until([&] { return state_of(*b, "once") == state::crashed; }));
    const Entry e = *b->status("once");
    CHECK(e.exit_signal == SIGSEGV);
    CHECK(e.restarts == 0);
    CHECK(events.summary_of("once", event::crashed) == "killed by SIGSEGV");
    CHECK_FALSE(events.has("once", event::restarting));
    CHECK(logs_of(*b, "once") == "bye\n");  // output written just before the exit is kept
  }
  CHECK(zombies() == 0);
}

TEST_CASE("process backend: exit code 0 is a stop, not a crash", "[process][backend]") {
  {
    auto b = make_backend("processes:\n" + sh_process("job", "exit 0"));
    EventLog events(*b);
    b->start_all();
    REQUIRE(wait_until([&] { return events.has("job", event::stopped); }));
    CHECK(state_of(*b, "job") == state::stopped);
    CHECK(b->status("job")->exit_code == 0);
    CHECK(events.summary_of("job", event::stopped) == "exit code 0");
    CHECK_FALSE(events.has("job", event::restarting));
  }
  CHECK(zombies() == 0);
}

TEST_CASE("process backend: restart always restarts even a clean exit", "[process][backend]") {
  {
    auto b = make_backend("processes:\n" + sh_process("loop", "exit 0",
                                                        "    restart: always\n"
                                                        "    restart_backoff: 10ms\n"
                                                        "    max_restarts: 1\n"));
    b->start_all();
    REQUIRE(wait_until([&] { return state_of(*b, "loop") == state::failed; }));
    CHECK(b->status("loop")->restarts == 1);
  }
  CHECK(zombies() == 0);
}

TEST_CASE("process backend: a command that cannot be run fails clearly", "[process][backend]") {
  TempDir dir;
  {
    auto b = make_backend("processes:\n"
                          "  - id: missing\n    command: /nonexistent/binary\n    autostart: false\n"
                          "  - id: unknown\n    command: no-such-command-mgmt\n    autostart: false\n"
                          "  - id: noexec\n    command: " + dir.file("") + "\n    autostart: false\n"
                          "  - id: nodir\n    command: /bin/true\n    work_dir: /nonexistent/dir\n"
                          "    autostart: false\n");
    EventLog events(*b);
    const OpResult r = start(*b, "missing");
    CHECK(r.err == "exec /nonexistent/binary: No such file or directory");
    CHECK(r.entry.state == state::failed);
    CHECK(r.entry.last_error == r.err);
    CHECK(events.types("missing") == std::vector<std::string>{std::string(event::starting),
                                                              std::string(event::failed)});
    CHECK(events.summary_of("missing", event::failed) == r.err);

    const OpResult u = start(*b, "unknown");
    CHECK(u.entry.state == state::failed);
    CHECK(u.err.rfind("exec no-such-command-mgmt: No such file or directory", 0) == 0);

    const OpResult x = start(*b, "noexec");
    CHECK(x.entry.state == state::failed);
    CHECK(x.err == "exec " + dir.file("") + ": Permission denied");

    const OpResult d = start(*b, "nodir");
    CHECK(d.entry.state == state::failed);
    CHECK(d.err == "chdir /nonexistent/dir: No such file or directory");

    // No restart loop follows, and the failed child is reaped.
    REQUIRE(wait_until([&] { return zombies() == 0; }));
    CHECK_FALSE(events.has("missing", event::restarting));
    CHECK(b->status("missing")->state == state::failed);
  }
  CHECK(zombies() == 0);
}

TEST_CASE("process backend: start and stop errors", "[process][backend]") {
  {
    auto b = make_backend("processes:\n" + sh_process("web", "exec sleep 30", "    autostart: false\n"));
    CHECK(start(*b, "nope").err == mgmt::kErrNotFound);
    CHECK(stop(*b, "nope").err == mgmt::kErrNotFound);
    CHECK_FALSE(b->status("nope"));
    std::string out;
    CHECK(b->logs(LogQuery{"nope", LogStream::out, 0, 0}, out) == mgmt::kErrNotFound);
    CHECK(b->follow_logs(LogQuery{"nope", LogStream::out, 0, 0}, [](std::string_view) {}).err ==
          mgmt::kErrNotFound);

    b->start_all();  // autostart: false
    CHECK(state_of(*b, "web") == state::pending);
    CHECK(stop(*b, "web").err == "process web is not running (state pending)");

    const OpResult s = start(*b, "web");
    REQUIRE(s.err.empty());
    CHECK(s.entry.state == state::running);
    CHECK(start(*b, "web").err ==
          "process web is already running (pid " + std::to_string(s.entry.pid) + ")");
    CHECK(stop(*b, "web").err.empty());
    CHECK(stop(*b, "web").err == "process web is not running (state stopped)");
    // And it can be started again.
    CHECK(start(*b, "web").err.empty());
    CHECK(state_of(*b, "web") == state::running);
  }
  CHECK(zombies() == 0);
}

TEST_CASE("process backend: a pending restart is cancelled by stop, hastened by start",
          "[process][backend]") {
  {
    auto b = make_backend("processes:\n" + sh_process("slow", "exit 7",
                                                        "    restart_backoff: 1h\n"));
    EventLog events(*b);
    b->start_all();
    REQUIRE(wait_until([&] { return state_of(*b, "slow") == state::restarting; }));
    const OpResult r = stop(*b, "slow");
    CHECK(r.err.empty());
    CHECK(r.entry.state == state::stopped);
    CHECK(events.summary_of("slow", event::stopped) == "restart cancelled");

    const OpResult s = start(*b, "slow");  // runs now, crashes again, waits again
    CHECK(s.err.empty());
    REQUIRE(wait_until([&] { return state_of(*b, "slow") == state::restarting; }));
    const OpResult again = start(*b, "slow");  // a pending restart happens at once
    CHECK(again.err.empty());
  }
  CHECK(zombies() == 0);
}

TEST_CASE("process backend: follow_logs delivers the snapshot, then every new chunk",
          "[process][backend]") {
  TempDir dir;
  const std::string go = dir.file("go");
  {
    auto b = make_backend(
        "processes:\n" +
        sh_process("talker",
                   "echo first; while [ ! -e \"$GO\" ]; do sleep 0.01; done; echo second; "
                   "echo third; exec sleep 30",
                   "    env: [\"GO=" + go + "\"]\n"));
    b->start_all();
    REQUIRE(wait_until([&] { return logs_of(*b, "talker") == "first\n"; }));

    std::mutex mu;
    std::string followed;
    auto f = b->follow_logs(LogQuery{"talker", LogStream::out, 0, 0}, [&](std::string_view c) {
      std::lock_guard lock(mu);
      followed += c;
    });
    REQUIRE(f.err.empty());
    CHECK(f.snapshot == "first\n");
    touch(go);
    CHECK(wait_until([&] {
      std::lock_guard lock(mu);
      return followed == "second\nthird\n";
    }));
    // last_lines and since filter the snapshot.
    auto last = b->follow_logs(LogQuery{"talker", LogStream::out, 0, 1}, [](std::string_view) {});
    CHECK(last.snapshot == "third\n");
    f.subscription.reset();
    std::string all;
    CHECK(b->logs(LogQuery{"talker", LogStream::out, 0, 2}, all).empty());
    CHECK(all == "second\nthird\n");
  }
  CHECK(zombies() == 0);
}

TEST_CASE("process backend: a full log ring drops the oldest output and says so once",
          "[process][backend]") {
  {
    auto b = make_backend(
        "log_buffer: 64\nprocesses:\n" +
        sh_process("chatty", "i=0; while [ $i -lt 100 ]; do echo line$i; i=$((i+1)); done; exec sleep 30"));
    EventLog events(*b);
    b->start_all();
    REQUIRE(wait_until([&] {
      const std::string out = logs_of(*b, "chatty");
      return out.size() >= 7 && out.substr(out.size() - 7) == "line99\n";
    }));
    CHECK(logs_of(*b, "chatty").size() <= 64);
    int overflows = 0;
    for (const auto& e : events.all()) overflows += e.type == event::log_overflow ? 1 : 0;
    CHECK(overflows == 1);
    CHECK(events.summary_of("chatty", event::log_overflow) ==
          "stdout buffer full (64 bytes): dropping the oldest output");
  }
  CHECK(zombies() == 0);
}

TEST_CASE("process backend: shutdown stops everything, once, and in parallel",
          "[process][backend]") {
  std::vector<Event> seen;
  {
    auto b = make_backend("processes:\n" +
                          sh_process("a", "trap '' TERM; echo ready; exec sleep 30",
                                     "    stop_timeout: 400ms\n") +
                          sh_process("b", "trap '' TERM; echo ready; exec sleep 30",
                                     "    stop_timeout: 400ms\n") +
                          sh_process("c", "exec sleep 30"));
    EventLog events(*b);
    b->start_all();
    REQUIRE(wait_until([&] {
      return logs_of(*b, "a") == "ready\n" && logs_of(*b, "b") == "ready\n" &&
             state_of(*b, "c") == state::running;
    }));
    const auto t0 = std::chrono::steady_clock::now();
    b->shutdown();
    const auto took = std::chrono::steady_clock::now() - t0;
    CHECK(took >= 400ms);
    CHECK(took < 780ms + 1s);  // both stubborn children waited for at the same time
    CHECK(zombies() == 0);
    for (const auto& e : b->list()) {
      CHECK(e.state == state::stopped);
      CHECK(e.pid == 0);
    }
    b->shutdown();  // idempotent
    CHECK(start(*b, "c").err == "the server is shutting down");
    seen = events.all();
    // The request comes first, then every process stops.
    const auto req = std::find_if(seen.begin(), seen.end(), [](const Event& e) {
      return e.type == event::shutdown_requested;
    });
    REQUIRE(req != seen.end());
    CHECK(req->pid.empty());
    int stopped = 0;
    for (auto it = req; it != seen.end(); ++it) {
      CHECK(it->type != event::shutdown_incomplete);
      if (it->type == event::stopped) ++stopped;
    }
    CHECK(stopped == 3);
    CHECK(std::none_of(seen.begin(), req, [](const Event& e) { return e.type == event::stopping; }));
  }
  CHECK(zombies() == 0);
}

TEST_CASE("process backend: subscriptions see events in order and stop cleanly",
          "[process][backend]") {
  std::unique_ptr<mgmt::Subscription> outliving;
  {
    auto b = make_backend("processes:\n" + sh_process("web", "exec sleep 30"));
    std::mutex mu;
    std::vector<std::int64_t> stamps;
    int after_unsubscribe = 0;
    auto sub = b->subscribe_events([&](const Event& e) {
      std::lock_guard lock(mu);
      stamps.push_back(e.ts);
    });
    auto counting = b->subscribe_events([&](const Event&) {
      std::lock_guard lock(mu);
      ++after_unsubscribe;
    });
    outliving = b->subscribe_events([](const Event&) {});
    b->start_all();
    REQUIRE(wait_until([&] { return state_of(*b, "web") == state::running; }));
    counting.reset();
    int before;
    {
      std::lock_guard lock(mu);
      before = after_unsubscribe;
    }
    CHECK(stop(*b, "web").err.empty());
    std::lock_guard lock(mu);
    CHECK(after_unsubscribe == before);
    CHECK(stamps.size() == 4);
    CHECK(std::is_sorted(stamps.begin(), stamps.end()));
  }
  outliving.reset();  // after the backend is gone
  CHECK(zombies() == 0);
}

TEST_CASE("process backend: a bad config is refused with its location", "[process][backend]") {
  CHECK_THROWS_WITH(make_backend("processes:\n  - id: web\n    command: x\n    restart: no way\n"),
                    "test.yaml:4:14: restart must be one of never, on_failure, always (got \"no way\")");
}
