// upgrade {} → {err, binary, upgrades} on the request's type: has mgmtd check the binary on
// disk and exec it in place (same pid, the processes keep running; see docs/operations.md,
// "Upgrading in place"). The answer comes once the check has passed and the handover has
// begun ("" err), or with why nothing changed; the connection closes soon after a success,
// and `info` reports the new program once it serves. The same as sending SIGUSR2, but the
// caller learns the outcome.
#include "mgmt/commands.hpp"
#include "mgmt/handler_support.hpp"
#include "mgmt/plugin.hpp"

namespace {

class UpgradeCommand final : public mgmt::Handler {
 public:
  explicit UpgradeCommand(const mgmt::PluginEnv& env) : server_(env.server) {}

  void handle(std::shared_ptr<mgmt::Exchange> ex) override {
    mgmt::ListRequest req;  // no fields: any map (or nothing) will do
    if (!mgmt::decode_request(*ex, req)) return;
    if (server_ == nullptr || !server_->upgrade) {
      mgmt::reply_command(*ex, mgmt::command_error("this server cannot upgrade in place"));
      return;
    }
    // The check takes a while (the new binary loads every plugin): answered from the I/O
    // thread when it is done.
    const std::uint32_t before = server_->upgrades;
    server_->upgrade([ex, before, server = server_](const std::string& err) {
      mgmt::UpgradeResponse resp;
      resp.err = err;
      resp.upgrades = before;
      resp.binary = server->binary;
      mgmt::reply_command(*ex, mgmt::encode(resp));
    });
  }

 private:
  const mgmt::ServerInfo* server_;
};

}  // namespace

MGMT_COMMAND_PLUGIN(UpgradeCommand, MGMT_PLUGIN_NAME, MGMT_PLUGIN_VERSION,
                    "checks the mgmtd binary on disk and execs it in place")
