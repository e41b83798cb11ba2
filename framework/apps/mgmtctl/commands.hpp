// The commands themselves: one connection, the requests the Go CLI sends, the output it
// prints. Streams are parameters so tests can run a command against a fake server.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>

#include "args.hpp"
#include "format.hpp"
#include "remote.hpp"

namespace mgmtctl {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;  // connection, server or protocol error
inline constexpr int kExitUsage = 2;

// The stock type of the metrics plugin (config/mgmt.yaml); `metrics --type` overrides it.
inline constexpr std::uint8_t kMetricsCommandType = 0xAE;

// --socket when given, else cliwrap's discovery (--runtime-dir first).
std::string socket_path(const Options& o);

// Runs a parsed server command (list, status, start, stop, logs, events, ...); returns the
// exit code. Process output of `logs` goes to `out` (stdout stream) and `err` (stderr
// stream). With several hosts (--host, --hosts-file, MGMT_HOST) it is a fleet command.
int run_command(const Options& o, std::ostream& out, std::ostream& err,
                TimeZone tz = TimeZone::local);

// Runs the command on one server, reached as `host` says (a local socket or ssh), with the
// very output the local command gives. Errors that are the transport's (ssh could not
// connect, no mgmtctl or no mgmtd on the remote) say which step failed.
int run_on_host(const HostSpec& host, const Options& o, std::ostream& out, std::ostream& err,
                TimeZone tz = TimeZone::local);

}  // namespace mgmtctl
