// restart {id} → {entry, err} on the request's type: stop (waiting out the stop timeout),
// then start. A process that is not running is simply started; one that could not be
// stopped is left alone and the stop's error is the answer.
#include <utility>

#include "mgmt/commands.hpp"
#include "mgmt/handler_support.hpp"
#include "mgmt/plugin.hpp"

namespace {

// States in which there is nothing to stop: a failed stop then still lets the start go on.
bool not_running(std::string_view state) {
  return state == mgmt::state::stopped || state == mgmt::state::crashed ||
         state == mgmt::state::failed || state == mgmt::state::pending;
}

void answer(mgmt::Exchange& ex, mgmt::OpResult r) {
  mgmt::RestartResponse resp;
  resp.entry = std::move(r.entry);
  resp.err = std::move(r.err);
  mgmt::reply_command(ex, mgmt::encode(resp));
}

class RestartCommand final : public mgmt::Handler {
 public:
  explicit RestartCommand(const mgmt::PluginEnv& env) : backend_(env.backend) {}

  void handle(std::shared_ptr<mgmt::Exchange> ex) override {
    mgmt::RestartRequest req;
    if (!mgmt::decode_request(*ex, req)) return;
    // The backend outlives every completion it runs, so the callbacks hold it directly.
    mgmt::Backend* backend = backend_;
    backend->stop(req.id, [backend, ex, id = req.id](mgmt::OpResult stopped) {
      const bool unknown = stopped.entry.id.empty();
      if (!stopped.err.empty() && (unknown || !not_running(stopped.entry.state))) {
        answer(*ex, std::move(stopped));
        return;
      }
      backend->start(id, [ex](mgmt::OpResult started) { answer(*ex, std::move(started)); });
    });
  }

 private:
  mgmt::Backend* backend_;
};

}  // namespace

MGMT_COMMAND_PLUGIN(RestartCommand, MGMT_PLUGIN_NAME, MGMT_PLUGIN_VERSION,
                    "restarts a process: stop, then start")
