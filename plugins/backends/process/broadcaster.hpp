// A list of callbacks that every published value is handed to, in publish order.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>

#include "mgmt/backend.hpp"

namespace mgmt::process {

// Thread-safe. The subscriber list lives in a shared block that every Subscription co-owns,
// so a Subscription may outlive the Broadcaster (and the backend that owned it). Destroying
// a Subscription waits for a callback running on another thread to return; after that the
// callback is never invoked again. A callback may even destroy its own Subscription.
template <class T>
class Broadcaster {
 public:
  using Callback = std::function<void(T)>;

  std::unique_ptr<Subscription> subscribe(Callback cb) {
    std::lock_guard lock(shared_->mu);
    const std::uint64_t key = shared_->next_key++;
    shared_->subs.emplace(key, std::make_shared<Callback>(std::move(cb)));
    return std::make_unique<Token>(shared_, key);
  }

  bool has_subscribers() const {
    std::lock_guard lock(shared_->mu);
    return !shared_->subs.empty();
  }

  void publish(T value) {
    std::lock_guard lock(shared_->mu);
    shared_->publisher.store(std::this_thread::get_id(), std::memory_order_relaxed);
    // Looked up by key each step so a callback that unsubscribes (itself or another)
    // does not invalidate the walk.
    for (auto it = shared_->subs.begin(); it != shared_->subs.end();) {
      const std::uint64_t key = it->first;
      const std::shared_ptr<Callback> cb = it->second;  // survives its own unsubscribe
      (*cb)(value);
      it = shared_->subs.upper_bound(key);
    }
    shared_->publisher.store(std::thread::id(), std::memory_order_relaxed);
  }

 private:
  struct Shared {
    std::mutex mu;
    std::map<std::uint64_t, std::shared_ptr<Callback>> subs;
    std::uint64_t next_key = 1;
    // The thread inside publish(), so an unsubscribe from within a callback does not
    // try to take the lock that thread already holds.
    std::atomic<std::thread::id> publisher{};
  };

  class Token final : public Subscription {
   public:
    Token(std::shared_ptr<Shared> shared, std::uint64_t key)
        : shared_(std::move(shared)), key_(key) {}
    ~Token() override {
      if (shared_->publisher.load(std::memory_order_relaxed) == std::this_thread::get_id()) {
        erase();  // called from one of our own callbacks: the lock is already ours
        return;
      }
      std::lock_guard lock(shared_->mu);
      erase();
    }

   private:
    void erase() { shared_->subs.erase(key_); }

    std::shared_ptr<Shared> shared_;
    std::uint64_t key_;
  };

  std::shared_ptr<Shared> shared_ = std::make_shared<Shared>();
};

}  // namespace mgmt::process
