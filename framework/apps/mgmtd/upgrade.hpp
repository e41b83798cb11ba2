// In-place upgrade: mgmtd execs the binary on disk (the path it was started as) with the
// same pid, handing over the listening socket, the backend's children (pipes and pidfds)
// and a state image, instead of stopping what it supervises.
//
// Order (SIGUSR2 or the `upgrade` command, on the I/O thread):
//   1. the binary is run with `--check` on the running command line (a helper thread, so
//      the I/O thread keeps serving): it must validate the configuration and report a
//      plugin ABI of at least kFirstUpgradeAbi, the state image version this one writes,
//      and a backend that adopts this backend's handoff version. Otherwise the upgrade is
//      refused with the reason and nothing has changed;
//   2. the backend hands over (Backend::handoff) or refuses (nothing changed);
//   3. the server stops accepting (the socket stays in place: new connections wait in its
//      backlog) and closes every connection (clients reconnect); its run() returns;
//   4. the main thread, which forked every child, writes the image to a memfd and execs the
//      binary with MGMTD_UPGRADE_STATE naming it. Should that exec fail, it execs its own
//      program (/proc/self/exe, valid even when the file was replaced), which adopts the
//      same image.
// The new program re-reads the configuration and loads the plugins, creates the backend
// from the backend `config:` the processes ran with, adopts the backend's state, applies
// the file's backend configuration like a reload when it differs, then serves.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "mgmt/backend.hpp"
#include "mgmt/server/server.hpp"
#include "mgmt/stats.hpp"

namespace spdlog {
class logger;
}

namespace mgmt::daemon {

class Runtime;
class Notifier;

// The format of the image below (`mgmtd --check` prints it as "upgrade image: N").
inline constexpr std::uint32_t kUpgradeImageVersion = 1;
// The first plugin ABI whose mgmtd can adopt a running one.
inline constexpr std::uint32_t kFirstUpgradeAbi = 3;
// Names the image's descriptor for the next program (removed from the environment at once).
inline constexpr const char* kImageEnv = "MGMTD_UPGRADE_STATE";
// Test-only: the binary to check and exec instead of the one mgmtd was started as.
inline constexpr const char* kTestBinaryEnv = "MGMTD_TEST_UPGRADE_BINARY";

// One recent event, as the event journal keeps it (see Runtime): replayed to a subscriber
// that resumes after reconnecting.
struct JournalEvent {
  std::uint64_t seq = 0;
  Event event;
};

// What one program hands the next.
struct UpgradeImage {
  std::string from_version;   // mgmtd version that wrote it
  std::int64_t started_at = 0;  // the first program's start (unix nanos)
  std::uint32_t upgrades = 0;   // upgrades so far, this one included
  StatsSnapshot stats;
  int listen_fd = -1;
  bool listen_owned = false;    // created by mgmtd (removed at shutdown), not activation
  std::string backend_config;   // YAML of the backend `config:` the processes run with
  Handoff backend;
  std::uint64_t next_event = 1;  // the journal's next sequence number
  std::vector<JournalEvent> events;
};

std::string encode_image(const UpgradeImage& image);
// "" or why the bytes are not an image this program reads.
std::string decode_image(std::string_view bytes, UpgradeImage& out);

// At start-up: the image the previous program left (kImageEnv), read and closed, with the
// variable removed. nullopt when mgmtd was not started by an upgrade. Throws
// std::runtime_error for an image that cannot be read.
std::optional<UpgradeImage> take_upgrade_image();

// At start-up, before an upgrade can replace the file: the binary this process runs
// (/proc/self/exe without " (deleted)"), or kTestBinaryEnv when set (and then unset).
std::string upgrade_binary();

// Runs `binary args... --check` and judges its report; "" when it can take over from a
// backend that hands over `handoff_version`, else why not. Blocks (up to a minute).
std::string check_binary(const std::string& binary, const std::vector<std::string>& args,
                         std::uint32_t handoff_version);

// Drives an upgrade; see the top of this file.
class Upgrader {
 public:
  // `args`: mgmtd's command line without argv[0]. `notify(bool ended)`: false when the
  // handover begins (systemd: RELOADING=1), true when a begun handover was refused.
  Upgrader(Server& server, Runtime& runtime, const Notifier& notifier,
           std::shared_ptr<spdlog::logger> log, std::string binary, std::vector<std::string> args,
           bool listen_owned);
  ~Upgrader();
  Upgrader(const Upgrader&) = delete;
  Upgrader& operator=(const Upgrader&) = delete;

  // I/O thread: begins an upgrade. `done` runs on the I/O thread with "" once the handover
  // has begun, or with why nothing changed.
  void request(std::function<void(const std::string& err)> done);

  // Main thread, once the server's run() has returned: true when it returned for an upgrade.
  bool pending() const { return pending_; }
  // Main thread: execs the next program. Returns only if neither it nor this program could
  // be executed (the processes are then lost).
  void exec();

 private:
  void checked(const std::string& err, const std::function<void(const std::string&)>& done);

  Server& server_;
  Runtime& runtime_;
  const Notifier& notifier_;
  std::shared_ptr<spdlog::logger> log_;
  const std::string binary_;
  const std::vector<std::string> args_;
  const bool listen_owned_;
  std::thread checker_;
  bool busy_ = false;      // I/O thread
  bool pending_ = false;   // set on the I/O thread before run() returns
  UpgradeImage image_;
};

}  // namespace mgmt::daemon
