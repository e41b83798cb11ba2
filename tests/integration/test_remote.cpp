// mgmtctl --host ssh://... against a real sshd on 127.0.0.1 (throwaway keys, a private
// config), with two mgmtd on this machine acting as two hosts; and dial-stdio on its own.
// The ssh tests are skipped (with a warning) without /usr/sbin/sshd or without root.
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "harness.hpp"
#include "wait.hpp"

using namespace mgmt;
using namespace mgmt::test;

namespace {

const std::string kBackend =
    "backend:\n"
    "  plugin: process\n"
    "  config:\n"
    "    processes:\n" +
    ticker_processes("web") + probe_process("probe");

bool sshd_usable() {
  if (::access("/usr/sbin/sshd", X_OK) != 0) {
    WARN("skipped: /usr/sbin/sshd is missing (apt-get install openssh-server)");
    return false;
  }
  if (::access("/usr/bin/ssh-keygen", X_OK) != 0 || ::access("/usr/bin/ssh", X_OK) != 0) {
    WARN("skipped: ssh or ssh-keygen is missing (apt-get install openssh-client)");
    return false;
  }
  if (::geteuid() != 0) {
    WARN("skipped: sshd needs root here (privilege separation, logging in as root)");
    return false;
  }
  return true;
}

// A port nobody listens on right now (sshd may still lose it to someone: then it retries).
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  socklen_t len = sizeof a;
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
  ::close(fd);
  return ntohs(a.sin_port);
}

