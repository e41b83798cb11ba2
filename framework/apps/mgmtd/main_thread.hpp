// Jobs run on mgmtd's main thread: the forks of the backend's children (PluginEnv::
// on_main_thread). The main thread forks every child, and an in-place upgrade execs on the
// main thread, so the children's parent thread is the one thread that survives execve:
// their PR_SET_PDEATHSIG never fires for an upgrade. After the exec the adopted children's
// parent is again the main thread, and so is that of the children forked from then on, which
// keeps it true for the next upgrade. The socket server runs on a thread of its own.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

namespace mgmt::daemon {

class MainThreadJobs {
 public:
  // Built on the main thread.
  MainThreadJobs() : main_(std::this_thread::get_id()) {}

  // From any thread: runs `job` on the main thread and returns true once it has run, or
  // false without running it once close() was called. On the main thread it runs inline.
  bool run(const std::function<void()>& job) {
    if (std::this_thread::get_id() == main_) {
      job();
      return true;
    }
    Pending p{&job};
    std::unique_lock lock(mu_);
    if (closed_) return false;
    queue_.push_back(&p);
    cv_.notify_all();
    done_cv_.wait(lock, [&] { return p.state != Pending::queued || closed_; });
    if (p.state == Pending::queued) {  // closed before the main thread took it
      std::erase(queue_, &p);
      return false;
    }
    done_cv_.wait(lock, [&] { return p.state == Pending::done; });
    return true;
  }

  // The main thread: runs jobs until close().
  void serve() {
    std::unique_lock lock(mu_);
    while (true) {
      cv_.wait(lock, [&] { return closed_ || !queue_.empty(); });
      if (closed_) return;
      Pending* p = queue_.front();
      queue_.pop_front();
      p->state = Pending::running;
      lock.unlock();
      (*p->job)();
      lock.lock();
      p->state = Pending::done;
      done_cv_.notify_all();
    }
  }

  // Any thread: serve() returns once the job it runs (if any) is done; jobs not taken yet,
  // and any asked for later, are refused.
  void close() {
    std::lock_guard lock(mu_);
    closed_ = true;
    cv_.notify_all();
    done_cv_.notify_all();
  }

 private:
  struct Pending {
    enum State { queued, running, done };
    const std::function<void()>* job;
    State state = queued;
  };

  const std::thread::id main_;
  std::mutex mu_;
  std::condition_variable cv_;       // serve(): a job or close()
  std::condition_variable done_cv_;  // run(): its job taken and done, or close()
  std::deque<Pending*> queue_;
  bool closed_ = false;
};

}  // namespace mgmt::daemon
