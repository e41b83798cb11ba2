// info {} → {version, abi, started_at, uptime, pid, config, plugins, err} on the request's
// type: what this mgmtd is, how long it has run, and which plugins it loaded from where.
#include <unistd.h>

#include <chrono>

#include "mgmt/commands.hpp"
#include "mgmt/handler_support.hpp"
#include "mgmt/plugin.hpp"

namespace {

class InfoCommand final : public mgmt::Handler {
 public:
  explicit InfoCommand(const mgmt::PluginEnv& env) : server_(env.server) {}

  void handle(std::shared_ptr<mgmt::Exchange> ex) override {
    mgmt::InfoRequest req;
    if (!mgmt::decode_request(*ex, req)) return;
    if (server_ == nullptr) {
      mgmt::reply_command(*ex, mgmt::command_error("this server does not describe itself to plugins"));
      return;
    }
    const mgmt::ServerInfo& s = *server_;
    mgmt::InfoResponse resp;
    resp.version = s.version;
    resp.abi = s.abi;
    resp.started_at = s.started_at;
    const std::int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                                 std::chrono::system_clock::now().time_since_epoch())
                                 .count();
    resp.uptime = s.started_at > 0 && now > s.started_at ? now - s.started_at : 0;
    resp.pid = ::getpid();
    resp.config = s.config_file;
    resp.upgraded_at = s.upgraded_at;
    resp.upgrades = s.upgrades;
    resp.plugins.reserve(s.plugins.size());
    for (const auto& p : s.plugins) {
      resp.plugins.push_back({p.type, p.name, mgmt::kind_name(p.kind), p.version, p.path});
    }
    mgmt::reply_command(*ex, mgmt::encode(resp));
  }

 private:
  const mgmt::ServerInfo* server_;
};

}  // namespace

MGMT_COMMAND_PLUGIN(InfoCommand, MGMT_PLUGIN_NAME, MGMT_PLUGIN_VERSION,
                    "reports the server's version, ABI, uptime, configuration and plugins")
