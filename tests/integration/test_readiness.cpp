// `ready:` and `health:` through the real mgmtd: `mgmtd --check` names file:line:column
// for each bad probe field, and passes good ones.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "harness.hpp"

using namespace mgmt;
using namespace mgmt::test;

namespace {

// The process entry's fields follow from line 8 on, indented by 8 (column 9).
const std::string kProbeHead =
    "backend:\n"
    "  plugin: process\n"
    "  config:\n"
    "    processes:\n"
    "      - id: web\n"
    "        command: /bin/sleep\n"
    "        args: ['1000']\n";

}  // namespace

TEST_CASE("mgmtd --check reports bad ready/health fields with file, line and column",
          "[ready][health][startup]") {
  TempDir dir;
  const std::string file = dir.file("mgmt.yaml");
  struct Bad {
    std::string field;
    int column;
    std::string message;
  };
  const std::vector<Bad> cases = {
      {"ready: {log: \"(unclosed\"}", 22, "ready.log is not a valid regular expression"},
      {"ready: {tcp: \"db.local:5432\"}", 22, "ready.tcp must be an IP address and port"},
      {"ready: {http: \"https://127.0.0.1/\"}", 23, "ready.http: https is not supported"},
      {"ready: {fd: 2}", 21, "ready.fd must be a descriptor number from 3 to 1023"},
      {"ready: {notify: true, interval: often}", 41, "ready.interval must be a duration"},
      {"ready: {port: 80}", 17, "unknown key \"port\" in ready"},
      {"health: {fd: 3}", 18, "health takes exec, tcp, http or file probes, not fd"},
      {"health: {file: /x, retries: many}", 37, "health.retries must be a whole number"},
      {"health: {file: /x, on_unhealthy: reboot}", 42, "health.on_unhealthy must be restart"},
      {"health: {watchdog: 5s}", 28, "health.watchdog needs `ready: {notify: true}`"},
  };
  for (const auto& c : cases) {
    INFO(c.field);
    dir.write("mgmt.yaml", kProbeHead + "        " + c.field + "\n");
    const auto r = run({MGMTD_BIN, "--check", "-c", file});
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains(file + ":8:" + std::to_string(c.column) + ": " + c.message));
  }
  dir.write("mgmt.yaml", kProbeHead +
                             "        ready: {http: \"http://localhost:8080/health\", interval: "
                             "250ms, timeout: 2s, start_timeout: 2m}\n"
                             "        health: {exec: [sh, -c, 'true'], retries: 5, on_unhealthy: "
                             "\"signal:HUP\"}\n");
  const auto ok = run({MGMTD_BIN, "--check", "-c", file});
  CHECK(ok.exit_code == 0);
}
