// 0xA4 logs → 0xA5 LogsStream frames.
//   follow false: one frame, eof true, holding the (filtered) snapshot.
//   follow true:  the snapshot with eof false, then one frame per new chunk, until the
//                 client goes away. The connection takes no more requests.
// Errors (unknown id, a stream above 1) come as one frame with eof true whose `d` is the
// readable error (what Go clients print) and whose `err` extension carries it for ours.
#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mgmt/handler_support.hpp"
#include "mgmt/plugin.hpp"

namespace {

constexpr auto kLogsStream = mgmt::to_byte(mgmt::MsgType::LogsStream);
// A follow keeps its request for its connection's life: a request padded to max_request
// (1 MiB of fields nobody reads) would hold that much per connection. A follow request is
// an id and four numbers; 16 KiB is far more than any needs.
constexpr std::size_t kMaxFollowRequest = 16 * 1024;

// A LogsStream chunk frame of one follow, {id, s, d, eof: false, pos, ts}, encoded around
// the chunk rather than through a copy of it: the payload is pushed as parts (prefix, bin
// header, chunk, suffix, position, time) that the connection's queue copies once.
class ChunkEncoder {
 public:
  ChunkEncoder(const std::string& id, std::uint8_t s) {
    // Split an encoding with an empty `d` (bin 8 of length 0: c4 00) just before the
    // bin header, then check a chunk spliced in encodes the same; else use the codec.
    const std::string empty = mgmt::encode(mgmt::LogsStream{id, s, {}, false, {}, 0, 1});
    static constexpr std::string_view kEmptyBin("\xc4\x00", 2);
    static constexpr std::string_view kSuffix("\xa3\x65\x6f\x66\xc2", 5);  // "eof": false
    // "pos": 0, "ts": 1
    const std::string tail = std::string(kSuffix) + std::string(kPosKey) + '\0' +
                             std::string(kTsKey) + '\x01';
    if (empty.size() < kEmptyBin.size() + tail.size() ||
        std::string_view(empty).substr(empty.size() - tail.size()) != tail ||
        std::string_view(empty).substr(empty.size() - tail.size() - kEmptyBin.size(),
                                       kEmptyBin.size()) != kEmptyBin) {
      return;
    }
    prefix_ = empty.substr(0, empty.size() - tail.size() - kEmptyBin.size());
    suffix_ = std::string(kSuffix) + std::string(kPosKey);
    for (const std::size_t n : {0, 3, 300, 70000}) {
      for (const std::int64_t pos : {std::int64_t{5}, std::int64_t{200}, std::int64_t{70000},
                                     std::int64_t{1} << 40}) {
        const std::int64_t ts = pos + 1;  // every width of MessagePack's integers, as pos
        const std::string sample(n, 'x');
        char head[9];
        std::string spliced = prefix_;
        spliced.append(head, bin_header(sample.size(), head));
        spliced += sample;
        spliced += suffix_;
        spliced.append(head, uint_bytes(static_cast<std::uint64_t>(pos), head));
        spliced += kTsKey;
        spliced.append(head, uint_bytes(static_cast<std::uint64_t>(ts), head));
        if (spliced != mgmt::encode(mgmt::LogsStream{id, s, sample, false, {}, pos, ts})) return;
      }
    }
    ok_ = true;
  }

  bool ok() const { return ok_; }

  // Pushes the frame for `chunk`, which ends at stream position `pos` and was captured at
  // `ts` (> 0).
  bool push(mgmt::Exchange& ex, std::uint8_t type, std::string_view chunk, std::int64_t pos,
            std::int64_t ts) const {
    char head[5];
    char pos_bytes[9];
    char ts_bytes[9];
    const std::string_view parts[] = {
        prefix_, std::string_view(head, bin_header(chunk.size(), head)), chunk, suffix_,
        std::string_view(pos_bytes, uint_bytes(static_cast<std::uint64_t>(pos), pos_bytes)),
        kTsKey, std::string_view(ts_bytes, uint_bytes(static_cast<std::uint64_t>(ts), ts_bytes))};
    return ex.push_parts(type, parts, 7, chunk.size());
  }

 private:
  static constexpr std::string_view kPosKey{"\xa3pos", 4};
  static constexpr std::string_view kTsKey{"\xa2ts", 3};

  // MessagePack's smallest encoding of the unsigned `v` (as the codec writes it).
  static std::size_t uint_bytes(std::uint64_t v, char* out) {
    auto big_endian = [&](char tag, int n) {
      out[0] = tag;
      for (int i = 0; i < n; ++i) out[1 + i] = static_cast<char>(v >> (8 * (n - 1 - i)));
      return static_cast<std::size_t>(n + 1);
    };
    if (v < 128) {
      out[0] = static_cast<char>(v);
      return 1;
    }
    if (v < 256) return big_endian(static_cast<char>(0xcc), 1);
    if (v < 65536) return big_endian(static_cast<char>(0xcd), 2);
    if (v < (std::uint64_t{1} << 32)) return big_endian(static_cast<char>(0xce), 4);
    return big_endian(static_cast<char>(0xcf), 8);
  }

