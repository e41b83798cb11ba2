// The handler contract: one request in; one reply, or a stream of frames, out.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

namespace mgmt {

// One request and the connection it arrived on. Handlers keep the shared_ptr as long as
// they need to answer (for example until an asynchronous stop completes). Every method
// is thread-safe.
class Exchange {
 public:
  virtual ~Exchange() = default;

  virtual std::uint8_t type() const = 0;
  virtual std::uint64_t seq() const = 0;
  virtual std::string_view payload() const = 0;

  // Sends the one answer (with the request's seq). The connection then takes its next
  // request. A second call is ignored.
  virtual void reply(std::uint8_t type, std::string payload) = 0;

  // Turns the connection into a stream: it takes no more requests and is watched for the
  // client going away. push() does this implicitly.
  virtual void begin_stream() = 0;
  // Sends one frame of a stream (with the request's seq); frames go out in the order
  // pushed. Returns false once the client is gone or too far behind (then the connection
  // is being closed and further frames are dropped).
  virtual bool push(std::uint8_t type, std::string payload) = 0;
  // push() whose frame counts as `units` in a stall notice (see on_stall): 1 per event,
  // the bytes of log data in a log chunk. push(t, p) is push_units(t, p, 1).
  virtual bool push_units(std::uint8_t type, std::string payload, std::uint64_t units) = 0;
  // Registers how this stream tells its client what it lost. A reader that falls behind has
  // its frames spilled to disk (streams.spill_dir) and replayed in order; past the spill
  // quota frames are dropped, and once the backlog has drained (or at once, with
  // streams.on_overflow: disconnect, before the connection closes) one frame of `type` with
  // the payload `make_payload(dropped, since_ns)` is queued where the gap is: `dropped` sums
  // the units of the dropped frames, `since_ns` is when the first was dropped (unix nanos).
  // Called before the first push; without it drops are only logged by the server.
  using StallPayload = std::function<std::string(std::uint64_t dropped, std::int64_t since_ns)>;
  virtual void on_stall(StallPayload make_payload, std::uint8_t type) = 0;
  // Closes a stream once every pushed frame has been written.
  virtual void end_stream() = 0;
  // Keeps `resource` (typically a Subscription) alive until the connection closes.
  virtual void hold(std::shared_ptr<void> resource) = 0;
  // False once the connection is closed.
  virtual bool open() const = 0;
  // Peer credentials of the connection (from SO_PEERCRED); -1 when unknown.
  virtual std::int64_t peer_pid() const = 0;
  virtual std::int64_t peer_uid() const = 0;

  // push_units() of a payload given as `count` parts laid end to end (an encoding shared
  // by many streams; a prefix, a log chunk and a suffix): the server copies them straight
  // into the connection's queue, without a string per frame. The parts need only live for
  // the call. (This default builds the string; the server's exchanges do better.)
  virtual bool push_parts(std::uint8_t type, const std::string_view* parts, std::size_t count,
                          std::uint64_t units) {
    std::size_t size = 0;
    for (std::size_t i = 0; i < count; ++i) size += parts[i].size();
    std::string payload;
    payload.reserve(size);
    for (std::size_t i = 0; i < count; ++i) payload.append(parts[i]);
    return push_units(type, std::move(payload), units);
  }
};

class Handler {
 public:
  virtual ~Handler() = default;
  // Called on the server's I/O thread; must not block.
  virtual void handle(std::shared_ptr<Exchange> ex) = 0;
};

}  // namespace mgmt
