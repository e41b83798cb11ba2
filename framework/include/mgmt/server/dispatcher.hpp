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
  // A table replaced by a reload (`current` serves from now on): lets go of the handlers
  // that nothing else holds any more (no exchange, no stream, not kept by `current`), each
  // destroyed here with its library; true once it holds none. Call it where no plugin code
  // is on the stack.
  bool release_unused(const Dispatcher& current) noexcept {
    bool empty = true;
    for (std::size_t t = 0; t < table_.size(); ++t) {
      auto& h = table_[t];
      if (h && (h.use_count() == 1 || h == current.table_[t])) h.reset();
      empty = empty && !h;
    }
    return empty;
  }

 private:
  std::array<std::shared_ptr<Handler>, 256> table_{};
  std::array<Right, 256> rights_{};
};

}  // namespace mgmt
