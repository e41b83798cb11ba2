// 0xA4 logs → 0xA5 LogsStream frames.
//   follow false: one frame, eof true, holding the (filtered) snapshot.
//   follow true:  the snapshot with eof false, then one frame per new chunk, until the
//                 client goes away. The connection takes no more requests.
// Errors (unknown id, a stream above 1) come as one frame with eof true whose `d` is the
// readable error (what Go clients print) and whose `err` extension carries it for ours.
#include "mgmt/handler_support.hpp"
#include "mgmt/plugin.hpp"

namespace {

constexpr auto kLogsStream = mgmt::to_byte(mgmt::MsgType::LogsStream);

class LogsHandler final : public mgmt::Handler {
 public:
  explicit LogsHandler(const mgmt::PluginEnv& env) : backend_(*env.backend) {}

  void handle(std::shared_ptr<mgmt::Exchange> ex) override {
    mgmt::LogsRequest req;
    if (!mgmt::decode_request(*ex, req)) return;

    if (req.s > 1) {
      fail(*ex, req, "invalid stream " + std::to_string(req.s) + ": use 0 (stdout) or 1 (stderr)");
      return;
    }
    if (req.ln < 0) {
      fail(*ex, req, "invalid line count " + std::to_string(req.ln));
      return;
    }
    mgmt::LogQuery q;
    q.id = req.id;
    q.stream = static_cast<mgmt::LogStream>(req.s);
    q.since_ns = req.sn;
    q.last_lines = req.ln;

    if (!req.f) {
      mgmt::LogsStream frame{req.id, req.s, {}, true, {}};
      if (auto err = backend_.logs(q, frame.d); !err.empty()) {
        fail(*ex, req, err);
        return;
      }
      ex->reply(kLogsStream, mgmt::encode(frame));
      return;
    }

    auto on_chunk = [ex, id = req.id, s = req.s](std::string_view chunk) {
      ex->push(kLogsStream, mgmt::encode(mgmt::LogsStream{id, s, std::string(chunk), false, {}}));
    };
    mgmt::FollowResult r = backend_.follow_logs(q, std::move(on_chunk));
    if (!r.err.empty()) {
      fail(*ex, req, r.err);
      return;
    }
    // We run on the I/O thread, so chunks the subscription delivers meanwhile are queued
    // behind this snapshot.
    ex->push(kLogsStream, mgmt::encode(mgmt::LogsStream{req.id, req.s, std::move(r.snapshot),
                                                        false, {}}));
    ex->hold(std::shared_ptr<mgmt::Subscription>(std::move(r.subscription)));
  }

 private:
  static void fail(mgmt::Exchange& ex, const mgmt::LogsRequest& req, const std::string& err) {
    const std::string frame = mgmt::encode(mgmt::LogsStream{req.id, req.s, err, true, err});
    if (req.f) {
      ex.push(kLogsStream, frame);
      ex.end_stream();
    } else {
      ex.reply(kLogsStream, frame);
    }
  }

  mgmt::Backend& backend_;
};

}  // namespace

MGMT_HANDLER_PLUGIN(LogsHandler, "logs", "1.0.0", "log snapshots and follow (0xA4)")
