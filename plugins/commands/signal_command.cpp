// signal {id, sig, group} → {entry, err} on the request's type: sends a named signal to a
// process, or to its whole process group, through the backend.
#include <utility>

#include "mgmt/commands.hpp"
#include "mgmt/handler_support.hpp"
#include "mgmt/plugin.hpp"

namespace {

class SignalCommand final : public mgmt::Handler {
 public:
  explicit SignalCommand(const mgmt::PluginEnv& env) : backend_(*env.backend) {}

  void handle(std::shared_ptr<mgmt::Exchange> ex) override {
    mgmt::SignalRequest req;
    if (!mgmt::decode_request(*ex, req)) return;
    const int signo = mgmt::signal_number(req.sig);
    if (signo == 0) {
      mgmt::reply_command(*ex, mgmt::command_error("unknown signal \"" + req.sig +
                                                   "\" (examples: HUP, SIGTERM, USR1, 9)"));
      return;
    }
    backend_.signal(req.id, signo, req.group, [ex](mgmt::OpResult r) {
      mgmt::SignalResponse resp;
      resp.entry = std::move(r.entry);
      resp.err = std::move(r.err);
      mgmt::reply_command(*ex, mgmt::encode(resp));
    });
  }

 private:
  mgmt::Backend& backend_;
};

}  // namespace

MGMT_COMMAND_PLUGIN(SignalCommand, MGMT_PLUGIN_NAME, MGMT_PLUGIN_VERSION,
                    "sends a signal to a process or its process group")
