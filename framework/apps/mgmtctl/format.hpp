// mgmtctl's output: the Go CLI's table, status and event lines, plus JSON. Pure functions
// of their input (time zone included) so tests can pin the exact text.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mgmt/commands.hpp"
#include "mgmt/messages.hpp"

namespace mgmtctl {

// Wall-clock rendering: the user's local zone, or UTC (for tests and scripts).
enum class TimeZone { local, utc };

// `ID  NAME  STATE  PID` as Go's text/tabwriter with padding 2 lays it out: every column
// but the last as wide as its widest cell (in code points) plus two spaces.
// With `color`, the state is green (running), yellow (on its way somewhere) or red (crashed,
// failed); the layout is the same.
std::string format_table(const std::vector<mgmt::Entry>& entries, bool color = false);
// The fleet's table: `HOST  ID  NAME  STATE  PID`, laid out as format_table.
struct HostEntry {
  std::string host;
  mgmt::Entry entry;
};
std::string format_host_table(const std::vector<HostEntry>& entries, bool color = false);

// `ID:`, `Name:`, `State:`, `ChildPID:` then the extension fields that are set, values
// aligned in one column. Ends with a newline.
std::string format_status(const mgmt::Entry& e, TimeZone tz = TimeZone::local, bool color = false);
// A state wrapped in its ANSI colour (see format_table); unknown states are left plain.
std::string color_state(std::string_view state);

// `HH:MM:SS.mmm  <type padded 32>  <pid padded 20>  <summary>` and a newline.
std::string format_event_line(const mgmt::EventsStream& ev, TimeZone tz = TimeZone::local);

// JSON: every field of the entry, extensions only when set. Pretty-printed, newline-ended.
std::string format_list_json(const std::vector<mgmt::Entry>& entries);
std::string format_status_json(const mgmt::Entry& e);

// The outcome of start, stop, restart or signal for one id, for --json.
struct Outcome {
  std::string id;
  std::string err;                   // "" on success
  std::optional<mgmt::Entry> entry;  // the entry the server sent back, if any
  std::string signal;                // signal: the canonical name sent
  bool group = false;                // signal: --group
};
// start, stop, restart --json: an array of {id, ok, err?, entry?}. Pretty-printed.
std::string format_outcomes_json(const std::vector<Outcome>& outcomes);
// signal --json: {id, signal, group, ok, err?, entry?}. Pretty-printed.
std::string format_signal_json(const Outcome& o);
// events --json: one compact JSON object per line, {ts, pid, type, summary} (ts in unix nanos).
std::string format_event_json(const mgmt::EventsStream& ev);

// `info`: the server, its uptime, its configuration file, then a table of the plugins
// (`TYPE  KIND  NAME  VERSION  FILE`, the backend's type shown as "-").
std::string format_info(const mgmt::InfoResponse& info, TimeZone tz = TimeZone::local);
// `info --json`: every field, plugins as an array of objects. Pretty-printed.
std::string format_info_json(const mgmt::InfoResponse& info);
// Nanoseconds as Go prints a duration truncated to seconds: "1h2m3s", "4m0s", "59s".
std::string format_uptime(std::int64_t nanos);

// "" when `json` is a JSON object, else a one-line reason for a usage error.
std::string json_object_error(std::string_view json);
// `call`: a JSON object (text) to the MessagePack map it stands for. Strings become str,
// integers the smallest encoding that holds them. Throws std::invalid_argument.
std::string json_to_msgpack(std::string_view json);
// `call`: a MessagePack payload as pretty JSON (newline-ended); an empty payload is `{}`.
// JSON has no byte strings: msgpack bin (and ext) values become base64 strings.
// Throws std::invalid_argument when the payload is not MessagePack.
std::string msgpack_to_json(std::string_view payload);
// RFC 4648 base64 with padding.
std::string base64(std::string_view bytes);

// 12582912 → "12.0 MiB"; under 1 KiB in bytes ("512 B").
std::string format_bytes(std::uint64_t n);
// "code 3", "signal SIGKILL", or "" when the entry has no recorded exit.
std::string format_exit(const mgmt::Entry& e);
// Unix nanos → "2025-11-24 16:00:00 UTC" (or the local zone's abbreviation).
std::string format_time(std::int64_t unix_nanos, TimeZone tz);

// Pads `s` with spaces to `width` code points, as Go's %-*s does.
std::string pad_right(std::string_view s, std::size_t width);

}  // namespace mgmtctl
