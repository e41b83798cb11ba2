// `mgmtctl logs -f` without --stream: both streams of a process on two connections, each
// chunk written to stdout or stderr as it arrives (the Go CLI refuses this).
#pragma once

#include <functional>
#include <ostream>
#include <string>

#include "mgmt/client.hpp"
#include "mgmt/messages.hpp"

namespace mgmtctl {

// Sends `req` for stdout on `first` and for stderr on `second` (another connection to the
// same server), then writes the chunks of each to `out` (stdout) or `err` (stderr) in arrival
// order until both streams end. An error from the server (unknown id) is written to `err`
// once and gives 1; otherwise 0. Throws std::runtime_error on protocol errors.
// A stream the server closes without its end, after frames that said their position (the
// `pos` extension: an in-place upgrade), is resumed from there on the connection `reopen`
// returns for it (nullptr: it has ended).
int follow_both_streams(mgmt::Client& first, mgmt::Client& second, mgmt::LogsRequest req,
                        std::ostream& out, std::ostream& err,
                        const std::function<mgmt::Client*(std::uint8_t s)>& reopen = {});

}  // namespace mgmtctl
