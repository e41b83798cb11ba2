// `mgmtctl logs`: the streams of one or more processes, merged in capture order (the `ts`
// and `tss` extensions of LogsStream), each line decorated as asked (-t, --json, the id
// before each line when there are several ids).
#pragma once

#include <cstdint>
#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include "mgmt/client.hpp"
#include "mgmt/messages.hpp"

namespace mgmtctl {

// One stream of one process.
struct LogSource {
  std::string id;
  std::uint8_t s = 0;  // 0 stdout, 1 stderr
};

struct LogsLook {
  bool timestamps = false;  // RFC 3339 (UTC, microseconds) before each line
  bool json = false;        // {"ts","id","stream","line"} per line, all on stdout
  bool prefix = false;      // "id  | " before each line (several ids)
};

// RFC 3339 in UTC with microseconds: 2026-01-02T03:04:05.123456Z.
std::string rfc3339_micros(std::int64_t unix_nanos);

// The snapshots of `sources`, one request after the other on `c` (`req` gives the
// filters), merged by capture time and written to `out` (stdout lines) and `err`. A server
// that sends no times gives the order of `sources`. Returns "" once written, or the
// server's error (unknown id) with nothing written. Throws std::runtime_error on protocol
// errors.
std::string print_log_snapshots(mgmt::Client& c, mgmt::LogsRequest req,
                                const std::vector<LogSource>& sources, const LogsLook& look,
                                std::ostream& out, std::ostream& err);

// Follows `sources`, each on its own connection: connect(i, false) gives the first one for
// sources[i], connect(i, true) another after the server closed a stream without its end
// (an in-place upgrade; nullptr: it has ended), where it resumes from its last `pos`.
// Lines are merged by capture time: a line waits (at most kMergeWaitMs) until every other
// stream has shown a later time. Errors from the server are written to `err` once each and
// give 1; otherwise 0 once every stream has ended. Throws std::runtime_error on protocol
// errors.
inline constexpr int kMergeWaitMs = 100;
int follow_log_sources(const std::vector<LogSource>& sources, mgmt::LogsRequest req,
                       const LogsLook& look,
                       const std::function<mgmt::Client*(std::size_t i, bool again)>& connect,
                       std::ostream& out, std::ostream& err);

}  // namespace mgmtctl
