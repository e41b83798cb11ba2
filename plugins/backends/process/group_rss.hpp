// Resident memory of whole process groups, read from /proc.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <set>

namespace mgmt::process {

// Sum of resident bytes (/proc/<pid>/statm) over every process whose process group
// (/proc/<pid>/stat) is one of `pgids`, keyed by group. One scan of /proc for all groups.
std::map<pid_t, std::uint64_t> group_rss(const std::set<pid_t>& pgids);

}  // namespace mgmt::process
