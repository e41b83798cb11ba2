// Waiting on a condition with a deadline: tests never sleep for a fixed time and hope.
#pragma once

#include <chrono>
#include <thread>

namespace mgmt::test {

// Polls `pred` until it returns true or `timeout` passes; returns the last result.
template <class Pred>
bool wait_until(Pred&& pred, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (pred()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return pred();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

}  // namespace mgmt::test
