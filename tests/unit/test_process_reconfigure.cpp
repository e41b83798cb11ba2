// Live reload of the process backend (ProcessBackend::reconfigure) against real /bin/sh
// children: what is added, removed, changed or unchanged, refused configs, and reloads that
// meet stops in progress. No fixed sleeps: every wait is a condition with a deadline.
#include <catch2/catch.hpp>

#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "log_ring.hpp"
#include "mgmt/plugin.hpp"
#include "process_backend.hpp"
#include "process_config.hpp"
#include "process_fixture.hpp"
#include "wait.hpp"

using namespace std::chrono_literals;
using mgmt::Entry;
using mgmt::Event;
using mgmt::LogQuery;
using mgmt::LogStream;
using mgmt::OpResult;
using mgmt::process::ProcessBackend;
using mgmt::test::wait_until;
using namespace mgmt::test;  // process_fixture.hpp
namespace state = mgmt::state;
namespace event = mgmt::event;

namespace {

namespace ProcessBackendEvents {
constexpr std::string_view reconfigured = mgmt::process::kEventReconfigured;
}

std::vector<std::string> types(std::initializer_list<std::string_view> list) {
  std::vector<std::string> out;
  for (auto t : list) out.emplace_back(t);
  return out;
}

}  // namespace

TEST_CASE("reconfigure: unchanged keeps its pid, added starts, removed stops and goes",
          "[process][reconfigure]") {
  TempDir dir;
  const std::string head = "state_dir: " + dir.file("state") + "\nprocesses:\n";
  const std::string keep = sh_process("keep", "echo hello; exec sleep 30");
  {
    auto b = make_backend(head + keep + sh_process("gone", "exec sleep 30") +
                          sh_process("idle", "exec sleep 30", "    autostart: false\n"));
    b->start_all();
    REQUIRE(wait_until([&] {
      return state_of(*b, "keep") == state::running && state_of(*b, "gone") == state::running &&
             logs_of(*b, "keep") == "hello\n";
    }));
    const auto keep_pid = pid_of(*b, "keep");
    const auto gone_pid = static_cast<pid_t>(pid_of(*b, "gone"));
    const std::string file = b->state_file();
    REQUIRE_FALSE(file.empty());
    EventLog events(*b);

    // "fresh" is listed first: list() follows the new file's order.
    const auto t0 = std::chrono::steady_clock::now();
    REQUIRE(reload(*b, head + sh_process("fresh", "exec sleep 30") + keep +
                           sh_process("idle", "exec sleep 30", "    autostart: false\n")) == "");
    CHECK(std::chrono::steady_clock::now() - t0 < 1s);  // never waits for a child
    // A removed process disappears from list and status at once.
    CHECK(ids(*b) == std::vector<std::string>{"fresh", "keep", "idle"});
    CHECK_FALSE(b->status("gone"));
    CHECK(stop(*b, "gone").err == mgmt::kErrNotFound);

    REQUIRE(wait_until([&] { return state_of(*b, "fresh") == state::running; }));
    CHECK(pid_of(*b, "keep") == keep_pid);
    CHECK(state_of(*b, "keep") == state::running);
    CHECK(logs_of(*b, "keep") == "hello\n");
    CHECK(state_of(*b, "idle") == state::pending);  // unchanged, not started
    CHECK(wait_until([&] { return process_gone(gone_pid); }));
    CHECK(wait_until([&] { return events.types("gone").size() == 2; }));
    CHECK(events.types("gone") == types({event::stopping, event::stopped}));
    CHECK(events.summaries("gone", event::stopped) == std::vector<std::string>{"killed by SIGTERM"});
    CHECK(events.types("fresh") == types({event::registered, event::starting, event::started}));
    CHECK(events.types("keep").empty());
    CHECK(events.types("idle").empty());
    // The state file follows: the new group is in, the removed one out.
    CHECK(wait_until([&] {
      const std::string text = read_text(file);
      return text.find(" fresh\n") != std::string::npos &&
             text.find(" gone\n") == std::string::npos && text.find(" keep\n") != std::string::npos;
    }));
    CHECK(zombies() == 0);
  }
  CHECK(zombies() == 0);
}

