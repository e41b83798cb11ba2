// A command plugin whose handler throws on every request, and one whose failure comes from
// the backend it calls: both must cost only that client an error reply.
#include <stdexcept>

#include "mgmt/plugin.hpp"

namespace {
class ThrowsInHandle final : public mgmt::Handler {
 public:
  explicit ThrowsInHandle(const mgmt::PluginEnv&) {}
  void handle(std::shared_ptr<mgmt::Exchange>) override {
    throw std::runtime_error("the disk is on fire");
  }
};
}  // namespace

MGMT_COMMAND_PLUGIN(ThrowsInHandle, "throws_in_handle", "1.0.0", "throws from handle()")
