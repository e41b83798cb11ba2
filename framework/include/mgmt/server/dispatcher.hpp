// Message type → handler: a flat table, filled at start-up, read on every request.
#pragma once

#include <array>
#include <cstdint>
#include <memory>

#include "mgmt/handler.hpp"

namespace mgmt {

class Dispatcher {
 public:
  void set(std::uint8_t type, std::shared_ptr<Handler> h) { table_[type] = std::move(h); }
  Handler* find(std::uint8_t type) const noexcept { return table_[type].get(); }
  // Drops every handler (before the plugin libraries and the backend go).
  void clear() noexcept {
    for (auto& h : table_) h.reset();
  }

 private:
  std::array<std::shared_ptr<Handler>, 256> table_{};
};

}  // namespace mgmt