bool port_accepts(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

// sshd on 127.0.0.1 with a throwaway host key, accepting a throwaway user key for root.
class Sshd {
 public:
  Sshd() {
    if (::mkdir("/run/sshd", 0755) != 0) REQUIRE(errno == EEXIST);  // privilege separation
    for (const char* key : {"host_key", "user_key"}) {
      const auto r =
          run({"/usr/bin/ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", dir_.file(key)});
      INFO(r.err);
      REQUIRE(r.exit_code == 0);
    }
    dir_.write("authorized_keys", read_file(dir_.file("user_key.pub")));
    for (int attempt = 0; attempt < 5; ++attempt) {
      port_ = free_port();
      dir_.write("sshd_config", "Port " + std::to_string(port_) +
                                    "\n"
                                    "ListenAddress 127.0.0.1\n"
                                    "HostKey " +
                                    dir_.file("host_key") + "\n" + "AuthorizedKeysFile " +
                                    dir_.file("authorized_keys") + "\n" +
                                    "StrictModes no\n"
                                    "UsePAM no\n"
                                    "PermitRootLogin prohibit-password\n"
                                    "PasswordAuthentication no\n"
                                    "PidFile " +
                                    dir_.file("sshd.pid") + "\n");
      // stderr into the output we can read while it runs.
      sshd_ = std::make_unique<Background>(std::vector<std::string>{
          "/bin/sh", "-c", "exec /usr/sbin/sshd -D -e -f '" + dir_.file("sshd_config") + "' 2>&1"});
      const std::string listening = "Server listening on 127.0.0.1 port " + std::to_string(port_);
      bool lost = false;
      const bool up = wait_until(
          [&] {
            const auto out = sshd_->out();
            lost = out.find("Cannot bind") != std::string::npos ||
                   out.find("Address already in use") != std::string::npos;
            return lost || (out.find(listening) != std::string::npos && port_accepts(port_));
          },
          30s);
      if (up && !lost) return;
      INFO(sshd_->out());
      REQUIRE(lost);  // anything but a lost port is a failure
      sshd_.reset();
    }
    FAIL("sshd could not get a port");
  }
  // sshd_'s end (Background: SIGKILL and reap) stops it; it is the shell's exec.

  int port() const { return port_; }
  std::string url(const std::string& socket) const {
    return "ssh://root@127.0.0.1:" + std::to_string(port_) + socket;
  }
  std::string where() const { return "root@127.0.0.1:" + std::to_string(port_); }
  std::map<std::string, std::string> env() const {
    return {{"MGMT_SSH_COMMAND", "ssh -i " + dir_.file("user_key") +
                                     " -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
                                     " -o BatchMode=yes -o LogLevel=ERROR"},
            {"MGMT_REMOTE_MGMTCTL", MGMTCTL_BIN},
            {"TZ", "UTC"}};
  }
  RunResult ctl(const std::vector<std::string>& args,
                const std::map<std::string, std::string>& extra = {}) const {
    std::vector<std::string> argv{MGMTCTL_BIN};
    argv.insert(argv.end(), args.begin(), args.end());
    auto e = env();
    for (const auto& [k, v] : extra) e[k] = v;
    return run(argv, e, 60s);
  }

 private:
  TempDir dir_;
  int port_ = 0;
  std::unique_ptr<Background> sshd_;
};

// The pids of the processes whose command line contains `needle` (arguments joined by
// spaces): the follower, its ssh children and the remote dial-stdio.
std::vector<pid_t> pids_matching(const std::string& needle) {
  std::vector<pid_t> pids;
  DIR* d = ::opendir("/proc");
  if (d == nullptr) return pids;
  while (const dirent* e = ::readdir(d)) {
    const pid_t pid = static_cast<pid_t>(std::atol(e->d_name));
    if (pid <= 0 || pid == ::getpid()) continue;
    std::string cmd = read_file("/proc/" + std::string(e->d_name) + "/cmdline");
    for (auto& c : cmd) {
      if (c == '\0') c = ' ';
    }
    if (cmd.find(needle) != std::string::npos && pid_alive(pid)) pids.push_back(pid);
  }
  ::closedir(d);
  return pids;
}

std::vector<std::string> lines(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

void wait_running(const Mgmtd& d, const std::string& id) {
  REQUIRE(wait_until(
      [&] {
        return d.ctl({"status", id}).out.find("running") != std::string::npos;
      },
      30s));
}

// Starts and stops the probe on `d` until `seen` (the subscriber's output so far) shows it
// stopped: proves the subscription through ssh is in place, whatever its delay.
void until_probe_seen(const Mgmtd& d, const std::function<std::string()>& seen,
                      const std::string& marker) {
  const bool ok = wait_until(
      [&] {
        REQUIRE(d.ctl({"start", "probe"}).exit_code == 0);
        REQUIRE(d.ctl({"stop", "probe"}).exit_code == 0);
        return wait_until([&] { return seen().find(marker) != std::string::npos; }, 2s);
      },
      60s);
  INFO(seen());
  REQUIRE(ok);
}

}  // namespace

TEST_CASE("mgmtctl --host ssh:// gives the local output, for every kind of command", "[remote]") {
  if (!sshd_usable()) return;
  Sshd sshd;
  Mgmtd d(kBackend);
  wait_running(d, "web");
  const std::string url = sshd.url(d.socket());

  // The same bytes as the local command, but for the RSS a second later.
  const auto same = [](const std::string& what, std::string text) {
    if (what == "status") {
      const auto rss = text.find("RSS:");
      if (rss != std::string::npos) text.erase(rss, text.find('\n', rss) + 1 - rss);
      return text;
    }
    if (what == "json") {
      auto j = nlohmann::json::parse(text);
      for (auto& e : j) e.erase("rss");
      return j.dump();
    }
    if (what == "call") {
      auto j = nlohmann::json::parse(text);
      for (auto& e : j["entries"]) e.erase("rss");
      return j.dump();
    }
    return text;
  };
  for (const auto& [what, args] :
       std::vector<std::pair<std::string, std::vector<std::string>>>{{"list", {"list"}},
                                                                     {"json", {"list", "--json"}},
                                                                     {"status", {"status", "web"}},
                                                                     {"call", {"call", "0xA0"}}}) {
    INFO(what);
    const auto local = d.ctl(args);
    auto full = args;
    full.insert(full.begin(), {"--host", url});
    const auto remote = sshd.ctl(full);
    INFO(remote.err);
    REQUIRE(remote.exit_code == 0);
    CHECK(same(what, remote.out) == same(what, local.out));
    CHECK(remote.err.empty());
  }
  // MGMT_HOST is the --host; a server error comes through as it is.
  auto r = sshd.ctl({"status", "nope"}, {{"MGMT_HOST", url}});
  CHECK(r.exit_code == 1);
  CHECK(r.err == d.ctl({"status", "nope"}).err);
  r = sshd.ctl({"start", "probe"}, {{"MGMT_HOST", url}});
  CHECK(r.exit_code == 0);
  CHECK(r.out == "started probe\n");
  r = sshd.ctl({"--host", url, "stop", "probe", "--json"});
  CHECK(r.exit_code == 0);
  CHECK(nlohmann::json::parse(r.out)[0]["ok"] == true);
  // unix:// is the local socket.
  r = sshd.ctl({"--host", "unix://" + d.socket(), "list"});
  CHECK(r.out == d.ctl({"list"}).out);
}

TEST_CASE("mgmtctl --host ssh:// logs -f follows both streams, the follower's end ends ssh",
          "[remote]") {
  if (!sshd_usable()) return;
  Sshd sshd;
  Mgmtd d(kBackend);
  wait_running(d, "web");
  std::vector<std::string> argv{MGMTCTL_BIN, "--host", sshd.url(d.socket()), "logs", "-f", "web"};
  Background follower(argv, sshd.env());
  // Several chunks arrive, in order: the ticks count up without a gap.
  auto ticks = [&] {
    std::vector<int> n;
    for (const auto& l : lines(follower.out())) {
      if (l.rfind("tick ", 0) == 0) n.push_back(std::stoi(l.substr(5)));
    }
    return n;
  };
  REQUIRE(wait_until([&] { return ticks().size() >= 5; }, 60s));
  const auto first = ticks();
  REQUIRE(wait_until([&] { return ticks().size() >= first.size() + 5; }, 60s));  // still live
  const auto seen = ticks();
  for (std::size_t i = 1; i < seen.size(); ++i) CHECK(seen[i] == seen[i - 1] + 1);

  // Two ssh processes (one per stream) and their two remote dial-stdio.
  const std::string bridge = "dial-stdio --socket " + d.socket();
  CHECK(wait_until([&] { return pids_matching(bridge).size() == 4; }, 30s));
  const auto follower_pids = pids_matching(sshd.url(d.socket()) + " logs -f web");
  REQUIRE(follower_pids.size() == 1);
  ::kill(follower_pids[0], SIGTERM);
  const auto r = follower.wait(30s);
  CHECK(r.exit_code == -1);                         // died of the signal
  CHECK(r.err.find("oops ") != std::string::npos);  // the stderr stream came through too
  // Its ssh children are gone with it, and the remote ends follow.
  CHECK(wait_until([&] { return pids_matching(bridge).empty(); }, 30s));
}

TEST_CASE("mgmtctl --host ssh:// events streams through ssh", "[remote]") {
  if (!sshd_usable()) return;
  Sshd sshd;
  Mgmtd d(kBackend);
  Background events({MGMTCTL_BIN, "--host", sshd.url(d.socket()), "events", "--process", "probe"},
                    sshd.env());
  until_probe_seen(
      d, [&] { return events.out(); }, "process.stopped");
  for (const auto& l : lines(events.out())) {
    CHECK_THAT(l, Catch::Contains("probe"));
    CHECK(l.rfind("ssh://", 0) == std::string::npos);  // one host: no HOST column
  }
  const std::string bridge = "dial-stdio --socket " + d.socket();
  // The server's end of the stream ends mgmtctl, with status 0.
  CHECK(d.terminate() == 0);
  const auto r = events.wait(30s);
  INFO(r.err);
  CHECK(r.exit_code == 0);
  CHECK(wait_until([&] { return pids_matching(bridge).empty(); }, 30s));
}

TEST_CASE("fleet: list, status, start/stop and events over two hosts through ssh", "[remote]") {
  if (!sshd_usable()) return;
  Sshd sshd;
  Mgmtd d1(kBackend), d2(kBackend);
  wait_running(d1, "web");
  wait_running(d2, "web");
  const std::string u1 = sshd.url(d1.socket()), u2 = sshd.url(d2.socket());
  const std::string hosts = u1 + "," + u2;

  auto r = sshd.ctl({"--host", u1, "--host", u2, "list"});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  auto ls = lines(r.out);
  REQUIRE(ls.size() == 5);  // header, web and probe on each
  const std::string pad(u1.size() - std::string("HOST").size() + 2, ' ');
  CHECK(ls[0] == "HOST" + pad + "ID     NAME    STATE    PID");
  CHECK(ls[1].rfind(u1 + "  web    Ticker  running  ", 0) == 0);
  CHECK(ls[2] == u1 + "  probe  probe   pending  0");
  CHECK(ls[3].rfind(u2 + "  web    Ticker  running  ", 0) == 0);
  CHECK(ls[4] == u2 + "  probe  probe   pending  0");

  r = sshd.ctl({"--host", hosts, "list", "--json"});
  REQUIRE(r.exit_code == 0);
  auto j = nlohmann::json::parse(r.out);
  REQUIRE(j.size() == 4);
  CHECK(j[0]["host"] == u1);
  CHECK(j[0]["id"] == "web");
  CHECK(j[3]["host"] == u2);
  CHECK(j[3]["id"] == "probe");
  CHECK(j[0]["pid"] != j[2]["pid"]);

  r = sshd.ctl({"--host", hosts, "status", "web", "--json"});
  REQUIRE(r.exit_code == 0);
  j = nlohmann::json::parse(r.out);
  REQUIRE(j.size() == 2);
  CHECK(j[1]["host"] == u2);
  CHECK(j[1]["state"] == "running");
  r = sshd.ctl({"--host", hosts, "status", "web"});
  CHECK_THAT(r.out, Catch::StartsWith("Host:       " + u1 + "\nID:         web\n") &&
                        Catch::Contains("\n\nHost:       " + u2 + "\nID:         web\n"));

  // Events merged from both, each after its host; start/stop on both.
  Background events({MGMTCTL_BIN, "--host", hosts, "events", "--process", "probe"}, sshd.env());
  const auto both_seen = [&](const std::string& what) {
    const auto out = events.out();
    return out.find(u1 + "  ") != std::string::npos && out.find(u2 + "  ") != std::string::npos &&
           out.find(what) != std::string::npos;
  };
  // Subscribed on both once each has shown its probe stopping.
  until_probe_seen(
      d1, [&] { return events.out(); }, u1 + "  ");
  until_probe_seen(
      d2, [&] { return events.out(); }, u2 + "  ");
  r = sshd.ctl({"--host", hosts, "start", "probe"});
  INFO(r.err);
  CHECK(r.exit_code == 0);
  CHECK(r.out == u1 + "  started probe\n" + u2 + "  started probe\n");
  CHECK(wait_until([&] { return both_seen("process.started"); }, 30s));
  r = sshd.ctl({"--host", hosts, "stop", "probe", "--json"});
  CHECK(r.exit_code == 0);
  j = nlohmann::json::parse(r.out);
  REQUIRE(j.size() == 2);
  CHECK(j[0]["host"] == u1);
  CHECK(j[1]["host"] == u2);
  CHECK(j[1]["ok"] == true);
  for (const auto& l : lines(events.out())) {
    CHECK((l.rfind(u1 + "  ", 0) == 0 || l.rfind(u2 + "  ", 0) == 0));
  }

  // events --json: "host" on every object.
  Background jevents({MGMTCTL_BIN, "--host", hosts, "events", "--json", "--process", "probe"},
                     sshd.env());
  until_probe_seen(
      d2, [&] { return jevents.out(); }, "process.stopped");
  for (const auto& l : lines(jevents.out())) {
    const auto ev = nlohmann::json::parse(l);
    CHECK(ev["host"] == u2);
    CHECK(ev["pid"] == "probe");
  }

  // Commands that take one host refuse several.
  r = sshd.ctl({"--host", hosts, "logs", "web"});
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.err, Catch::Contains("logs works on one host at a time, got 2 hosts"));
}

