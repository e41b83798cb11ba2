// The process backend against real /bin/sh children: lifecycle, signals, restarts, logs
// and events. No fixed sleeps: every wait is a condition with a deadline.
#include <catch2/catch.hpp>

#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "mgmt/plugin.hpp"
#include "proc_stat.hpp"
#include "process_backend.hpp"
#include "process_fixture.hpp"
#include "wait.hpp"

using namespace std::chrono_literals;
using mgmt::Entry;
using mgmt::Event;
using mgmt::LogQuery;
using mgmt::LogStream;
using mgmt::OpResult;
using mgmt::process::ProcessBackend;
using mgmt::process::kEventMaxRss;
using mgmt::test::wait_until;
using namespace mgmt::test;  // process_fixture.hpp
namespace state = mgmt::state;
namespace event = mgmt::event;

namespace {

// The event types of `events`, in order.
std::vector<std::string> types_of(const std::vector<Event>& events) {
  std::vector<std::string> out;
  for (const auto& e : events) out.push_back(e.type);
  return out;
}

std::vector<std::string> repeat(const std::vector<std::string>& v, int n) {
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) out.insert(out.end(), v.begin(), v.end());
  return out;
}

std::string str(std::string_view s) { return std::string(s); }

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
    CHECK(events.summary_of("flaky", event::restarting) ==
          "exit code 3: next attempt in 50 ms (attempt 1)");
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
    CHECK(e.last_error == "gave up after 2 attempts (last: exit code 1)");
    const std::string s = std::string(event::starting), st = std::string(event::started),
                      c = std::string(event::crashed), r = std::string(event::restarting),
                      f = std::string(event::failed);
    CHECK(events.types("doomed") == std::vector<std::string>{s, st, c, r, s, st, c, r, s, st, c, f});
    CHECK(events.summary_of("doomed", event::failed) == "gave up after 2 attempts (last: exit code 1)");
    // The backoff doubles: the second restart waits twice as long as the first.
    std::vector<std::string> restarting;
    for (const auto& ev : events.all()) {
      if (ev.type == event::restarting) restarting.push_back(ev.summary);
    }
    CHECK(restarting == std::vector<std::string>{"exit code 1: next attempt in 20 ms (attempt 1 of 2)",
                                                 "exit code 1: next attempt in 40 ms (attempt 2 of 2)"});
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
    // Progress is watched on stderr: reading stdout would count as a client reading it.
    auto b = make_backend(
        "log_buffer: 64\nprocesses:\n" +
        sh_process("chatty", "i=0; while [ $i -lt 100 ]; do echo line$i; i=$((i+1)); done; "
                             "echo done >&2; exec sleep 30"));
    EventLog events(*b);
    b->start_all();
    REQUIRE(wait_until([&] { return logs_of(*b, "chatty", LogStream::err) == "done\n"; }));
    const std::string out = logs_of(*b, "chatty");
    CHECK(out.size() <= 64);
    CHECK(out.substr(out.size() - 7) == "line99\n");
    int overflows = 0;
    for (const auto& e : events.all()) overflows += e.type == event::log_overflow ? 1 : 0;
    CHECK(overflows == 1);
    CHECK_THAT(events.summary_of("chatty", event::log_overflow),
               Catch::Matches("stdout: [0-9]+ bytes no client had read were dropped from the "
                              "64-byte ring"));
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

// ---------------------------------------------------------------------------------------
// Restart policy: backoff, give-up, stable-run reset