TEST_CASE("reconfigure: a changed process restarts with its new spec, logs kept, counters reset",
          "[process][reconfigure]") {
  TempDir dir;
  const std::string marker = dir.file("crashed-once");
  // Crashes once (restarts = 1), then prints its version and runs.
  auto flaky = [&](const std::string& version) {
    return sh_process("app",
                      "if [ ! -e \"$M\" ]; then touch \"$M\"; exit 3; fi; echo \"$V\"; exec sleep 30",
                      "    restart_backoff: 20ms\n    env: {M: " + marker + ", V: " + version + "}\n");
  };
  {
    auto b = make_backend("processes:\n" + flaky("v1") +
                          sh_process("off", "exec sleep 30", "    autostart: false\n"));
    b->start_all();
    REQUIRE(wait_until([&] { return logs_of(*b, "app") == "v1\n"; }));
    REQUIRE(b->status("app")->restarts == 1);
    const auto old_pid = static_cast<pid_t>(pid_of(*b, "app"));
    EventLog events(*b);

    REQUIRE(reload(*b, "processes:\n" + flaky("v2") +
                           sh_process("off", "exec sleep 30",
                                      "    autostart: false\n    name: Off\n")) == "");
    REQUIRE(wait_until([&] { return logs_of(*b, "app") == "v1\nv2\n"; }));  // ring kept
    REQUIRE(wait_until([&] { return state_of(*b, "app") == state::running; }));
    const Entry e = *b->status("app");
    CHECK(e.pid != old_pid);
    CHECK(e.restarts == 0);
    CHECK(e.exit_signal == SIGTERM);  // the last exit: the reload's stop
    CHECK(process_gone(old_pid));
    CHECK(events.types("app") == types({ProcessBackendEvents::reconfigured, event::stopping,
                                        event::stopped, event::starting, event::started}));
    CHECK(events.summary_of("app", ProcessBackendEvents::reconfigured) ==
          "changed: env; restart needed: stopping pid " + std::to_string(old_pid) +
              " to start it again");
    // A changed process that was not running takes the new spec and stays as it was.
    CHECK(b->status("off")->name == "Off");
    CHECK(state_of(*b, "off") == state::pending);
    CHECK(events.types("off") == types({ProcessBackendEvents::reconfigured}));
  }
  CHECK(zombies() == 0);
}

TEST_CASE("reconfigure: every field counts as a change, an equal spec is left alone",
          "[process][reconfigure]") {
  const std::string base = sh_process("p", "exec sleep 30");
  // Each variant differs from `base` in one field.
  const std::vector<std::string> variants = {
      sh_process("p", "exec sleep 31"),
      base + "    name: P\n",
      base + "    env: {A: b}\n",
      base + "    work_dir: /\n",
      base + "    restart: always\n",
      base + "    max_restarts: 3\n",
      base + "    restart_backoff: 2s\n",
      base + "    restart_backoff_max: 31s\n",
      base + "    restart_reset_after: 11s\n",
      base + "    stop_timeout: 9s\n",
      base + "    autostart: false\n",
      base + "    log_buffer: 64KiB\n",
      base + "    log_file_dir: /tmp/x\n",
      base + "    log_max_size: 1MiB\n",
      base + "    log_max_files: 2\n",
      base + "    resources: {max_rss: 1GiB}\n",
      base + "    group: \"" + std::to_string(::getegid()) + "\"\n",
      base + "    umask: \"027\"\n",
      base + "    env_file: /etc/x.env\n",
      base + "    clear_env: true\n",
      base + "    rlimits: {nofile: 1024}\n",
      base + "    nice: 1\n",
      base + "    oom_score_adj: 1\n",
      base + "    stop_signal: INT\n",
      base + "    stop_group: false\n",
      base + "    start_seconds: 1s\n",
      base + "    start_retries: 1\n",
      base + "    success_exit_codes: [0, 2]\n",
      base + "    tty: true\n",
  };
  const auto parse = [](const std::string& entry) {
    return mgmt::process::parse_backend_config(YAML::Load("processes:\n" + entry), "t.yaml")
        .processes.at(0);
  };
  const auto p = parse(base);
  CHECK(p == parse(base));
  for (const auto& v : variants) {
    INFO(v);
    CHECK_FALSE(p == parse(v));
    CHECK_FALSE(mgmt::process::changed_fields(p, parse(v)).empty());
  }
  // depends_on, against a config that has the dependency.
  const auto with_dep = mgmt::process::parse_backend_config(
      YAML::Load("processes:\n" + base + "    depends_on: [q]\n" + sh_process("q", "true")), "t.yaml");
  CHECK_FALSE(p == with_dep.processes.at(0));
  // The resources fields each count too.
  CHECK_FALSE(parse(base + "    resources: {max_rss: 1GiB}\n") ==
              parse(base + "    resources: {max_rss: 1GiB, on_exceed: log}\n"));
  CHECK_FALSE(parse(base + "    resources: {max_rss: 1GiB}\n") ==
              parse(base + "    resources: {max_rss: 1GiB, sample_interval: 2s}\n"));
}