TEST_CASE("fleet: a host down is reported by name and step, the others still answer", "[remote]") {
  if (!sshd_usable()) return;
  Sshd sshd;
  Mgmtd d1(kBackend), d2(kBackend);
  wait_running(d1, "web");
  const std::string u1 = sshd.url(d1.socket()), u2 = sshd.url(d2.socket());
  REQUIRE(d2.terminate() == 0);

  TempDir files;
  files.write("hosts", "# two hosts, one down\n" + u1 + "\n\n" + u2 + "   # this one\n");
  auto r = sshd.ctl({"--hosts-file", files.file("hosts"), "list"});
  CHECK(r.exit_code == 1);
  const auto ls = lines(r.out);
  REQUIRE(ls.size() == 3);
  CHECK(ls[1].rfind(u1 + "  web", 0) == 0);
  CHECK_THAT(r.err, Catch::Contains("mgmtctl: " + u2 + ": no mgmtd on " + sshd.where() +
                                    ": cannot connect to " + d2.socket()));
  CHECK(r.err.find(u1) == std::string::npos);

  // A socket path that never was, and one host alone: the same step named.
  const std::string bad = sshd.url(files.file("nothing.sock"));
  r = sshd.ctl({"--host", bad + "," + u1, "status", "web"});
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.out, Catch::StartsWith("Host:       " + u1));
  CHECK_THAT(r.err, Catch::Contains(bad + ": no mgmtd on " + sshd.where()));
  r = sshd.ctl({"--host", bad, "list"});
  CHECK(r.exit_code == 1);
  CHECK(r.out.empty());
  CHECK_THAT(r.err, Catch::StartsWith("mgmtctl: no mgmtd on " + sshd.where() +
                                      ": cannot connect to " + files.file("nothing.sock")));
  // Streams too: events does not end quietly with status 0.
  r = sshd.ctl({"--host", bad, "events"});
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.err, Catch::Contains("no mgmtd on " + sshd.where()));
}

