// Start-up and shutdown of the real mgmtd: configuration and plugin errors, the socket's
// ownership and permissions, clean exit.
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <charconv>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <string_view>

#include "harness.hpp"
#include "mgmt/plugin.hpp"
#include "wait.hpp"

using namespace mgmt;
using namespace mgmt::test;

namespace {

const std::string kProcessBackend =
    "backend:\n"
    "  plugin: process\n"
    "  config:\n"
    "    processes:\n" +
    ticker_processes("web");

// The line just after kProcessBackend, where the tests append their own sections.
const int kNextLine =
    static_cast<int>(std::count(kProcessBackend.begin(), kProcessBackend.end(), '\n')) + 1;
std::string at(const std::string& file, int line, int column) {
  return file + ":" + std::to_string(line) + ":" + std::to_string(column) + ":";
}

RunResult check_config(const TempDir& dir, const std::string& yaml) {
  dir.write("mgmt.yaml", yaml);
  return run({MGMTD_BIN, "--check", "-c", dir.file("mgmt.yaml")});
}

}  // namespace

TEST_CASE("mgmtd --check accepts the example configuration", "[startup]") {
  const auto r = run({MGMTD_BIN, "--check", "-c", MGMT_EXAMPLE_CONFIG});
  INFO(r.err);
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.out, Catch::Contains("OK"));
  CHECK_THAT(r.out, Catch::Contains("backend: process"));
  CHECK_THAT(r.out, Catch::Contains("0xa0: list"));
}

TEST_CASE("configuration errors name the file, line and column", "[startup]") {
  TempDir dir;
  const std::string file = dir.file("mgmt.yaml");
  SECTION("invalid YAML") {
    const auto r = check_config(dir, "backend:\n  plugin: process\n  config: [unclosed\n");
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains(file + ":") && Catch::Contains("invalid YAML"));
  }
  SECTION("unknown top-level key") {
    const auto r = check_config(dir, kProcessBackend + "handlerz:\n  0xA0: list\n");
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains(at(file, kNextLine, 1)) && Catch::Contains("handlerz"));
  }
  SECTION("bad message type") {
    const auto r = check_config(dir, kProcessBackend + "handlers:\n  list: list\n");
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains(at(file, kNextLine + 1, 3)) && Catch::Contains("0xA0"));
  }
  SECTION("command outside 0xaa..0xaf") {
    const auto r = check_config(dir, kProcessBackend + "commands:\n  0xA2: {plugin: status}\n");
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains(at(file, kNextLine + 1, 3)) && Catch::Contains("0xaa..0xaf"));
  }
  SECTION("backend config error reported by the plugin") {
    const auto r = check_config(dir,
                                "backend:\n  plugin: process\n  config:\n    processes:\n"
                                "      - id: x\n        command: /bin/true\n"
                                "        restart: sometimes\n");
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains(file + ":7:") && Catch::Contains("sometimes"));
  }
  SECTION("a switch that is not a boolean") {
    const auto r = check_config(dir, "server:\n  write_hint: maybe\n" + kProcessBackend);
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains(at(file, 2, 15)) && Catch::Contains("server.write_hint"));
  }
  SECTION("server.io_threads: a number of threads or auto, anything else refused") {
    CHECK(check_config(dir, "server:\n  io_threads: 2\n" + kProcessBackend).exit_code == 0);
    CHECK(check_config(dir, "server:\n  io_threads: auto\n" + kProcessBackend).exit_code == 0);
    for (const char* bad : {"0", "65", "-1", "two", "2x", "[2]"}) {
      const auto r = check_config(dir, std::string("server:\n  io_threads: ") + bad + "\n" +
                                           kProcessBackend);
      CHECK(r.exit_code == 2);
      CHECK_THAT(r.err, Catch::Contains(at(file, 2, 15)) && Catch::Contains("server.io_threads"));
    }
  }
  SECTION("missing file") {
    const auto r = run({MGMTD_BIN, "--check", "-c", dir.file("absent.yaml")});
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains("absent.yaml") && Catch::Contains("No such file"));
  }
}

