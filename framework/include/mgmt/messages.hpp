// Payloads of the management protocol and their MessagePack map codec.
//
// Encoding follows the Go reference: every struct is a map with short keys, byte data is
// bin, strings are str. Decoding is tolerant the way the protocol asks: unknown keys are
// ignored, missing keys keep their defaults, nil is accepted for lists and byte data, and
// any integer width is accepted when the value fits. A value of the wrong kind is an error
// whose text names the field.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mgmt/wire.hpp"

namespace mgmt {

// Process states, as the protocol spells them.
namespace state {
inline constexpr std::string_view pending = "pending";
inline constexpr std::string_view starting = "starting";
inline constexpr std::string_view running = "running";
inline constexpr std::string_view stopping = "stopping";
inline constexpr std::string_view stopped = "stopped";
inline constexpr std::string_view crashed = "crashed";
inline constexpr std::string_view restarting = "restarting";
inline constexpr std::string_view failed = "failed";
}  // namespace state

// Event types (the `t` field of EventsStream).
namespace event {
inline constexpr std::string_view registered = "process.registered";
inline constexpr std::string_view starting = "process.starting";
inline constexpr std::string_view started = "process.started";
inline constexpr std::string_view stopping = "process.stopping";
inline constexpr std::string_view stopped = "process.stopped";
inline constexpr std::string_view crashed = "process.crashed";
inline constexpr std::string_view restarting = "process.restarting";
inline constexpr std::string_view failed = "process.failed";
inline constexpr std::string_view log_overflow = "log.overflow";
inline constexpr std::string_view backpressure_stall = "reliability.backpressure_stall";
inline constexpr std::string_view shutdown_requested = "system.shutdown_requested";
inline constexpr std::string_view shutdown_incomplete = "system.shutdown_incomplete";
}  // namespace event

// Error text the Go server uses for an unknown id; clients may match on it.
inline constexpr std::string_view kErrNotFound = "cliwrap: process not found";

// One supervised process as list and status report it. The first five fields are the
// protocol's; the rest are extensions sent as extra map keys (Go clients ignore them) and
// only when set.
struct Entry {
  std::string id;
  std::string name;
  std::string state;
  std::int64_t pid = 0;
  std::uint64_t rss = 0;
  // Extensions.
  std::uint64_t restarts = 0;                 // "restarts"
  std::int64_t started_at = 0;                // "started_at", unix nanos of the last start
  std::optional<std::int64_t> exit_code;      // "exit_code", of the last exit
  std::optional<std::int64_t> exit_signal;    // "exit_signal", signal that ended the last run
  std::string last_error;                     // "last_error", e.g. a spawn failure
  // Sent only when non-empty: "health" (starting, healthy, unhealthy, none: not running;
  // absent without a health check), "probe" (the last readiness or health probe's result),
  // "status_text" (a notify child's last STATUS=).
  std::string health;
  std::string probe;
  std::string status_text;
};

struct ListRequest {};
struct ListResponse {
  std::vector<Entry> entries;
};
struct StatusRequest {
  std::string id;
};
struct StatusResponse {
  Entry entry;
  std::string err;
};
// Start (0xA8) and stop (0xA9) requests carry only an id.
struct IdRequest {
  std::string id;
};
struct LogsRequest {
  std::string id;
  std::uint8_t s = 0;      // 0 stdout, 1 stderr
  bool f = false;          // follow
  std::int64_t sn = 0;     // since, unix nanos; 0 = all
  std::int64_t ln = 0;     // last N lines; 0 = all
  // Extension `from` (sent only when >= 0): resume a follow at this stream position (the
  // `pos` of the last frame received) instead of sn/ln; see docs/protocol.md.
  std::int64_t from = -1;
};
struct LogsStream {
  std::string id;
  std::uint8_t s = 0;
  std::string d;           // raw bytes (bin on the wire)
  bool eof = false;
  // Extension: set (with eof, and the same text in `d` for Go clients) when the request
  // failed, so our clients can tell an error from log data. Sent only when non-empty.
  std::string err;
  // Extension `pos` (sent only when >= 0): the stream position (bytes the process has
  // written to this stream since it was first started) at the end of `d`.
  std::int64_t pos = -1;
  // Extension `ts` (sent only when > 0): when the chunk in `d` was captured, unix nanos
  // (a follow's frames after its snapshot).
  std::int64_t ts = 0;
  // Extension `tss` (sent only when non-empty): the capture times of a snapshot's bytes, a
  // flat list of pairs [offset in `d`, unix nanos, ...]: the bytes from each offset to the
  // next were captured at that time. Offsets rise; the first is 0.
  std::vector<std::int64_t> tss{};
};
struct EventsSubscribe {
  std::vector<std::string> pids;   // empty = all
  std::vector<std::string> types;  // empty = all
  // Extension `after` (sent only when > 0): first replay the recent events numbered after
  // it (the `n` of the last event received), for a subscriber that reconnects.
  std::uint64_t after = 0;
  // Extension `since` (unix nanos, sent only when > 0 and `after` is 0): first replay the
  // recent events of that time or later, for a subscriber that reconnects before it has
  // received any event (the time it first subscribed).
  std::int64_t since = 0;
};
struct EventsStream {
  std::string pid;
  std::string t;
  std::int64_t ts = 0;
  std::string sum;
  // Extension `n` (sent only when > 0): the event's number, one more for each event the
  // server publishes, kept across in-place upgrades.
  std::uint64_t n = 0;
};

std::string encode(const ListResponse& m);
std::string encode(const StatusRequest& m);
std::string encode(const StatusResponse& m);
std::string encode(const IdRequest& m);
std::string encode(const LogsRequest& m);
std::string encode(const LogsStream& m);
std::string encode(const EventsSubscribe& m);
std::string encode(const EventsStream& m);
std::string encode(const Entry& m);

// Each returns an empty string on success, else what was wrong ("field 'pid': expected an
// integer, got str"). An empty payload decodes to the defaults.
std::string decode(std::string_view payload, ListRequest& out);
std::string decode(std::string_view payload, ListResponse& out);
std::string decode(std::string_view payload, StatusRequest& out);
std::string decode(std::string_view payload, StatusResponse& out);
std::string decode(std::string_view payload, IdRequest& out);
std::string decode(std::string_view payload, LogsRequest& out);
std::string decode(std::string_view payload, LogsStream& out);
std::string decode(std::string_view payload, EventsSubscribe& out);
std::string decode(std::string_view payload, EventsStream& out);

// The protocol's generic error answer: a StatusResponse with an empty entry and `err` set.
std::string error_reply(std::string_view err);

}  // namespace mgmt
