// A handler plugin that claims a plugin ABI this mgmtd does not speak.
#include "mgmt/plugin.hpp"

MGMT_PLUGIN_EXPORT const mgmt::PluginInfo* mgmt_plugin_info() {
  static const mgmt::PluginInfo info{mgmt::kAbiVersion + 998, mgmt::PluginKind::handler,
                                     "wrong_abi", "1.0.0", "built for another ABI"};
  return &info;
}
