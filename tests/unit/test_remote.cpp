// mgmtctl --host: the URL forms, hosts files, the ssh command line, the fleet's usage
// rules and table; Client::adopt. Talking to a real sshd is in tests/integration.
#include <catch2/catch.hpp>

#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "args.hpp"
#include "cli.hpp"
#include "commands.hpp"
#include "fleet.hpp"
#include "format.hpp"
#include "mgmt/client.hpp"
#include "mgmt/wire.hpp"
#include "remote.hpp"

using mgmtctl::HostSpec;

namespace {

HostSpec must_parse(const std::string& text) {
  std::string error;
  auto h = mgmtctl::parse_host(text, error);
  INFO(error);
  REQUIRE(h);
  CHECK(error.empty());
  return *h;
}

std::string parse_error(const std::string& text) {
  std::string error;
  const auto h = mgmtctl::parse_host(text, error);
  CHECK_FALSE(h);
  return error;
}

struct CliRun {
  int code;
  std::string out, err;
};

CliRun run(const std::vector<std::string>& args) {
  std::ostringstream out, err;
  const int code = mgmtctl::run_cli(args, out, err);
  return {code, out.str(), err.str()};
}

}  // namespace

TEST_CASE("parse_host: ssh URLs with user, port and socket path", "[remote]") {
  auto h = must_parse("ssh://web1");
  CHECK(h.kind == HostSpec::Kind::ssh);
  CHECK(h.user.empty());
  CHECK(h.host == "web1");
  CHECK_FALSE(h.port);
  CHECK(h.path.empty());
  CHECK(h.text == "ssh://web1");
  CHECK(h.where() == "web1");

  h = must_parse("ssh://ops@web1.example.com:2222/run/mgmt/manager.sock");
  CHECK(h.user == "ops");
  CHECK(h.host == "web1.example.com");
  REQUIRE(h.port);
  CHECK(*h.port == 2222);
  CHECK(h.path == "/run/mgmt/manager.sock");
  CHECK(h.where() == "ops@web1.example.com:2222");

  // A trailing slash alone: no path, the remote mgmtctl's own discovery.
  CHECK(must_parse("ssh://web1/").path.empty());
  CHECK(must_parse("ssh://web1:22/").port == 22u);
  // The last '@' ends the user (an address as a user name).
  h = must_parse("ssh://a@b@host");
  CHECK(h.user == "a@b");
  CHECK(h.host == "host");
  CHECK(must_parse("ssh://10.0.0.7/tmp/x.sock").host == "10.0.0.7");
}

TEST_CASE("parse_host: IPv6 addresses in brackets", "[remote]") {
  auto h = must_parse("ssh://[::1]:2222/tmp/m.sock");
  CHECK(h.host == "::1");
  CHECK(h.port == 2222u);
  CHECK(h.path == "/tmp/m.sock");
  CHECK(h.where() == "[::1]:2222");
  h = must_parse("ssh://root@[fe80::1%eth0]");
  CHECK(h.user == "root");
  CHECK(h.host == "fe80::1%eth0");
  CHECK_FALSE(h.port);
  CHECK(h.where() == "root@fe80::1%eth0");
}

TEST_CASE("parse_host: unix:// names a local socket", "[remote]") {
  const auto h = must_parse("unix:///run/mgmt/manager.sock");
  CHECK(h.kind == HostSpec::Kind::local);
  CHECK(h.path == "/run/mgmt/manager.sock");
  CHECK(h.where() == "/run/mgmt/manager.sock");
}