TEST_CASE("process backend: a crash loop backs off, doubling up to the cap, then gives up",
          "[process][restart]") {
  {
    auto b = make_backend("processes:\n" + sh_process("loop", "echo run; exit 3",
                                                        "    restart_backoff: 40ms\n"
                                                        "    restart_backoff_max: 100ms\n"
                                                        "    max_restarts: 4\n"));
    EventLog events(*b);
    b->start_all();
    REQUIRE(wait_until([&] { return state_of(*b, "loop") == state::failed; }, 20s));
    const auto evs = events.of("loop");
    const std::vector<std::string> run = {str(event::starting), str(event::started),
                                          str(event::crashed)};
    auto expected = repeat({str(event::starting), str(event::started), str(event::crashed),
                            str(event::restarting)},
                           4);
    expected.insert(expected.end(), run.begin(), run.end());
    expected.push_back(str(event::failed));
    REQUIRE(types_of(evs) == expected);

    // Every restarting event says what happened, which attempt comes and when; the next
    // start comes no sooner than announced (timestamps, not wall-clock sleeps).
    const std::vector<int> delays = {40, 80, 100, 100};
    std::size_t k = 0;
    for (std::size_t i = 0; i < evs.size(); ++i) {
      if (i > 0) CHECK(evs[i].ts >= evs[i - 1].ts);
      if (evs[i].type != event::restarting) continue;
      REQUIRE(k < delays.size());
      CHECK(evs[i].summary == "exit code 3: next attempt in " + std::to_string(delays[k]) +
                                  " ms (attempt " + std::to_string(k + 1) + " of 4)");
      CHECK(evs[i - 1].summary == "exit code 3");  // the crash
      REQUIRE(evs[i + 1].type == event::starting);
      const auto gap = std::chrono::nanoseconds(evs[i + 1].ts - evs[i].ts);
      CHECK(gap >= std::chrono::milliseconds(delays[k]));
      ++k;
    }
    CHECK(k == 4);
    CHECK(evs.back().summary == "gave up after 4 attempts (last: exit code 3)");
    const Entry e = *b->status("loop");
    CHECK(e.restarts == 4);
    CHECK(e.exit_code == 3);
    CHECK(e.last_error == "gave up after 4 attempts (last: exit code 3)");
  }
  CHECK(zombies() == 0);
}

TEST_CASE("process backend: a stable run resets the failure count", "[process][restart]") {
  {
    // Each run lasts 150 ms, longer than restart_reset_after: max_restarts is never reached.
    auto b = make_backend("processes:\n" +
                          sh_process("steady", "sleep 0.15; exit 2",
                                     "    restart_backoff: 10ms\n    max_restarts: 1\n"
                                     "    restart_reset_after: 100ms\n") +
                          sh_process("flappy", "sleep 0.15; exit 2",
                                     "    restart_backoff: 10ms\n    max_restarts: 1\n"
                                     "    restart_reset_after: 1h\n"));
    EventLog events(*b);
    b->start_all();
    REQUIRE(wait_until([&] { return b->status("steady")->restarts >= 3; }, 20s));
    REQUIRE(wait_until([&] { return state_of(*b, "flappy") == state::failed; }));
    CHECK(state_of(*b, "steady") != state::failed);
    for (const auto& e : events.of("steady")) {
      if (e.type == event::restarting) {
        CHECK(e.summary == "exit code 2: next attempt in 10 ms (attempt 1 of 1)");
      }
    }
    CHECK(events.count("flappy", event::restarting) == 1);
    CHECK(events.summary_of("flappy", event::failed) == "gave up after 1 attempt (last: exit code 2)");
  }
  CHECK(zombies() == 0);
}

TEST_CASE("process backend: restart after a signal names the signal", "[process][restart]") {
  {
    auto b = make_backend("processes:\n" + sh_process("seg", "kill -SEGV $$",
                                                        "    restart_backoff: 1h\n"));
    EventLog events(*b);
    b->start_all();
    REQUIRE(wait_until([&] { return state_of(*b, "seg") == state::restarting; }));
    CHECK(events.summary_of("seg", event::crashed) == "killed by SIGSEGV");
    CHECK(events.summary_of("seg", event::restarting) ==
          "killed by SIGSEGV: next attempt in 3600000 ms (attempt 1)");
    CHECK(b->status("seg")->exit_signal == SIGSEGV);
  }
  CHECK(zombies() == 0);
}

