// The process backend's config block: defaults, values and every error's text.
#include <catch2/catch.hpp>

#include <stdexcept>
#include <string>

#include <yaml-cpp/yaml.h>

#include "process_config.hpp"

using namespace mgmt::process;
using namespace std::chrono_literals;

namespace {

BackendConfig parse(const std::string& yaml) {
  return parse_backend_config(YAML::Load(yaml), "mgmt.yaml");
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
}

TEST_CASE("process config: an empty or absent block means no processes", "[process][config]") {
  CHECK(parse_backend_config(YAML::Node(), "mgmt.yaml").processes.empty());
  CHECK(parse("{}").processes.empty());
  CHECK(parse("processes: []").processes.empty());
}

TEST_CASE("process config: every field", "[process][config]") {
  const auto cfg = parse(R"(
log_buffer: 64KiB
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
  - id: worker.2_x-y
    command: /bin/sh
    env: ["A=1", "B=x=y"]
)");
  REQUIRE(cfg.processes.size() == 2);
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
        "restart_backoff_max, stop_timeout, autostart, log_buffer)");
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
        "of: log_buffer, processes)");
  CHECK(error_of("processes:\n  - web\n") ==
        "mgmt.yaml:2:5: each entry of processes must be a map with at least id and command");
}
