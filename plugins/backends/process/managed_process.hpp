// The supervisor's record of one configured process: its spec, lifecycle state, current
// child, pending timers and waiters, and its output. Guarded by the backend's lock.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "broadcaster.hpp"
#include "child.hpp"
#include "log_ring.hpp"
#include "mgmt/backend.hpp"
#include "mgmt/messages.hpp"
#include "process_config.hpp"

namespace mgmt::process {

using SteadyTime = std::chrono::steady_clock::time_point;

struct ManagedProcess {
  explicit ManagedProcess(ProcessSpec s)
      : spec(std::move(s)), logs{LogRing(spec.log_buffer), LogRing(spec.log_buffer)} {}

  ProcessSpec spec;
  std::string_view state = mgmt::state::pending;

  std::optional<Child> child;
  bool spawn_requested = false;  // state starting, waiting for the supervisor to fork
  bool exec_failed = false;      // the current child never ran the program
  bool abandoned = false;        // survived SIGKILL during shutdown; no longer waited for

  std::uint64_t restarts = 0;     // automatic restarts, ever
  std::uint32_t consecutive = 0;  // automatic restarts since the last stable run
  std::int64_t started_at = 0;    // unix nanos
  SteadyTime run_started{};
  std::optional<std::int64_t> exit_code;
  std::optional<std::int64_t> exit_signal;
  std::string last_error;

  std::optional<SteadyTime> restart_at;  // state restarting
  std::optional<SteadyTime> kill_at;     // state stopping: SIGKILL the group then
  std::optional<SteadyTime> give_up_at;  // SIGKILL sent: stop waiting then

  std::vector<OpDone> start_waiters;
  std::vector<OpDone> stop_waiters;

  std::array<LogRing, 2> logs;
  std::array<Broadcaster<std::string_view>, 2> followers;
  std::array<bool, 2> overflow_reported{false, false};

  Entry entry() const {
    Entry e;
    e.id = spec.id;
    e.name = spec.name;
    e.state = std::string(state);
    e.pid = child && !exec_failed ? child->pid() : 0;
    e.restarts = restarts;
    e.started_at = started_at;
    e.exit_code = exit_code;
    e.exit_signal = exit_signal;
    e.last_error = last_error;
    return e;
  }
};

}  // namespace mgmt::process
