// The ManagerAPI contract: what a backend plugin provides to the handlers.
//
// Threading: every method may be called from the server's I/O thread and must return
// quickly (no waiting on children). Long operations (start, stop) complete through a
// callback that the backend may invoke from any thread. Subscription callbacks are invoked
// from the backend's own threads; they must not block and must not call back into the
// backend (the server only queues the data and returns).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "mgmt/messages.hpp"

namespace mgmt {

// A lifecycle or system event, as sent in EventsStream.
struct Event {
  std::string pid;  // process id ("" for system events)
  std::string type;
  std::int64_t ts = 0;  // unix nanos
  std::string summary;
};

// Which log stream of a process.
enum class LogStream : std::uint8_t { out = 0, err = 1 };

struct LogQuery {
  std::string id;
  LogStream stream = LogStream::out;
  std::int64_t since_ns = 0;  // keep chunks that arrived at or after this time; 0 = all
  std::int64_t last_lines = 0;  // keep only the last N lines; 0 = all
  // A follow that resumes (ABI 3): the snapshot is the stream from this position on (what
  // the ring still holds of it) and the filters above are ignored; -1 = not resuming.
  std::int64_t from = -1;
};

// Outcome of start/stop: an error text ("" on success) and the entry after the operation.
struct OpResult {
  std::string err;
  Entry entry;
};
using OpDone = std::function<void(OpResult)>;

// Keeps a subscription alive; destroying it unsubscribes. After the destructor returns the
// callback is never invoked again.
class Subscription {
 public:
  virtual ~Subscription() = default;
};

// A snapshot and a live subscription taken atomically: no chunk is in both, none is lost
// between them.
struct FollowResult {
  std::string err;  // "" on success
  std::string snapshot;
  std::unique_ptr<Subscription> subscription;
  // The stream position (bytes written to the stream, ever) at the end of the snapshot: each
  // chunk delivered afterwards continues it (ABI 3). -1 when the backend does not count.
  std::int64_t position = -1;
  // follow_logs_timed(): the capture times of `snapshot` (see logs_timed()).
  std::vector<std::int64_t> times;
};

// What a backend hands over to the next program in an in-place upgrade (see handoff()).
struct Handoff {
  std::uint32_t version = 0;  // handoff_version() of the backend that wrote it
  std::string state;          // the backend's own format
  std::vector<int> fds;       // kept open across the exec
};

class Backend {
 public:
  virtual ~Backend() = default;

  // Starts the processes marked autostart. Called once, after the server is listening.
  virtual void start_all() = 0;
  // Stops every process (each with its stop timeout) and returns when all have exited.
  virtual void shutdown() = 0;

  virtual std::vector<Entry> list() = 0;
  // nullopt when the id is unknown.
  virtual std::optional<Entry> status(std::string_view id) = 0;

  // `done` is invoked exactly once, possibly from another thread, possibly before return.
  virtual void start(std::string_view id, OpDone done) = 0;
  virtual void stop(std::string_view id, OpDone done) = 0;

  // Snapshot of a log stream, filtered. Returns an error text, or "" and fills `out`.
  virtual std::string logs(const LogQuery& q, std::string& out) = 0;
  // Snapshot (filtered as `q` says) plus every chunk that arrives afterwards.
  virtual FollowResult follow_logs(const LogQuery& q,
                                   std::function<void(std::string_view chunk)> on_chunk) = 0;

  // Every event from now on. Filtering is the subscriber's business.
  virtual std::unique_ptr<Subscription> subscribe_events(
      std::function<void(const Event&)> on_event) = 0;

  // Sends signal `signo` to the process `id`, or to its whole process group when `group`.
  // `done` is invoked exactly once, possibly from another thread, possibly before return,
  // with the entry after the signal was sent (err set on failure: unknown id, not running).
  // Used by the stock `signal` command. The default answers that this backend does not
  // support it, so backends written before this method existed keep compiling.
  // (Declared last so that the slots of the methods above keep their vtable positions.)
  virtual void signal(std::string_view /*id*/, int /*signo*/, bool /*group*/, OpDone done) {
    OpResult r;
    r.err = "sending signals is not supported by this backend";
    done(std::move(r));
  }

