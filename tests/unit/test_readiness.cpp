// Readiness (`ready:`) and health checks (`health:`) with real children: dependencies that
// become ready late (tcp, notify, fd, exec, file, log), dependents that wait for them, a
// probe that never passes, and children that stop answering their health probe.
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <string>

#include "process_fixture.hpp"
#include "wait.hpp"

using namespace mgmt;
using namespace mgmt::test;
using process::kEventHealthy;
using process::kEventReady;
using process::kEventUnhealthy;
using namespace std::chrono_literals;

namespace {

// A TCP port nothing listens on (free a moment ago).
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  socklen_t len = sizeof a;
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
  ::close(fd);
  return ntohs(a.sin_port);
}

// A process entry running python3 on `script` (a file in `dir`) with `args`.
std::string py_process(const std::string& id, const TempDir& dir, const std::string& name,
                       const std::string& script, const std::vector<std::string>& args,
                       const std::string& extra) {
  std::ofstream(dir.file(name)) << script;
  std::string list = "[" + dir.file(name);
  for (const auto& a : args) list += ", \"" + a + "\"";
  return "  - id: " + id + "\n    command: /usr/bin/python3\n    args: " + list + "]\n" + extra;
}

// Listens on 127.0.0.1:argv[1] after sleeping argv[2] seconds.
const char* kLateListener = R"(import socket, sys, time
time.sleep(float(sys.argv[2]))
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(16)
print("listening", flush=True)
while True:
    c, _ = s.accept()
    c.close()
)";

// Connects to 127.0.0.1:argv[1] at once: fails (exit 1) unless its dependency is ready.
const char* kConnector = R"(import socket, sys, time
socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5).close()
print("connected", flush=True)
time.sleep(120)
)";

// An HTTP server on argv[1]: 200 on GET, 500 while the file argv[2] exists.
const char* kHttpServer = R"(import http.server, os, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = 500 if os.path.exists(sys.argv[2]) else 200
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"sick" if code == 500 else b"ok")
    def log_message(self, *a):
        pass
http.server.HTTPServer.allow_reuse_address = True
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
)";

// Sends READY=1 (and a STATUS=) to $NOTIFY_SOCKET after argv[1] seconds.
const char* kPyNotify = R"(import os, socket, sys, time
time.sleep(float(sys.argv[1]))
addr = os.environ["NOTIFY_SOCKET"]
if addr.startswith("@"):
    addr = "\0" + addr[1:]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(b"STATUS=warming up", addr)
s.sendto(b"READY=1\nSTATUS=serving", addr)
time.sleep(120)
)";

// The dependent starts only after its dependency's process.ready, and its first act (a
// connect, or reading a marker) succeeds.
void check_order(const EventLog& events, const std::string& dep, const std::string& dependent) {
  const int ready = events.index(dep, kEventReady);
  REQUIRE(ready >= 0);
  CHECK(ready < events.index(dep, event::started));
  CHECK(ready < events.index(dependent, event::started));
  // The dependent was not forked before: its starting event came first, but no pid, no
  // start, nothing else until the dependency was ready.
  CHECK(events.count(dependent, event::crashed) == 0);
  CHECK(events.count(dependent, event::failed) == 0);
}

}  // namespace

TEST_CASE("ready: tcp: a dependent starts once a late listener is ready", "[ready]") {
  TempDir dir;
  const int port = free_port();
  {
    auto b = make_backend(
        "processes:\n" +
        py_process("web", dir, "conn.py", kConnector, {std::to_string(port)},
                   "    depends_on: [db]\n    start_retries: 0\n    restart: never\n") +
        py_process("db", dir, "late.py", kLateListener, {std::to_string(port), "0.7"},
                   "    ready: {tcp: \"127.0.0.1:" + std::to_string(port) +
                       "\", interval: 50ms, start_timeout: 60s}\n"));
    EventLog events(*b);
    b->start_all();
    // Until the listener is up, the dependency is starting and the dependent not forked.
    REQUIRE(wait_until([&] { return pid_of(*b, "db") > 0; }, 20s));
    if (!events.has("db", kEventReady)) {
      CHECK(state_of(*b, "db") == state::starting);
    }
    REQUIRE(wait_until([&] { return logs_of(*b, "web") == "connected\n"; }, 30s));
    CHECK(state_of(*b, "db") == state::running);
    CHECK(state_of(*b, "web") == state::running);
    check_order(events, "db", "web");
    CHECK_THAT(events.summary_of("db", kEventReady),
               Catch::StartsWith("ready after ") &&
                   Catch::Contains("tcp 127.0.0.1:" + std::to_string(port)));
    const auto e = b->status("db");
    REQUIRE(e);
    CHECK_THAT(e->probe, Catch::StartsWith("ok: connected to 127.0.0.1"));
    CHECK(e->health.empty());  // no health check
  }
  CHECK(zombies() == 0);
}

