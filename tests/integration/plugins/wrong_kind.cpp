// A command plugin (0xAA..0xAF), here at version 0.3.1: refused where a handler is mapped,
// and refused by a version constraint it does not meet.
#include "mgmt/handler_support.hpp"
#include "mgmt/plugin.hpp"

namespace {
class Echo final : public mgmt::Handler {
 public:
  explicit Echo(const mgmt::PluginEnv&) {}
  void handle(std::shared_ptr<mgmt::Exchange> ex) override { mgmt::reply_error(*ex, "echo"); }
};
}  // namespace

MGMT_COMMAND_PLUGIN(Echo, "wrong_kind", "0.3.1", "a command plugin")
