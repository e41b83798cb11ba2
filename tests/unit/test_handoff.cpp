// In-place upgrade of the process backend within one process: a backend hands its state
// over (Backend::handoff) and a second one, created from the same configuration, adopts it
// (Backend::adopt), as mgmtd's next program does after the exec. Children are forked on a
// thread of the test's own that outlives both backends (mgmtd's main thread), so the first
// backend's supervisor thread can end without their parent-death signal firing.
#include <catch2/catch.hpp>

#include <signal.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include <yaml-cpp/yaml.h>

#include "../../framework/apps/mgmtd/main_thread.hpp"
#include "log_ring.hpp"
#include "process_backend.hpp"
#include "process_fixture.hpp"
#include "wait.hpp"

using namespace std::chrono_literals;
using mgmt::process::LogRing;
using mgmt::test::wait_until;
using namespace mgmt::test;

namespace {

// The forking thread: serves MainThreadJobs until the test ends.
struct Forker {
  mgmt::daemon::MainThreadJobs jobs;
  std::thread thread{[this] { jobs.serve(); }};
  ~Forker() {
    jobs.close();
    thread.join();
  }
  std::unique_ptr<mgmt::process::ProcessBackend> backend(const std::string& yaml) {
    mgmt::PluginEnv env;
    env.config = YAML::Load(yaml);
    env.config_file = "test.yaml";
    env.on_main_thread = [this](const std::function<void()>& job) { return jobs.run(job); };
    return std::make_unique<mgmt::process::ProcessBackend>(env);
  }
};

std::size_t count_of(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

}  // namespace

TEST_CASE("log ring: saved and restored with the same bytes at the same positions",
          "[handoff]") {
  LogRing a(64);
  a.append(1, "0123456789");
  a.append(2, "abcdefghij");
  for (int i = 0; i < 10; ++i) a.append(3 + i, "xyz-" + std::to_string(i) + "\n");
  REQUIRE(a.end_offset() > 64);  // older bytes have left the ring
  LogRing b(64);
  b.restore(a.save());
  CHECK(b.end_offset() == a.end_offset());
  CHECK(b.query(0, 0) == a.query(0, 0));
  CHECK(b.query(5, 0) == a.query(5, 0));  // the chunks' times came along
  CHECK(b.from(a.end_offset() - 6) == a.query(0, 0).substr(a.query(0, 0).size() - 6));
  CHECK(b.from(0) == a.query(0, 0));             // older than the ring: all it holds
  CHECK(b.from(a.end_offset()).empty());         // nothing after the end
  b.append(20, "more");
  CHECK(b.end_offset() == a.end_offset() + 4);
}

TEST_CASE("process backend: handed over and adopted, the children run on", "[handoff]") {
  TempDir dir;
  Forker forker;
  const std::string yaml =
      "state_dir: " + dir.file("state") + "\nprocesses:\n" +
      sh_process("ticker", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.05; done") +
      sh_process("backoff", "exit 3", "    restart: always\n    restart_backoff: 10m\n") +
      sh_process("quiet", "exec sleep 1000");
  auto a = forker.backend(yaml);
  a->start_all();
  REQUIRE(wait_until([&] {
    return state_of(*a, "ticker") == "running" && state_of(*a, "quiet") == "running" &&
           state_of(*a, "backoff") == "restarting";
  }));
  REQUIRE(stop(*a, "quiet").err.empty());
  REQUIRE(wait_until([&] { return count_of(logs_of(*a, "ticker"), "tick") >= 3; }));
  const auto ticker = *a->status("ticker");
  const auto backoff = *a->status("backoff");

  mgmt::Handoff h;
  REQUIRE(a->handoff(h).empty());
  CHECK(h.version == a->handoff_version());
  CHECK(h.fds.size() == 3);  // the ticker's pidfd, stdout and stderr
  const std::string before = logs_of(*a, "ticker");

  auto b = forker.backend(yaml);  // as the next program creates it, from the same config
  REQUIRE(b->adopt(h) == "");
  a.reset();  // frozen: it neither stops nor closes what it handed over
  CHECK(::kill(static_cast<pid_t>(ticker.pid), 0) == 0);

  const auto t = *b->status("ticker");
  CHECK(t.state == "running");
  CHECK(t.pid == ticker.pid);
  CHECK(t.started_at == ticker.started_at);
  const auto bo = *b->status("backoff");
  CHECK(bo.state == "restarting");
  CHECK(bo.restarts == backoff.restarts);
  CHECK(bo.exit_code == backoff.exit_code);
  CHECK(state_of(*b, "quiet") == "stopped");
  // The output before is there; the output after arrives, at the positions that follow.
  CHECK(logs_of(*b, "ticker").rfind(before, 0) == 0);
  REQUIRE(wait_until([&] {
    return count_of(logs_of(*b, "ticker"), "tick") > count_of(before, "tick") + 3;
  }));
  mgmt::LogQuery q;
  q.id = "ticker";
  q.from = static_cast<std::int64_t>(before.size()) - 7;  // the ring has not wrapped
  auto r = b->follow_logs(q, [](std::string_view) {});
  REQUIRE(r.err.empty());
  CHECK(r.snapshot.rfind(before.substr(before.size() - 7), 0) == 0);
  CHECK(r.position >= static_cast<std::int64_t>(before.size()));
  r.subscription.reset();

  // The adopted child's exit is seen; a new child is forked (on the forking thread).
  REQUIRE(stop(*b, "ticker").err.empty());
  CHECK(b->status("ticker")->exit_signal == SIGTERM);
  REQUIRE(start(*b, "quiet").err.empty());
  CHECK(pid_of(*b, "quiet") > 0);
  b->shutdown();
  CHECK(state_of(*b, "quiet") == "stopped");
}

TEST_CASE("process backend: readiness and health are handed over with the children",
          "[handoff]") {
  TempDir dir;
  Forker forker;
  const std::string env = "    env: {D: " + dir.path.string() + "}\n";
  // Each waits for a marker the test makes after the handover: readiness seen only by the
  // next backend, through the descriptors the first one made.
  const std::string notify_py =
      "import os, socket, time\n"
      "while not os.path.exists(os.environ['D'] + '/go'):\n"
      "    time.sleep(0.02)\n"
      "a = os.environ['NOTIFY_SOCKET']\n"
      "a = '\\0' + a[1:] if a.startswith('@') else a\n"
      "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
      "s.sendto(b'READY=1\\nSTATUS=serving', a)\n"
      "time.sleep(1000)\n";
  std::ofstream(dir.file("notify.py")) << notify_py;
  const std::string yaml =
      "state_dir: " + dir.file("state") + "\nprocesses:\n" +
      sh_process("nt", "exec python3 \"$D/notify.py\"",
                 "    ready: {notify: true, start_timeout: 10m}\n" + env) +
      sh_process("s6", "while [ ! -f \"$D/go\" ]; do sleep 0.02; done; echo >&3; exec sleep 1000",
                 "    ready: {fd: 3, start_timeout: 10m}\n" + env) +
      sh_process("dep", "exec sleep 1000", "    depends_on: [nt, s6]\n") +
      sh_process("hc", "exec sleep 1000",
                 "    health: {exec: [sh, -c, \"test ! -f $D/sick\"], interval: 50ms, "
                 "retries: 2, on_unhealthy: log}\n" +
                     env);
  auto a = forker.backend(yaml);
  a->start_all();
  REQUIRE(wait_until([&] {
    return pid_of(*a, "nt") > 0 && pid_of(*a, "s6") > 0 && a->status("hc")->health == "healthy";
  }));
  CHECK(state_of(*a, "nt") == mgmt::state::starting);
  CHECK(state_of(*a, "dep") == mgmt::state::starting);
  CHECK(pid_of(*a, "dep") == 0);  // not forked until both are ready
  const auto nt = pid_of(*a, "nt"), s6 = pid_of(*a, "s6"), hc = pid_of(*a, "hc");

  mgmt::Handoff h;
  REQUIRE(a->handoff(h).empty());
  // pidfd, stdout, stderr of three children, exec status pipes aside; the notify socket
  // and the ready pipe.
  CHECK(h.fds.size() >= 3 * 3 + 2);
  auto b = forker.backend(yaml);
  REQUIRE(b->adopt(h) == "");
  a.reset();
  mgmt::test::EventLog events(*b);

  // Ready now: seen by the next backend, which starts the dependent.
  touch(dir.file("go"));
  REQUIRE(wait_until([&] { return state_of(*b, "dep") == mgmt::state::running; }, 30s));
  CHECK(state_of(*b, "nt") == mgmt::state::running);
  CHECK(state_of(*b, "s6") == mgmt::state::running);
  CHECK(pid_of(*b, "nt") == nt);
  CHECK(pid_of(*b, "s6") == s6);
  CHECK(events.has("nt", mgmt::process::kEventReady));
  CHECK(events.has("s6", mgmt::process::kEventReady));
  REQUIRE(wait_until([&] { return b->status("nt")->status_text == "serving"; }));
  CHECK(b->status("hc")->health == "healthy");

  // The health checks go on.
  touch(dir.file("sick"));
  REQUIRE(wait_until([&] { return events.has("hc", mgmt::process::kEventUnhealthy); }, 30s));
  CHECK(b->status("hc")->health == "unhealthy");
  CHECK(pid_of(*b, "hc") == hc);  // on_unhealthy: log

  // A child forked now gets a notify socket of its own (no clash with the adopted one).
  REQUIRE(stop(*b, "dep").err.empty());
  REQUIRE(stop(*b, "nt").err.empty());
  std::filesystem::remove(dir.file("go"));
  auto restarted = async_call(true, *b, "nt");
  REQUIRE(wait_until([&] { return pid_of(*b, "nt") > 0; }));
  CHECK(state_of(*b, "nt") == mgmt::state::starting);
  touch(dir.file("go"));
  CHECK(restarted.get().err.empty());
  CHECK(state_of(*b, "nt") == mgmt::state::running);
  b->shutdown();
}

TEST_CASE("process backend: no handoff when children are forked by its own thread",
          "[handoff]") {
  auto b = make_backend("processes:\n" + sh_process("s", "exec sleep 1000"));
  b->start_all();
  REQUIRE(wait_until([&] { return state_of(*b, "s") == "running"; }));
  mgmt::Handoff h;
  CHECK_THAT(b->handoff(h), Catch::Contains("an exec would kill them"));
  CHECK(state_of(*b, "s") == "running");  // nothing changed
  REQUIRE(stop(*b, "s").err.empty());
}