// ---------------------------------------------------------------------------------------
// Resource limits

TEST_CASE("process backend: max_rss kills a group that allocates too much",
          "[process][resources]") {
  {
    // The leader stays small; the memory is in its child: the group's RSS is what counts.
    auto b = make_backend(
        "processes:\n" +
        sh_process("hog", "(x=$(head -c 48000000 /dev/zero | tr '\\0' a); echo big; sleep 30) & wait",
                   "    restart: never\n"
                   "    resources: {max_rss: 24MiB, sample_interval: 20ms}\n"));
    EventLog events(*b);
    b->start_all();
    REQUIRE(wait_until([&] { return state_of(*b, "hog") == state::crashed; }, 20s));
    const auto evs = events.of("hog");
    CHECK(types_of(evs) == std::vector<std::string>{str(event::starting), str(event::started),
                                                    str(kEventMaxRss), str(event::crashed)});
    const std::string pid = evs[1].summary.substr(4);  // "pid N"
    CHECK_THAT(evs[2].summary,
               Catch::Matches("rss [0-9.]+ MiB over max_rss 24\\.0 MiB: SIGKILL to process group " +
                              pid));
    CHECK_THAT(evs[3].summary,
               Catch::Matches("killed by SIGKILL \\(max_rss 24\\.0 MiB exceeded: rss [0-9.]+ MiB\\)"));
    const Entry e = *b->status("hog");
    CHECK(e.exit_signal == SIGKILL);
    CHECK_THAT(e.last_error, Catch::StartsWith("max_rss 24.0 MiB exceeded: rss "));
  }
  CHECK(zombies() == 0);
}

TEST_CASE("process backend: max_rss can signal or only log, once per excursion",
          "[process][resources]") {
  {
    // Any shell is over 4 KiB. Progress (one line per loop) goes to stderr.
    const std::string loop = "i=0; while :; do i=$((i+1)); echo $i >&2; sleep 0.02; done";
    auto b = make_backend(
        "processes:\n" +
        sh_process("sig", "trap 'echo got-usr1' USR1; " + loop,
                   "    resources: {max_rss: 4KiB, on_exceed: \"signal:SIGUSR1\", "
                   "sample_interval: 20ms}\n") +
        sh_process("quiet", loop,
                   "    resources: {max_rss: 4KiB, on_exceed: log, sample_interval: 20ms}\n"));
    EventLog events(*b);
    b->start_all();
    REQUIRE(wait_until([&] { return logs_of(*b, "sig") == "got-usr1\n"; }));
    REQUIRE(wait_until([&] { return events.has("quiet", kEventMaxRss); }));
    // Twenty more loops (many more samples, all still over the limit): no second action.
    auto lines = [&](const std::string& id) {
      const std::string err = logs_of(*b, id, LogStream::err);
      return std::count(err.begin(), err.end(), '\n');
    };
    const auto sig_at = lines("sig"), quiet_at = lines("quiet");
    REQUIRE(wait_until([&] { return lines("sig") > sig_at + 20 && lines("quiet") > quiet_at + 20; }));
    CHECK(events.count("sig", kEventMaxRss) == 1);
    CHECK(events.count("quiet", kEventMaxRss) == 1);
    const std::string sig_pid = std::to_string(b->status("sig")->pid);
    CHECK_THAT(events.summary_of("sig", kEventMaxRss),
               Catch::Matches("rss [0-9.]+ [KM]iB over max_rss 4\\.0 KiB: SIGUSR1 to process group " +
                              sig_pid));
    CHECK_THAT(events.summary_of("quiet", kEventMaxRss),
               Catch::EndsWith("over max_rss 4.0 KiB: logged only (on_exceed: log)"));
    CHECK(state_of(*b, "sig") == state::running);
    CHECK(state_of(*b, "quiet") == state::running);
  }
  CHECK(zombies() == 0);
}