TEST_CASE("reconfigure: an invalid config is refused with its location and changes nothing",
          "[process][reconfigure]") {
  TempDir dir;
  const std::string head = "state_dir: " + dir.file("state") + "\nprocesses:\n";
  const std::string web = sh_process("web", "exec sleep 30");
  {
    auto b = make_backend(head + web);
    b->start_all();
    REQUIRE(wait_until([&] { return state_of(*b, "web") == state::running; }));
    const auto pid = pid_of(*b, "web");
    EventLog events(*b);

    // A bad field of a new process (line 6, column 19 of new.yaml).
    CHECK(reload(*b, head + sh_process("new", "exec sleep 30", "    stop_timeout: soon\n")) ==
          "new.yaml:6:19: stop_timeout must be a duration such as 250ms, 5s, 2m or 1h (got \"soon\")");
    // An unknown dependency, while also removing web: still nothing happens.
    const std::string err = reload(*b, head + sh_process("a", "true", "    depends_on: [nope]\n"));
    CHECK_THAT(err, Catch::StartsWith("new.yaml:6:18: process a depends on \"nope\""));
    // A cycle.
    CHECK_THAT(reload(*b, head + web + "    depends_on: [web]\n"),
               Catch::StartsWith("new.yaml:6:18: dependency cycle: web -> web"));
    // Backend-wide settings that only apply at start-up.
    CHECK(reload(*b, "state_dir: " + dir.file("elsewhere") + "\nprocesses:\n" + web) ==
          "new.yaml:1:12: state_dir cannot change while mgmtd runs (now " + dir.file("state") +
              ", asked for " + dir.file("elsewhere") + "); keep it, or restart mgmtd to move it");
    CHECK(reload(*b, head + web + "subreaper: false\n") ==
          "new.yaml:6:12: subreaper cannot change while mgmtd runs (now true); keep it, or "
          "restart mgmtd to change it");
    CHECK_THAT(reload(*b, "processes:\n" + web),  // the default state dir is another one
               Catch::StartsWith("new.yaml:1:1: state_dir cannot change while mgmtd runs"));

    CHECK(ids(*b) == std::vector<std::string>{"web"});
    CHECK(pid_of(*b, "web") == pid);
    CHECK(state_of(*b, "web") == state::running);
    CHECK(events.size() == 0);
    // The same config again is a valid reload that changes nothing.
    CHECK(reload(*b, head + web) == "");
    CHECK(pid_of(*b, "web") == pid);
    CHECK(events.size() == 0);
  }
  CHECK(zombies() == 0);
}

