// reload {} → {err} on the request's type: re-reads mgmt.yaml and applies it (processes
// added, removed or changed; handlers remapped; limits and access rules), or changes
// nothing and says why. The same as sending SIGHUP, but the caller learns the outcome.
#include "mgmt/commands.hpp"
#include "mgmt/handler_support.hpp"
#include "mgmt/plugin.hpp"

namespace {

class ReloadCommand final : public mgmt::Handler {
 public:
  explicit ReloadCommand(const mgmt::PluginEnv& env) : server_(env.server) {}

  void handle(std::shared_ptr<mgmt::Exchange> ex) override {
    mgmt::ListRequest req;  // no fields: any map (or nothing) will do
    if (!mgmt::decode_request(*ex, req)) return;
    if (server_ == nullptr || !server_->reload) {
      mgmt::reply_command(*ex, mgmt::command_error("this server cannot reload its configuration"));
      return;
    }
    // handle() runs on the I/O thread, where a reload must happen.
    mgmt::reply_command(*ex, mgmt::command_error(server_->reload()));
  }

 private:
  const mgmt::ServerInfo* server_;
};

}  // namespace

MGMT_COMMAND_PLUGIN(ReloadCommand, MGMT_PLUGIN_NAME, MGMT_PLUGIN_VERSION,
                    "re-reads the configuration and applies it")
