// 0xA2 status → 0xA3 StatusResponse with one process's entry, or err for an unknown id.
#include "mgmt/handler_support.hpp"
#include "mgmt/plugin.hpp"

namespace {

class StatusHandler final : public mgmt::Handler {
 public:
  explicit StatusHandler(const mgmt::PluginEnv& env) : backend_(*env.backend) {}

  void handle(std::shared_ptr<mgmt::Exchange> ex) override {
    mgmt::StatusRequest req;
    if (!mgmt::decode_request(*ex, req)) return;
    mgmt::StatusResponse resp;
    if (auto entry = backend_.status(req.id)) {
      resp.entry = std::move(*entry);
    } else {
      resp.err = mgmt::kErrNotFound;
    }
    ex->reply(mgmt::to_byte(mgmt::MsgType::StatusResponse), mgmt::encode(resp));
  }

 private:
  mgmt::Backend& backend_;
};

}  // namespace

MGMT_HANDLER_PLUGIN(StatusHandler, "status", "1.0.0", "reports one process (0xA2)")