TEST_CASE("parse_host: errors say what is wrong", "[remote]") {
  using Catch::Contains;
  CHECK_THAT(parse_error("web1"), Contains("invalid host \"web1\"") && Contains("no scheme") &&
                                      Contains("ssh://[user@]host[:port]"));
  CHECK_THAT(parse_error("tcp://web1:80"), Contains("unsupported scheme"));
  CHECK_THAT(parse_error("ssh://"), Contains("no host name"));
  CHECK_THAT(parse_error("ssh://user@"), Contains("no host name"));
  CHECK_THAT(parse_error("ssh://@web1"), Contains("empty user"));
  CHECK_THAT(parse_error("ssh://web1:0"), Contains("invalid port \"0\""));
  CHECK_THAT(parse_error("ssh://web1:65536"), Contains("invalid port \"65536\""));
  CHECK_THAT(parse_error("ssh://web1:22x"), Contains("invalid port \"22x\""));
  CHECK_THAT(parse_error("ssh://web1:"), Contains("invalid port \"\""));
  CHECK_THAT(parse_error("ssh://::1/x"), Contains("IPv6 address goes in brackets"));
  CHECK_THAT(parse_error("ssh://[::1/x"), Contains("'[' without ']'"));
  CHECK_THAT(parse_error("ssh://[::1]2222"), Contains("expected ':PORT'"));
  // Anything ssh would read as an option is refused.
  CHECK_THAT(parse_error("ssh://-oProxyCommand=x"), Contains("may not start with '-'"));
  CHECK_THAT(parse_error("ssh://-x@web1"), Contains("may not start with '-'"));
  CHECK_THAT(parse_error("ssh://we b1"), Contains("blanks or control characters"));
  CHECK_THAT(parse_error("unix://relative.sock"), Contains("absolute path"));
  CHECK_THAT(parse_error("unix://"), Contains("absolute path"));
}

TEST_CASE("parse_hosts_file: one host a line, comments and blanks ignored", "[remote]") {
  const auto hosts = mgmtctl::parse_hosts_file(
      "# the web tier\n"
      "ssh://web1\n"
      "  ssh://ops@web2:2222/run/mgmt/manager.sock   # the odd one\n"
      "\n"
      "\t\n"
      "unix:///run/mgmt/manager.sock\r\n"
      "ssh://web3");  // no final newline
  CHECK(hosts == std::vector<std::string>{"ssh://web1", "ssh://ops@web2:2222/run/mgmt/manager.sock",
                                          "unix:///run/mgmt/manager.sock", "ssh://web3"});
  CHECK(mgmtctl::parse_hosts_file("").empty());
  CHECK(mgmtctl::parse_hosts_file("# nothing\n\n").empty());
}

TEST_CASE("ssh_argv: the user's ssh, -p, the destination, -- and dial-stdio", "[remote]") {
  mgmtctl::SshSettings s;
  CHECK(mgmtctl::ssh_argv(must_parse("ssh://web1"), s) ==
        std::vector<std::string>{"ssh", "web1", "--", "mgmtctl", "dial-stdio"});
  CHECK(mgmtctl::ssh_argv(must_parse("ssh://ops@web1:2222/run/mgmt/manager.sock"), s) ==
        std::vector<std::string>{"ssh", "-p", "2222", "ops@web1", "--", "mgmtctl", "dial-stdio",
                                 "--socket", "/run/mgmt/manager.sock"});
  CHECK(mgmtctl::ssh_argv(must_parse("ssh://[::1]:2222"), s) ==
        std::vector<std::string>{"ssh", "-p", "2222", "::1", "--", "mgmtctl", "dial-stdio"});

  // MGMT_SSH_COMMAND and MGMT_REMOTE_MGMTCTL; the remote shell sees the path quoted.
  s.command = mgmtctl::split_words("  ssh -i /k\t-o StrictHostKeyChecking=no ");
  s.remote_mgmtctl = "/opt/mgmt/bin/mgmtctl";
  CHECK(mgmtctl::ssh_argv(must_parse("ssh://root@h/srv/my sock's/m.sock"), s) ==
        std::vector<std::string>{"ssh", "-i", "/k", "-o", "StrictHostKeyChecking=no", "root@h",
                                 "--", "/opt/mgmt/bin/mgmtctl", "dial-stdio", "--socket",
                                 "'/srv/my sock'\\''s/m.sock'"});
}