TEST_CASE("reconfigure: a removed process is stopped like a client stop, and no zombie is left",
          "[process][reconfigure]") {
  {
    // Ignores SIGTERM, and leaves a grandchild that ignores it too.
    auto b = make_backend("processes:\n" +
                          sh_process("stubborn",
                                     "trap '' TERM; (trap '' TERM; exec sleep 30) & echo $!; "
                                     "while :; do sleep 0.05; done",
                                     "    stop_timeout: 300ms\n") +
                          sh_process("other", "exec sleep 30"));
    b->start_all();
    REQUIRE(wait_until([&] { return !logs_of(*b, "stubborn").empty(); }));
    const auto pid = static_cast<pid_t>(pid_of(*b, "stubborn"));
    const pid_t grandchild = std::stoi(logs_of(*b, "stubborn"));
    EventLog events(*b);
    const auto t0 = std::chrono::steady_clock::now();
    REQUIRE(reload(*b, "processes:\n" + sh_process("other", "exec sleep 30")) == "");
    CHECK(std::chrono::steady_clock::now() - t0 < 300ms);  // the SIGKILL comes later
    CHECK_FALSE(b->status("stubborn"));
    CHECK_FALSE(process_gone(pid));  // still in its stop_timeout
    REQUIRE(wait_until([&] { return events.types("stubborn").size() == 2; }));
    CHECK(std::chrono::steady_clock::now() - t0 >= 300ms);
    CHECK(events.types("stubborn") == types({event::stopping, event::stopped}));
    CHECK(events.summaries("stubborn", event::stopping) ==
          std::vector<std::string>{"SIGTERM to process group " + std::to_string(pid) +
                                   ", SIGKILL in 300 ms"});
    CHECK(events.summaries("stubborn", event::stopped) ==
          std::vector<std::string>{"killed by SIGKILL"});
    CHECK(wait_until([&] { return process_gone(pid) && process_gone(grandchild); }));
    CHECK(wait_until([&] { return zombies() == 0; }));
    CHECK(state_of(*b, "other") == state::running);
  }
  CHECK(zombies() == 0);
}

TEST_CASE("reconfigure: a removed pending restart or start is cancelled",
          "[process][reconfigure]") {
  {
    auto b = make_backend("processes:\n" +
                          sh_process("crashy", "exit 1", "    restart_backoff: 1h\n") +
                          sh_process("other", "exec sleep 30"));
    b->start_all();
    REQUIRE(wait_until([&] { return state_of(*b, "crashy") == state::restarting; }));
    EventLog events(*b);
    REQUIRE(reload(*b, "processes:\n" + sh_process("other", "exec sleep 30")) == "");
    CHECK(events.types("crashy") == types({event::stopped}));
    CHECK(events.summaries("crashy", event::stopped) ==
          std::vector<std::string>{"restart cancelled: removed from the configuration"});
    CHECK(ids(*b) == std::vector<std::string>{"other"});
  }
  CHECK(zombies() == 0);
}

TEST_CASE("reconfigure: dependencies of the new set are honoured", "[process][reconfigure]") {
  {
    auto b = make_backend("processes:\n" + sh_process("web", "exec sleep 30"));
    b->start_all();
    REQUIRE(wait_until([&] { return state_of(*b, "web") == state::running; }));
    EventLog events(*b);
    // web now depends on a new db (not autostart: pulled in by web's restart, which its
    // new env asks for), and a new api depends on web. Listed against the dependency order
    // on purpose.
    REQUIRE(reload(*b, "processes:\n" +
                           sh_process("api", "exec sleep 30", "    depends_on: web\n") +
                           sh_process("web", "exec sleep 30",
                                      "    depends_on: [db]\n    env: {V: \"2\"}\n") +
                           sh_process("db", "exec sleep 30", "    autostart: false\n")) == "");
    REQUIRE(wait_until([&] {
      return state_of(*b, "api") == state::running && state_of(*b, "web") == state::running &&
             state_of(*b, "db") == state::running;
    }));
    CHECK(events.types("db") == types({event::registered, event::starting, event::started}));
    CHECK(events.types("web") == types({ProcessBackendEvents::reconfigured, event::stopping,
                                        event::stopped, event::starting, event::started}));
    CHECK(events.types("api") == types({event::registered, event::starting, event::started}));
    CHECK(events.index("db", event::started) < events.index("web", event::started));
    CHECK(events.index("web", event::started) < events.index("api", event::started));

    // At shutdown the new links order the stops: api, then web, then db.
    b->shutdown();
    CHECK(events.index("api", event::stopped) < events.index("web", event::stopping, 1));
    CHECK(events.index("web", event::stopped, 1) < events.index("db", event::stopping));
  }
  CHECK(zombies() == 0);
}

