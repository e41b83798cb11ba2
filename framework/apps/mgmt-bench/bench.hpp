// mgmt-bench internals: shared helpers and the entry points of each subcommand.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "mgmt/wire.hpp"

namespace mgmt::bench {

using Args = std::vector<std::string>;

// A usage error: main prints it with the usage text and exits 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Monotonic clock in nanoseconds.
std::int64_t now_ns() noexcept;
void sleep_ns(std::int64_t ns) noexcept;

// Blocking AF_UNIX stream connection; throws std::runtime_error on failure.
int connect_unix(const std::string& path);
// Non-throwing variant for polling: -1 when the connect fails.
int try_connect_unix(const std::string& path) noexcept;

void write_all(int fd, const char* p, std::size_t n);
// Reads one whole frame into `buf` (header + payload; the buffer is reused and only grows).
// Returns false on a clean end of stream before the header; throws on errors.
bool read_frame(int fd, std::string& buf, FrameHeader& h);

// The request frame for an op ("list", "status") with seq 0; `id` is used by status.
std::string request_frame(std::string_view op, const std::string& id);
// The reply type a server must answer an op with.
std::uint8_t reply_type(std::string_view op);
// Puts `seq` into a frame's header in place.
void patch_seq(char* frame, std::uint64_t seq) noexcept;

// Option parsing helpers: --name VALUE.
std::string take_value(const Args& a, std::size_t& i);
double parse_double(const std::string& s, const std::string& what);
long parse_long(const std::string& s, const std::string& what);
std::string read_file(const std::string& path);
void write_file(const std::string& path, std::string_view data);

// A process's memory, in KiB: VmRSS and its peak from /proc/PID/status, then what is
// really its own: RssAnon, and PSS and Private_Dirty from /proc/PID/smaps_rollup.
struct MemoryFigures {
  std::uint64_t vmrss_kib = 0;
  std::uint64_t vmhwm_kib = 0;
  std::uint64_t rss_anon_kib = 0;
  std::uint64_t pss_kib = 0;
  std::uint64_t private_dirty_kib = 0;
};
// Throws std::runtime_error when the process's /proc files cannot be read.
MemoryFigures memory_of(long pid);

// Closed-loop load: `clients` connections, one `op` request in flight on each, measured for
// `duration` seconds after `warm` seconds. Throws std::runtime_error when a client fails.
struct LoadStats {
  std::size_t requests = 0;
  double seconds = 0;
  double p50_us = 0;
  double p99_us = 0;
  double max_us = 0;
  std::size_t reply_bytes = 0;
  std::uint64_t errors = 0;  // replies of the wrong type or seq
};
LoadStats run_load(const std::string& socket, std::string_view op, const std::string& id,
                   long clients, double duration, double warm);

// Subcommands.
int cmd_load(const Args& a);
int cmd_capture(const Args& a);
int cmd_floor(const Args& a);
int cmd_hold(const Args& a);
int cmd_unread(const Args& a);
int cmd_startup(const Args& a);
int cmd_wall(const Args& a);
int cmd_mem(const Args& a);
int cmd_scale(const Args& a);

}  // namespace mgmt::bench
