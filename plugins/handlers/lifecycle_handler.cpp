// 0xA8 start and 0xA9 stop → 0xA3 StatusResponse once the backend has finished (err set on
// failure, entry holding the state afterwards). The backend completes asynchronously, so a
// stop waiting out a stop timeout never holds up other clients.
//
// Built twice: as the `start` plugin (MGMT_LIFECYCLE_START) and as the `stop` plugin.
#include "mgmt/handler_support.hpp"
#include "mgmt/plugin.hpp"

namespace {

#ifdef MGMT_LIFECYCLE_START
constexpr auto kOperation = &mgmt::Backend::start;
#else
constexpr auto kOperation = &mgmt::Backend::stop;
#endif

class LifecycleHandler final : public mgmt::Handler {
 public:
  explicit LifecycleHandler(const mgmt::PluginEnv& env) : backend_(*env.backend) {}

  void handle(std::shared_ptr<mgmt::Exchange> ex) override {
    mgmt::IdRequest req;
    if (!mgmt::decode_request(*ex, req)) return;
    (backend_.*kOperation)(req.id, [ex](mgmt::OpResult r) {
      mgmt::StatusResponse resp;
      resp.entry = std::move(r.entry);
      resp.err = std::move(r.err);
      ex->reply(mgmt::to_byte(mgmt::MsgType::StatusResponse), mgmt::encode(resp));
    });
  }

 private:
  mgmt::Backend& backend_;
};

}  // namespace

#ifdef MGMT_LIFECYCLE_START
MGMT_HANDLER_PLUGIN(LifecycleHandler, "start", "1.0.0", "starts a process (0xA8)")
#else
MGMT_HANDLER_PLUGIN(LifecycleHandler, "stop", "1.0.0", "stops a process (0xA9)")
#endif
