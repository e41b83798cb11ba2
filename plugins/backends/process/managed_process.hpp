// The supervisor's record of one configured process: its spec, lifecycle state, current
// child, pending timers and waiters, and its output. Guarded by the backend's lock.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "broadcaster.hpp"
#include "child.hpp"
#include "log_file.hpp"
#include "log_ring.hpp"
#include "mgmt/backend.hpp"
#include "mgmt/messages.hpp"
#include "probes.hpp"
#include "process_config.hpp"

namespace mgmt::process {

using SteadyTime = std::chrono::steady_clock::time_point;

// A chunk of output as followers get it: the bytes and when they were read (unix nanos).
struct TimedChunk {
  std::string_view bytes;
  std::int64_t ts_ns = 0;
};

struct ManagedProcess {
  explicit ManagedProcess(ProcessSpec s)
      : spec(std::move(s)), logs{LogRing(spec.log_buffer), LogRing(spec.log_buffer)} {
    open_files();
  }

  // Takes a new spec (live reload), only while there is no child: the ring buffers keep
  // what fits in the new log_buffer, the log files follow the new log_file_dir & co.
  void set_spec(ProcessSpec s) {
    const bool files_changed = s.log_files != spec.log_files;
    spec = std::move(s);
    for (auto& ring : logs) ring.set_capacity(spec.log_buffer);
    if (files_changed) open_files();
  }

  ProcessSpec spec;
  std::string_view state = mgmt::state::pending;
  std::vector<ManagedProcess*> deps;        // what it depends on (spec.depends_on)
  std::vector<ManagedProcess*> dependents;  // what depends on it

  std::optional<Child> child;
  std::uint64_t child_serial = 0;  // counts the children it had (the supervisor's epoll set)
  bool spawn_requested = false;  // state starting, waiting for the supervisor to fork
  bool exec_failed = false;      // the current child never ran the program
  bool abandoned = false;        // survived SIGKILL (a stop gave up); no longer waited for
  bool stop_queued = false;      // shutdown: stop once every dependent is down

  // Live reload (ProcessBackend::reconfigure).
  // Removed from the configuration: invisible to clients and out of the start order; its
  // child (if any) is being stopped. The supervisor erases the record once the child is
  // reaped and no waiter is left.
  bool retired = false;
  // Changed while it had a child: the spec to take once that child is reaped.
  // (A pointer: most processes never have one, and a spec is a few hundred bytes.)
  std::unique_ptr<ProcessSpec> next_spec;
  // Changed while running or starting: start it again (with next_spec) once it has stopped.
  bool restart_after_stop = false;

  std::uint64_t restarts = 0;     // automatic restarts, ever
  std::uint32_t consecutive = 0;  // automatic restarts since the last stable run
  std::int64_t started_at = 0;    // unix nanos
  SteadyTime run_started{};
  std::optional<std::int64_t> exit_code;
  std::optional<std::int64_t> exit_signal;
  std::string last_error;
  std::string kill_reason;  // why the supervisor killed the current child (max_rss), if it did

  std::optional<SteadyTime> up_at;       // state starting: running once start_seconds passed
  std::uint32_t start_failures = 0;      // exits before start_seconds, since the last good start
  EnvVars env_file_vars;                 // what the env files held when the child started
  ProbeState probe;                      // readiness and health of the current child

  std::optional<SteadyTime> restart_at;  // state restarting
  std::optional<SteadyTime> kill_at;     // state stopping: SIGKILL the group then
  std::optional<SteadyTime> give_up_at;  // SIGKILL sent: stop waiting then
  std::optional<SteadyTime> sample_at;   // next max_rss sample of the running child
  bool over_rss = false;                 // the last sample was over max_rss

  std::vector<OpDone> start_waiters;
  std::vector<OpDone> stop_waiters;

  std::array<LogRing, 2> logs;
  std::array<std::optional<LogFile>, 2> files;
  std::array<bool, 2> file_error_reported{false, false};
  // log_journal: the line being read per stream; a failed send reported (once per run);
  // lines the journal had no room for since the last report.
  std::array<std::string, 2> journal_partial;
  bool journal_error_reported = false;
  std::uint64_t journal_dropped = 0;
  std::array<Broadcaster<TimedChunk>, 2> followers;
  // The stream the process wrote to last (-1: none yet): a chunk after one on the other
  // stream starts a chunk of its own in the ring (LogRing::append's `coalesce`).
  int last_stream = -1;
  // A log.overflow was sent and no client has read the stream since.
  std::array<bool, 2> overflow_reported{false, false};
  std::array<std::uint64_t, 2> unread_dropped_seen{0, 0};

  bool alive() const { return child.has_value() && !abandoned; }

  // The spec it runs with from its next start on.
  const ProcessSpec& latest_spec() const { return next_spec ? *next_spec : spec; }

  void open_files() {
    for (int i : {0, 1}) {
      files[i].reset();
      file_error_reported[i] = false;
      if (spec.log_files.dir.empty()) continue;
      files[i].emplace(spec.log_files.dir + "/" + spec.id + (i == 0 ? ".stdout" : ".stderr") +
                           ".log",
                       spec.log_files.max_size, spec.log_files.max_files);
      files[i]->set_timestamps(spec.log_files.timestamps);
    }
  }

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
    if (spec.health) e.health = child && !exec_failed ? probe.health : "none";
    e.probe = probe.last;
    e.status_text = probe.status_text;
    return e;
  }
};

}  // namespace mgmt::process