// ---------------------------------------------------------------------------------------
// Logs: overflow, files

TEST_CASE("process backend: log.overflow reports unread losses, again after each read",
          "[process][logs]") {
  TempDir dir;
  {
    const std::string burst = "i=0; while [ $i -lt 100 ]; do echo line$i; i=$((i+1)); done; ";
    auto b = make_backend(
        "log_buffer: 64\nprocesses:\n" +
        sh_process("burst",
                   burst + "echo p1 >&2; while [ ! -e \"$DIR/go1\" ]; do sleep 0.01; done; " +
                       burst + "echo p2 >&2; while [ ! -e \"$DIR/go2\" ]; do sleep 0.01; done; " +
                       burst + "echo p3 >&2; exec sleep 30",
                   "    env: {DIR: " + dir.path.string() + "}\n"));
    EventLog events(*b);
    b->start_all();
    auto err_is = [&](const std::string& text) {
      return wait_until([&] { return logs_of(*b, "burst", LogStream::err) == text; });
    };
    REQUIRE(err_is("p1\n"));
    CHECK(events.count("burst", event::log_overflow) == 1);
    CHECK(logs_of(*b, "burst").size() <= 64);  // a client reads stdout: losses are news again
    touch(dir.file("go1"));
    REQUIRE(err_is("p1\np2\n"));
    CHECK(events.count("burst", event::log_overflow) == 2);

    // A follower gets every chunk as it comes: nothing it has not read is lost.
    std::mutex mu;
    std::string followed;
    auto f = b->follow_logs(LogQuery{"burst", LogStream::out, 0, 0}, [&](std::string_view c) {
      std::lock_guard lock(mu);
      followed += c;
    });
    touch(dir.file("go2"));
    REQUIRE(err_is("p1\np2\np3\n"));
    CHECK(events.count("burst", event::log_overflow) == 2);
    std::lock_guard lock(mu);
    CHECK(std::count(followed.begin(), followed.end(), '\n') == 100);
  }
  CHECK(zombies() == 0);
}

TEST_CASE("process backend: output also goes to rotated log files", "[process][logs]") {
  TempDir dir;
  {
    auto b = make_backend("log_file_dir: " + dir.file("logs") +
                          "\nlog_max_size: 100\nlog_max_files: 2\nprocesses:\n" +
                          sh_process("w",
                                     "i=10; while [ $i -lt 40 ]; do echo line-$i-abcdefghijklmnop; "
                                     "i=$((i+1)); sleep 0.002; done; echo oops >&2",
                                     "    restart: never\n"));
    b->start_all();
    REQUIRE(wait_until([&] { return state_of(*b, "w") == state::stopped; }));
    const std::string base = dir.file("logs/w.stdout.log");
    REQUIRE(exists(base));
    CHECK(exists(base + ".1"));
    CHECK(exists(base + ".2"));
    CHECK_FALSE(exists(base + ".3"));
    CHECK(read_text(dir.file("logs/w.stderr.log")) == "oops\n");
    std::string expected;
    for (int i = 10; i < 40; ++i) expected += "line-" + std::to_string(i) + "-abcdefghijklmnop\n";
    const std::string kept = read_text(base + ".2") + read_text(base + ".1") + read_text(base);
    CHECK(kept.size() < expected.size());  // older output was rotated away
    CHECK(expected.substr(expected.size() - kept.size()) == kept);
    // The ring buffer is unaffected.
    CHECK(logs_of(*b, "w") == expected);
    // A second run appends.
    const auto before = std::filesystem::file_size(base);
    CHECK(start(*b, "w").err.empty());
    REQUIRE(wait_until([&] { return state_of(*b, "w") == state::stopped; }));
    CHECK(read_text(dir.file("logs/w.stderr.log")) == "oops\noops\n");
    CHECK(std::filesystem::file_size(base) != before);
  }
  CHECK(zombies() == 0);
}

