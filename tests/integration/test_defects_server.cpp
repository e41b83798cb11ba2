// The socket server and the stock logs handler against the defects found by review and by
// attack: ordering of a follow, streams that must notice their client leaving, frame and
// connection limits a client cannot get around, and logs an attacker cannot flood.
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "harness.hpp"
#include "mgmt/handler.hpp"
#include "mgmt/server/plugin_loader.hpp"
#include "wait.hpp"

using namespace mgmt;
using namespace mgmt::test;

namespace {

// ---------------------------------------------------------------------------------------
// The stock logs handler, driven directly: a backend whose chunks arrive at awkward moments
// and an exchange that records what was pushed, in order.

class ScriptedBackend final : public Backend {
 public:
  // Called inside follow_logs() after subscribing, before the snapshot is returned: what a
  // backend thread delivering a chunk at that moment looks like to the handler.
  std::function<void(const std::function<void(std::string_view)>&)> during_follow;
  std::function<void(std::string_view)> subscriber;

  void start_all() override {}
  void shutdown() override {}
  std::vector<Entry> list() override { return {}; }
  std::optional<Entry> status(std::string_view) override { return std::nullopt; }
  void start(std::string_view, OpDone done) override { done(OpResult{}); }
  void stop(std::string_view, OpDone done) override { done(OpResult{}); }
  std::string logs(const LogQuery&, std::string& out) override {
    out = "snapshot";
    return "";
  }
  FollowResult follow_logs(const LogQuery&,
                           std::function<void(std::string_view)> on_chunk) override {
    subscriber = std::move(on_chunk);
    if (during_follow) during_follow(subscriber);
    FollowResult r;
    r.snapshot = "snapshot";
    r.subscription = std::make_unique<Subscription>();
    return r;
  }
  std::unique_ptr<Subscription> subscribe_events(std::function<void(const Event&)>) override {
    return std::make_unique<Subscription>();
  }
};

class RecordingExchange final : public Exchange {
 public:
  explicit RecordingExchange(std::string payload) : payload_(std::move(payload)) {}

  std::uint8_t type() const override { return to_byte(MsgType::LogsRequest); }
  std::uint64_t seq() const override { return 1; }
  std::string_view payload() const override { return payload_; }
  void reply(std::uint8_t, std::string p) override { record(std::move(p)); }
  void begin_stream() override {}
  bool push(std::uint8_t t, std::string p) override { return push_units(t, std::move(p), 1); }
  bool push_units(std::uint8_t, std::string p, std::uint64_t) override {
    record(std::move(p));
    return true;
  }
  void on_stall(StallPayload, std::uint8_t) override {}
  void end_stream() override {}
  void hold(std::shared_ptr<void> r) override { held_.push_back(std::move(r)); }
  bool open() const override { return true; }
  std::int64_t peer_pid() const override { return -1; }
  std::int64_t peer_uid() const override { return -1; }

  // The `d` of every frame pushed so far, in order.
  std::vector<std::string> chunks() const {
    std::lock_guard lock(mu_);
    return chunks_;
  }

 private:
  void record(std::string payload) {
    LogsStream f;
    const std::string err = decode(payload, f);  // (Catch's macros are for one thread only)
    std::lock_guard lock(mu_);
    chunks_.push_back(err.empty() ? f.d : "undecodable: " + err);
  }

  const std::string payload_;
  mutable std::mutex mu_;
  std::vector<std::string> chunks_;
  std::vector<std::shared_ptr<void>> held_;
};

struct LoadedLogsHandler {
  PluginLoader loader{{MGMT_PLUGIN_DIR}};
  PluginRef ref;
  PluginHandle handle;
  std::shared_ptr<Handler> handler;

  explicit LoadedLogsHandler(Backend& backend) {
    ref.plugin = "logs";
    ref.origin = "test";
    handle = loader.load(ref, PluginKind::handler);
    PluginEnv env;
    env.backend = &backend;
    handler = loader.make_handler(handle, ref, env);
  }
};

std::shared_ptr<RecordingExchange> follow_request() {
  return std::make_shared<RecordingExchange>(encode(LogsRequest{"p", 0, true, 0, 0}));
}

}  // namespace

TEST_CASE("logs -f: a chunk delivered while the follow is set up comes after the snapshot",
          "[defects][logs]") {
  ScriptedBackend backend;
  backend.during_follow = [](const std::function<void(std::string_view)>& chunk) {
    chunk("early 1");
    chunk("early 2");
  };
  LoadedLogsHandler logs(backend);
  auto ex = follow_request();
  logs.handler->handle(ex);
  backend.subscriber("late");
  CHECK(ex->chunks() == std::vector<std::string>{"snapshot", "early 1", "early 2", "late"});
}

TEST_CASE("logs -f: chunks from another thread racing the snapshot are neither lost, repeated "
          "nor reordered",
          "[defects][logs]") {
  ScriptedBackend backend;
  // A backend thread that starts delivering as soon as the subscription exists, while the
  // handler is still on its way to pushing the snapshot.
  std::thread feeder;
  std::atomic<bool> started{false};
  constexpr int kChunks = 2000;
  backend.during_follow = [&](const std::function<void(std::string_view)>& chunk) {
    feeder = std::thread([&, chunk] {
      started = true;
      for (int i = 0; i < kChunks; ++i) chunk(std::to_string(i));
    });
    wait_until([&] { return started.load(); });
  };
  LoadedLogsHandler logs(backend);
  auto ex = follow_request();
  logs.handler->handle(ex);
  feeder.join();
  const auto got = ex->chunks();
  std::vector<std::string> want{"snapshot"};
  for (int i = 0; i < kChunks; ++i) want.push_back(std::to_string(i));
  CHECK(got.size() == want.size());
  std::size_t first_difference = 0;
  while (first_difference < got.size() && first_difference < want.size() &&
         got[first_difference] == want[first_difference]) {
    ++first_difference;
  }
  INFO("first difference at frame " << first_difference << " of " << got.size());
  const bool same = got == want;
  CHECK(same);
}
