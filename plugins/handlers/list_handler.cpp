// 0xA0 list → 0xA1 ListResponse with every process the backend supervises.
#include "mgmt/handler_support.hpp"
#include "mgmt/plugin.hpp"

namespace {

class ListHandler final : public mgmt::Handler {
 public:
  explicit ListHandler(const mgmt::PluginEnv& env) : backend_(*env.backend) {}

  void handle(std::shared_ptr<mgmt::Exchange> ex) override {
    mgmt::ListRequest req;
    if (!mgmt::decode_request(*ex, req)) return;
    mgmt::ListResponse resp;
    resp.entries = backend_.list();
    ex->reply(mgmt::to_byte(mgmt::MsgType::ListResponse), mgmt::encode(resp));
  }

 private:
  mgmt::Backend& backend_;
};

}  // namespace

MGMT_HANDLER_PLUGIN(ListHandler, "list", "1.0.0", "lists supervised processes (0xA0)")