TEST_CASE("ready: notify: systemd-notify --ready from a child shell, STATUS= shown",
          "[ready]") {
  if (!exists("/usr/bin/systemd-notify") && !exists("/bin/systemd-notify")) {
    WARN("systemd-notify is not installed; skipped");
    return;
  }
  TempDir dir;
  {
    auto b = make_backend(
        "processes:\n" +
        sh_process("app", "test -f \"$D/db-ready\" && echo ok; exec sleep 120",
                   "    depends_on: [db]\n    env: {D: " + dir.path.string() + "}\n") +
        sh_process("db",
                   "sleep 0.5; touch \"$D/db-ready\"; systemd-notify --ready --status=serving; "
                   "exec sleep 120",
                   "    ready: {notify: true}\n    env: {D: " + dir.path.string() + "}\n"));
    EventLog events(*b);
    b->start_all();
    REQUIRE(wait_until([&] { return state_of(*b, "app") == state::running; }, 30s));
    CHECK(state_of(*b, "db") == state::running);
    CHECK(wait_until([&] { return logs_of(*b, "app") == "ok\n"; }));
    check_order(events, "db", "app");
    CHECK_THAT(events.summary_of("db", kEventReady), Catch::Contains("notify: READY=1"));
    REQUIRE(wait_until([&] { return b->status("db")->status_text == "serving"; }));
  }
  CHECK(zombies() == 0);
}

TEST_CASE("ready: notify: python writing to $NOTIFY_SOCKET itself", "[ready]") {
  TempDir dir;
  {
    auto b = make_backend("processes:\n" +
                          py_process("svc", dir, "notify.py", kPyNotify, {"0.3"},
                                     "    ready: {notify: true, start_timeout: 60s}\n") +
                          sh_process("after", "exec sleep 120", "    depends_on: svc\n"));
    EventLog events(*b);
    b->start_all();
    REQUIRE(wait_until([&] { return state_of(*b, "after") == state::running; }, 30s));
    check_order(events, "svc", "after");
    CHECK(b->status("svc")->status_text == "serving");
    CHECK(b->status("svc")->probe == "ok: READY=1");
  }
  CHECK(zombies() == 0);
}

TEST_CASE("ready: fd: a newline on fd 3 after a delay", "[ready]") {
  TempDir dir;
  {
    auto b = make_backend(
        "processes:\n" +
        sh_process("s6", "sleep 0.4; touch \"$D/up\"; echo >&3; exec sleep 120",
                   "    ready: {fd: 3}\n    env: {D: " + dir.path.string() + "}\n") +
        sh_process("next", "test -f \"$D/up\" && echo ok; exec sleep 120",
                   "    depends_on: s6\n    env: {D: " + dir.path.string() + "}\n"));
    EventLog events(*b);
    b->start_all();
    REQUIRE(wait_until([&] { return state_of(*b, "next") == state::running; }, 30s));
    // It found the marker its dependency made just before it was ready.
    CHECK(wait_until([&] { return logs_of(*b, "next") == "ok\n"; }));
    check_order(events, "s6", "next");
    CHECK_THAT(events.summary_of("s6", kEventReady), Catch::Contains("a newline on fd 3"));
  }
  CHECK(zombies() == 0);
}

