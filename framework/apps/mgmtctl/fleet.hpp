// A fleet view: one command on several hosts at once (--host given more than once, a comma
// list, --hosts-file or MGMT_HOST). A thread per host, each with its own connection and
// output buffer; the answers are merged with the host named on each row.
#pragma once

#include <iosfwd>
#include <string>
#include <string_view>
#include <vector>

#include "args.hpp"
#include "format.hpp"
#include "remote.hpp"

namespace mgmtctl {

// Runs `o` (a fleet_command) on every host in parallel and writes the merged output:
//   list      a table with a HOST column first; --json one array of the entries, each
//             with "host" first; --ids "HOST ID" per line
//   status    each host's block after a "Host:" line, blocks separated by a blank line;
//             --json an array of the entries, each with "host"
//   start, stop, restart, signal
//             each line after the host (padded to a column); --json one array of the
//             outcomes, each with "host"
//   events    merged as they arrive, each line after the host; --json each object with
//             "host" first
// Everything but events is written once every host has answered, in the hosts' order.
// A host's failure goes to `err` as "mgmtctl: HOST: <what failed>" and the others still
// answer; the exit code is 1 when any host failed.
int run_fleet(const std::vector<HostSpec>& hosts, const Options& o, std::ostream& out,
              std::ostream& err, TimeZone tz = TimeZone::local);

// "mgmtctl: HOST: <line>" for a line a host's command wrote to stderr (its own leading
// "mgmtctl: " dropped).
std::string fleet_error_line(std::string_view host, std::string_view line);

}  // namespace mgmtctl