TEST_CASE("ssh failures name the step: ssh itself, the remote mgmtctl", "[remote]") {
  if (!sshd_usable()) return;
  Sshd sshd;
  Mgmtd d(kBackend);
  const int closed_port = free_port();  // nobody listens there
  const std::string wrong = "ssh://root@127.0.0.1:" + std::to_string(closed_port) + d.socket();
  auto r = sshd.ctl({"--host", wrong, "list"});
  CHECK(r.exit_code == 1);
  CHECK(r.out.empty());
  CHECK_THAT(r.err, Catch::StartsWith("mgmtctl: ssh to root@127.0.0.1:" +
                                      std::to_string(closed_port) + " failed: ") &&
                        Catch::Contains("Connection refused"));

  r = sshd.ctl({"--host", sshd.url(d.socket()), "list"}, {{"MGMT_REMOTE_MGMTCTL", "/nonexistent"}});
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.err, Catch::StartsWith("mgmtctl: mgmtctl not found on " + sshd.where()) &&
                        Catch::Contains("MGMT_REMOTE_MGMTCTL"));

  // No ssh program at all.
  r = sshd.ctl({"--host", sshd.url(d.socket()), "list"},
               {{"MGMT_SSH_COMMAND", "/nonexistent/ssh"}});
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.err, Catch::Contains("ssh to " + sshd.where() +
                                    " failed: cannot run \"/nonexistent/ssh\""));

  // In a fleet, each failure after its host, the good host answering.
  r = sshd.ctl({"--host", wrong + "," + sshd.url(d.socket()), "list", "--json"});
  CHECK(r.exit_code == 1);
  const auto j = nlohmann::json::parse(r.out);
  REQUIRE(j.size() == 2);  // web and probe of the good host
  CHECK(j[0]["host"] == sshd.url(d.socket()));
  CHECK_THAT(r.err, Catch::StartsWith("mgmtctl: " + wrong + ": ssh to "));
}