TEST_CASE("ready: exec, file and log probes", "[ready]") {
  TempDir dir;
  const std::string env = "    env: {D: " + dir.path.string() + "}\n";
  {
    auto b = make_backend(
        "processes:\n" +
        // exec runs with the process's environment ($D).
        sh_process("ex", "sleep 0.3; touch \"$D/ex\"; exec sleep 120",
                   "    ready: {exec: [sh, -c, 'test -f \"$D/ex\"'], interval: 50ms}\n" + env) +
        sh_process("fi", "sleep 0.3; touch \"$D/fi\"; exec sleep 120",
                   "    ready: {file: " + dir.file("fi") + ", interval: 50ms}\n" + env) +
        sh_process("lg", "echo booting; sleep 0.3; echo 'listening on port 8080'; exec sleep 120",
                   "    ready: {log: \"listening on port [0-9]+\"}\n"));
    EventLog events(*b);
    b->start_all();
    for (const char* id : {"ex", "fi", "lg"}) {
      INFO(id);
      REQUIRE(wait_until([&] { return state_of(*b, id) == state::running; }, 30s));
      CHECK(events.index(id, kEventReady) < events.index(id, event::started));
    }
    CHECK(exists(dir.file("ex")));
    CHECK(exists(dir.file("fi")));
    CHECK_THAT(events.summary_of("ex", kEventReady), Catch::Contains("exec sh -c"));
    CHECK_THAT(events.summary_of("lg", kEventReady),
               Catch::Contains("\"listening on port 8080\" matched"));
    CHECK(b->status("fi")->probe == "ok: exists");
  }
  CHECK(zombies() == 0);
}

TEST_CASE("ready: a probe that never passes fails the start after start_timeout", "[ready]") {
  const int port = free_port();
  {
    auto b = make_backend(
        "processes:\n" +
        sh_process("db", "exec sleep 120",
                   "    ready: {tcp: \"127.0.0.1:" + std::to_string(port) +
                       "\", interval: 50ms, timeout: 1s, start_timeout: 700ms}\n"
                       "    start_retries: 0\n    autostart: false\n") +
        sh_process("web", "exec sleep 120", "    depends_on: db\n    autostart: false\n"));
    EventLog events(*b);
    const OpResult r = start(*b, "web");
    CHECK_THAT(r.err, Catch::Contains("dependency db is failed"));
    CHECK(state_of(*b, "db") == state::failed);
    CHECK(state_of(*b, "web") == state::failed);
    const auto e = b->status("db");
    REQUIRE(e);
    CHECK_THAT(e->last_error, Catch::Contains("not ready after 700 ms") &&
                                  Catch::Contains("Connection refused") &&
                                  Catch::Contains("before it was ready"));
    CHECK(pid_of(*b, "db") == 0);
    CHECK_FALSE(events.has("db", kEventReady));
    CHECK_FALSE(events.has("db", event::started));
    CHECK(events.count("web", event::started) == 0);
  }
  CHECK(zombies() == 0);
}

TEST_CASE("health: http 2xx is healthy, 500 makes it unhealthy and restarts it", "[health]") {
  TempDir dir;
  const int port = free_port();
  const std::string url = "http://127.0.0.1:" + std::to_string(port) + "/health";
  {
    auto b = make_backend(
        "processes:\n" +
        py_process("web", dir, "webserver.py", kHttpServer, {std::to_string(port), dir.file("sick")},
                   "    ready: {http: \"" + url + "\", interval: 50ms}\n"
                   "    health: {http: \"" + url + "\", interval: 100ms, retries: 2}\n"));
    EventLog events(*b);
    b->start_all();
    const bool healthy = wait_until([&] { return b->status("web")->health == "healthy"; }, 30s);
    INFO(b->status("web")->state << ", probe " << b->status("web")->probe << ", stderr "
                                  << logs_of(*b, "web", LogStream::err));
    REQUIRE(healthy);
    CHECK(state_of(*b, "web") == state::running);
    CHECK_THAT(b->status("web")->probe, Catch::Contains("ok: HTTP/1.0 200"));
    const auto first = pid_of(*b, "web");
    touch(dir.file("sick"));  // it answers 500 from now on
    REQUIRE(wait_until([&] { return events.has("web", kEventUnhealthy); }, 30s));
    std::filesystem::remove(dir.file("sick"));
    CHECK_THAT(events.summary_of("web", kEventUnhealthy),
               Catch::Contains("failed 2 times in a row") && Catch::Contains("500") &&
                   Catch::Contains("restarting pid " + std::to_string(first)));
    REQUIRE(wait_until([&] {
      const auto e = b->status("web");
      return e->pid != first && e->pid > 0 && e->state == state::running &&
             e->health == "healthy";
    }, 30s));
    CHECK(b->status("web")->restarts == 1);
    CHECK(events.index("web", kEventUnhealthy) < events.index("web", event::stopping));
  }
  CHECK(zombies() == 0);
}

