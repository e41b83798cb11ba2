// Log times with real children: `mgmtctl logs` merging stdout and stderr in capture order
// (snapshot and follow), -t, --json, several ids.
#include <catch2/catch.hpp>

#include <signal.h>

#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <regex>

#include "harness.hpp"
#include "wait.hpp"

using namespace mgmt;
using namespace mgmt::test;

namespace {

constexpr int kAltLines = 40;

// Writes "line 1".."line N", odd ones to stdout, even ones to stderr, each only once the
// previous one has left its pipe (FIONREAD on the pipe is 0: mgmtd has read it), so the
// capture order is the counter's order. Then sleeps.
const char* kAlternator = R"(use strict;
$| = 1;
my $n = shift;
sub drained {
  my $fh = shift;
  my $buf = pack("L", 0);
  while (1) {
    ioctl($fh, 0x541B, $buf) or return;
    return if unpack("L", $buf) == 0;
    select(undef, undef, undef, 0.001);
  }
}
for my $i (1 .. $n) {
  if ($i % 2) { print STDOUT "line $i\n"; drained(\*STDOUT); }
  else { print STDERR "line $i\n"; drained(\*STDERR); }
}
sleep 1000;
)";

std::string alternator_backend(const TempDir& tmp) {
  tmp.write("alt.pl", kAlternator);
  return "backend:\n"
         "  plugin: process\n"
         "  config:\n"
         "    processes:\n"
         "      - id: alt\n"
         "        command: /usr/bin/perl\n"
         "        args: ['" + tmp.file("alt.pl") + "', '" + std::to_string(kAltLines) + "']\n"
         "        autostart: false\n"
         "        stop_timeout: 2s\n";
}

std::vector<std::string> split_lines(const std::string& s) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start < s.size()) {
    auto nl = s.find('\n', start);
    if (nl == std::string::npos) nl = s.size();
    out.push_back(s.substr(start, nl - start));
    start = nl + 1;
  }
  return out;
}

// The counters of "line K" lines, in order (whatever comes before "line" on each).
std::vector<int> counters(const std::string& text) {
  std::vector<int> out;
  for (const auto& l : split_lines(text)) {
    const auto at = l.find("line ");
    if (at != std::string::npos) out.push_back(std::stoi(l.substr(at + 5)));
  }
  return out;
}

std::vector<int> one_to(int n) {
  std::vector<int> v;
  for (int i = 1; i <= n; ++i) v.push_back(i);
  return v;
}

// mgmtctl with its stderr on its stdout (one pipe: the order both were written in).
RunResult ctl_merged(const Mgmtd& d, const std::string& args) {
  return run({"/bin/sh", "-c", std::string("exec ") + MGMTCTL_BIN + " --socket '" + d.socket() +
                                   "' " + args + " 2>&1"});
}

std::int64_t now_nanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

