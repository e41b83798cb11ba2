// The process fields at supervisord and systemd parity, against real /bin/sh children:
// identity (user, group, umask), environment (env_file, clear_env, MGMT_PROCESS_ID), limits
// (rlimits, nice, oom_score_adj), stopping (stop_signal, stop_group), start criteria
// (start_seconds, start_retries, success_exit_codes), instances, tty, and which reloads
// restart a child. No fixed sleeps: every wait is a condition with a deadline.
#include <catch2/catch.hpp>

#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "mgmt/plugin.hpp"
#include "proc_stat.hpp"
#include "process_backend.hpp"
#include "process_config.hpp"
#include "process_fixture.hpp"
#include "wait.hpp"

using namespace std::chrono_literals;
using mgmt::Entry;
using mgmt::OpResult;
using mgmt::process::kEventReconfigured;
using mgmt::test::wait_until;
using namespace mgmt::test;  // process_fixture.hpp
namespace state = mgmt::state;
namespace event = mgmt::event;
namespace process = mgmt::process;

namespace {

process::BackendConfig parse(const std::string& yaml) {
  return process::parse_backend_config(YAML::Load(yaml), "mgmt.yaml");
}

std::string error_of(const std::string& yaml) {
  try {
    parse(yaml);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "(no error)";
}

// One entry `p` running /bin/true with `extra` lines.
std::string entry(const std::string& extra) {
  return "processes:\n  - id: p\n    command: /bin/true\n" + extra;
}

std::vector<std::string> types(std::initializer_list<std::string_view> list) {
  std::vector<std::string> out;
  for (auto t : list) out.emplace_back(t);
  return out;
}

// Runs `script` once (restart: never) and returns its stdout once it has exited.
std::string run_once(const std::string& script, const std::string& extra = "",
                     const std::string& head = "") {
  auto b = make_backend(head + "processes:\n" +
                        sh_process("once", script, "    restart: never\n" + extra));
  b->start_all();
  const bool done = wait_until([&] {
    const auto s = state_of(*b, "once");
    return s == state::stopped || s == state::crashed || s == state::failed;
  });
  const auto e = b->status("once");
  INFO("state " << e->state << ", last_error " << e->last_error);
  REQUIRE(done);
  return logs_of(*b, "once");
}

bool is_root() { return ::geteuid() == 0; }

}  // namespace

// ---------------------------------------------------------------------------------------
// Configuration

TEST_CASE("parity config: defaults of the new fields", "[process][parity][config]") {
  const auto p = parse(entry("")).processes.at(0);
  CHECK(p.identity.empty());
  CHECK(p.umask == -1);
  CHECK(p.env_files.empty());
  CHECK_FALSE(p.clear_env);
  CHECK(p.rlimits.empty());
  CHECK_FALSE(p.nice);
  CHECK_FALSE(p.oom_score_adj);
  CHECK(p.stop_signal == SIGTERM);
  CHECK(p.stop_group);
  CHECK(p.start_seconds == 0ms);
  CHECK(p.start_retries == 3);
  CHECK(p.success_exit_codes == std::vector<int>{0});
  CHECK(p.instance == -1);
  CHECK_FALSE(p.tty);
  CHECK(p.tty_cols == 80);
  CHECK(p.tty_rows == 24);
}

TEST_CASE("parity config: values", "[process][parity][config]") {
  const auto p =
      parse(entry("    umask: 027\n"
                  "    env_file: [vars.env, -/etc/missing.env]\n"
                  "    clear_env: true\n"
                  "    rlimits: {nofile: 1024:4096, core: unlimited, as: 1GiB, cpu: 60}\n"
                  "    nice: -5\n"
                  "    oom_score_adj: 500\n"
                  "    stop_signal: SIGINT\n"
                  "    stop_group: false\n"
                  "    start_seconds: 1.5s\n"
                  "    start_retries: 5\n"
                  "    success_exit_codes: [0, 2, 255]\n"
                  "    tty: true\n"
                  "    tty_size: 132x43\n"))
          .processes.at(0);
  CHECK(p.umask == 027);
  REQUIRE(p.env_files.size() == 2);
  CHECK(p.env_files[0].path.size() > std::string("/vars.env").size());  // made absolute
  CHECK(p.env_files[0].path.front() == '/');
  CHECK(p.env_files[0].path.substr(p.env_files[0].path.size() - 9) == "/vars.env");
  CHECK_FALSE(p.env_files[0].optional);
  CHECK(p.env_files[1].path == "/etc/missing.env");
  CHECK(p.env_files[1].optional);
  CHECK(p.clear_env);
  REQUIRE(p.rlimits.size() == 4);
  CHECK(p.rlimits[0] == process::RLimit{RLIMIT_NOFILE, 1024, 4096});
  CHECK(p.rlimits[1] == process::RLimit{RLIMIT_CORE, RLIM_INFINITY, RLIM_INFINITY});
  CHECK(p.rlimits[2] == process::RLimit{RLIMIT_AS, 1ull << 30, 1ull << 30});
  CHECK(p.rlimits[3] == process::RLimit{RLIMIT_CPU, 60, 60});
  CHECK(p.nice == -5);
  CHECK(p.oom_score_adj == 500);
  CHECK(p.stop_signal == SIGINT);
  CHECK_FALSE(p.stop_group);
  CHECK(p.start_seconds == 1500ms);
  CHECK(p.start_retries == 5);
  CHECK(p.success_exit_codes == std::vector<int>{0, 2, 255});
  CHECK(p.tty);
  CHECK(p.tty_cols == 132);
  CHECK(p.tty_rows == 43);
  CHECK(parse(entry("    stop_signal: 10\n")).processes.at(0).stop_signal == SIGUSR1);
  CHECK(parse(entry("    stop_signal: HUP\n")).processes.at(0).stop_signal == SIGHUP);
  CHECK(parse(entry("    success_exit_codes: 3\n")).processes.at(0).success_exit_codes ==
        std::vector<int>{3});
  CHECK(parse(entry("    umask: \"0002\"\n")).processes.at(0).umask == 02);
}

TEST_CASE("parity config: user and group are resolved, or refused with their location",
          "[process][parity][config]") {
  CHECK(error_of(entry("    user: no-such-user-mgmt\n")) ==
        "mgmt.yaml:4:11: user \"no-such-user-mgmt\" does not exist (no entry in the user "
        "database); name an existing user, by name or uid");
  CHECK(error_of(entry("    group: no-such-group-mgmt\n")) ==
        "mgmt.yaml:4:12: group \"no-such-group-mgmt\" does not exist (no entry in the group "
        "database); name an existing group, by name or gid");
  // mgmtd's own user and group are always fine, by name or number.
  const passwd* me = ::getpwuid(::geteuid());
  REQUIRE(me != nullptr);
  const auto self = parse(entry("    user: " + std::string(me->pw_name) + "\n")).processes.at(0);
  CHECK(self.identity.uid == ::geteuid());
  CHECK(self.identity.home == me->pw_dir);
  CHECK(parse(entry("    user: \"" + std::to_string(::geteuid()) + "\"\n"))
            .processes.at(0)
            .identity.name == me->pw_name);
  if (!is_root()) {
    WARN("not root: `user: nobody` cannot be switched to; checking that it is refused");
    CHECK_THAT(error_of(entry("    user: nobody\n")),
               Catch::StartsWith("mgmt.yaml:4:11: mgmtd runs as uid " +
                                 std::to_string(::geteuid()) +
                                 ", not root, so it cannot switch to user nobody"));
    return;
  }
  const passwd* nobody = ::getpwnam("nobody");
  REQUIRE(nobody != nullptr);
  const auto p = parse(entry("    user: nobody\n")).processes.at(0);
  CHECK(p.identity.switch_ids);
  CHECK(p.identity.uid == nobody->pw_uid);
  CHECK(p.identity.gid == nobody->pw_gid);
  CHECK(p.identity.name == "nobody");
  CHECK(std::find(p.identity.groups.begin(), p.identity.groups.end(), nobody->pw_gid) !=
        p.identity.groups.end());
  const auto g = parse(entry("    user: nobody\n    group: \"0\"\n")).processes.at(0);
  CHECK(g.identity.gid == 0);
}

TEST_CASE("parity config: bad values name file, line, column and the fix",
          "[process][parity][config]") {
  CHECK(error_of(entry("    umask: 0999\n")) ==
        "mgmt.yaml:4:12: umask must be an octal mode such as \"027\" or \"0022\" (got \"0999\")");
  CHECK(error_of(entry("    rlimits: {nofiles: 10}\n")) ==
        "mgmt.yaml:4:15: unknown key \"nofiles\" in rlimits (expected one of: nofile, nproc, "
        "core, memlock, stack, as, cpu, fsize)");
  CHECK(error_of(entry("    rlimits:\n      nofile: lots\n")) ==
        "mgmt.yaml:5:15: rlimits.nofile must be a number, `unlimited`, or soft:hard such as "
        "1024:4096 (got \"lots\")");
  CHECK(error_of(entry("    rlimits:\n      nofile: 4096:1024\n")) ==
        "mgmt.yaml:5:15: rlimits.nofile: the soft limit must not be above the hard one (got "
        "\"4096:1024\")");
  CHECK(error_of(entry("    rlimits: [nofile]\n")) ==
        "mgmt.yaml:4:14: rlimits must be a map such as {nofile: 65536, core: unlimited}");
  CHECK(error_of(entry("    nice: 20\n")) ==
        "mgmt.yaml:4:11: nice must be a whole number from -20 to 19 such as 10 (got \"20\")");
  CHECK(error_of(entry("    oom_score_adj: -1001\n")) ==
        "mgmt.yaml:4:20: oom_score_adj must be a whole number from -1000 to 1000 such as 500 "
        "(got \"-1001\")");
  CHECK(error_of(entry("    stop_signal: SIGNOPE\n")) ==
        "mgmt.yaml:4:18: stop_signal must be a signal name or number such as TERM, SIGINT or 15 "
        "(got \"SIGNOPE\")");
  CHECK(error_of(entry("    success_exit_codes: [0, 256]\n")) ==
        "mgmt.yaml:4:29: each of success_exit_codes must be a whole number from 0 to 255 such "
        "as 2 (got \"256\")");
  CHECK(error_of(entry("    start_seconds: soon\n")) ==
        "mgmt.yaml:4:20: start_seconds must be a duration such as 250ms, 5s, 2m or 1h (got "
        "\"soon\")");
  CHECK(error_of(entry("    start_retries: -1\n")) ==
        "mgmt.yaml:4:20: start_retries must be a whole number such as 5 (got \"-1\")");
  CHECK(error_of(entry("    tty_size: 80x24\n")) == "mgmt.yaml:4:15: tty_size needs `tty: true`");
  CHECK(error_of(entry("    tty: true\n    tty_size: 80 by 24\n")) ==
        "mgmt.yaml:5:15: tty_size must read COLUMNSxROWS such as 80x24 (got \"80 by 24\")");
  CHECK(error_of(entry("    instances: 0\n")) ==
        "mgmt.yaml:4:16: instances must be a whole number from 1 to 1000 such as 4 (got \"0\")");
  CHECK(error_of(entry("    env_file: \"-\"\n")) == "mgmt.yaml:4:15: env_file must name a file");
  CHECK(error_of(entry("    clear_env: maybe\n")) ==
        "mgmt.yaml:4:16: clear_env must be true or false");
}

TEST_CASE("parity config: instances expand into <id>-<n>, with {instance} replaced",
          "[process][parity][config][instances]") {
  const auto cfg = parse(
      "processes:\n"
      "  - id: db\n    command: /bin/true\n"
      "  - id: worker\n    command: /bin/echo\n    instances: 3\n"
      "    args: [\"--slot={instance}\", plain]\n    env: {PORT: \"80{instance}\"}\n"
      "    work_dir: /tmp/w{instance}\n    depends_on: db\n"
      "  - id: front\n    command: /bin/true\n    depends_on: [worker]\n");
  REQUIRE(cfg.processes.size() == 5);
  CHECK(cfg.processes[0].id == "db");
  for (int i = 0; i < 3; ++i) {
    const auto& w = cfg.processes[static_cast<std::size_t>(i) + 1];
    const std::string n = std::to_string(i);
    CHECK(w.id == "worker-" + n);
    CHECK(w.name == "worker-" + n);
    CHECK(w.instance == i);
    CHECK(w.args == std::vector<std::string>{"--slot=" + n, "plain"});
    CHECK(w.env == std::vector<std::pair<std::string, std::string>>{{"PORT", "80" + n}});
    CHECK(w.work_dir == "/tmp/w" + n);
    CHECK(w.depends_on == std::vector<std::string>{"db"});
  }
  // depends_on naming the entry means each of its instances.
  CHECK(cfg.processes[4].depends_on ==
        std::vector<std::string>{"worker-0", "worker-1", "worker-2"});
  // One instance can be named too.
  const auto one = parse("processes:\n  - id: w\n    command: a\n    instances: 2\n"
                         "  - id: f\n    command: b\n    depends_on: w-1\n");
  CHECK(one.processes.at(2).depends_on == std::vector<std::string>{"w-1"});
  CHECK(error_of("processes:\n  - id: w\n    command: a\n    instances: 2\n"
                 "  - id: f\n    command: b\n    depends_on: w-2\n") ==
        "mgmt.yaml:7:17: process f depends on \"w-2\", which is not a configured process id");
  CHECK(error_of("processes:\n  - id: w\n    command: a\n    instances: 2\n"
                 "  - id: w-1\n    command: b\n") ==
        "mgmt.yaml:5:9: duplicate id \"w-1\" (line 5, first defined at line 2); every process "
        "needs its own id");
}

TEST_CASE("parity config: environment files read as systemd reads them",
          "[process][parity][config][env]") {
  const auto vars = process::parse_env_file(
      "# a comment\n"
      "; another\n"
      "\n"
      "PLAIN=value\n"
      "  SPACED = value with spaces   \n"
      "SINGLE='it''s literal $HOME \\n'\n"
      "DOUBLE=\"say \\\"hi\\\" \\\\ \\$x\"\n"
      "MULTI=\"line one\n"
      "line two\"\n"
      "CONT=one\\\n"
      "two\n"
      "EMPTY=\n"
      "no equals sign here\n"
      "LAST=x");
  const process::EnvVars want = {
      {"PLAIN", "value"},
      {"SPACED", "value with spaces"},
      {"SINGLE", "its literal $HOME \\n"},
      {"DOUBLE", "say \"hi\" \\ $x"},
      {"MULTI", "line one\nline two"},
      {"CONT", "onetwo"},
      {"EMPTY", ""},
      {"LAST", "x"},
  };
  CHECK(vars == want);
  // A missing file is an error, unless it was marked optional with '-'.
  const auto missing = process::read_env_files({{"/nonexistent/mgmt.env", false}});
  REQUIRE(std::holds_alternative<std::string>(missing));
  CHECK(std::get<std::string>(missing) ==
        "env_file /nonexistent/mgmt.env: No such file or directory");
  const auto optional = process::read_env_files({{"/nonexistent/mgmt.env", true}});
  REQUIRE(std::holds_alternative<process::EnvVars>(optional));
  CHECK(std::get<process::EnvVars>(optional).empty());
}

TEST_CASE("parity config: which changed fields restart a running child",
          "[process][parity][config][reconfigure]") {
  const auto base = parse(entry("")).processes.at(0);
  const auto fields_of = [&](const std::string& extra) {
    return process::changed_fields(base, parse(entry(extra)).processes.at(0));
  };
  for (const std::string extra :
       {"    restart: always\n", "    stop_timeout: 1s\n", "    stop_signal: INT\n",
        "    stop_group: false\n", "    start_seconds: 1s\n", "    start_retries: 9\n",
        "    success_exit_codes: [0, 1]\n", "    max_restarts: 2\n", "    restart_backoff: 2s\n",
        "    log_buffer: 4KiB\n", "    resources: {max_rss: 1GiB}\n", "    name: P\n",
        "    autostart: false\n"}) {
    INFO(extra);
    const auto f = fields_of(extra);
    CHECK(f.size() == 1);
    CHECK_FALSE(process::needs_restart(f));
  }
  for (const std::string& extra : std::vector<std::string>{
           "    args: [x]\n", "    env: {A: b}\n", "    work_dir: /\n", "    umask: \"077\"\n",
        "    env_file: /x.env\n", "    clear_env: true\n", "    rlimits: {nofile: 64}\n",
        "    nice: 3\n", "    oom_score_adj: 3\n", "    tty: true\n",
        "    group: \"" + std::to_string(::getegid()) + "\"\n"}) {
    INFO(extra);
    const auto f = fields_of(extra);
    CHECK(f.size() == 1);
    CHECK(process::needs_restart(f));
  }
  CHECK(fields_of("    restart: always\n    stop_timeout: 1s\n") ==
        std::vector<std::string>{"restart", "stop_timeout"});
  CHECK(process::needs_restart({"stop_timeout", "args"}));
  CHECK(process::needs_restart({"env_file contents"}));
}

// ---------------------------------------------------------------------------------------
// Identity and environment

TEST_CASE("parity: user, group and umask", "[process][parity][identity]") {
  const std::string script =
      "echo \"uid=$(id -u) gid=$(id -g) groups=$(id -G) umask=$(umask)\"; "
      "echo \"HOME=$HOME USER=$USER LOGNAME=$LOGNAME SHELL=$SHELL\"";
  // umask alone works for any user.
  CHECK_THAT(run_once(script, "    umask: \"027\"\n"), Catch::Contains("umask=0027"));
  if (!is_root()) {
    WARN("not root: skipping the switch to user nobody");
    return;
  }
  const passwd* nobody = ::getpwnam("nobody");
  REQUIRE(nobody != nullptr);
  const std::string uid = std::to_string(nobody->pw_uid);
  const std::string gid = std::to_string(nobody->pw_gid);
  const std::string out = run_once(script, "    user: nobody\n    umask: \"0077\"\n");
  CHECK_THAT(out, Catch::Contains("uid=" + uid + " gid=" + gid + " groups=" + gid + " umask=0077"));
  CHECK_THAT(out, Catch::Contains("HOME=" + std::string(nobody->pw_dir) +
                                  " USER=nobody LOGNAME=nobody SHELL=" + nobody->pw_shell));
  // `env` wins over the user's variables; `group:` replaces the primary group.
  const group* root_group = ::getgrgid(0);
  REQUIRE(root_group != nullptr);
  const std::string out2 = run_once(
      script, "    user: nobody\n    group: " + std::string(root_group->gr_name) +
                  "\n    env: {HOME: /srv}\n");
  CHECK_THAT(out2, Catch::Contains("uid=" + uid + " gid=0 "));
  CHECK_THAT(out2, Catch::Contains("HOME=/srv USER=nobody"));
  // `group:` alone: root's user, that group only.
  CHECK_THAT(run_once(script, "    group: \"" + gid + "\"\n"),
             Catch::Contains("uid=0 gid=" + gid + " groups=" + gid + " "));
}

TEST_CASE("parity: env_file, env and mgmtd's environment, later sources winning",
          "[process][parity][env]") {
  TempDir dir;
  const std::string file = dir.file("app.env");
  std::ofstream(file) << "# settings\nFROM_FILE=\"file value\"\nBOTH=file\nHOME=/from/file\n";
  const std::string script =
      "echo \"$FROM_FILE|$BOTH|$HOME|$MGMT_PROCESS_ID|${MGMT_INSTANCE-unset}\"; exec sleep 30";
  auto b = make_backend(
      "processes:\n" +
      sh_process("app", script,
                 "    env_file: [" + file + ", -" + dir.file("missing.env") +
                     "]\n    env: {BOTH: env}\n") +
      sh_process("strict", "exec sleep 30",
                 "    env_file: " + dir.file("missing.env") + "\n    restart: never\n"));
  b->start_all();
  REQUIRE(wait_until([&] { return !logs_of(*b, "app").empty(); }));
  CHECK(logs_of(*b, "app") == "file value|env|/from/file|app|unset\n");
  // A required file that is missing fails the start, saying which.
  REQUIRE(wait_until([&] { return state_of(*b, "strict") == state::failed; }));
  CHECK(b->status("strict")->last_error ==
        "env_file " + dir.file("missing.env") + ": No such file or directory");
  // The file is read at each start.
  std::ofstream(file) << "FROM_FILE=edited\n";
  REQUIRE(stop(*b, "app").err.empty());
  REQUIRE(start(*b, "app").err.empty());
  REQUIRE(wait_until([&] { return logs_of(*b, "app").find("edited") != std::string::npos; }));
  const char* home = std::getenv("HOME");
  CHECK_THAT(logs_of(*b, "app"),
             Catch::EndsWith("edited|env|" + std::string(home ? home : "") + "|app|unset\n"));
}

TEST_CASE("parity: clear_env keeps only PATH (and what the config sets)",
          "[process][parity][env]") {
  ::setenv("MGMT_PARITY_LEAK", "leaked", 1);
  const std::string out =
      run_once("env | sort", "    clear_env: true\n    env: {MINE: \"1\"}\n");
  ::unsetenv("MGMT_PARITY_LEAK");
  std::string want;
  if (const char* path = std::getenv("PATH")) want += "PATH=" + std::string(path) + "\n";
  // What /bin/sh adds by itself (PWD, SHLVL, ...) is not ours: only compare our keys.
  std::istringstream lines(out);
  std::string line, ours;
  for (std::string l; std::getline(lines, l);) {
    const std::string key = l.substr(0, l.find('='));
    if (key == "PWD" || key == "SHLVL" || key == "_" || key == "OLDPWD") continue;
    ours += l + "\n";
  }
  CHECK(ours == "MGMT_PROCESS_ID=once\nMINE=1\n" + want);
}

// ---------------------------------------------------------------------------------------
// Limits and priority

TEST_CASE("parity: rlimits, nice and oom_score_adj are applied before exec",
          "[process][parity][limits]") {
  const std::string out = run_once(
      "echo \"nofile=$(ulimit -Sn):$(ulimit -Hn) core=$(ulimit -c) "
      "nice=$(cut -d' ' -f19 /proc/self/stat) oom=$(cat /proc/self/oom_score_adj)\"",
      "    rlimits: {nofile: \"512:1024\", core: unlimited}\n    nice: 7\n"
      "    oom_score_adj: 321\n");
  CHECK(out == "nofile=512:1024 core=unlimited nice=7 oom=321\n");
}

TEST_CASE("parity: a limit the kernel refuses fails the start with the reason",
          "[process][parity][limits]") {
  // Above fs.nr_open (1048576 by default): refused even for root.
  auto b = make_backend("processes:\n" +
                        sh_process("big", "exec sleep 30",
                                   "    rlimits: {nofile: 2000000000}\n    restart: never\n"));
  b->start_all();
  REQUIRE(wait_until([&] { return state_of(*b, "big") == state::failed; }));
  CHECK(b->status("big")->last_error == "rlimits.nofile: Operation not permitted");
  CHECK(b->status("big")->pid == 0);
  if (is_root()) {
    WARN("root: a negative nice is allowed, so its refusal is not tested");
    return;
  }
  auto c = make_backend("processes:\n" +
                        sh_process("prio", "exec sleep 30", "    nice: -5\n    restart: never\n"));
  c->start_all();
  REQUIRE(wait_until([&] { return state_of(*c, "prio") == state::failed; }));
  CHECK_THAT(c->status("prio")->last_error, Catch::StartsWith("nice -5: "));
}

// ---------------------------------------------------------------------------------------
// Stopping

TEST_CASE("parity: stop_signal is what a stop sends", "[process][parity][stop]") {
  auto b = make_backend(
      "processes:\n" +
      sh_process("app", "trap 'echo got INT; exit 0' INT; trap '' TERM; echo up; "
                        "while :; do sleep 0.05; done",
                 "    stop_signal: INT\n    stop_timeout: 20s\n"));
  b->start_all();
  REQUIRE(wait_until([&] { return logs_of(*b, "app") == "up\n"; }));
  EventLog events(*b);
  const OpResult r = stop(*b, "app");
  CHECK(r.err.empty());
  CHECK(r.entry.exit_code == 0);  // its trap ran: it was SIGINT, not the SIGKILL
  CHECK(logs_of(*b, "app") == "up\ngot INT\n");
  CHECK_THAT(events.summary_of("app", event::stopping),
             Catch::StartsWith("SIGINT to process group "));
}

TEST_CASE("parity: stop_group false signals the leader only", "[process][parity][stop]") {
  TempDir dir;
  // The grandchild records a SIGTERM; the leader, on SIGTERM, waits for the grandchild.
  // Each says when its trap is set.
  const std::string script =
      "(trap 'echo term > \"$M\"; exit 0' TERM; echo child-up; while :; do sleep 0.05; done) & "
      "G=$!; trap 'wait $G; exit 0' TERM; echo up; while :; do sleep 0.05; done";
  const auto both_up = [](mgmt::Backend& b) {
    const std::string out = logs_of(b, "tree");
    return out == "child-up\nup\n" || out == "up\nchild-up\n";
  };
  SECTION("stop_group: true (the default) reaches the grandchild") {
    auto b = make_backend("processes:\n" +
                          sh_process("tree", script, "    env: {M: " + dir.file("m") + "}\n"));
    b->start_all();
    REQUIRE(wait_until([&] { return both_up(*b); }));
    const OpResult r = stop(*b, "tree");
    CHECK(r.err.empty());
    CHECK(r.entry.exit_code == 0);
    CHECK(read_text(dir.file("m")) == "term\n");
  }
  SECTION("stop_group: false does not; SIGKILL to the group still ends it") {
    auto b = make_backend("processes:\n" +
                          sh_process("tree", script,
                                     "    env: {M: " + dir.file("m") +
                                         "}\n    stop_group: false\n    stop_timeout: 300ms\n"));
    b->start_all();
    REQUIRE(wait_until([&] { return both_up(*b); }));
    EventLog events(*b);
    const OpResult r = stop(*b, "tree");
    CHECK(r.err.empty());
    CHECK(r.entry.exit_signal == SIGKILL);
    CHECK_FALSE(exists(dir.file("m")));
    CHECK_THAT(events.summary_of("tree", event::stopping), Catch::StartsWith("SIGTERM to pid "));
  }
  CHECK(zombies() == 0);
}

// ---------------------------------------------------------------------------------------
// Start criteria and exit codes

TEST_CASE("parity: start_seconds: a start counts once the program has stayed up",
          "[process][parity][start]") {
  auto b = make_backend("processes:\n" +
                        sh_process("slow", "exec sleep 30", "    start_seconds: 2s\n") +
                        sh_process("dep", "exec sleep 30",
                                   "    depends_on: slow\n    autostart: false\n"));
  b->start_all();
  const auto t0 = std::chrono::steady_clock::now();
  REQUIRE(wait_until([&] { return pid_of(*b, "slow") > 0; }));
  CHECK(state_of(*b, "slow") == state::starting);  // executed, not yet up for long enough
  EventLog events(*b);
  const OpResult r = start(*b, "dep");  // waits for its dependency to be running
  CHECK(r.err.empty());
  CHECK(std::chrono::steady_clock::now() - t0 >= 2s);
  CHECK(state_of(*b, "slow") == state::running);
  CHECK(events.summary_of("slow", event::started) ==
        "pid " + std::to_string(pid_of(*b, "slow")) + " (up 2000 ms)");
  CHECK(events.index("slow", event::started) < events.index("dep", event::started));
}

TEST_CASE("parity: start_seconds: a stop before the start counts answers the start",
          "[process][parity][start]") {
  auto b = make_backend("processes:\n" +
                        sh_process("slow", "exec sleep 30",
                                   "    start_seconds: 20s\n    autostart: false\n"));
  auto started = async_call(true, *b, "slow");
  REQUIRE(wait_until([&] { return pid_of(*b, "slow") > 0; }));
  CHECK(state_of(*b, "slow") == state::starting);
  const OpResult r = stop(*b, "slow");
  CHECK(r.err.empty());
  CHECK(r.entry.state == state::stopped);
  REQUIRE(started.wait_for(10s) == std::future_status::ready);
  CHECK(started.get().err == "process slow was stopped before it started");
}

TEST_CASE("parity: start_seconds: early exits are retried start_retries times, then failed",
          "[process][parity][start]") {
  // Exits at once, even with code 0: never up for start_seconds.
  auto b = make_backend("processes:\n" +
                        sh_process("quick", "echo try; exit 0",
                                   "    start_seconds: 2s\n    start_retries: 2\n"
                                   "    restart_backoff: 10ms\n    restart: never\n"
                                   "    autostart: false\n"));
  EventLog events(*b);
  const OpResult r = start(*b, "quick");  // answered with the final outcome
  CHECK_THAT(r.err, Catch::StartsWith("gave up after 3 failed starts (last: exit code 0 after "));
  CHECK_THAT(r.err, Catch::EndsWith(" ms, before start_seconds (2000 ms))"));
  CHECK(state_of(*b, "quick") == state::failed);
  CHECK(b->status("quick")->last_error == r.err);
  CHECK(b->status("quick")->restarts == 2);
  CHECK(logs_of(*b, "quick") == "try\ntry\ntry\n");
  CHECK(events.types("quick") ==
        types({event::starting, event::crashed, event::restarting, event::starting,
               event::crashed, event::restarting, event::starting, event::crashed,
               event::failed}));
  CHECK_THAT(events.summary_of("quick", event::restarting),
             Catch::EndsWith(": next attempt in 10 ms (start retry 1 of 2)"));
}

TEST_CASE("parity: success_exit_codes are a stop, not a crash", "[process][parity][start]") {
  auto b = make_backend("processes:\n" +
                        sh_process("ok3", "exit 3",
                                   "    success_exit_codes: [0, 3]\n    restart_backoff: 10ms\n") +
                        sh_process("bad4", "exit 4",
                                   "    success_exit_codes: [0, 3]\n    restart_backoff: 10ms\n"
                                   "    max_restarts: 1\n"));
  EventLog events(*b);
  b->start_all();
  REQUIRE(wait_until([&] {
    return state_of(*b, "ok3") == state::stopped && state_of(*b, "bad4") == state::failed;
  }));
  CHECK(events.types("ok3") == types({event::starting, event::started, event::stopped}));
  CHECK(events.summary_of("ok3", event::stopped) == "exit code 3");
  CHECK(b->status("ok3")->restarts == 0);
  CHECK(events.count("bad4", event::crashed) == 2);
}

// ---------------------------------------------------------------------------------------
// Instances

TEST_CASE("parity: instances run N copies, a reload adds or removes only the difference",
          "[process][parity][instances]") {
  // sh -c SCRIPT sh ARG: $1 is ARG.
  const auto config = [](int n) {
    YAML::Emitter script;
    script << YAML::DoubleQuoted
           << "echo \"$MGMT_PROCESS_ID $MGMT_INSTANCE $1 $PORT\"; exec sleep 30";
    return "processes:\n  - id: w\n    command: /bin/sh\n    args: [-c, " +
           std::string(script.c_str()) + ", sh, \"slot{instance}\"]\n    instances: " +
           std::to_string(n) + "\n    env: {PORT: \"90{instance}\"}\n";
  };
  auto b = make_backend(config(3));
  b->start_all();
  REQUIRE(wait_until([&] {
    for (int i = 0; i < 3; ++i) {
      if (logs_of(*b, "w-" + std::to_string(i)).empty()) return false;
    }
    return true;
  }));
  CHECK(ids(*b) == std::vector<std::string>{"w-0", "w-1", "w-2"});
  for (int i = 0; i < 3; ++i) {
    const std::string n = std::to_string(i);
    CHECK(logs_of(*b, "w-" + n) == "w-" + n + " " + n + " slot" + n + " 90" + n + "\n");
  }
  const auto pid0 = pid_of(*b, "w-0"), pid1 = pid_of(*b, "w-1"), pid2 = pid_of(*b, "w-2");
  EventLog events(*b);
  REQUIRE(reload(*b, config(2)) == "");
  CHECK(ids(*b) == std::vector<std::string>{"w-0", "w-1"});
  REQUIRE(wait_until([&] { return process_gone(static_cast<pid_t>(pid2)); }));
  REQUIRE(reload(*b, config(4)) == "");
  REQUIRE(wait_until([&] {
    return state_of(*b, "w-2") == state::running && state_of(*b, "w-3") == state::running;
  }));
  CHECK(ids(*b) == std::vector<std::string>{"w-0", "w-1", "w-2", "w-3"});
  CHECK(pid_of(*b, "w-0") == pid0);
  CHECK(pid_of(*b, "w-1") == pid1);
  CHECK(events.types("w-0").empty());
  CHECK(events.types("w-1").empty());
  REQUIRE(wait_until([&] { return !logs_of(*b, "w-3").empty(); }));
  CHECK(logs_of(*b, "w-3") == "w-3 3 slot3 903\n");
}

// ---------------------------------------------------------------------------------------
// Terminal

TEST_CASE("parity: tty runs the child on a pseudo-terminal of tty_size",
          "[process][parity][tty]") {
  auto b = make_backend(
      "processes:\n" +
      sh_process("term",
                 "test -t 0 && test -t 1 && test -t 2 && echo tty; stty size; "
                 "echo to-stderr >&2; [ \"$(cut -d' ' -f6 /proc/$$/stat)\" = $$ ] && echo leader; "
                 "exec sleep 30",
                 "    tty: true\n    tty_size: 100x30\n") +
      sh_process("pipe", "test -t 1 || echo no-tty; readlink /proc/self/fd/0; exec sleep 30"));
  b->start_all();
  REQUIRE(wait_until([&] {
    return logs_of(*b, "term").find("leader\n") != std::string::npos &&
           logs_of(*b, "pipe").find("/dev/null") != std::string::npos;
  }));
  // stderr goes to the terminal too, so it is in the stdout stream; no CR LF.
  CHECK(logs_of(*b, "term") == "tty\n30 100\nto-stderr\nleader\n");
  CHECK(logs_of(*b, "term", mgmt::LogStream::err).empty());
  CHECK(logs_of(*b, "pipe") == "no-tty\n/dev/null\n");
  // Its own session, and still its own group: a stop ends it like any other.
  const auto pid = static_cast<pid_t>(pid_of(*b, "term"));
  CHECK(::getpgid(pid) == pid);
  CHECK(::getsid(pid) == pid);
  // Recorded with its own session, so a later mgmtd can still find what it leaves behind.
  const auto ps = mgmt::process::read_proc_stat(pid);
  REQUIRE(ps);
  CHECK_THAT(read_text(b->state_file()),
             Catch::Contains("group " + std::to_string(pid) + " " + std::to_string(ps->start_time) +
                             " " + std::to_string(pid) + " term\n"));
  const OpResult r = stop(*b, "term");
  CHECK(r.err.empty());
  CHECK(r.entry.exit_signal == SIGTERM);
  CHECK(process_gone(pid));
}

TEST_CASE("parity: a program that buffers on a pipe shows its output at once on a tty",
          "[process][parity][tty]") {
  // stdio buffers a pipe fully and a terminal by line: the line shows while it runs.
  const char* prog = "import sys, time\nprint('hello', flush=False)\ntime.sleep(30)\n";
  if (::access("/usr/bin/python3", X_OK) != 0) {
    WARN("no /usr/bin/python3: skipping");
    return;
  }
  YAML::Emitter quoted;
  quoted << YAML::DoubleQuoted << prog;
  auto b = make_backend(std::string("processes:\n  - id: py\n    command: /usr/bin/python3\n") +
                        "    args: [-c, " + quoted.c_str() + "]\n    tty: true\n");
  b->start_all();
  CHECK(wait_until([&] { return logs_of(*b, "py") == "hello\n"; }));
}

// ---------------------------------------------------------------------------------------
// Reloads restart only what must restart

TEST_CASE("parity: a reload of policy fields keeps the child, one of args restarts it",
          "[process][parity][reconfigure]") {
  const auto config = [](const std::string& args_extra, const std::string& policy) {
    return "processes:\n" +
           sh_process("app",
                      "trap '' TERM; echo up" + args_extra + "; while :; do sleep 0.05; done",
                      policy);
  };
  auto b = make_backend(config("", "    restart: on_failure\n    stop_timeout: 20s\n"));
  b->start_all();
  REQUIRE(wait_until([&] { return logs_of(*b, "app") == "up\n"; }));
  const auto pid = pid_of(*b, "app");
  EventLog events(*b);

  REQUIRE(reload(*b, config("", "    restart: always\n    stop_timeout: 200ms\n")) == "");
  CHECK(pid_of(*b, "app") == pid);
  CHECK(state_of(*b, "app") == state::running);
  CHECK(events.types("app") == types({kEventReconfigured}));
  CHECK(events.summary_of("app", kEventReconfigured) ==
        "changed: restart, stop_timeout; no restart needed: applied in place, pid " +
            std::to_string(pid) + " kept");
  CHECK(logs_of(*b, "app") == "up\n");  // same run, same logs

  // The new stop_timeout is the one a stop uses: SIGKILL after 200 ms, not 20 s.
  const auto t0 = std::chrono::steady_clock::now();
  REQUIRE(stop(*b, "app").err.empty());
  CHECK(std::chrono::steady_clock::now() - t0 < 10s);
  CHECK_THAT(events.summary_of("app", event::stopping), Catch::EndsWith("SIGKILL in 200 ms"));
  REQUIRE(start(*b, "app").err.empty());
  REQUIRE(wait_until([&] { return state_of(*b, "app") == state::running; }));
  const auto pid2 = pid_of(*b, "app");

  // A change of what the program runs restarts it.
  REQUIRE(reload(*b, config(" again", "    restart: always\n    stop_timeout: 200ms\n")) == "");
  REQUIRE(wait_until([&] {
    return state_of(*b, "app") == state::running && pid_of(*b, "app") != pid2 &&
           logs_of(*b, "app").find("up again\n") != std::string::npos;
  }));
  CHECK(process_gone(static_cast<pid_t>(pid2)));
  CHECK(events.summaries("app", kEventReconfigured).back() ==
        "changed: args; restart needed: stopping pid " + std::to_string(pid2) +
            " to start it again");
  b.reset();  // (orphans killed with a group are reaped within 250 ms: checked once it is gone)
  CHECK(zombies() == 0);
}

TEST_CASE("parity: a reload restarts a child whose env_file changed since it started",
          "[process][parity][reconfigure][env]") {
  TempDir dir;
  const std::string file = dir.file("app.env");
  std::ofstream(file) << "V=1\n";
  const std::string config =
      "processes:\n" +
      sh_process("app", "echo \"V=$V\"; exec sleep 30", "    env_file: " + file + "\n");
  auto b = make_backend(config);
  b->start_all();
  REQUIRE(wait_until([&] { return logs_of(*b, "app") == "V=1\n"; }));
  const auto pid = pid_of(*b, "app");
  EventLog events(*b);
  REQUIRE(reload(*b, config) == "");  // same file, same contents: nothing happens
  CHECK(events.size() == 0);
  std::ofstream(file) << "V=2\n";
  REQUIRE(reload(*b, config) == "");
  REQUIRE(wait_until([&] { return logs_of(*b, "app") == "V=1\nV=2\n"; }));
  CHECK(pid_of(*b, "app") != pid);
  CHECK_THAT(events.summary_of("app", kEventReconfigured),
             Catch::StartsWith("changed: env_file contents; restart needed"));
}

// ---------------------------------------------------------------------------------------
// Everything at once

TEST_CASE("parity: one config using every new field", "[process][parity][all]") {
  TempDir dir;
  const std::string env_file = dir.file("all.env");
  std::ofstream(env_file) << "FROM_FILE='file {instance}'\nOVERRIDDEN=file\n";
  std::filesystem::create_directories(dir.file("w0"));
  std::filesystem::create_directories(dir.file("w1"));
  ::chmod(dir.path.c_str(), 0755);
  ::chmod(dir.file("w0").c_str(), 0777);
  ::chmod(dir.file("w1").c_str(), 0777);
  const bool root = is_root();
  if (!root) WARN("not root: the combined config runs without `user: nobody`");
  const std::string user = root ? "    user: nobody\n" : "";
  const std::string script =
      "trap 'echo bye; exit 0' USR1; "
      "echo \"$MGMT_PROCESS_ID/$MGMT_INSTANCE $1 $(pwd) $FROM_FILE $OVERRIDDEN $ONLY\"; "
      "echo \"uid=$(id -u) umask=$(umask) nofile=$(ulimit -n) "
      "nice=$(cut -d' ' -f19 /proc/self/stat) oom=$(cat /proc/self/oom_score_adj)\"; "
      "stty size; test -t 1 && echo tty; echo ready; "
      "while :; do sleep 0.05; done";
  YAML::Emitter quoted;
  quoted << YAML::DoubleQuoted << script;
  const std::string yaml = "processes:\n  - id: all\n    command: /bin/sh\n    args: [-c, " +
                           std::string(quoted.c_str()) +
                           ", sh, \"arg{instance}\"]\n"
                           "    instances: 2\n"
                           "    work_dir: " + dir.file("w{instance}") + "\n" + user +
                           "    umask: \"0027\"\n"
                           "    env_file: [" + env_file + ", -" + dir.file("none.env") + "]\n"
                           "    clear_env: true\n"
                           "    env: {OVERRIDDEN: env, ONLY: \"only{instance}\"}\n"
                           "    rlimits: {nofile: 256, core: 0}\n"
                           "    nice: 3\n"
                           "    oom_score_adj: 100\n"
                           "    stop_signal: USR1\n"
                           "    stop_group: false\n"
                           "    stop_timeout: 20s\n"
                           "    start_seconds: 200ms\n"
                           "    start_retries: 1\n"
                           "    success_exit_codes: [0, 9]\n"
                           "    tty: true\n"
                           "    tty_size: 90x20\n";
  auto b = make_backend(yaml);
  b->start_all();
  const std::string uid = root ? std::to_string(::getpwnam("nobody")->pw_uid)
                               : std::to_string(::geteuid());
  for (const std::string n : {"0", "1"}) {
    const std::string id = "all-" + n;
    REQUIRE(wait_until([&] {
      return state_of(*b, id) == state::running &&
             logs_of(*b, id).find("ready\n") != std::string::npos;
    }));
    CHECK(logs_of(*b, id) == id + "/" + n + " arg" + n + " " + dir.file("w" + n) +
                                 " file {instance} env only" + n + "\n" + "uid=" + uid +
                                 " umask=0027 nofile=256 nice=3 oom=100\n20 90\ntty\nready\n");
  }
  EventLog events(*b);
  const OpResult r = stop(*b, "all-0");
  CHECK(r.err.empty());
  CHECK(r.entry.exit_code == 0);
  CHECK_THAT(logs_of(*b, "all-0"), Catch::EndsWith("bye\n"));
  CHECK_THAT(events.summary_of("all-0", event::stopping), Catch::StartsWith("SIGUSR1 to pid "));
  CHECK(state_of(*b, "all-1") == state::running);
  b.reset();
  CHECK(zombies() == 0);
}
