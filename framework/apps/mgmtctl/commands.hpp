// The commands themselves: one connection, the requests the Go CLI sends, the output it
// prints. Streams are parameters so tests can run a command against a fake server.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>

#include "args.hpp"
#include "format.hpp"

namespace mgmtctl {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;  // connection, server or protocol error
inline constexpr int kExitUsage = 2;

// The stock type of the metrics plugin (config/mgmt.yaml); `metrics --type` overrides it.
inline constexpr std::uint8_t kMetricsCommandType = 0xAE;

// --socket when given, else cliwrap's discovery (--runtime-dir first).
std::string socket_path(const Options& o);

// Runs a parsed server command (list, status, start, stop, logs, events); returns the exit
// code. Process output of `logs` goes to `out` (stdout stream) and `err` (stderr stream).
int run_command(const Options& o, std::ostream& out, std::ostream& err,
                TimeZone tz = TimeZone::local);

}  // namespace mgmtctl
