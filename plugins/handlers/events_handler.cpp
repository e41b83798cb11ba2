// 0xA6 events subscribe → a stream of 0xA7 EventsStream frames for every event that
// matches both filters (process ids and event types; an empty filter matches all), until
// either side closes.
//
// A subscriber that falls behind loses nothing the server can keep (its backlog is spilled
// to disk and replayed in order); past its spill quota it gets, where the gap is, one
// `reliability.backpressure_stall` event saying how many events were dropped since when.
#include <chrono>
#include <iterator>
#include <string>
#include <unordered_set>
#include <vector>

#include "mgmt/handler_support.hpp"
#include "mgmt/plugin.hpp"

namespace {

constexpr auto kEventsStream = mgmt::to_byte(mgmt::MsgType::EventsStream);
constexpr const char* kStallType = "reliability.backpressure_stall";

// A subscription keeps its filters, and its request, for its connection's life: unbounded,
// one 1 MiB request of 130 000 ids held 5 MB until the client left, and every connection
// may do that. With these caps a subscription holds at most about 170 KiB (the filters'
// hash sets at most ~130 KiB, the request 40 KiB). Ids and types are few in practice (ten
// event types exist); a client that wants more than 1024 processes subscribes to all of
// them and filters on its side.
constexpr std::size_t kMaxPids = 1024;
constexpr std::size_t kMaxTypes = 64;
constexpr std::size_t kMaxNameBytes = 32 * 1024;   // ids and types together
constexpr std::size_t kMaxRequest = 40 * 1024;     // encoded; room for the above

// Why a subscription is refused ("" when it is within the caps).
std::string over_caps(std::size_t request_bytes, const mgmt::EventsSubscribe& req) {
  if (req.pids.size() > kMaxPids) {
    return "too many pids in the events filter: " + std::to_string(req.pids.size()) +
           ", at most " + std::to_string(kMaxPids) + " (subscribe to all and filter instead)";
  }
  if (req.types.size() > kMaxTypes) {
    return "too many types in the events filter: " + std::to_string(req.types.size()) +
           ", at most " + std::to_string(kMaxTypes);
  }
  std::size_t names = 0;
  for (const auto& v : req.pids) names += v.size();
  for (const auto& v : req.types) names += v.size();
  if (names > kMaxNameBytes) {
    return "the events filter's pids and types take " + std::to_string(names) +
           " bytes, at most " + std::to_string(kMaxNameBytes);
  }
  if (request_bytes > kMaxRequest) {
    return "events subscription request of " + std::to_string(request_bytes) +
           " bytes, at most " + std::to_string(kMaxRequest);
  }
  return "";
}

// One of a subscription's filters. Checked for every event on the backend's thread, for
// every subscriber: a hash lookup, so that a filter of many thousand ids costs no more
// per event than one of a few.
class Filter {
 public:
  explicit Filter(std::vector<std::string>&& values)
      : values_(std::make_move_iterator(values.begin()), std::make_move_iterator(values.end())) {}
  // An empty filter (nil or [] on the wire) matches everything.
  bool allows(const std::string& value) const {
    return values_.empty() || values_.find(value) != values_.end();
  }

 private:
  std::unordered_set<std::string> values_;
};

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// The payload of an event, encoded once per publish for all the subscribers it goes to:
// the backend hands every subscriber the same event in turn on one thread, so the last
// encoding is reused when the next subscriber sees an equal event. `n`: its number in the
// server's journal (the `n` extension), 0 when the server keeps none.
const std::string& encoded(const mgmt::Event& e, std::uint64_t n) {
  struct Cache {
    mgmt::Event event;
    std::uint64_t n = 0;
    std::string payload;
    bool valid = false;
  };
  thread_local Cache cache;
  if (!cache.valid || cache.n != n || cache.event.ts != e.ts || cache.event.type != e.type ||
      cache.event.pid != e.pid || cache.event.summary != e.summary) {
    cache.event = e;
    cache.n = n;
    cache.payload = mgmt::encode(mgmt::EventsStream{e.pid, e.type, e.ts, e.summary, n});
    cache.valid = true;
  }
  return cache.payload;
}

class EventsHandler final : public mgmt::Handler {
 public:
  explicit EventsHandler(const mgmt::PluginEnv& env)
      : backend_(*env.backend), server_(env.server) {}

  void handle(std::shared_ptr<mgmt::Exchange> ex) override {
    mgmt::EventsSubscribe req;
    if (!mgmt::decode_request(*ex, req)) return;
    // Refused with an answer, before the stream begins: the connection stays usable.
    if (const std::string err = over_caps(ex->payload().size(), req); !err.empty()) {
      mgmt::reply_error(*ex, err);
      return;
    }
    ex->begin_stream();
    ex->on_stall(
        [](std::uint64_t dropped, std::int64_t since_ns) {
          return mgmt::encode(mgmt::EventsStream{
              "", kStallType, now_ns(),
              "dropped " + std::to_string(dropped) + " events since " + mgmt::rfc3339(since_ns) +
                  " (spill quota exceeded)"});
        },
        kEventsStream);
    auto deliver = [ex, pids = Filter(std::move(req.pids)), types = Filter(std::move(req.types))](
                       const mgmt::Event& e, std::uint64_t n) {
      if (!pids.allows(e.pid) || !types.allows(e.type)) return;
      // Copied straight into the connection's queue: no string per subscriber.
      const std::string_view payload(encoded(e, n));
      ex->push_parts(kEventsStream, &payload, 1, 1);
    };
    // Numbered through the server's journal when it keeps one (a subscriber that
    // reconnects, `after` or `since`, is first given what it missed); else straight from
    // the backend.
    std::unique_ptr<mgmt::Subscription> sub;
    if (server_ != nullptr && server_->subscribe_events) {
      sub = server_->subscribe_events(req.after, req.since, std::move(deliver));
    } else {
      sub = backend_.subscribe_events(
          [deliver = std::move(deliver)](const mgmt::Event& e) { deliver(e, 0); });
    }
    ex->hold(std::shared_ptr<mgmt::Subscription>(std::move(sub)));
  }

 private:
  mgmt::Backend& backend_;
  const mgmt::ServerInfo* server_;
};

}  // namespace

MGMT_HANDLER_PLUGIN(EventsHandler, "events", "1.0.0", "lifecycle event subscriptions (0xA6)")