  // MessagePack bin header for `n` bytes; returns its size.
  static std::size_t bin_header(std::size_t n, char* out) {
    if (n < 256) {
      out[0] = static_cast<char>(0xc4);
      out[1] = static_cast<char>(n);
      return 2;
    }
    if (n < 65536) {
      out[0] = static_cast<char>(0xc5);
      out[1] = static_cast<char>(n >> 8);
      out[2] = static_cast<char>(n);
      return 3;
    }
    out[0] = static_cast<char>(0xc6);
    for (int i = 0; i < 4; ++i) out[1 + i] = static_cast<char>(n >> (24 - 8 * i));
    return 5;
  }

  std::string prefix_;
  std::string suffix_;
  bool ok_ = false;
};

// Puts a follow's snapshot before every chunk. The backend calls on_chunk from its own
// thread as soon as follow_logs() has subscribed, which can be before the handler has pushed
// the snapshot (on the I/O thread): chunks that come that early are held here and pushed
// right after the snapshot, in order; once it is out they go straight to the connection.
// Only the short window before the snapshot takes the mutex.
class SnapshotGate {
 public:
  template <class Push>
  void chunk(std::string_view chunk, std::int64_t ts, const Push& push) {
    if (!open_.load(std::memory_order_acquire)) {
      std::lock_guard lock(mu_);
      if (!open_.load(std::memory_order_relaxed)) {
        held_.emplace_back(std::string(chunk), ts);
        return;
      }
    }
    push(chunk, ts);
  }

  // Pushes the snapshot, then what was held, then opens the gate. A chunk arriving meanwhile
  // waits on the mutex, so it cannot overtake them.
  template <class PushSnapshot, class Push>
  void open(const PushSnapshot& push_snapshot, const Push& push) {
    std::lock_guard lock(mu_);
    push_snapshot();
    for (const auto& [c, ts] : held_) push(c, ts);
    held_.clear();
    held_.shrink_to_fit();
    open_.store(true, std::memory_order_release);
  }

 private:
  std::mutex mu_;
  std::vector<std::pair<std::string, std::int64_t>> held_;
  std::atomic<bool> open_{false};
};

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
    if (req.f && ex->payload().size() > kMaxFollowRequest) {
      fail(*ex, req, "log follow request of " + std::to_string(ex->payload().size()) +
                         " bytes, at most " + std::to_string(kMaxFollowRequest));
      return;
    }
    mgmt::LogQuery q;
    q.id = req.id;
    q.stream = static_cast<mgmt::LogStream>(req.s);
    q.since_ns = req.sn;
    q.last_lines = req.ln;
    q.from = req.f ? req.from : -1;  // a follow that resumes where its client left off

    if (!req.f) {
      mgmt::LogsStream frame{req.id, req.s, {}, true, {}};
      if (auto err = backend_.logs_timed(q, frame.d, frame.tss); !err.empty()) {
        fail(*ex, req, err);
        return;
      }
      ex->reply(kLogsStream, mgmt::encode(frame));
      return;
    }

    // A follower that falls behind is spilled to disk and replayed in order; past the spill
    // quota it gets, where the gap is, a chunk saying how many bytes it lost since when.
    ex->on_stall(
        [id = req.id, s = req.s](std::uint64_t dropped, std::int64_t since_ns) {
          return mgmt::encode(mgmt::LogsStream{
              id, s,
              "\n[mgmtd: dropped " + std::to_string(dropped) + " bytes of log since " +
                  mgmt::rfc3339(since_ns) + " (spill quota exceeded)]\n",
              false, {}});
        },
        kLogsStream);
    // The stream position after the last chunk pushed: set from follow_logs() before the
    // gate opens, then advanced by the backend's thread only (-1: the backend counts none).
    auto position = std::make_shared<std::atomic<std::int64_t>>(-1);
    auto push_chunk = [ex, id = req.id, s = req.s, position,
                       enc = std::make_shared<const ChunkEncoder>(req.id, req.s)](
                          std::string_view chunk, std::int64_t ts) {
      std::int64_t pos = position->load(std::memory_order_relaxed);
      if (pos >= 0) {
        pos += static_cast<std::int64_t>(chunk.size());
        position->store(pos, std::memory_order_relaxed);
      }
      if (enc->ok() && pos >= 0 && ts > 0) {
        enc->push(*ex, kLogsStream, chunk, pos, ts);
      } else {
        ex->push_units(
            kLogsStream,
            mgmt::encode(mgmt::LogsStream{id, s, std::string(chunk), false, {}, pos, ts}),
            chunk.size());
      }
    };
    auto gate = std::make_shared<SnapshotGate>();
    mgmt::FollowResult r = backend_.follow_logs_timed(
        q, [gate, push_chunk](std::string_view chunk, std::int64_t ts) {
          gate->chunk(chunk, ts, push_chunk);
        });
    if (!r.err.empty()) {
      fail(*ex, req, r.err);
      return;
    }
    position->store(r.position, std::memory_order_relaxed);
    // The subscription may already be delivering chunks from the backend's thread: the gate
    // keeps them behind this snapshot.
    gate->open(
        [&] {
          mgmt::LogsStream snap{req.id, req.s, std::move(r.snapshot), false, {}, r.position};
          snap.tss = std::move(r.times);
          ex->push(kLogsStream, mgmt::encode(snap));
        },
        push_chunk);
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
