// Message type → handler and the right it needs: a flat table, filled at start-up, read on
// every request.
#pragma once

#include <array>
#include <cstdint>
#include <memory>

#include "mgmt/handler.hpp"
#include "mgmt/server/access.hpp"

namespace mgmt {

class Dispatcher {
 public:
  struct Route {
    Handler* handler = nullptr;  // null: the type is not served
    Right right = Right::control;
  };

  void set(std::uint8_t type, std::shared_ptr<Handler> h) { set(type, std::move(h), default_right(type)); }
  void set(std::uint8_t type, std::shared_ptr<Handler> h, Right right) {
    table_[type] = std::move(h);
    rights_[type] = right;
  }
  Route find(std::uint8_t type) const noexcept { return {table_[type].get(), rights_[type]}; }
  const std::shared_ptr<Handler>& handler(std::uint8_t type) const noexcept { return table_[type]; }
  // Drops every handler (before the plugin libraries and the backend go).
  void clear() noexcept {
    for (auto& h : table_) h.reset();
  }

 private:
  std::array<std::shared_ptr<Handler>, 256> table_{};
  std::array<Right, 256> rights_{};
};

}  // namespace mgmt