// ---------------------------------------------------------------------------------------
// Process hygiene

TEST_CASE("process backend: orphaned descendants are adopted and reaped",
          "[process][hygiene]") {
  TempDir dir;
  {
    // The grandchild leaves the group (setsid; the parent waits until it has), so the group
    // kill at the parent's exit misses it; it is re-parented to us (subreaper) and must be
    // reaped when it ends.
    auto b = make_backend("processes:\n" +
                          sh_process("parent",
                                     "setsid sh -c 'echo $$; touch left; "
                                     "while [ ! -e release ]; do sleep 0.01; done' & "
                                     "while [ ! -e left ]; do sleep 0.01; done; exit 0",
                                     "    restart: never\n    work_dir: " + dir.path.string() +
                                         "\n"));
    EventLog events(*b);
    b->start_all();
    REQUIRE(wait_until([&] { return state_of(*b, "parent") == state::stopped; }));
    REQUIRE(wait_until([&] { return !logs_of(*b, "parent").empty(); }));
    const pid_t orphan = std::stoi(logs_of(*b, "parent"));
    const auto st = mgmt::process::read_proc_stat(orphan);
    REQUIRE(st);  // still waiting for the release
    CHECK(st->ppid == ::getpid());
    touch(dir.file("release"));
    // Gone altogether, not a zombie: only its parent, us, could have reaped it.
    CHECK(wait_until([&] { return !mgmt::process::read_proc_stat(orphan); }));
    CHECK(zombies() == 0);
  }
  CHECK(zombies() == 0);
}

TEST_CASE("process backend: group members killed at the leader's exit leave no zombie",
          "[process][hygiene]") {
  {
    // Background children of a shell that is then stopped: they are orphaned (ours now),
    // killed with the group, and reaped, also when shutdown follows at once.
    auto b = make_backend("processes:\n" +
                          sh_process("kids", "sleep 30 & sleep 30 & echo ready; wait"));
    b->start_all();
    REQUIRE(wait_until([&] { return logs_of(*b, "kids") == "ready\n"; }));
  }
  CHECK(zombies() == 0);
}

