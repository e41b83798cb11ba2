// Access control: rights from the peer's credentials (SO_PEERCRED), as mgmt.yaml grants them.
#include <grp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <filesystem>

#include "harness.hpp"
#include "wait.hpp"

using namespace mgmt;
using namespace mgmt::test;

namespace {

constexpr uid_t kNobody = 65534;
constexpr gid_t kNogroup = 65534;

// Sends one request as another user (fork + setuid) and returns the answer's err text,
// "<closed>" when there was no answer, or "<connect failed>".
std::string request_as(uid_t uid, gid_t gid, const std::string& socket, std::uint8_t type,
                       const std::string& payload) {
  int pipefd[2];
  REQUIRE(::pipe(pipefd) == 0);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(pipefd[0]);
    std::string out;
    if (::setgroups(0, nullptr) != 0 || ::setgid(gid) != 0 || ::setuid(uid) != 0) {
      out = "<setuid failed>";
    } else {
      try {
        RawConn c(socket);
        c.send(type, payload);
        auto f = c.read(10s);
        if (!f) {
          out = "<closed>";
        } else {
          StatusResponse r;
          out = decode(f->payload, r).empty() && f->header.type == 0xA3 ? r.err : "<ok>";
        }
      } catch (const std::exception&) {
        out = "<connect failed>";
      }
    }
    (void)!::write(pipefd[1], out.data(), out.size());
    ::_exit(0);
  }
  ::close(pipefd[1]);
  std::string out;
  char buf[512];
  ssize_t n;
  while ((n = ::read(pipefd[0], buf, sizeof buf)) > 0) out.append(buf, static_cast<std::size_t>(n));
  ::close(pipefd[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return out;
}

const std::string kBackend =
    "backend:\n"
    "  plugin: process\n"
    "  config:\n"
    "    processes:\n" +
    ticker_processes("web");

// Lets other users reach the socket's folder (the test's temp dir is private).
void open_up(const std::string& socket) {
  namespace fs = std::filesystem;
  ::chmod(fs::path(socket).parent_path().parent_path().c_str(), 0755);
}

}  // namespace

TEST_CASE("by default only the owner may connect", "[access]") {
  if (::geteuid() != 0) {
    WARN("access tests switch users and need root");
    return;
  }
  Mgmtd d(kBackend, open_up);
  struct stat st{};
  REQUIRE(::stat(d.socket().c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  CHECK(request_as(kNobody, kNogroup, d.socket(), 0xA0, "") == "<connect failed>");
}

TEST_CASE("rules grant read or control to users and groups", "[access]") {
  if (::geteuid() != 0) {
    WARN("access tests switch users and need root");
    return;
  }
  Mgmtd d(kBackend +
              "access:\n"
              "  socket_mode: \"0666\"\n"
              "  rules:\n"
              "    - users: [nobody]\n"
              "      allow: [read]\n"
              "    - groups: [\"4242\"]\n"
              "      allow: [read, control]\n",
          open_up);
  struct stat st{};
  REQUIRE(::stat(d.socket().c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0666);

  // nobody may read...
  CHECK(request_as(kNobody, kNogroup, d.socket(), 0xA2, encode(StatusRequest{"web"})).empty());
  // ...but not control, and the answer says which right is missing.
  const auto denied = request_as(kNobody, kNogroup, d.socket(), 0xA9, encode(IdRequest{"web"}));
  CHECK_THAT(denied, Catch::StartsWith("permission denied:") && Catch::Contains("control") &&
                         Catch::Contains("0xa9"));
  CHECK_THAT(d.log(), Catch::Contains("denied 0xa9 to uid 65534"));
  // A uid with no rule has no rights at all.
  CHECK_THAT(request_as(4343, 4343, d.socket(), 0xA0, ""), Catch::Contains("lacks the read right"));
  // The group grants control.
  CHECK(request_as(4343, 4242, d.socket(), 0xA9, encode(IdRequest{"web"})).empty());
  // The owner (root here) keeps every right.
  RawConn owner(d.socket());
  owner.send(to_byte(MsgType::StartRequest), encode(IdRequest{"web"}));
  auto f = owner.read();
  REQUIRE(f);
  CHECK(as_status(*f).err.empty());
}

TEST_CASE("access configuration errors name the line", "[access]") {
  TempDir dir;
  auto check = [&](const std::string& access) {
    dir.write("mgmt.yaml", kBackend + access);
    return run({MGMTD_BIN, "--check", "-c", dir.file("mgmt.yaml")});
  };
  auto r = check("access:\n  rules:\n    - users: [no-such-user-xyz]\n      allow: [read]\n");
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.err, Catch::Contains("unknown user \"no-such-user-xyz\""));
  r = check("access:\n  rules:\n    - users: [root]\n      allow: [write]\n");
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.err, Catch::Contains("must be read or control"));
  r = check("access:\n  socket_mode: \"0044\"\n");
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.err, Catch::Contains("socket_mode"));
}
