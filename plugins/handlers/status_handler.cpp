// 0xA2 status → 0xA3 StatusResponse with one process's entry, or err for an unknown id.
#include <cstdint>
#include <string>
#include <unordered_map>

#include "mgmt/handler_support.hpp"
#include "mgmt/plugin.hpp"

namespace {

class StatusHandler final : public mgmt::Handler {
 public:
  explicit StatusHandler(const mgmt::PluginEnv& env) : backend_(*env.backend) {}

  // Like list: while the backend's list_version() stays the same, a process's reply is the
  // one encoded last time. Only known ids are kept, so the cache holds at most one reply
  // per supervised process; it is emptied whenever the version moves. I/O thread only.
  void handle(std::shared_ptr<mgmt::Exchange> ex) override {
    mgmt::StatusRequest req;
    if (!mgmt::decode_request(*ex, req)) return;
    const std::uint64_t version = backend_.list_version();
    if (version == 0 || version != cached_version_) {
      cached_.clear();
      cached_version_ = version;
    } else if (const auto it = cached_.find(req.id); it != cached_.end()) {
      ex->reply(mgmt::to_byte(mgmt::MsgType::StatusResponse), it->second);
      return;
    }
    mgmt::StatusResponse resp;
    auto entry = backend_.status(req.id);
    if (entry) {
      resp.entry = std::move(*entry);
    } else {
      resp.err = mgmt::kErrNotFound;
    }
    std::string payload = mgmt::encode(resp);
    if (entry && version != 0) cached_.emplace(req.id, payload);
    ex->reply(mgmt::to_byte(mgmt::MsgType::StatusResponse), std::move(payload));
  }

 private:
  mgmt::Backend& backend_;
  std::uint64_t cached_version_ = 0;
  std::unordered_map<std::string, std::string> cached_;  // id → encoded StatusResponse
};

}  // namespace

MGMT_HANDLER_PLUGIN(StatusHandler, "status", "1.0.0", "reports one process (0xA2)")