TEST_CASE("mgmtctl logs merges stdout and stderr in capture order, snapshot and follow",
          "[logs][logs_time][mgmtctl]") {
  TempDir tmp;
  Mgmtd d(alternator_backend(tmp));
  const std::string last = "line " + std::to_string(kAltLines) + "\n";

  // Follow first (both streams, one pipe), then start the child.
  Background follow({"/bin/sh", "-c",
                     std::string("exec ") + MGMTCTL_BIN + " --socket '" + d.socket() +
                         "' logs -f alt 2>&1"});
  Background follow_json({MGMTCTL_BIN, "--socket", d.socket(), "logs", "-f", "--json", "alt"});
  REQUIRE(d.ctl({"start", "alt"}).exit_code == 0);
  REQUIRE(wait_until([&] { return follow.out().find(last) != std::string::npos; }, 30s));
  CHECK(counters(follow.out()) == one_to(kAltLines));
  REQUIRE(wait_until([&] { return counters(follow_json.out()).size() == kAltLines; }, 30s));
  CHECK(counters(follow_json.out()) == one_to(kAltLines));

  // The snapshot: merged on one pipe, and each stream on its own fd.
  const auto merged = ctl_merged(d, "logs alt");
  CHECK(merged.exit_code == 0);
  CHECK(counters(merged.out) == one_to(kAltLines));
  const auto split = d.ctl({"logs", "alt"});
  REQUIRE(split.exit_code == 0);
  for (int k : counters(split.out)) CHECK(k % 2 == 1);
  for (int k : counters(split.err)) CHECK(k % 2 == 0);
  CHECK(counters(split.out).size() + counters(split.err).size() == kAltLines);

  // --json: one object per line, in capture order, times rising.
  const auto json = d.ctl({"logs", "--json", "alt"});
  REQUIRE(json.exit_code == 0);
  CHECK(json.err.empty());
  const auto rows = split_lines(json.out);
  REQUIRE(rows.size() == kAltLines);
  std::int64_t prev = 0;
  for (int i = 0; i < kAltLines; ++i) {
    const auto j = nlohmann::json::parse(rows[i]);
    CHECK(j.at("id") == "alt");
    CHECK(j.at("line") == "line " + std::to_string(i + 1));
    CHECK(j.at("stream") == (i % 2 == 0 ? "stdout" : "stderr"));
    const auto ts = j.at("ts").get<std::int64_t>();
    CHECK(ts >= prev);
    CHECK(ts > now_nanos() - std::int64_t{600'000'000'000});
    prev = ts;
  }

  // -t: the capture time before each line, RFC 3339 in UTC with microseconds.
  const auto stamped = d.ctl({"logs", "-t", "--stream", "stdout", "-n", "3", "alt"});
  REQUIRE(stamped.exit_code == 0);
  const auto stamped_lines = split_lines(stamped.out);
  REQUIRE(stamped_lines.size() == 3);
  const std::regex rfc3339(R"(^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z line \d+$)");
  for (const auto& l : stamped_lines) CHECK(std::regex_match(l, rfc3339));
  CHECK(counters(stamped.out) == std::vector<int>{kAltLines - 5, kAltLines - 3, kAltLines - 1});

  CHECK(d.terminate() == 0);
  CHECK(follow.wait().exit_code == 0);
  CHECK(follow_json.wait().exit_code == 0);
}

TEST_CASE("mgmtctl logs with several ids prefixes each line with its id", "[logs][logs_time][mgmtctl]") {
  Mgmtd d("backend:\n"
          "  plugin: process\n"
          "  config:\n"
          "    processes:\n" +
          ticker_processes("web") + ticker_processes("db"));
  REQUIRE(wait_until([&] {
    const auto r = d.ctl({"logs", "web", "db"});
    return r.out.find("web | tick 1\n") != std::string::npos &&
           r.out.find("db  | tick 1\n") != std::string::npos;
  }, 20s));
  const auto snap = d.ctl({"logs", "--stream", "stderr", "web", "db"});
  CHECK(snap.exit_code == 0);
  CHECK(snap.out.empty());
  CHECK(snap.err.find("web | oops 0\n") != std::string::npos);
  CHECK(snap.err.find("db  | oops 0\n") != std::string::npos);
  for (const auto& l : split_lines(snap.err)) {
    CHECK((l.rfind("web | oops ", 0) == 0 || l.rfind("db  | oops ", 0) == 0));
  }
  // An unknown id among them is the server's error.
  const auto missing = d.ctl({"logs", "web", "nope"});
  CHECK(missing.exit_code == 1);
  CHECK_THAT(missing.err, Catch::Contains("process not found"));

  // -f follows every stream of every id.
  Background follow({MGMTCTL_BIN, "--socket", d.socket(), "logs", "-f", "-t", "web", "db"});
  const std::regex web_line(R"((^|\n)web \| \d{4}-\d\d-\d\dT[0-9:.]{15}Z tick \d+\n)");
  const std::regex db_line(R"((^|\n)db  \| \d{4}-\d\d-\d\dT[0-9:.]{15}Z tick \d+\n)");
  REQUIRE(wait_until([&] {
    const std::string o = follow.out();
    return std::regex_search(o, web_line) && std::regex_search(o, db_line);
  }, 20s));
  CHECK(d.terminate() == 0);
  const auto followed = follow.wait();
  CHECK(followed.exit_code == 0);
  for (const auto& l : split_lines(followed.out)) {
    CHECK((l.rfind("web | ", 0) == 0 || l.rfind("db  | ", 0) == 0));
  }
}

TEST_CASE("SIGUSR1 reopens the log files: logrotate without copytruncate, log_timestamps",
          "[logs][logs_time][logrotate]") {
  TempDir logs;
  Mgmtd d("backend:\n"
          "  plugin: process\n"
          "  config:\n"
          "    log_file_dir: " + logs.path() + "\n"
          "    log_timestamps: true\n"
          "    processes:\n" +
          ticker_processes("web") + "commands:\n  0xAD: reload\n");
  const std::string live = logs.file("web.stdout.log");
  REQUIRE(wait_until([&] { return read_file(live).find("tick 1\n") != std::string::npos; }, 20s));
  // log_timestamps: every line starts with its capture time.
  const std::regex stamped(R"(^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z tick \d+$)");
  for (const auto& l : split_lines(read_file(live))) CHECK(std::regex_match(l, stamped));

  // logrotate moves the file away, then signals.
  const std::string moved = logs.file("web.stdout.log.1");
  REQUIRE(::rename(live.c_str(), moved.c_str()) == 0);
  REQUIRE(::kill(d.pid(), SIGUSR1) == 0);
  REQUIRE(wait_until([&] { return read_file(live).find(" tick ") != std::string::npos; }, 20s));
  // What the old file had once the new one was made stays as it is from then on: wait for
  // more lines in the new file and check the old one did not grow.
  const std::string old_then = read_file(moved);
  REQUIRE(wait_until([&] { return split_lines(read_file(live)).size() >= 3; }, 20s));
  CHECK(read_file(moved) == old_then);
  CHECK(d.log().find("SIGUSR1: reopening log files") != std::string::npos);

  // The stock command does the same (`mgmtctl reload --logs`, for a postrotate that
  // cannot signal), and leaves the configuration alone.
  const std::string moved2 = logs.file("web.stdout.log.2");
  REQUIRE(::rename(moved.c_str(), moved2.c_str()) == 0);
  REQUIRE(::rename(live.c_str(), moved.c_str()) == 0);
  const auto r = d.ctl({"reload", "--logs"});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out == "log files reopened\n");
  REQUIRE(wait_until([&] { return read_file(live).find(" tick ") != std::string::npos; }, 20s));
  const std::string old_then2 = read_file(moved);
  REQUIRE(wait_until([&] { return split_lines(read_file(live)).size() >= 3; }, 20s));
  CHECK(read_file(moved) == old_then2);
  CHECK(d.log().find("reloaded ") == std::string::npos);
  // A reload of something else is refused with what it can do.
  const auto bad = d.ctl({"call", "0xAD", "{\"what\": \"everything\"}"});
  CHECK_THAT(bad.out + bad.err, Catch::Contains("neither config nor logs"));
  CHECK(d.terminate() == 0);
}
