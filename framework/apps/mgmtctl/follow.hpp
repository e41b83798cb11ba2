// `mgmtctl logs -f` without --stream: both streams of a process on two connections, each
// chunk written to stdout or stderr as it arrives (the Go CLI refuses this).
#pragma once

#include <ostream>
#include <string>

#include "mgmt/client.hpp"
#include "mgmt/messages.hpp"

namespace mgmtctl {

// Sends `req` for stdout on `first` and for stderr on a second connection to the same
// socket, then writes the chunks of each to `out` (stdout) or `err` (stderr) in arrival
// order until both streams end. An error from the server (unknown id) is written to `err`
// once and gives 1; otherwise 0. Throws std::runtime_error on protocol errors.
int follow_both_streams(mgmt::Client& first, mgmt::LogsRequest req, std::ostream& out,
                        std::ostream& err);

}  // namespace mgmtctl