TEST_CASE("SshSettings::from_env reads MGMT_SSH_COMMAND and MGMT_REMOTE_MGMTCTL", "[remote]") {
  ::setenv("MGMT_SSH_COMMAND", "myssh -F /cfg", 1);
  ::setenv("MGMT_REMOTE_MGMTCTL", "sudo -n mgmtctl", 1);
  auto s = mgmtctl::SshSettings::from_env();
  CHECK(s.command == std::vector<std::string>{"myssh", "-F", "/cfg"});
  CHECK(s.remote_mgmtctl == "sudo -n mgmtctl");
  // Empty is unset: the defaults.
  ::setenv("MGMT_SSH_COMMAND", " ", 1);
  ::setenv("MGMT_REMOTE_MGMTCTL", "", 1);
  s = mgmtctl::SshSettings::from_env();
  CHECK(s.command == std::vector<std::string>{"ssh"});
  CHECK(s.remote_mgmtctl == "mgmtctl");
  ::unsetenv("MGMT_SSH_COMMAND");
  ::unsetenv("MGMT_REMOTE_MGMTCTL");
}

TEST_CASE("shell_quote and split_words", "[remote]") {
  CHECK(mgmtctl::shell_quote("/run/mgmt/manager.sock") == "/run/mgmt/manager.sock");
  CHECK(mgmtctl::shell_quote("") == "''");
  CHECK(mgmtctl::shell_quote("a b") == "'a b'");
  CHECK(mgmtctl::shell_quote("$(rm -rf /)") == "'$(rm -rf /)'");
  CHECK(mgmtctl::shell_quote("it's") == "'it'\\''s'");
  CHECK(mgmtctl::split_words("").empty());
  CHECK(mgmtctl::split_words(" \t ").empty());
  CHECK(mgmtctl::split_words("ssh") == std::vector<std::string>{"ssh"});
}

TEST_CASE("mgmtctl --host and --hosts-file: parsing and the fleet's usage rules", "[remote]") {
  using mgmtctl::Command;
  using mgmtctl::parse_args;
  auto r = parse_args({"--host", "ssh://a", "--host=ssh://b, unix:///c", "list"});
  REQUIRE(r.ok());
  CHECK(r.options.hosts == std::vector<std::string>{"ssh://a", "ssh://b", "unix:///c"});
  r = parse_args({"list", "--hosts-file", "/etc/mgmt/hosts"});
  REQUIRE(r.ok());
  CHECK(r.options.hosts_file == "/etc/mgmt/hosts");

  CHECK_THAT(parse_args({"--host", "web1", "list"}).error, Catch::Contains("no scheme"));
  CHECK_THAT(parse_args({"--host", ",", "list"}).error, Catch::Contains("--host needs a host"));
  CHECK_THAT(parse_args({"--host", "ssh://a", "--socket", "/s", "list"}).error,
             Catch::Contains("do not go together"));
  CHECK_THAT(parse_args({"--host", "ssh://a", "dial-stdio"}).error,
             Catch::Contains("dial-stdio bridges a local socket"));
  for (const char* cmd : {"list", "events"}) {
    CHECK(parse_args({"--host", "ssh://a,ssh://b", cmd}).ok());
  }
  CHECK(parse_args({"--host", "ssh://a,ssh://b", "status", "web"}).ok());
  CHECK(parse_args({"--host", "ssh://a,ssh://b", "signal", "HUP", "web"}).ok());
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"logs", "web"}, {"info"}, {"call", "0xAC"}, {"metrics"}, {"reload"}}) {
    auto full = args;
    full.insert(full.begin(), {"--host", "ssh://a", "--host", "ssh://b"});
    INFO(args[0]);
    CHECK_THAT(parse_args(full).error,
               Catch::Contains(args[0] + " works on one host at a time, got 2 hosts"));
    // One host is fine for any command.
    full.erase(full.begin() + 2, full.begin() + 4);
    CHECK(parse_args(full).ok());
  }

  r = parse_args({"dial-stdio", "--socket", "/x.sock"});
  REQUIRE(r.ok());
  CHECK(r.options.command == Command::dial_stdio);
  CHECK_THAT(parse_args({"dial-stdio", "extra"}).error, Catch::Contains("takes no arguments"));
}

