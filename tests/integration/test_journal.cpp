// log_journal with the real mgmtd and real children. mgmtd runs in a private mount
// namespace (unshare -m) where /run/systemd/journal is a folder of the test's holding the
// test's own journal socket: mgmtd sends to the real path, and the host's journal (if any)
// is not touched.
#include <catch2/catch.hpp>

#include <fstream>
#include <string>
#include <vector>

#include "harness.hpp"
#include "journal_socket.hpp"
#include "wait.hpp"

using namespace mgmt::test;

namespace {

bool can_unshare_mounts() {
  return run({"/usr/bin/unshare", "-m", "--propagation", "private", "true"}).exit_code == 0;
}

// Runs mgmtd with `dir` mounted at /run/systemd/journal, in a mount namespace of its own.
std::vector<std::string> journal_namespace(const std::string& dir) {
  const std::string script =
      "set -e; mount -t tmpfs tmpfs /run/systemd 2>/dev/null || mount -t tmpfs tmpfs /run; "
      "mkdir -p /run/systemd/journal; mount --bind \"$0\" /run/systemd/journal; exec \"$@\"";
  return {"/usr/bin/unshare", "-m", "--propagation", "private", "/bin/sh", "-c", script, dir};
}

std::string field(const JournalFields& f, const std::string& name) {
  const auto it = f.find(name);
  return it == f.end() ? std::string("<none>") : it->second;
}

}  // namespace

TEST_CASE("log_journal: every line reaches the journal with its process, stream and priority",
          "[journal]") {
  if (!can_unshare_mounts()) {
    WARN("no mount namespace here (unshare -m needs CAP_SYS_ADMIN): skipped");
    return;
  }
  TempDir jdir;
  JournalSocket journal(jdir.file("socket"));
  TempDir files;
  const std::string go = files.file("go");
  Mgmtd d("backend:\n  plugin: process\n  config:\n    log_journal: true\n    processes:\n"
          "      - id: app\n        command: /bin/sh\n        restart: never\n"
          "        args: [-c, 'printf \"out one\\nout two\\n\"; echo \"err one\" >&2; "
          "while [ ! -e " + go + " ]; do sleep 0.05; done; printf \"last words\"']\n"
          "      - id: quiet\n        command: /bin/sh\n        log_journal: false\n"
          "        args: [-c, 'echo not for the journal; exec sleep 1000']\n",
          {}, journal_namespace(jdir.path()));

  std::vector<JournalFields> got;
  auto collect_until = [&](const std::string& message) {
    for (;;) {
      const auto e = journal.next();
      if (!e) return false;
      got.push_back(*e);
      if (field(*e, "MESSAGE") == message) return true;
    }
  };
  REQUIRE(collect_until("out two"));
  std::int64_t pid = 0;
  REQUIRE(wait_until([&] {
    const auto r = d.ctl({"status", "app", "--json"});
    const auto at = r.out.find("\"pid\": ");
    if (at != std::string::npos) pid = std::stoll(r.out.substr(at + 7));
    return pid > 0;
  }));
  std::ofstream(go) << "go\n";
  // The last line has no newline: sent when the process exits.
  REQUIRE(collect_until("last words"));

  std::vector<std::string> out, err;
  for (const auto& e : got) {
    INFO(field(e, "MESSAGE"));
    CHECK(field(e, "SYSLOG_IDENTIFIER") == "app");
    CHECK(field(e, "MGMT_PROCESS") == "app");
    CHECK(field(e, "SYSLOG_PID") == std::to_string(pid));
    if (field(e, "MGMT_STREAM") == "stdout") {
      CHECK(field(e, "PRIORITY") == "6");
      out.push_back(field(e, "MESSAGE"));
    } else {
      CHECK(field(e, "MGMT_STREAM") == "stderr");
      CHECK(field(e, "PRIORITY") == "3");
      err.push_back(field(e, "MESSAGE"));
    }
  }
  if (err.empty()) {  // stderr's line may come after stdout's last one
    const auto e = journal.next();
    REQUIRE(e);
    err.push_back(field(*e, "MESSAGE"));
    CHECK(field(*e, "PRIORITY") == "3");
  }
  CHECK(out == std::vector<std::string>{"out one", "out two", "last words"});
  CHECK(err == std::vector<std::string>{"err one"});

  // `log_journal: false` wins over the backend's: once mgmtd has read quiet's line (the
  // ring has it), anything it sent to the journal would be queued already.
  REQUIRE(wait_until([&] {
    return d.ctl({"logs", "quiet"}).out.find("not for the journal") != std::string::npos;
  }));
  while (const auto e = journal.next(std::chrono::milliseconds(0))) {
    CHECK(field(*e, "MGMT_PROCESS") != "quiet");
  }
  CHECK(d.terminate() == 0);
}

TEST_CASE("log_journal: without a journal socket the process runs and last_error says why",
          "[journal]") {
  if (!can_unshare_mounts()) {
    WARN("no mount namespace here (unshare -m needs CAP_SYS_ADMIN): skipped");
    return;
  }
  TempDir empty;  // no socket in it
  Mgmtd d("backend:\n  plugin: process\n  config:\n    processes:\n"
          "      - id: app\n        command: /bin/sh\n        log_journal: true\n"
          "        args: [-c, 'while true; do echo tick; sleep 0.05; done']\n",
          {}, journal_namespace(empty.path()));
  REQUIRE(wait_until([&] {
    return d.ctl({"status", "app"}).out.find("journal: /run/systemd/journal/socket: No such file") !=
           std::string::npos;
  }));
  CHECK(d.ctl({"status", "app"}).out.find("running") != std::string::npos);
  CHECK(d.ctl({"logs", "app"}).out.find("tick") != std::string::npos);  // still captured
  // Reported once per run, not once per line.
  const std::string log = d.log();
  std::size_t n = 0;
  for (auto at = log.find("journal: /run/systemd"); at != std::string::npos;
       at = log.find("journal: /run/systemd", at + 1)) {
    ++n;
  }
  CHECK(n == 1);
}