TEST_CASE("health: on_unhealthy: log keeps the pid, healthy again once the probe passes",
          "[health]") {
  TempDir dir;
  touch(dir.file("alive"));
  {
    auto b = make_backend("processes:\n" +
                          sh_process("w", "exec sleep 120",
                                     "    health: {file: " + dir.file("alive") +
                                         ", interval: 50ms, retries: 3, on_unhealthy: log}\n"));
    EventLog events(*b);
    b->start_all();
    REQUIRE(wait_until([&] { return b->status("w")->health == "healthy"; }, 30s));
    const auto pid = pid_of(*b, "w");
    std::filesystem::remove(dir.file("alive"));  // a "hung" child: its probe fails
    REQUIRE(wait_until([&] { return b->status("w")->health == "unhealthy"; }, 30s));
    CHECK_THAT(events.summary_of("w", kEventUnhealthy),
               Catch::Contains("failed 3 times in a row") &&
                   Catch::Contains("No such file or directory") &&
                   Catch::Contains("logged only"));
    CHECK_THAT(b->status("w")->probe, Catch::StartsWith("failed: "));
    CHECK(pid_of(*b, "w") == pid);
    CHECK(state_of(*b, "w") == state::running);
    touch(dir.file("alive"));
    REQUIRE(wait_until([&] { return events.has("w", kEventHealthy); }, 30s));
    CHECK(b->status("w")->health == "healthy");
    CHECK(pid_of(*b, "w") == pid);
    CHECK(events.count("w", kEventUnhealthy) == 1);
    CHECK_FALSE(events.has("w", event::stopping));
  }
  CHECK(zombies() == 0);
}

TEST_CASE("health: an exec probe that hangs is killed at its timeout", "[health]") {
  {
    auto b = make_backend(
        "processes:\n" +
        sh_process("h", "exec sleep 120",
                   "    health: {exec: 'sleep 30', interval: 50ms, timeout: 200ms, retries: 1, "
                   "on_unhealthy: log}\n"));
    EventLog events(*b);
    b->start_all();
    REQUIRE(wait_until([&] { return events.has("h", kEventUnhealthy); }, 30s));
    CHECK_THAT(events.summary_of("h", kEventUnhealthy), Catch::Contains("timed out after 200 ms"));
    CHECK(b->status("h")->health == "unhealthy");
  }
  CHECK(zombies() == 0);
}

TEST_CASE("health: watchdog for a notify process", "[health]") {
  TempDir dir;
  {
    // Sends READY=1, a few WATCHDOG=1, then falls silent.
    auto b = make_backend(
        "processes:\n" +
        py_process("wd", dir, "wd.py",
                   "import os, socket, time\n"
                   "a = os.environ['NOTIFY_SOCKET']\n"
                   "a = '\\0' + a[1:] if a.startswith('@') else a\n"
                   "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
                   "assert os.environ['WATCHDOG_USEC'] == '400000'\n"
                   "s.sendto(b'READY=1', a)\n"
                   "for i in range(5):\n"
                   "    s.sendto(b'WATCHDOG=1', a)\n"
                   "    time.sleep(0.1)\n"
                   "time.sleep(120)\n",
                   {}, "    ready: {notify: true}\n"
                       "    health: {watchdog: 400ms, on_unhealthy: log}\n"));
    EventLog events(*b);
    b->start_all();
    REQUIRE(wait_until([&] { return events.has("wd", kEventUnhealthy); }, 30s));
    CHECK_THAT(events.summary_of("wd", kEventUnhealthy),
               Catch::Contains("no WATCHDOG=1 for 400 ms"));
    CHECK(state_of(*b, "wd") == state::running);
  }
  CHECK(zombies() == 0);
}

