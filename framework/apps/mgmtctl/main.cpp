// mgmtctl: the command-line client of mgmtd, a drop-in for cliwrap's management commands.
#include <iostream>
#include <string>
#include <vector>

#include "cli.hpp"

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + (argc > 0 ? 1 : 0), argv + argc);
  return mgmtctl::run_cli(args, std::cout, std::cerr, mgmtctl::detect_env());
}
