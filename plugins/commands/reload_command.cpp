// reload {what} → {err, done} on the request's type (see ReloadRequest):
// - "" or "config": re-reads mgmt.yaml and applies it (processes added, removed or
//   changed; handlers remapped; limits and access rules), or changes nothing and says why.
//   The same as sending SIGHUP, but the caller learns the outcome.
// - "logs": closes every log file of the backend; each is opened again by its path at its
//   next write (logrotate's postrotate). The same as SIGUSR1.
#include "mgmt/commands.hpp"
#include "mgmt/handler_support.hpp"
#include "mgmt/plugin.hpp"

namespace {

class ReloadCommand final : public mgmt::Handler {
 public:
  explicit ReloadCommand(const mgmt::PluginEnv& env)
      : server_(env.server), backend_(env.backend) {}

  void handle(std::shared_ptr<mgmt::Exchange> ex) override {
    mgmt::ReloadRequest req;
    if (!mgmt::decode_request(*ex, req)) return;
    mgmt::ReloadResponse resp;
    if (req.what.empty() || req.what == "config") {
      if (server_ == nullptr || !server_->reload) {
        resp.err = "this server cannot reload its configuration";
      } else {
        // handle() runs on the I/O thread, where a reload must happen.
        resp.err = server_->reload();
        resp.done = "config";
      }
    } else if (req.what == "logs") {
      resp.err = backend_ != nullptr ? backend_->reopen_logs() : "no backend";
      resp.done = "logs";
    } else {
      resp.err = "reload what? \"" + req.what + "\" is neither config nor logs";
    }
    mgmt::reply_command(*ex, mgmt::encode(resp));
  }

 private:
  const mgmt::ServerInfo* server_;
  mgmt::Backend* backend_;
};

}  // namespace

MGMT_COMMAND_PLUGIN(ReloadCommand, MGMT_PLUGIN_NAME, MGMT_PLUGIN_VERSION,
                    "re-reads the configuration and applies it, or reopens the log files")
