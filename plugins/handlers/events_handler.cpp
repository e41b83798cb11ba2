// 0xA6 events subscribe → a stream of 0xA7 EventsStream frames for every event that
// matches both filters (process ids and event types; an empty filter matches all), until
// either side closes.
#include <algorithm>

#include "mgmt/handler_support.hpp"
#include "mgmt/plugin.hpp"

namespace {

constexpr auto kEventsStream = mgmt::to_byte(mgmt::MsgType::EventsStream);

bool allowed(const std::vector<std::string>& filter, const std::string& value) {
  return filter.empty() || std::find(filter.begin(), filter.end(), value) != filter.end();
}

class EventsHandler final : public mgmt::Handler {
 public:
  explicit EventsHandler(const mgmt::PluginEnv& env) : backend_(*env.backend) {}

  void handle(std::shared_ptr<mgmt::Exchange> ex) override {
    mgmt::EventsSubscribe req;
    if (!mgmt::decode_request(*ex, req)) return;
    ex->begin_stream();
    auto sub = backend_.subscribe_events(
        [ex, pids = std::move(req.pids), types = std::move(req.types)](const mgmt::Event& e) {
          if (!allowed(pids, e.pid) || !allowed(types, e.type)) return;
          ex->push(kEventsStream, mgmt::encode(mgmt::EventsStream{e.pid, e.type, e.ts, e.summary}));
        });
    ex->hold(std::shared_ptr<mgmt::Subscription>(std::move(sub)));
  }

 private:
  mgmt::Backend& backend_;
};

}  // namespace

MGMT_HANDLER_PLUGIN(EventsHandler, "events", "1.0.0", "lifecycle event subscriptions (0xA6)")