TEST_CASE("reconfigure: added processes wait for start_all when it has not run yet",
          "[process][reconfigure]") {
  {
    auto b = make_backend("processes:\n" + sh_process("a", "exec sleep 30"));
    REQUIRE(reload(*b, "processes:\n" + sh_process("a", "exec sleep 30") +
                           sh_process("b", "exec sleep 30")) == "");
    CHECK(state_of(*b, "a") == state::pending);
    CHECK(state_of(*b, "b") == state::pending);
    b->start_all();
    CHECK(wait_until([&] {
      return state_of(*b, "a") == state::running && state_of(*b, "b") == state::running;
    }));
  }
  CHECK(zombies() == 0);
}

TEST_CASE("reconfigure: a reload meets stops in progress", "[process][reconfigure]") {
  // Each takes its stop_timeout (300 ms) to stop: long enough to reload in between.
  const auto slow = [](const std::string& id, const std::string& extra = "") {
    return sh_process(id, "trap '' TERM; echo up; while :; do sleep 0.05; done",
                      "    stop_timeout: 300ms\n" + extra);
  };
  {
    auto b = make_backend("processes:\n" + slow("a") + slow("b") + slow("c"));
    b->start_all();
    REQUIRE(wait_until([&] {
      return logs_of(*b, "a") == "up\n" && logs_of(*b, "b") == "up\n" && logs_of(*b, "c") == "up\n";
    }));
    EventLog events(*b);
    // A client stops a and b; the reload changes a, removes b and changes c.
    auto stop_a = async_call(false, *b, "a");
    auto stop_b = async_call(false, *b, "b");
    REQUIRE(state_of(*b, "a") == state::stopping);
    // (A new env: a change that restarts a running process.)
    REQUIRE(reload(*b, "processes:\n" + slow("a", "    name: A2\n    env: {V: \"2\"}\n") +
                           slow("c", "    name: C2\n    env: {V: \"2\"}\n")) == "");
    CHECK(ids(*b) == std::vector<std::string>{"a", "c"});
    CHECK(state_of(*b, "a") == state::stopping);
    CHECK(state_of(*b, "c") == state::stopping);
    // The reload's restart of c gives way to a client's stop of it.
    auto stop_c = async_call(false, *b, "c");

    for (auto* f : {&stop_a, &stop_b, &stop_c}) REQUIRE(f->wait_for(10s) == std::future_status::ready);
    const OpResult ra = stop_a.get(), rb = stop_b.get(), rc = stop_c.get();
    CHECK(ra.err.empty());
    CHECK(ra.entry.state == state::stopped);
    CHECK(rb.err.empty());
    CHECK(rb.entry.state == state::stopped);
    CHECK(rb.entry.id == "b");
    CHECK(rc.err.empty());
    CHECK(rc.entry.state == state::stopped);
    // a was stopping: it takes the new spec and stays stopped; so does c.
    CHECK(b->status("a")->name == "A2");
    CHECK(b->status("c")->name == "C2");
    CHECK_FALSE(b->status("b"));
    CHECK(events.types("a") ==
          types({event::stopping, ProcessBackendEvents::reconfigured, event::stopped}));
    CHECK(events.types("b") == types({event::stopping, event::stopped}));
    CHECK(events.types("c") ==
          types({ProcessBackendEvents::reconfigured, event::stopping, event::stopped}));
    CHECK(state_of(*b, "a") == state::stopped);
    CHECK(state_of(*b, "c") == state::stopped);
    // And a start now runs the new spec.
    CHECK(start(*b, "a").err.empty());
    CHECK(wait_until([&] { return logs_of(*b, "a") == "up\nup\n"; }));
  }
  CHECK(zombies() == 0);
}