TEST_CASE("process backend: live groups are recorded in the state dir", "[process][hygiene]") {
  TempDir dir;
  const std::string state_dir = dir.file("state");
  std::string file;
  {
    auto b = make_backend("state_dir: " + state_dir + "\nprocesses:\n" +
                          sh_process("web", "exec sleep 30") +
                          sh_process("off", "exec sleep 30", "    autostart: false\n"));
    CHECK_FALSE(exists(state_dir));  // nothing before the first start (mgmtd --check)
    b->start_all();
    REQUIRE(wait_until([&] { return state_of(*b, "web") == state::running; }));
    file = b->state_file();
    REQUIRE_FALSE(file.empty());
    struct stat st {};
    REQUIRE(::stat(state_dir.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0700);
    const pid_t pid = static_cast<pid_t>(b->status("web")->pid);
    const auto ps = mgmt::process::read_proc_stat(pid);
    REQUIRE(ps);
    const std::string line = "group " + std::to_string(pid) + " " + std::to_string(ps->start_time) +
                             " " + std::to_string(::getsid(0)) + " web\n";
    CHECK_THAT(read_text(file), Catch::Contains(line));
    CHECK_THAT(read_text(file), !Catch::Contains(" off\n"));
    CHECK(stop(*b, "web").err.empty());
    CHECK_THAT(read_text(file), !Catch::Contains("group "));
    CHECK(start(*b, "off").err.empty());
    CHECK_THAT(read_text(file), Catch::Contains(" off\n"));
  }
  CHECK_FALSE(exists(file));  // a clean shutdown leaves nothing behind
  CHECK(zombies() == 0);
}

namespace {

// A `sleep 30` in its own process group, as a killed mgmtd would leave one.
pid_t spawn_leftover() {
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::setpgid(0, 0);
    ::execl("/bin/sleep", "sleep", "30", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::setpgid(pid, pid);
  return pid;
}

std::string state_text(const std::string& owner, const std::vector<pid_t>& groups) {
  std::string text = "mgmtd-process-state 1\n" + owner + "\n";
  for (pid_t g : groups) {
    const auto st = mgmt::process::read_proc_stat(g);
    text += "group " + std::to_string(g) + " " + std::to_string(st ? st->start_time : 0) + " " +
            std::to_string(::getsid(0)) + " leftover\n";
  }
  return text;
}

}  // namespace

TEST_CASE("process backend: leftovers of a dead instance are killed before anything starts",
          "[process][hygiene]") {
  TempDir dir;
  const std::string state_dir = dir.file("state");
  REQUIRE(::mkdir(state_dir.c_str(), 0700) == 0);
  const pid_t orphan = spawn_leftover();  // recorded by a dead owner: must die
  const pid_t kept = spawn_leftover();    // recorded by a live owner or another namespace
  REQUIRE(wait_until([&] {
    const auto a = mgmt::process::read_proc_stat(orphan);
    const auto b = mgmt::process::read_proc_stat(kept);
    return a && b && a->pgrp == orphan && b->pgrp == kept;
  }));
  const std::string ns = mgmt::process::own_pid_namespace();
  const auto self = mgmt::process::read_proc_stat(::getpid());
  REQUIRE(self);
  const std::string dead_file = state_dir + "/process-4000000-0.state";
  const std::string live_file = state_dir + "/process-" + std::to_string(::getpid()) + "-999.state";
  const std::string foreign_file = state_dir + "/process-4000001-0.state";
  std::ofstream(dead_file) << state_text("owner 4000000 12345 " + ns, {orphan});
  std::ofstream(live_file) << state_text(
      "owner " + std::to_string(::getpid()) + " " + std::to_string(self->start_time) + " " + ns,
      {kept});
  std::ofstream(foreign_file) << state_text("owner 4000001 12345 pid:[1]", {kept});
  {
    // subreaper off: the leftovers are this test's own children, and it reaps them itself.
    auto b = make_backend("state_dir: " + state_dir + "\nsubreaper: false\nprocesses:\n" +
                          sh_process("web", "exec sleep 30"));
    EventLog events(*b);
    b->start_all();
    REQUIRE(wait_until([&] { return state_of(*b, "web") == state::running; }));
    CHECK(process_gone(orphan));  // killed before web was started
    CHECK_FALSE(exists(dead_file));
    CHECK_FALSE(process_gone(kept));
    CHECK(exists(live_file));
    CHECK(exists(foreign_file));
  }
  int status = 0;
  CHECK(::waitpid(orphan, &status, 0) == orphan);
  CHECK((WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL));
  ::kill(kept, SIGKILL);
  CHECK(::waitpid(kept, &status, 0) == kept);
  CHECK(zombies() == 0);
}

TEST_CASE("process backend: an unsafe state dir is refused, supervision goes on",
          "[process][hygiene]") {
  TempDir dir;
  const std::string state_dir = dir.file("open");
  REQUIRE(::mkdir(state_dir.c_str(), 0777) == 0);
  REQUIRE(::chmod(state_dir.c_str(), 0777) == 0);
  {
    auto b = make_backend("state_dir: " + state_dir + "\nprocesses:\n" +
                          sh_process("web", "exec sleep 30"));
    b->start_all();
    REQUIRE(wait_until([&] { return state_of(*b, "web") == state::running; }));
    CHECK(b->state_file().empty());
    CHECK(std::filesystem::is_empty(state_dir));
  }
  CHECK(zombies() == 0);
}

// ---------------------------------------------------------------------------------------
// Start order

TEST_CASE("process backend: depends_on orders start, and stop in reverse", "[process][deps]") {
  std::vector<Event> seen;
  {
    // Listed against the dependency order on purpose.
    auto b = make_backend("processes:\n" +
                          sh_process("web", "exec sleep 30", "    depends_on: [api]\n") +
                          sh_process("api", "exec sleep 30", "    depends_on: [db]\n") +
                          sh_process("db", "exec sleep 30"));
    EventLog events(*b);
    b->start_all();
    REQUIRE(wait_until([&] {
      return state_of(*b, "web") == state::running && state_of(*b, "api") == state::running &&
             state_of(*b, "db") == state::running;
    }));
    b->shutdown();
    seen = events.all();
  }
  auto index = [&](const std::string& id, std::string_view type) {
    for (std::size_t i = 0; i < seen.size(); ++i) {
      if (seen[i].pid == id && seen[i].type == type) return static_cast<int>(i);
    }
    return -1;
  };
  // Each starts once what it depends on runs.
  CHECK(index("db", event::started) < index("api", event::started));
  CHECK(index("api", event::started) < index("web", event::started));
  // And is stopped only once what depends on it has stopped.
  CHECK(index("web", event::stopped) < index("api", event::stopping));
  CHECK(index("api", event::stopped) < index("db", event::stopping));
  CHECK(index("db", event::stopped) > 0);
  CHECK(zombies() == 0);
}

TEST_CASE("process backend: start pulls in dependencies, a failed one fails its dependents",
          "[process][deps]") {
  {
    auto b = make_backend("processes:\n"
                          "  - {id: db, command: /nonexistent/db, autostart: false}\n" +
                          sh_process("web", "exec sleep 30",
                                     "    depends_on: [db]\n    autostart: false\n") +
                          sh_process("cache", "exec sleep 30", "    autostart: false\n") +
                          sh_process("app", "exec sleep 30",
                                     "    depends_on: cache\n    autostart: false\n"));
    EventLog events(*b);
    const OpResult r = start(*b, "web");
    CHECK(r.err == "dependency db is failed (exec /nonexistent/db: No such file or directory)");
    CHECK(r.entry.state == state::failed);
    CHECK(state_of(*b, "db") == state::failed);
    CHECK(events.types("web") ==
          std::vector<std::string>{str(event::starting), str(event::failed)});

    const OpResult a = start(*b, "app");
    CHECK(a.err.empty());
    CHECK(a.entry.state == state::running);
    CHECK(state_of(*b, "cache") == state::running);
    // Stopping a dependency leaves its dependents alone.
    CHECK(stop(*b, "cache").err.empty());
    CHECK(state_of(*b, "app") == state::running);
  }
  CHECK(zombies() == 0);
}

TEST_CASE("process backend: signal reaches the process or its whole group", "[process][backend]") {
  TempDir dir;
  {
    // The child shell traps HUP; its background child (same group) reports a HUP too.
    auto b = make_backend("processes:\n" +
                          sh_process("web",
                                     "(trap 'echo kid >> \"$D/hup\"' HUP; while :; do sleep 0.02; done) & "
                                     "trap 'echo top >> \"$D/hup\"' HUP; echo ready; "
                                     "while :; do sleep 0.02; done",
                                     "    env: {D: " + dir.path.string() + "}\n") +
                          sh_process("off", "exec sleep 30", "    autostart: false\n"));
    b->start_all();
    REQUIRE(wait_until([&] { return logs_of(*b, "web") == "ready\n"; }));
    auto send = [&](const std::string& id, int sig, bool group) {
      auto promise = std::make_shared<std::promise<OpResult>>();
      auto future = promise->get_future();
      b->signal(id, sig, group, [promise](OpResult r) { promise->set_value(std::move(r)); });
      REQUIRE(future.wait_for(5s) == std::future_status::ready);
      return future.get();
    };
    OpResult r = send("web", SIGHUP, false);
    CHECK(r.err.empty());
    CHECK(r.entry.state == state::running);
    CHECK(wait_until([&] { return read_text(dir.file("hup")) == "top\n"; }));
    r = send("web", SIGHUP, true);
    CHECK(r.err.empty());
    CHECK(wait_until([&] {
      const std::string t = read_text(dir.file("hup"));
      return t == "top\ntop\nkid\n" || t == "top\nkid\ntop\n";
    }));
    CHECK(send("off", SIGHUP, false).err == "process off is not running (state pending)");
    CHECK(send("nope", SIGHUP, false).err == mgmt::kErrNotFound);
  }
  CHECK(zombies() == 0);
}

TEST_CASE("process backend: list_version moves with every change list() shows, not with output",
          "[process][backend]") {
  auto b = make_backend("processes:\n" +
                        sh_process("chatty", "while :; do echo tick; sleep 0.01; done") +
                        sh_process("crasher", "exec sleep 30", "    restart: on_failure\n") +
                        sh_process("idle", "exec sleep 30", "    autostart: false\n"));
  const std::uint64_t initial = b->list_version();
  CHECK(initial != 0);  // 0 would mean "never reuse a reply"
  b->start_all();
  REQUIRE(wait_until([&] {
    return state_of(*b, "chatty") == state::running && state_of(*b, "crasher") == state::running;
  }));
  CHECK(b->list_version() != initial);

  // Reads the version, lists, and reads it again until nothing moved in between.
  auto settled = [&](std::vector<Entry>& out) {
    for (int i = 0; i < 100; ++i) {
      const std::uint64_t v = b->list_version();
      out = b->list();
      if (b->list_version() == v) return v;
      std::this_thread::sleep_for(20ms);
    }
    FAIL("list_version never settled");
    return std::uint64_t{0};
  };
  // Output keeps arriving, in chunks 10 ms apart: the version does not move with it. (The
  // first list_version() call may start one memory sample, which may bump it once; nothing
  // else asks for samples meanwhile.)
  const std::uint64_t v1 = b->list_version();
  const std::string seen = logs_of(*b, "chatty");
  REQUIRE(wait_until([&] { return logs_of(*b, "chatty").size() > seen.size() + 20 * 5; }));
  CHECK(b->list_version() - v1 <= 1);

  // A version names one content: two lists under the same version are equal.
  std::vector<Entry> before;
  const std::uint64_t v2 = settled(before);
  std::this_thread::sleep_for(50ms);
  std::vector<Entry> after;
  if (settled(after) == v2) {
    REQUIRE(after.size() == before.size());
    for (std::size_t i = 0; i < after.size(); ++i) {
      CHECK(after[i].state == before[i].state);
      CHECK(after[i].pid == before[i].pid);
      CHECK(after[i].rss == before[i].rss);
    }
  }

  // Each of these changes what list() shows, and so the version.
  auto changes = [&](const std::function<void()>& act, const std::function<bool()>& until) {
    std::vector<Entry> ignored;
    const std::uint64_t v = settled(ignored);
    act();
    REQUIRE(wait_until(until));
    CHECK(b->list_version() != v);
  };
  const auto crasher_pid = b->status("crasher")->pid;
  changes([&] { ::kill(static_cast<pid_t>(crasher_pid), SIGKILL); },
          [&] { return b->status("crasher")->restarts == 1; });
  changes([&] { start(*b, "idle"); }, [&] { return state_of(*b, "idle") == state::running; });
  changes([&] { stop(*b, "idle"); }, [&] { return state_of(*b, "idle") == state::stopped; });
  changes([&] { CHECK(reload(*b, "processes:\n" + sh_process("idle", "exec sleep 30",
                                                             "    autostart: false\n"))
                          .empty()); },
          [&] { return ids(*b) == std::vector<std::string>{"idle"}; });
}