TEST_CASE("broken plugins are refused with the file and the reason", "[startup][plugins]") {
  TempDir dir;
  const std::string plugins = MGMT_TEST_PLUGIN_DIR;
  auto with_handler = [&](const std::string& ref) {
    return kProcessBackend + "plugin_dirs: [" + plugins + "]\nhandlers:\n  0xA0: " + ref + "\n";
  };
  SECTION("missing") {
    const auto r = check_config(dir, with_handler("lisst"));
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains("\"lisst\" not found") && Catch::Contains(plugins + "/lisst.so"));
  }
  SECTION("not an ELF file") {
    dir.write("fake.so", "this is not a shared object\n");
    const auto r = check_config(dir, with_handler(dir.file("fake.so")));
    CHECK(r.exit_code == 2);
    // The dynamic loader's own words reach the user.
    CHECK_THAT(r.err, Catch::Contains("cannot load plugin " + dir.file("fake.so")) &&
                          (Catch::Contains("invalid ELF header") || Catch::Contains("too short")));
  }
  SECTION("a shared object that is not a plugin") {
    const auto r = check_config(dir, with_handler("/lib/x86_64-linux-gnu/libm.so.6"));
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains("is not an mgmtd plugin"));
  }
  SECTION("wrong ABI") {
    const auto r = check_config(dir, with_handler("wrong_abi"));
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains("wrong_abi.so was built for plugin ABI " + std::to_string(kAbiVersion + 998)) &&
                          Catch::Contains("loads ABI " + std::to_string(kAbiVersion)));
  }
  SECTION("constructor throws") {
    const auto r = check_config(dir, with_handler("throwing_handler"));
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains("refused to start") &&
                          Catch::Contains("option `greeting` is required"));
  }
  SECTION("wrong kind") {
    const auto r = check_config(dir, with_handler("wrong_kind"));
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains("is a command plugin, but a handler plugin is needed"));
  }
  SECTION("version outside the constraint") {
    const auto r = check_config(dir, kProcessBackend + "plugin_dirs: [" + plugins +
                                         "]\ncommands:\n  0xAA: {plugin: wrong_kind, version: \">=1.0 <2\"}\n");
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains(at(dir.file("mgmt.yaml"), kNextLine + 2, 18)) &&
                          Catch::Contains("is version 0.3.1") && Catch::Contains(">=1.0 <2"));
  }
  SECTION("version inside the constraint") {
    const auto r = check_config(dir, kProcessBackend + "plugin_dirs: [" + plugins +
                                         "]\ncommands:\n  0xAA: {plugin: wrong_kind, version: \"^0.3\"}\n");
    INFO(r.err);
    CHECK(r.exit_code == 0);
    CHECK_THAT(r.out, Catch::Contains("0xaa: wrong_kind 0.3.1"));
  }
}

TEST_CASE("the socket is private and a live server's socket is never stolen", "[startup]") {
  Mgmtd d(kProcessBackend);
  struct stat st{};
  REQUIRE(::stat(d.socket().c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  REQUIRE(::stat(d.dir().file("run").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0700);

  // A second server on the same socket refuses to start.
  d.dir().write("second.yaml", "server:\n  socket: " + d.socket() + "\n  write_hint: false\n" +
                                   kProcessBackend);
  const auto r = run({MGMTD_BIN, "-c", d.dir().file("second.yaml")});
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.err, Catch::Contains("already listening on " + d.socket()));
  // ...and the first one still answers.
  CHECK(d.ctl({"status", "web"}).exit_code == 0);
}

TEST_CASE("a stale socket file is replaced", "[startup]") {
  Mgmtd d(kProcessBackend, [](const std::string& sock) {
    std::filesystem::create_directories(std::filesystem::path(sock).parent_path());
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, sock.c_str(), sizeof addr.sun_path - 1);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    ::close(fd);  // the file stays behind, nobody listens on it
  });
  CHECK_THAT(d.log(), Catch::Contains("removing stale socket"));
  CHECK(d.ctl({"status", "web"}).exit_code == 0);
}

TEST_CASE("SIGTERM stops the children, removes the socket and exits 0", "[startup]") {
  Mgmtd d(kProcessBackend);
  const auto status = d.ctl({"status", "--json", "web"});
  REQUIRE(status.exit_code == 0);
  RawConn c(d.socket());
  c.send(to_byte(MsgType::StatusRequest), encode(StatusRequest{"web"}));
  auto f = c.read();
  REQUIRE(f);
  const auto child = static_cast<pid_t>(as_status(*f).entry.pid);
  REQUIRE(child > 0);
  REQUIRE(pid_alive(child));
  CHECK(d.terminate() == 0);
  CHECK_FALSE(pid_alive(child));
  CHECK_FALSE(std::filesystem::exists(d.socket()));
  CHECK_THAT(d.log(), Catch::Contains("shutting down"));
}
