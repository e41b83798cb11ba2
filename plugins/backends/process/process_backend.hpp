// The stock backend: supervises child processes directly.
//
// One supervisor thread owns every child: it forks them (so PR_SET_PDEATHSIG, which follows
// the forking thread, lasts as long as the backend), polls their pipes and pidfds, reaps
// them, and runs the timers (stop timeouts, restart backoff). The public methods only
// change state under the lock, send signals and wake the thread; they never wait, except
// shutdown(). Events and log chunks are published under the same lock, so subscribers see
// them in the order the state changed.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "broadcaster.hpp"
#include "managed_process.hpp"
#include "mgmt/backend.hpp"
#include "mgmt/plugin.hpp"
#include "process_config.hpp"
#include "unique_fd.hpp"

namespace mgmt::process {

class ProcessBackend final : public Backend {
 public:
  // Throws std::runtime_error ("<config_file>:<line>:<col>: ...") for a bad config.
  explicit ProcessBackend(const PluginEnv& env);
  ProcessBackend(BackendConfig config, std::shared_ptr<spdlog::logger> log);
  ~ProcessBackend() override;

  ProcessBackend(const ProcessBackend&) = delete;
  ProcessBackend& operator=(const ProcessBackend&) = delete;

  void start_all() override;
  void shutdown() override;
  std::vector<Entry> list() override;
  std::optional<Entry> status(std::string_view id) override;
  void start(std::string_view id, OpDone done) override;
  void stop(std::string_view id, OpDone done) override;
  std::string logs(const LogQuery& q, std::string& out) override;
  FollowResult follow_logs(const LogQuery& q,
                           std::function<void(std::string_view chunk)> on_chunk) override;
  std::unique_ptr<Subscription> subscribe_events(
      std::function<void(const Event&)> on_event) override;

 private:
  // Callbacks to run once the lock is released.
  using Completions = std::vector<std::pair<OpDone, OpResult>>;

  ManagedProcess* find(std::string_view id);
  void emit(const ManagedProcess* p, std::string_view type, std::string summary);
  void wake();

  void request_start(ManagedProcess& p);
  void begin_stop(ManagedProcess& p);
  // A start or restart that has not forked yet: cancelling it is the whole stop.
  void cancel_start(ManagedProcess& p, std::string_view why, Completions& done);
  void finish_waiters(std::vector<OpDone>& waiters, const std::string& err,
                      const ManagedProcess& p, Completions& done);

  // Supervisor thread.
  void supervise();
  void spawn(ManagedProcess& p, Completions& done);
  void fail_start(ManagedProcess& p, const std::string& err, Completions& done);
  void on_exec_status(ManagedProcess& p, Completions& done);
  void on_output(ManagedProcess& p, int stream, bool drain);
  void on_exit(ManagedProcess& p, Completions& done);
  void on_timers(SteadyTime now, Completions& done);
  int poll_timeout_ms(SteadyTime now) const;
  bool all_children_gone() const;

  std::shared_ptr<spdlog::logger> log_;
  UniqueFd wake_fd_;

  mutable std::mutex mu_;
  std::condition_variable reaped_;  // shutdown() waits on it
  std::vector<std::unique_ptr<ManagedProcess>> procs_;  // fixed after construction
  Broadcaster<const Event&> events_;
  bool shutting_down_ = false;
  bool quit_ = false;

  std::mutex shutdown_mu_;  // serialises shutdown() calls
  bool shut_down_ = false;  // guarded by shutdown_mu_

  std::vector<char> read_buf_;  // supervisor thread only
  std::thread supervisor_;
};

}  // namespace mgmt::process
