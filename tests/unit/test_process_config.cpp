// The process backend's config block: defaults, values and every error's text.
#include <catch2/catch.hpp>

#include <signal.h>
#include <unistd.h>

#include <stdexcept>
#include <string>

#include <yaml-cpp/yaml.h>

#include "process_config.hpp"

using namespace mgmt::process;
using namespace std::chrono_literals;

namespace {

BackendConfig parse(const std::string& yaml, const std::string& file = "mgmt.yaml") {
  return parse_backend_config(YAML::Load(yaml), file);
}

// The message of the error parsing `yaml` throws.
std::string error_of(const std::string& yaml) {
  try {
    parse(yaml);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("process config: defaults", "[process][config]") {
  const auto cfg = parse("processes:\n  - id: web\n    command: /bin/true\n");
  REQUIRE(cfg.processes.size() == 1);
  const ProcessSpec& p = cfg.processes[0];
  CHECK(p.id == "web");
  CHECK(p.name == "web");
  CHECK(p.command == "/bin/true");
  CHECK(p.args.empty());
  CHECK(p.env.empty());
  CHECK(p.work_dir.empty());
  CHECK(p.restart == RestartPolicy::on_failure);
  CHECK(p.max_restarts == 0);
  CHECK(p.restart_backoff == 1s);
  CHECK(p.restart_backoff_max == 30s);
  CHECK(p.stop_timeout == 10s);
  CHECK(p.autostart);
  CHECK(p.log_buffer == 1024 * 1024);
  CHECK(p.restart_reset_after == 10s);
  CHECK(p.log_files.dir.empty());
  CHECK(p.log_files.max_size == 10 * 1024 * 1024);
  CHECK(p.log_files.max_files == 5);
  CHECK(p.resources.max_rss == 0);
  CHECK(p.resources.on_exceed.action == OnExceed::Action::kill);
  CHECK(p.resources.sample_interval == 1s);
  CHECK(p.depends_on.empty());
  CHECK(cfg.state_dir.empty());
  CHECK(cfg.subreaper);
}

TEST_CASE("process config: an empty or absent block means no processes", "[process][config]") {
  CHECK(parse_backend_config(YAML::Node(), "mgmt.yaml").processes.empty());
  CHECK(parse("{}").processes.empty());
  CHECK(parse("processes: []").processes.empty());
}

TEST_CASE("process config: every field", "[process][config]") {
  const auto cfg = parse(R"(
log_buffer: 64KiB
log_file_dir: /var/log/mgmtd
log_max_size: 1MiB
state_dir: /run/mgmtd-state
subreaper: false
processes:
  - id: web
    name: Web Server
    command: python3
    args: [-m, http.server, "8080"]
    env: {PORT: 8080, MODE: dev}
    work_dir: /srv
    restart: always
    max_restarts: 5
    restart_backoff: 250ms
    restart_backoff_max: 2m
    stop_timeout: 1.5s
    autostart: false
    log_buffer: 1MB
    restart_reset_after: 1m
    log_file_dir: logs
    log_max_files: 0
    resources: {max_rss: 256MiB, on_exceed: "signal:SIGUSR1", sample_interval: 250ms}
    depends_on: [worker.2_x-y]
  - id: worker.2_x-y
    command: /bin/sh
    env: ["A=1", "B=x=y"]
    resources: {max_rss: 1GB, on_exceed: log}
    depends_on: db
  - id: db
    command: /bin/true
    resources: {max_rss: 1000, on_exceed: "signal:HUP"}
)",
                         "/etc/mgmtd/mgmt.yaml");
  REQUIRE(cfg.processes.size() == 3);
  const ProcessSpec& web = cfg.processes[0];
  CHECK(web.name == "Web Server");
  CHECK(web.command == "python3");
  CHECK(web.args == std::vector<std::string>{"-m", "http.server", "8080"});
  CHECK(web.env == std::vector<std::pair<std::string, std::string>>{{"PORT", "8080"},
                                                                    {"MODE", "dev"}});
  CHECK(web.work_dir == "/srv");
  CHECK(web.restart == RestartPolicy::always);
  CHECK(web.max_restarts == 5);
  CHECK(web.restart_backoff == 250ms);
  CHECK(web.restart_backoff_max == 2min);
  CHECK(web.stop_timeout == 1500ms);
  CHECK_FALSE(web.autostart);
  CHECK(web.log_buffer == 1000 * 1000);
  const ProcessSpec& worker = cfg.processes[1];
  CHECK(worker.env == std::vector<std::pair<std::string, std::string>>{{"A", "1"}, {"B", "x=y"}});
  CHECK(worker.log_buffer == 64 * 1024);  // the block's default
  CHECK(web.restart_reset_after == 1min);
  CHECK(web.log_files.dir == "/etc/mgmtd/logs");  // relative to the config file
  CHECK(web.log_files.max_size == 1024 * 1024);   // the block's default
  CHECK(web.log_files.max_files == 0);
  CHECK(web.resources.max_rss == 256 * 1024 * 1024);
  CHECK(web.resources.on_exceed.action == OnExceed::Action::signal);
  CHECK(web.resources.on_exceed.signal == SIGUSR1);
  CHECK(web.resources.sample_interval == 250ms);
  CHECK(web.depends_on == std::vector<std::string>{"worker.2_x-y"});
  CHECK(worker.log_files.dir == "/var/log/mgmtd");
  CHECK(worker.log_files.max_files == 5);
  CHECK(worker.resources.max_rss == 1000 * 1000 * 1000);
  CHECK(worker.resources.on_exceed.action == OnExceed::Action::log);
  CHECK(worker.depends_on == std::vector<std::string>{"db"});
  const ProcessSpec& db = cfg.processes[2];
  CHECK(db.resources.on_exceed.signal == SIGHUP);
  CHECK(cfg.state_dir == "/run/mgmtd-state");
  CHECK_FALSE(cfg.subreaper);
  // Dependencies first, otherwise file order.
  CHECK(start_order(cfg.processes) == std::vector<std::size_t>{2, 1, 0});
}

TEST_CASE("process config: a long backoff raises the default cap", "[process][config]") {
  const auto cfg = parse("processes:\n  - id: web\n    command: x\n    restart_backoff: 1h\n");
  CHECK(cfg.processes[0].restart_backoff_max == 1h);
}

TEST_CASE("process config: durations", "[process][config]") {
  CHECK(parse_duration("250ms") == 250ms);
  CHECK(parse_duration("5s") == 5s);
  CHECK(parse_duration("2m") == 2min);
  CHECK(parse_duration("1h") == 1h);
  CHECK(parse_duration("3") == 3s);
  CHECK(parse_duration("0.5") == 500ms);
  CHECK(parse_duration("0") == 0ms);
  CHECK_FALSE(parse_duration(""));
  CHECK_FALSE(parse_duration("s"));
  CHECK_FALSE(parse_duration("-1s"));
  CHECK_FALSE(parse_duration("5 s"));
  CHECK_FALSE(parse_duration("5sec"));
  CHECK_FALSE(parse_duration("1d"));
  CHECK_FALSE(parse_duration("1.2.3s"));
}

TEST_CASE("process config: sizes", "[process][config]") {
  CHECK(parse_size("512") == 512u);
  CHECK(parse_size("100B") == 100u);
  CHECK(parse_size("64KiB") == 64u * 1024);
  CHECK(parse_size("1MiB") == 1024u * 1024);
  CHECK(parse_size("1MB") == 1000u * 1000);
  CHECK(parse_size("1GiB") == 1024ull * 1024 * 1024);
  CHECK(parse_size("2KB") == 2000u);
  CHECK_FALSE(parse_size(""));
  CHECK_FALSE(parse_size("MiB"));
  CHECK_FALSE(parse_size("1 MiB"));
  CHECK_FALSE(parse_size("1TiB"));
  CHECK_FALSE(parse_size("-5"));
  CHECK_FALSE(parse_size("99999999999999999999"));
  CHECK_FALSE(parse_size("99999999999GiB"));
}

TEST_CASE("process config: errors name file, line, column and the fix", "[process][config]") {
  CHECK(error_of("processes:\n  - id: web\n    command: /bin/true\n    restart: sometimes\n") ==
        "mgmt.yaml:4:14: restart must be one of never, on_failure, always (got \"sometimes\")");
  CHECK(error_of("processes:\n  - id: web\n    command: /bin/true\n    comand: x\n") ==
        "mgmt.yaml:4:5: unknown key \"comand\" in a process (expected one of: id, name, "
        "command, args, env, work_dir, restart, max_restarts, restart_backoff, "
        "restart_backoff_max, restart_reset_after, stop_timeout, autostart, log_buffer, "
        "log_file_dir, log_max_size, log_max_files, log_timestamps, log_journal, resources, "
                 "depends_on, user, "
        "group, umask, "
        "env_file, clear_env, rlimits, nice, oom_score_adj, stop_signal, stop_group, "
        "start_seconds, start_retries, success_exit_codes, instances, tty, tty_size, ready, "
        "health)");
  CHECK(error_of("processes:\n  - command: /bin/true\n") ==
        "mgmt.yaml:2:5: a process needs an id, e.g. `id: web`");
  CHECK(error_of("processes:\n  - id: web\n") ==
        "mgmt.yaml:2:5: process web needs a command, e.g. `command: /usr/bin/python3`");
  CHECK(error_of("processes:\n  - id: web\n    command: a\n  - id: db\n    command: b\n"
                 "  - id: web\n    command: c\n") ==
        "mgmt.yaml:6:9: duplicate id \"web\" (line 6, first defined at line 2); every process "
        "needs its own id");
  CHECK(error_of("processes:\n  - id: we b\n    command: x\n") ==
        "mgmt.yaml:2:9: id must use only letters, digits, '.', '_' and '-' (got \"we b\")");
  CHECK(error_of("processes:\n  - id: web\n    command: x\n    stop_timeout: 10 seconds\n") ==
        "mgmt.yaml:4:19: stop_timeout must be a duration such as 250ms, 5s, 2m or 1h "
        "(got \"10 seconds\")");
  CHECK(error_of("processes:\n  - id: web\n    command: x\n    log_buffer: 1 TB\n") ==
        "mgmt.yaml:4:17: log_buffer must be a size of at least 1 byte such as 65536, 64KiB or "
        "1MiB (got \"1 TB\")");
  CHECK(error_of("processes:\n  - id: web\n    command: x\n    max_restarts: -1\n") ==
        "mgmt.yaml:4:19: max_restarts must be a whole number such as 5 (got \"-1\")");
  CHECK(error_of("processes:\n  - id: web\n    command: x\n    autostart: maybe\n") ==
        "mgmt.yaml:4:16: autostart must be true or false");
  CHECK(error_of("processes:\n  - id: web\n    command: x\n    args: -v\n") ==
        "mgmt.yaml:4:11: args must be a list of strings, e.g. [-m, http.server, \"8080\"]");
  CHECK(error_of("processes:\n  - id: web\n    command: x\n    env: [NOEQUALS]\n") ==
        "mgmt.yaml:4:11: env entry \"NOEQUALS\" must read KEY=value");
  CHECK(error_of("processes:\n  - id: web\n    command: x\n    restart_backoff: 5s\n"
                 "    restart_backoff_max: 1s\n") ==
        "mgmt.yaml:5:26: restart_backoff_max (1000 ms) must not be shorter than "
        "restart_backoff (5000 ms)");
  CHECK(error_of("processes: {id: web}\n") ==
        "mgmt.yaml:1:12: processes must be a list of `- id: ...` entries");
  CHECK(error_of("process:\n  - id: web\n") ==
        "mgmt.yaml:1:1: unknown key \"process\" in the process backend's config (expected one "
        "of: log_buffer, log_file_dir, log_max_size, log_max_files, log_timestamps, "
                 "log_journal, state_dir, "
        "subreaper, "
        "processes)");
  CHECK(error_of("processes:\n  - web\n") ==
        "mgmt.yaml:2:5: each entry of processes must be a map with at least id and command");
}

TEST_CASE("process config: resources, log files, dependencies: errors", "[process][config]") {
  const std::string head = "processes:\n  - id: web\n    command: x\n";
  CHECK(error_of(head + "    resources: {on_exceed: kill}\n") ==
        "mgmt.yaml:4:16: resources needs max_rss, e.g. `max_rss: 512MiB`");
  CHECK(error_of(head + "    resources: {max_rss: 0}\n") ==
        "mgmt.yaml:4:26: max_rss must be a size of at least 1 byte such as 10MiB (got \"0\")");
  CHECK(error_of(head + "    resources: {max_rss: 1MiB, on_exceed: restart}\n") ==
        "mgmt.yaml:4:43: on_exceed must be kill, log or signal:SIGNAME such as signal:SIGUSR1 "
        "(got \"restart\")");
  CHECK(error_of(head + "    resources: {max_rss: 1MiB, on_exceed: \"signal:SIGNOPE\"}\n") ==
        "mgmt.yaml:4:43: on_exceed must be kill, log or signal:SIGNAME such as signal:SIGUSR1 "
        "(got \"signal:SIGNOPE\")");
  CHECK(error_of(head + "    resources: {max_rss: 1MiB, sample_interval: 1ms}\n") ==
        "mgmt.yaml:4:49: sample_interval must be at least 10ms");
  CHECK(error_of(head + "    resources: {max_rss: 1MiB, max_cpu: 1}\n") ==
        "mgmt.yaml:4:32: unknown key \"max_cpu\" in resources (expected one of: max_rss, "
        "on_exceed, sample_interval)");
  CHECK(error_of(head + "    resources: 1MiB\n") ==
        "mgmt.yaml:4:16: resources must be a map such as {max_rss: 512MiB, on_exceed: kill}");
  CHECK(error_of(head + "    log_max_size: 0\n") ==
        "mgmt.yaml:4:19: log_max_size must be a size of at least 1 byte such as 10MiB (got \"0\")");
  CHECK(error_of(head + "    log_file_dir: \"\"\n") ==
        "mgmt.yaml:4:19: log_file_dir must not be empty");
  CHECK(error_of(head + "    restart_reset_after: soon\n") ==
        "mgmt.yaml:4:26: restart_reset_after must be a duration such as 250ms, 5s, 2m or 1h "
        "(got \"soon\")");
  CHECK(error_of(head + "    depends_on: [db]\n") ==
        "mgmt.yaml:4:18: process web depends on \"db\", which is not a configured process id");
  CHECK(error_of(head + "    depends_on: {db: 1}\n") ==
        "mgmt.yaml:4:17: depends_on must be a list of process ids, e.g. [db, cache]");
  CHECK(error_of(head + "    depends_on: web\n") ==
        "mgmt.yaml:4:17: dependency cycle: web -> web (depends_on must not loop back; remove "
        "one of these)");
  CHECK(error_of("processes:\n"
                 "  - {id: a, command: x, depends_on: [b]}\n"
                 "  - {id: b, command: x, depends_on: [c]}\n"
                 "  - {id: c, command: x, depends_on: [d, a]}\n"
                 "  - {id: d, command: x}\n") ==
        "mgmt.yaml:4:41: dependency cycle: a -> b -> c -> a (depends_on must not loop back; "
        "remove one of these)");
}

TEST_CASE("process config: signal names", "[process][config]") {
  CHECK(parse_signal("SIGUSR1") == SIGUSR1);
  CHECK(parse_signal("USR2") == SIGUSR2);
  CHECK(parse_signal("TERM") == SIGTERM);
  CHECK(parse_signal("9") == SIGKILL);
  CHECK(parse_signal("") == 0);
  CHECK(parse_signal("SIG") == 0);
  CHECK(parse_signal("sigterm") == 0);
  CHECK(parse_signal("0") == 0);
  CHECK(parse_signal("999") == 0);
}

TEST_CASE("process config: relative folders are taken relative to the config file",
          "[process][config]") {
  const auto cfg = parse("state_dir: ../state\nlog_file_dir: logs\nprocesses:\n"
                         "  - {id: web, command: x}\n  - {id: db, command: x, log_file_dir: /abs}\n",
                         "/etc/mgmtd/mgmt.yaml");
  CHECK(cfg.state_dir == "/etc/state");
  CHECK(cfg.processes[0].log_files.dir == "/etc/mgmtd/logs");
  CHECK(cfg.processes[1].log_files.dir == "/abs");
  CHECK(default_state_dir().find("/mgmtd-" + std::to_string(::geteuid())) != std::string::npos);
}

TEST_CASE("process config: a duration over a year is taken for a typo", "[process][config]") {
  CHECK(error_of("processes:\n  - id: web\n    command: x\n    stop_timeout: 9000h\n") ==
        "mgmt.yaml:4:19: stop_timeout must be a duration such as 250ms, 5s, 2m or 1h (got "
        "\"9000h\")");
  CHECK(parse("processes:\n  - id: web\n    command: x\n    stop_timeout: 8000h\n")
            .processes[0]
            .stop_timeout == std::chrono::hours(8000));
}