TEST_CASE("mgmtctl dial-stdio bridges stdin and stdout to the socket, half-closing", "[remote]") {
  Mgmtd d(kBackend);
  TempDir io;
  // Two requests, then the end of stdin: both answered before the server closes.
  io.write("in", make_frame(to_byte(MsgType::ListRequest), 1, "") +
                     make_frame(to_byte(MsgType::StatusRequest), 2, encode(StatusRequest{"web"})));
  auto r = run({"/bin/sh", "-c",
                std::string(MGMTCTL_BIN) + " dial-stdio --socket '" + d.socket() + "' < '" +
                    io.file("in") + "' > '" + io.file("out") + "'"});
  INFO(r.err);
  CHECK(r.exit_code == 0);
  const std::string out = read_file(io.file("out"));
  FrameHeader h1{}, h2{};
  REQUIRE(out.size() > 2 * kHeaderSize);
  REQUIRE(parse_header(reinterpret_cast<const std::uint8_t*>(out.data()), h1) == HeaderError::none);
  CHECK(h1.type == to_byte(MsgType::ListResponse));
  CHECK(h1.seq == 1);
  const std::size_t second = kHeaderSize + h1.length;
  REQUIRE(out.size() >= second + kHeaderSize);
  REQUIRE(parse_header(reinterpret_cast<const std::uint8_t*>(out.data() + second), h2) ==
          HeaderError::none);
  CHECK(h2.type == to_byte(MsgType::StatusResponse));
  CHECK(h2.seq == 2);
  CHECK(out.size() == second + kHeaderSize + h2.length);

  // No server: the reason on stderr, exit 1.
  r = run({MGMTCTL_BIN, "dial-stdio", "--socket", io.file("none.sock")});
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.err, Catch::StartsWith("mgmtctl: cannot connect to " + io.file("none.sock")));
  CHECK(r.out.empty());
}
