// A handler plugin whose constructor refuses its configuration.
#include <stdexcept>

#include "mgmt/plugin.hpp"

namespace {
class Throwing final : public mgmt::Handler {
 public:
  explicit Throwing(const mgmt::PluginEnv&) {
    throw std::runtime_error("option `greeting` is required");
  }
  void handle(std::shared_ptr<mgmt::Exchange>) override {}
};
}  // namespace

MGMT_HANDLER_PLUGIN(Throwing, "throwing_handler", "1.0.0", "always refuses to start")
