// The whole of mgmtctl behind main(): parse, help and version, run, exit code.
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

namespace mgmtctl {

std::string usage_text();
std::string version_text();

// `args` excludes the program name. Usage errors print one line and a pointer to --help
// on `err` and return 2.
int run_cli(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace mgmtctl
