// The whole of mgmtctl behind main(): parse, help and version, run, exit code.
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

#include "args.hpp"

namespace mgmtctl {

// What main() knows about where the output goes.
struct CliEnv {
  bool color = false;  // stdout is a terminal and NO_COLOR is unset (or empty)
};
// From the process: isatty(1), NO_COLOR, TERM=dumb.
CliEnv detect_env();

std::string usage_text();
// `mgmtctl <command> --help`, `mgmtctl help <command>`; the usage text for none.
std::string command_help(Command c);
std::string version_text();

// `args` excludes the program name. Usage errors print one line and a pointer to --help
// on `err` and return 2.
int run_cli(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);
int run_cli(const std::vector<std::string>& args, std::ostream& out, std::ostream& err,
            const CliEnv& env);

}  // namespace mgmtctl
