// The probe thread: readiness and health checks of the process backend's children.
//
// Why a thread of its own, and one only. Probes must never hold up the supervisor thread
// (it reaps, reads output and runs every timer), and a probe may take its whole timeout
// (a connect to a port that drops SYNs, a health command that hangs). So every probe is
// non-blocking and driven by one poll loop here: tcp and http are non-blocking sockets
// (connect, request, status line), exec probes are children watched through a pidfd and
// an output pipe, notify sockets and s6 readiness pipes are plain descriptors in the same
// poll set. One thread serves any number of probes at once (nothing in it waits for one
// probe), without the supervisor's lock: a slow or stuck probe costs the others nothing
// but its own descriptors. (A pool would only buy parallelism for work that blocks, and
// nothing here does except `file:`, a stat(2).) The thread starts with the first child
// that has a probe, so a backend without probes has no extra thread.
//
// Results go to the backend through `sink`, called on this thread with none of the
// prober's locks held; the backend applies them under its own lock (like a public
// method). The backend calls into the prober with its lock held, so the prober never
// takes the backend's lock: the order is always backend, then prober.
//
// Exec probes are cloned with no exit signal (a "clone child"): the supervisor's
// waitid(P_ALL) for orphans only sees children that send SIGCHLD, so it never reaps a
// probe's status away from this thread, which reaps them with __WALL.
#pragma once

#include <sys/types.h>

#include <array>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "child.hpp"
#include "probe_spec.hpp"
#include "process_config.hpp"
#include "unique_fd.hpp"

namespace mgmt::process {

struct ProbeReport {
  enum class Kind {
    ready,      // the child is ready (`text`: how it was seen)
    not_ready,  // start_timeout passed (`text`: the last probe's result)
    health,     // a health probe's result (`ok`; `changed`: healthy <-> unhealthy)
    status,     // a notify child's STATUS= text
  };
  Kind kind = Kind::ready;
  std::uint64_t token = 0;  // the child it is about (ProbeSetup::token)
  std::string id;           // its process
  bool ok = false;
  bool changed = false;
  std::string text;  // for the event
  std::string last;  // health: the probe's result, as status shows it
  std::chrono::milliseconds took{0};  // ready: since the child was forked
};

// What one child needs from the prober, made before it is forked.
struct ProbeSetup {
  std::uint64_t token = 0;  // unique in this mgmtd
  EnvVars env;              // NOTIFY_SOCKET, WATCHDOG_USEC
  UniqueFd child_fd;        // `ready: {fd: N}`: the pipe's write end, fd N in the child
  int child_fd_number = -1;
  UniqueFd notify;          // our ends: the notify socket, the pipe's read end
  UniqueFd ready_pipe;
  std::string error;  // could not be set up: the start fails with it
};

// A child's readiness and health, as the backend keeps them (under its lock).
struct ProbeState {
  std::uint64_t token = 0;  // of the current child's probes; 0: none
  bool ready_seen = false;
  std::string health;       // starting, healthy, unhealthy ("" without health:)
  std::string last;         // the last probe's result
  std::string status_text;  // a notify child's STATUS=
  std::array<std::string, 2> partial;  // ready: {log: ...}: the line being read, per stream
};

// One child's probe session as an in-place upgrade hands it to the next program: the
// descriptors the child reports through (their numbers stay valid across the exec), the
// schedule as times from now, and what was learnt so far.
struct ProbeHandover {
  std::uint64_t token = 0;
  int notify = -1;      // the notify socket (its abstract name has mgmtd's pid and the token)
  int ready_pipe = -1;  // the s6 readiness pipe's read end
  std::int64_t age_ns = 0;  // since the child was forked (start_timeout, `took`)
  bool is_ready = false;
  bool timed_out = false;
  bool unhealthy = false;
  std::uint32_t failures = 0;
  std::string last;
  std::optional<std::int64_t> next_ns;      // next probe, from now (0: at once)
  std::optional<std::int64_t> watchdog_ns;  // WATCHDOG=1 expected within
};

class Prober {
 public:
  using Sink = std::function<void(std::vector<ProbeReport>&)>;
  explicit Prober(Sink sink);
  ~Prober();  // ends the thread, kills and reaps exec probes still running
  Prober(const Prober&) = delete;
  Prober& operator=(const Prober&) = delete;

  // Descriptors and environment for a child of `spec` (which has ready: or health:).
  static ProbeSetup prepare(const ProcessSpec& spec);
  // Watches the child forked with `setup`: `pid` leads its process group; `uid` is the
  // user it runs as (a notify sender that has exited is checked by it). `ready_exec` and
  // `health_exec`: the exec probes' plans (the child's user, environment and folder), or
  // why there is none.
  void watch(ProbeSetup setup, const ProcessSpec& spec, pid_t pid, uid_t uid,
             std::variant<ExecPlan, std::string> ready_exec,
             std::variant<ExecPlan, std::string> health_exec);
  // The backend saw readiness itself (`ready: {log: ...}`): health checks from now on.
  void ready_seen(std::uint64_t token);
  // The child is gone (or being stopped): no more reports about it.
  void forget(std::uint64_t token);

  // In-place upgrade. stop() ends the thread (call it without the backend's lock: the
  // thread may be waiting for it to deliver reports); reports not yet delivered are
  // delivered first. Then hand_over() takes each session out: a probe in flight is
  // abandoned (an exec probe killed and reaped) and runs again at once in the next
  // program; the descriptors are released to the caller.
  void stop();
  std::optional<ProbeHandover> hand_over(std::uint64_t token);
  // The next program: watches a child of the previous one again, as watch() would have
  // left it. Tokens of later children continue after every adopted one.
  void adopt(const ProbeHandover& h, const ProcessSpec& spec, pid_t pid, uid_t uid,
             std::variant<ExecPlan, std::string> ready_exec,
             std::variant<ExecPlan, std::string> health_exec);

 private:
  struct Attempt;
  struct Session;
  void run();
  void start_attempt(Session& s, std::chrono::steady_clock::time_point now);
  void add(std::unique_ptr<Session> s);
  // A session of the child `pid` of `spec` (watch() and adopt() then fill in the rest).
  static std::unique_ptr<Session> new_session(std::uint64_t token, const ProcessSpec& spec,
                                              pid_t pid, uid_t uid,
                                              std::variant<ExecPlan, std::string> ready_exec,
                                              std::variant<ExecPlan, std::string> health_exec);

  Sink sink_;
  UniqueFd wake_fd_;
  std::mutex mu_;
  std::map<std::uint64_t, std::unique_ptr<Session>> sessions_;
  // Exec probes whose session went away: killed, waiting to be reaped.
  std::vector<std::pair<pid_t, UniqueFd>> reaping_;
  bool quit_ = false;
  std::thread thread_;
};

}  // namespace mgmt::process
