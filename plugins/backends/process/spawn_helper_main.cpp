// mgmtd-spawn: the process backend's spawn helper (spawn_helper.hpp). The backend executes
// it with its socket as fd 3 and mgmtd's pid as the argument; it is not for running by hand.
#include "spawn_helper.hpp"

int main(int argc, char** argv) { return mgmt::process::spawn_helper_main(argc, argv); }