TEST_CASE("reconfigure: a process removed and added back waits for its old child",
          "[process][reconfigure]") {
  const std::string x =
      sh_process("x", "trap '' TERM; echo up; while :; do sleep 0.05; done", "    stop_timeout: 300ms\n");
  {
    auto b = make_backend("processes:\n" + x);
    b->start_all();
    REQUIRE(wait_until([&] { return logs_of(*b, "x") == "up\n"; }));
    const auto old_pid = static_cast<pid_t>(pid_of(*b, "x"));
    EventLog events(*b);
    REQUIRE(reload(*b, "processes: []\n") == "");
    CHECK(ids(*b).empty());
    REQUIRE(reload(*b, "processes:\n" + x) == "");
    // A new record: fresh logs, starting but not forked while the old child lives.
    CHECK(logs_of(*b, "x").empty());
    CHECK(state_of(*b, "x") == state::starting);
    REQUIRE(wait_until([&] { return state_of(*b, "x") == state::running; }));
    CHECK(process_gone(old_pid));
    CHECK(pid_of(*b, "x") != old_pid);
    CHECK(events.types("x") == types({event::stopping, event::registered, event::starting,
                                      event::stopped, event::started}));
  }
  CHECK(zombies() == 0);
}

TEST_CASE("reconfigure: a changed log_buffer keeps what fits", "[process][reconfigure]") {
  mgmt::process::LogRing ring(16);
  ring.append(1, "0123456789");
  ring.append(2, "abcdef");
  CHECK(ring.set_capacity(32) == 0);
  CHECK(ring.query(0, 0) == "0123456789abcdef");
  CHECK(ring.set_capacity(8) == 8);
  CHECK(ring.query(0, 0) == "89abcdef");
  CHECK(ring.size() == 8);
  CHECK(ring.unread_dropped() == 8);
  ring.append(3, "XY");
  CHECK(ring.query(0, 0) == "abcdefXY");

  {
    auto b = make_backend("processes:\n" +
                          sh_process("p", "echo abcdefghijklmnopqrstuvwxyz; exec sleep 30"));
    b->start_all();
    REQUIRE(wait_until([&] { return logs_of(*b, "p") == "abcdefghijklmnopqrstuvwxyz\n"; }));
    const auto old_pid = pid_of(*b, "p");
    REQUIRE(reload(*b, "processes:\n" +
                           sh_process("p", "exec sleep 30", "    log_buffer: 16\n")) == "");
    REQUIRE(wait_until([&] {
      return state_of(*b, "p") == state::running && pid_of(*b, "p") != old_pid;
    }));
    // The old ring, cut to its last 16 bytes.
    CHECK(logs_of(*b, "p") == "lmnopqrstuvwxyz\n");
  }
  CHECK(zombies() == 0);
}

TEST_CASE("reconfigure: reloads race with clients and the supervisor", "[process][reconfigure]") {
  // For ThreadSanitizer: reloads flip a set of processes while other threads read.
  const std::string one = "processes:\n" + sh_process("a", "exec sleep 30") +
                          sh_process("b", "exit 1", "    restart_backoff: 10ms\n");
  const std::string two = "processes:\n" + sh_process("a", "exec sleep 31") +
                          sh_process("c", "exec sleep 30", "    depends_on: a\n");
  {
    auto b = make_backend(one);
    EventLog events(*b);
    b->start_all();
    std::atomic<bool> done{false};
    std::thread reader([&] {
      while (!done) {
        for (const auto& e : b->list()) {
          std::string out;
          LogQuery q;
          q.id = e.id;
          (void)b->logs(q, out);
          (void)b->status(e.id);
        }
      }
    });
    for (int i = 0; i < 20; ++i) {
      CHECK(reload(*b, i % 2 == 0 ? two : one) == "");
      if (i % 5 == 0) (void)async_call(false, *b, "a").wait_for(10s);
    }
    done = true;
    reader.join();
    CHECK(reload(*b, two) == "");
    CHECK(wait_until([&] {
      return state_of(*b, "a") == state::running && state_of(*b, "c") == state::running;
    }));
    CHECK_FALSE(b->status("b"));
  }
  CHECK(zombies() == 0);
}