  // Live reload: `config` is the backend's new `config:` block. Validate it completely
  // first; if it is not acceptable, change nothing and return why (with file:line:column
  // like the constructor's errors). Otherwise apply it without disturbing what did not
  // change (for the process backend: start added processes, stop removed ones, restart only
  // changed ones) and return "". Must not block (stops complete in the background). The
  // default refuses, so mgmtd keeps the running configuration.
  virtual std::string reconfigure(const YAML::Node& /*config*/, const std::string& /*file*/) {
    return "this backend cannot change its configuration while running: restart mgmtd";
  }

  // A number that changes whenever anything list() returns may have changed (a state, a
  // pid, a counter, a memory sample, the set of processes). The stock list handler reuses
  // its encoded reply while the number stays the same, so a change must bump it in the
  // same critical section that makes the change visible to list() (or later), never
  // before. 0 means "unknown": the reply is rebuilt for every request, which is what the
  // default does. Must be cheap: it is called on every list request.
  virtual std::uint64_t list_version() { return 0; }

  // ---- In-place upgrade (ABI 3) -------------------------------------------------------
  // mgmtd replaces its own program (execve, same pid) without stopping the processes: the
  // running backend hands its state over, the next program's backend adopts it instead of
  // start_all(). Children must survive the exec, so a backend that forks them does so
  // through PluginEnv::on_main_thread (the thread that calls execve: see plugin.hpp).
  //
  // The version of the state this backend writes with handoff(); adopt() reads every
  // version from 1 up to it. 0 (the default) means "cannot hand over": mgmtd then refuses
  // the upgrade instead of losing the processes.
  virtual std::uint32_t handoff_version() { return 0; }
  // Called on the I/O thread once the new program has passed its check. Either refuses
  // (returns why, changes nothing, keeps running as before), or freezes the backend for
  // the exec and returns "": its threads are stopped without touching the processes, no
  // callback runs any more, `out` holds the state (opaque to mgmtd) and the descriptors to
  // keep open across the exec (the state names them by number: numbers do not change).
  // Waiters of operations under way are answered with an error. A frozen backend is never
  // called again, not even its destructor: the exec follows (should it fail, mgmtd execs
  // itself as it is, which adopts the same state).
  virtual std::string handoff(Handoff& /*out*/) {
    return "this backend cannot hand its processes over to a new program";
  }
  // In the new program, on the main thread, after the backend was created from the
  // `config:` it ran with before the exec and before the server serves: takes over what
  // handoff() gave (`fds` are open, not close-on-exec: set it), so that what it shows and
  // does continues as if there had been no exec. Returns "" or why it cannot (mgmtd then
  // exits: the processes are lost, so a check before the exec must make this unlikely).
  virtual std::string adopt(const Handoff& /*in*/) {
    return "this backend cannot adopt processes from another program";
  }

  // ---- Log files and times (ABI 3) ----------------------------------------------------
  // Closes every log file the backend writes, so that the next write opens it again by its
  // path (logrotate's postrotate: SIGUSR1 to mgmtd). Returns "" or what failed. Called on
  // the I/O thread: must not block. The default has no files.
  virtual std::string reopen_logs() { return {}; }

  // logs() with the capture times of the snapshot's bytes in `times`, flat pairs [offset in
  // `out`, unix nanos, ...] (offsets rising, the first 0; empty when the backend keeps no
  // times: the default).
  virtual std::string logs_timed(const LogQuery& q, std::string& out,
                                 std::vector<std::int64_t>& times) {
    times.clear();
    return logs(q, out);
  }
  // follow_logs() whose chunks come with their capture time (unix nanos), and whose result
  // carries the snapshot's times in `times` (as logs_timed()). The default stamps each
  // chunk with the time it is delivered.
  virtual FollowResult follow_logs_timed(
      const LogQuery& q, std::function<void(std::string_view chunk, std::int64_t ts_ns)> on_chunk) {
    return follow_logs(q, [cb = std::move(on_chunk)](std::string_view chunk) {
      cb(chunk, std::chrono::duration_cast<std::chrono::nanoseconds>(
                    std::chrono::system_clock::now().time_since_epoch())
                    .count());
    });
  }
};

}  // namespace mgmt