TEST_CASE("a usage error from --hosts-file exits 2", "[remote]") {
  char tmpl[] = "/tmp/mgmt-hosts-XXXXXX";
  const int fd = ::mkstemp(tmpl);
  REQUIRE(fd >= 0);
  const std::string content = "ssh://ok\nnot-a-url\n";
  REQUIRE(::write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size()));
  ::close(fd);
  auto r = run({"--hosts-file", tmpl, "list"});
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("--hosts-file " + std::string(tmpl)) &&
                        Catch::Contains("invalid host \"not-a-url\""));
  // More than one host for a one-host command.
  {
    std::FILE* f = std::fopen(tmpl, "w");
    std::fputs("ssh://a\nssh://b\n", f);
    std::fclose(f);
  }
  r = run({"--hosts-file", tmpl, "info"});
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("info works on one host at a time, got 2 hosts"));
  ::unlink(tmpl);
  r = run({"--hosts-file", tmpl, "list"});
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("cannot read hosts file"));
}

TEST_CASE("a fleet reports every host that failed, by name, and exits 1", "[remote]") {
  const auto r = run({"--host", "unix:///nonexistent/a.sock,unix:///nonexistent/b.sock", "list"});
  CHECK(r.code == 1);
  CHECK(r.out == "HOST  ID  NAME  STATE  PID\n");
  CHECK_THAT(r.err, Catch::Contains("mgmtctl: unix:///nonexistent/a.sock: cannot connect to "
                                    "/nonexistent/a.sock") &&
                        Catch::Contains("mgmtctl: unix:///nonexistent/b.sock: cannot connect"));
  // A single unix:// host is the local command, with its own message.
  const auto one = run({"--host", "unix:///nonexistent/a.sock", "list"});
  CHECK(one.code == 1);
  CHECK(one.out.empty());
  CHECK_THAT(one.err, Catch::StartsWith("mgmtctl: cannot connect to /nonexistent/a.sock"));
}

TEST_CASE("format_host_table: HOST first, laid out as the table", "[remote]") {
  mgmt::Entry web;
  web.id = "web";
  web.name = "Web";
  web.state = "running";
  web.pid = 42;
  mgmt::Entry db = web;
  db.id = "db";
  db.state = "crashed";
  db.pid = 0;
  const auto t = mgmtctl::format_host_table({{"ssh://a", web}, {"ssh://bb", db}});
  CHECK(t ==
        "HOST      ID   NAME  STATE    PID\n"
        "ssh://a   web  Web   running  42\n"
        "ssh://bb  db   Web   crashed  0\n");
  // The plain table is unchanged by the shared layout code.
  CHECK(mgmtctl::format_table({web, db}) ==
        "ID   NAME  STATE    PID\n"
        "web  Web   running  42\n"
        "db   Web   crashed  0\n");
  CHECK(mgmtctl::fleet_error_line("ssh://a", "mgmtctl: no mgmtd on a: x") ==
        "mgmtctl: ssh://a: no mgmtd on a: x");
  CHECK(mgmtctl::fleet_error_line("ssh://a", "web: unknown process") ==
        "mgmtctl: ssh://a: web: unknown process");
}

TEST_CASE("Client::adopt speaks the protocol on a connected fd, named by its label", "[remote]") {
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  auto c = mgmt::Client::adopt(sv[0], "ssh://web1");
  CHECK(c.fd() == sv[0]);
  CHECK(c.path() == "ssh://web1");
  const auto seq = c.send(0xA0, "\x80");
  char buf[64];
  const ssize_t n = ::read(sv[1], buf, sizeof buf);
  REQUIRE(n == static_cast<ssize_t>(mgmt::kHeaderSize + 1));
  // Answer with the same frame, then hang up: the client reads it, then a clean end.
  REQUIRE(::write(sv[1], buf, static_cast<std::size_t>(n)) == n);
  ::close(sv[1]);
  auto f = c.receive();
  REQUIRE(f);
  CHECK(f->header.seq == seq);
  CHECK(f->payload == "\x80");
  CHECK_FALSE(c.receive());
  try {
    c.call(0xA0, "\x80");
    FAIL("no exception");
  } catch (const std::exception& e) {
    CHECK_THAT(e.what(), Catch::Contains("ssh://web1"));
  }
}