TEST_CASE("ready/health config: bad fields name file, line and column", "[ready][health]") {
  auto error_of = [](const std::string& field) {
    try {
      process::parse_backend_config(
          YAML::Load("processes:\n  - id: web\n    command: /bin/true\n    " + field + "\n"),
          "mgmt.yaml");
    } catch (const std::runtime_error& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  CHECK_THAT(error_of("ready: {log: \"([a-z\"}"),
             Catch::StartsWith("mgmt.yaml:4:18: ready.log is not a valid regular expression"));
  CHECK_THAT(error_of("ready: {tcp: \"db:5432\"}"),
             Catch::StartsWith("mgmt.yaml:4:18: ready.tcp must be an IP address and port"));
  CHECK_THAT(error_of("ready: {http: \"https://x/\"}"),
             Catch::StartsWith("mgmt.yaml:4:19: ready.http: https is not supported"));
  CHECK_THAT(error_of("ready: {fd: 1}"),
             Catch::StartsWith("mgmt.yaml:4:17: ready.fd must be a descriptor number"));
  CHECK_THAT(error_of("ready: {tcp: \"127.0.0.1:1\", file: /x}"),
             Catch::StartsWith("mgmt.yaml:4:39: ready takes one probe"));
  CHECK_THAT(error_of("ready: {interval: 1s}"),
             Catch::StartsWith("mgmt.yaml:4:12: ready needs a probe"));
  CHECK_THAT(error_of("ready: {notify: true, start_timeout: soon}"),
             Catch::StartsWith("mgmt.yaml:4:42: ready.start_timeout must be a duration"));
  CHECK_THAT(error_of("ready: {notify: true, colour: red}"),
             Catch::StartsWith("mgmt.yaml:4:27: unknown key \"colour\" in ready"));
  CHECK_THAT(error_of("health: {notify: true}"),
             Catch::StartsWith("mgmt.yaml:4:14: health takes exec, tcp, http or file probes"));
  CHECK_THAT(error_of("health: {file: /x, retries: 0}"),
             Catch::StartsWith("mgmt.yaml:4:33: health.retries must be a whole number"));
  CHECK_THAT(error_of("health: {file: /x, on_unhealthy: panic}"),
             Catch::StartsWith("mgmt.yaml:4:38: health.on_unhealthy must be restart, log or"));
  CHECK_THAT(error_of("health: {watchdog: 5s}"),
             Catch::StartsWith("mgmt.yaml:4:24: health.watchdog needs `ready: {notify: true}`"));
  // Good ones: defaults and values.
  const auto cfg = process::parse_backend_config(
      YAML::Load("processes:\n  - id: web\n    command: /bin/true\n"
                 "    ready: {http: \"http://localhost:8080/health\"}\n"
                 "    health: {exec: [pg_isready, -q], interval: 10s, retries: 5, "
                 "on_unhealthy: \"signal:HUP\"}\n"),
      "mgmt.yaml");
  const auto& p = cfg.processes.at(0);
  REQUIRE(p.ready);
  CHECK(p.ready->probe.kind == process::Probe::Kind::http);
  CHECK(p.ready->probe.host == "127.0.0.1");
  CHECK(p.ready->probe.port == 8080);
  CHECK(p.ready->probe.path == "/health");
  CHECK(p.ready->probe.interval == 1s);
  CHECK(p.ready->probe.timeout == 5s);
  CHECK(p.ready->start_timeout == 60s);
  REQUIRE(p.health);
  CHECK(p.health->probe.argv == std::vector<std::string>{"pg_isready", "-q"});
  CHECK(p.health->retries == 5);
  CHECK(p.health->on_unhealthy == process::HealthCheck::Action::signal);
  CHECK(p.health->signal == SIGHUP);
  CHECK(process::changed_fields(p, cfg.processes.at(0)).empty());
}
