// 0xA0 list → 0xA1 ListResponse with every process the backend supervises.
#include <cstdint>
#include <string>

#include "mgmt/handler_support.hpp"
#include "mgmt/plugin.hpp"

namespace {

class ListHandler final : public mgmt::Handler {
 public:
  explicit ListHandler(const mgmt::PluginEnv& env) : backend_(*env.backend) {}

  // Monitoring polls list far more often than processes change: while the backend's
  // list_version() stays the same, the reply encoded last time is sent again. handle() runs
  // on the one I/O thread only, so the cache needs no lock.
  void handle(std::shared_ptr<mgmt::Exchange> ex) override {
    mgmt::ListRequest req;
    if (!mgmt::decode_request(*ex, req)) return;
    const std::uint64_t version = backend_.list_version();
    if (version == 0 || version != cached_version_) {
      mgmt::ListResponse resp;
      resp.entries = backend_.list();
      cached_ = mgmt::encode(resp);
      cached_version_ = version;
    }
    ex->reply(mgmt::to_byte(mgmt::MsgType::ListResponse), cached_);
  }

 private:
  mgmt::Backend& backend_;
  std::uint64_t cached_version_ = 0;  // 0: nothing cached
  std::string cached_;
};

}  // namespace

MGMT_HANDLER_PLUGIN(ListHandler, "list", "1.0.0", "lists supervised processes (0xA0)")
