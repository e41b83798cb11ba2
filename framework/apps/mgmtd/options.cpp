#include "options.hpp"

#include <stdexcept>

namespace mgmt::daemon {

const char* usage() {
  return "usage: mgmtd [-c FILE] [--check] [--socket PATH] [--log-level LEVEL]\n"
         "             [--log-format text|json] [--ready-file PATH]\n"
         "\n"
         "Serves the cliwrap management protocol on a Unix socket and supervises the\n"
         "processes its backend plugin declares.\n"
         "\n"
         "  -c, --config FILE    configuration (default /etc/mgmtd/mgmt.yaml)\n"
         "      --check          validate the configuration and load every plugin, then exit\n"
         "                       (also prints what an in-place upgrade checks: plugin ABI,\n"
         "                       upgrade image and backend handoff versions)\n"
         "      --socket PATH    listen on PATH instead of the configured socket\n"
         "      --log-level L    trace, debug, info, warn, error or off\n"
         "      --log-format F   text (stderr, the default) or json (one object per line on\n"
         "                       stdout: ts, level, logger, msg)\n"
         "      --ready-file P   write P (pid=, socket=) once the socket listens and the\n"
         "                       processes are started; removed on exit\n"
         "      --version        print the version and plugin ABI\n"
         "  -h, --help           this text\n"
         "\n"
         "Signals: SIGINT/SIGTERM stop the processes (each with its stop timeout) and exit 0;\n"
         "SIGHUP reloads the configuration; SIGUSR2 upgrades in place (execs the mgmtd binary\n"
         "on disk with the same pid; the processes keep running). As PID 1 (a container) mgmtd\n"
         "also reaps orphans.\n";
}

Options parse_options(const std::vector<std::string>& args) {
  Options o;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&](const std::string& flag) -> std::string {
      const auto eq = a.find('=');
      if (eq != std::string::npos) return a.substr(eq + 1);
      if (i + 1 >= args.size()) throw std::invalid_argument(flag + " needs a value");
      return args[++i];
    };
    auto is = [&](const char* flag) { return a == flag || a.rfind(std::string(flag) + "=", 0) == 0; };
    if (a == "-c" || is("--config")) {
      o.config = value("--config");
    } else if (is("--socket")) {
      o.socket = value("--socket");
    } else if (is("--log-level")) {
      o.log_level = value("--log-level");
    } else if (is("--log-format")) {
      const std::string f = value("--log-format");
      if (f == "text") {
        o.log_format = LogFormat::text;
      } else if (f == "json") {
        o.log_format = LogFormat::json;
      } else {
        throw std::invalid_argument("--log-format must be text or json, not \"" + f + "\"");
      }
    } else if (is("--ready-file")) {
      o.ready_file = value("--ready-file");
      if (o.ready_file->empty()) throw std::invalid_argument("--ready-file needs a path");
    } else if (a == "--check") {
      o.check = true;
    } else if (a == "-h" || a == "--help") {
      o.help = true;
    } else if (a == "--version") {
      o.version = true;
    } else {
      throw std::invalid_argument("unknown argument \"" + a + "\"");
    }
  }
  return o;
}

}  // namespace mgmt::daemon
