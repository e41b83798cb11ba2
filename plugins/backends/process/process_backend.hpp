// The stock backend: supervises child processes directly.
//
// Threads. One supervisor thread owns every child: it forks them (so PR_SET_PDEATHSIG,
// which follows the forking thread, lasts as long as the backend; under mgmtd the fork
// itself runs on mgmtd's main thread, PluginEnv::on_main_thread, so that the children
// survive an in-place upgrade: see handoff.cpp), polls their pipes and
// pidfds, reaps them, samples their memory and runs the timers (stop timeouts, restart
// backoff, max_rss sampling). The public methods only change state under the lock, send
// signals and wake the thread; they never wait, except shutdown(). Events and log chunks
// are published under the same lock, so subscribers see them in the order the state
// changed.
//
// Reaping. The backend makes mgmtd a child subreaper (PR_SET_CHILD_SUBREAPER, unless
// `subreaper: false`), so descendants orphaned by a supervised process are re-parented to
// mgmtd instead of init; as PID 1 (a container sidecar) every orphan of the namespace
// comes to mgmtd anyway. Those orphans must be reaped with a wait for any child, and such a
// wait could steal the exit status of one of our own children from the pidfd path. So
// there is one reaper, the supervisor thread, and it never reaps blindly:
//   - the exit of one of our own children is seen on its pidfd (or, without pidfds, by
//     polling), and the child is reaped by pid in on_exit(), which records its status;
//   - for everything else it peeks with waitid(P_ALL, WEXITED | WNOHANG | WNOWAIT): a
//     zombie that is one of ours goes through on_exit() like above; any other zombie is
//     an adopted orphan and is reaped by its pid (logged at debug level). Peeking again
//     after each reap walks every zombie, so none is left behind and no status is lost.
// Orphans send no pidfd event, so while subreaper (or PID 1) the thread peeks at least
// every kOrphanTickMs. At shutdown it also waits (1 s at most) for the last members of
// groups it has just killed, so that none becomes a zombie after the backend is gone.
// SIGCHLD is left alone: a plugin cannot block it in threads it did not create, and
// nothing here needs it. Side effect: a plugin of the same mgmtd that forks its own
// children and waits for them by pid may find them reaped by this backend; such a plugin
// should set `subreaper: false` here, or use pidfds.
//
// Giving up. A stop sends stop_signal (SIGTERM) to the child's group and the child (or
// the child alone with `stop_group: false`), SIGKILL to the group and the child after
// stop_timeout; a child still there kKillGrace after SIGKILL (uninterruptible sleep) is
// abandoned: its stop waiters are answered with the reason, shutdown no longer waits for
// it (and logs it as left behind), but its pidfd stays polled, so an exit that comes
// after all is still reaped and recorded.
//
// Live reload. reconfigure() diffs the new `processes:` against the live records by id,
// under the lock: an equal spec is left alone; a spec that differs only in fields that do
// not shape the running program (policy, stop and log settings: see needs_restart()) is
// taken at once, the child running on; a removed record is marked `retired`
// (invisible to find(), list() and the start order at once), its child stopped like a
// client stop, and the supervisor erases the record only once the child is reaped and no
// waiter is left, at the one point of its loop where it holds no ManagedProcess pointer
// (after handling the last poll, before building the next poll set); a changed record
// keeps its identity (log rings, followers) and takes the new spec at once when it has no
// child, else when its child is reaped (`next_spec`), restarting then if it was running or
// starting; a new record is appended. deps/dependents and start_order_ are recomputed.
// So a ManagedProcess* stays valid for as long as anything holding it (the supervisor's
// poll set, sample_rss) needs it, and public methods only hold pointers under the lock.
//
// Parent death. Direct children get SIGKILL when the thread that forked them dies
// (PR_SET_PDEATHSIG): the supervisor thread, or under mgmtd its main thread. Their own children do not; the GroupRegistry (group_registry.hpp)
// records the live process groups under state_dir, and the next backend to start kills
// what a SIGKILLed predecessor left before it starts anything.
#pragma once

#include <atomic>
#include <condition_variable>
#include <map>
#include <deque>
#include <limits>
#include <memory>
#include <mutex>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "broadcaster.hpp"
#include "group_registry.hpp"
#include "journal.hpp"
#include "spawn_helper.hpp"
#include "managed_process.hpp"
#include "mgmt/backend.hpp"
#include "mgmt/plugin.hpp"
#include "probes.hpp"
#include "process_config.hpp"
#include "unique_fd.hpp"

namespace mgmt::process {

// Event type of every action taken on a process whose memory passed resources.max_rss.
inline constexpr std::string_view kEventMaxRss = "process.max_rss_exceeded";
// Event type of a live reload that changed a process: which fields, and whether the child
// is restarted for them or keeps running with them applied.
inline constexpr std::string_view kEventReconfigured = "process.reconfigured";

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
  std::string logs_timed(const LogQuery& q, std::string& out,
                         std::vector<std::int64_t>& times) override;
  std::string reopen_logs() override;
  FollowResult follow_logs_timed(
      const LogQuery& q,
      std::function<void(std::string_view chunk, std::int64_t ts_ns)> on_chunk) override;
  std::unique_ptr<Subscription> subscribe_events(
      std::function<void(const Event&)> on_event) override;
  void signal(std::string_view id, int signo, bool group, OpDone done) override;
  // Live reload; see "Live reload" above. Never waits: stops finish on the supervisor.
  std::string reconfigure(const YAML::Node& config, const std::string& file) override;
  // Bumped (under mu_) by every change list() can show; also asks the supervisor for a
  // fresh memory sample once the last one is older than kRssMaxAge.
  std::uint64_t list_version() override;
  // In-place upgrade (handoff.cpp). Possible only when children are forked through
  // PluginEnv::on_main_thread (the thread that execs); refused while a reload is still
  // stopping a removed or changed process. The state: per process its counters, state,
  // timers (as remaining times), child (pid, start time, descriptors) and log rings.
  std::uint32_t handoff_version() override;
  std::string handoff(Handoff& out) override;
  std::string adopt(const Handoff& in) override;

  // The state file of this backend ("" before the first start, or when state_dir is not
  // usable). For tests.
  std::string state_file() const;

 private:
  // Callbacks to run once the lock is released.
  using Completions = std::vector<std::pair<OpDone, OpResult>>;

  // A live (not retired) record: through by_id_, O(1) for status, start, stop and a reload.
  ManagedProcess* find(std::string_view id);
  // Recomputes deps and dependents from each live record's latest spec.
  void relink();
  // Live reload: takes `spec` for a changed process (`fields`: what changed, see
  // changed_fields()); removes a process.
  void change(ManagedProcess& p, ProcessSpec spec, const std::vector<std::string>& fields,
              std::vector<ManagedProcess*>& to_start);
  void retire(ManagedProcess& p, Completions& done);
  void emit(const ManagedProcess* p, std::string_view type, std::string summary);
  void wake();

  // A start asked for by a client or start_all(): also starts dependencies that are down.
  void manual_start(ManagedProcess& p);
  void request_start(ManagedProcess& p);
  void begin_stop(ManagedProcess& p);
  // A start or restart that has not forked yet: cancelling it is the whole stop.
  void cancel_start(ManagedProcess& p, std::string_view why, Completions& done);
  void finish_waiters(std::vector<OpDone>& waiters, const std::string& err,
                      const ManagedProcess& p, Completions& done);
  void mark_read(ManagedProcess& p, int stream);

  // Supervisor thread.
  void supervise();
  void activate(std::unique_lock<std::mutex>& lock);
  void start_ready(Completions& done);
  void stop_queued();
  void spawn(ManagedProcess& p, Completions& done);
  void fail_start(ManagedProcess& p, const std::string& err, Completions& done);
  // The start succeeded (the program was executed, and stayed up start_seconds).
  void now_running(ManagedProcess& p, Completions& done);
  // The child exited before start_seconds: retried (start_retries), else `failed`.
  void failed_start(ManagedProcess& p, const std::string& how,
                    std::chrono::steady_clock::duration ran_for, Completions& done);
  void on_exec_status(ManagedProcess& p, Completions& done);
  void on_output(ManagedProcess& p, int stream, bool drain);
  void on_exit(ManagedProcess& p, Completions& done);
  bool record_exit(ManagedProcess& p, Completions& done);  // false: not reaped (yet)
  void after_exit(ManagedProcess& p);  // a pending spec and restart of a live reload
  void erase_retired(Completions& done);
  // A removed record of the same id still has a child: a re-added one waits for it.
  bool predecessor_alive(const ManagedProcess& p) const;
  void on_timers(SteadyTime now, Completions& done);
  void sample_rss(std::unique_lock<std::mutex>& lock, SteadyTime now);
  void reap_orphans(Completions& done);
  void final_reap();
  void save_groups();
  // A child was forked or reaped: the registry is saved by flush_groups(), not at once (see
  // groups_dirty_).
  void groups_changed();
  void flush_groups();
  int poll_timeout_ms(SteadyTime now) const;
  bool all_children_gone() const;
  // Sets each entry's rss from the RSS cache (see rss_).
  void fill_rss(std::vector<Entry>& entries);
  // Scans /proc for every current group and replaces rss_ (bumping version_ when a value
  // changed). Called without mu_ held.
  void refresh_rss();
  // Asks the supervisor thread for refresh_rss() if the sample is older than kRssMaxAge.
  void want_fresh_rss();
  // Readiness and health (readiness.cpp; the probes run on prober_'s thread, see
  // probes.hpp). Before the fork: the probes' descriptors and environment go into `plan`;
  // false (setup.error says why) when they cannot be made.
  bool prepare_probes(const ManagedProcess& p, ExecPlan& plan, ProbeSetup& setup);
  // After the fork: the prober watches the new child.
  void watch_probes(ManagedProcess& p, ProbeSetup setup);
  void end_probes(ManagedProcess& p);  // the child is gone
  // Forks `plan` through the spawn helper (started on first use, again if it died), or
  // directly when there is none. On the forking thread, with mu_ held by the supervisor.
  std::variant<Child, std::string> spawn_child(const ExecPlan& plan);
  // log_journal: the lines of `chunk` of stream `s` to the journal (supervisor thread); at
  // the stream's `end`, the last line even without its newline.
  void to_journal(ManagedProcess& p, int s, std::string_view chunk, bool end);
  // In-place upgrade (handoff.cpp): a child's readiness and health in the state image
  // (the prober's descriptors go in `fds`), and back; the prober watches an adopted child
  // again.
  nlohmann::json probe_json(ManagedProcess& p, std::vector<int>& fds);
  void adopt_probe_json(ManagedProcess& p, const nlohmann::json& j);
  void adopt_probes(ManagedProcess& p, const ProbeHandover& h);
  // A start with `ready:` counts (state running, start waiters answered, dependents
  // started) only once it is ready.
  static bool awaiting_ready(const ManagedProcess& p) {
    return p.spec.ready && !p.probe.ready_seen;
  }
  void mark_ready(ManagedProcess& p, const std::string& how, std::chrono::milliseconds took);
  // `ready: {log: ...}`: a chunk of the child's output (supervisor thread).
  void watch_log(ManagedProcess& p, int stream, std::string_view chunk);
  // Results of the probe thread, applied under mu_.
  void on_probe_reports(std::vector<ProbeReport>& reports);

  // Something list() shows changed (call with mu_ held, after the change).
  void changed() { version_.fetch_add(1, std::memory_order_release); }

  std::shared_ptr<spdlog::logger> log_;
  UniqueFd wake_fd_;
  UniqueFd epoll_;  // the supervisor's set of child descriptors (supervise())
  const bool subreaper_wanted_;
  const std::string state_dir_;  // resolved (the default when the config names none)

  mutable std::mutex mu_;
  std::condition_variable reaped_;  // shutdown() waits on it
  // Live records in the order of the (latest) file, then retired ones. Records are added
  // by reconfigure() and erased only by the supervisor thread (see Live reload).
  std::vector<std::unique_ptr<ManagedProcess>> procs_;
  std::vector<ManagedProcess*> start_order_;  // live records, dependencies first
  // Id -> index in procs_ of the live record, for find(). Checked at each use and rebuilt
  // when it does not match procs_, so a change of procs_ that does not update it costs a
  // rebuild, never a wrong answer.
  std::unordered_map<std::string, std::size_t> by_id_;
  Broadcaster<const Event&> events_;
  bool shutting_down_ = false;
  bool quit_ = false;
  bool activate_requested_ = false;  // start_all() was called
  std::string state_file_;           // set once the registry is usable

  std::mutex shutdown_mu_;  // serialises shutdown() calls
  bool shut_down_ = false;  // guarded by shutdown_mu_

  // Supervisor thread only (and shutdown() once it has joined the thread).
  bool activated_ = false;      // subreaper set, registry opened
  bool reaper_ = false;         // orphans come to us: peek and reap them
  bool set_subreaper_ = false;  // we set PR_SET_CHILD_SUBREAPER (and unset it at the end)
  pid_t session_ = 0;           // our session: every child's, recorded in the registry
  GroupRegistry registry_;
  std::deque<pid_t> killed_groups_;  // recently SIGKILLed groups, newest last (bounded)
  // save_groups() rewrites the whole file, O(processes): once per fork or exit it made a
  // start or stop of N processes O(N^2) (3,000 starts wrote 180 MB). So the registry is
  // saved once per supervisor loop, and during a long pass (thousands of forks) at least
  // every kGroupsSaveEvery.
  bool groups_dirty_ = false;
  SteadyTime groups_saved_at_{};
  // Resident bytes per process group for list and status. A /proc scan reads every
  // process on the machine, far too slow for each request: while requests keep coming the
  // supervisor thread redoes it once the sample is older than kRssMaxAge (want_fresh_rss),
  // and a request does it itself only when the sample misses a group (a child started
  // since) or is older than kRssSyncAge (nobody asked for a while). Taken without mu_
  // held; takes mu_ inside.
  std::mutex rss_mu_;
  std::map<pid_t, std::uint64_t> rss_;     // guarded by rss_mu_
  // Steady-clock nanos of the sample in rss_ (none yet: long ago).
  std::atomic<std::int64_t> rss_at_ns_{std::numeric_limits<std::int64_t>::min() / 2};
  std::atomic<bool> rss_wanted_{false};     // the supervisor should refresh rss_
  // See list_version(). Starts at 1: 0 means "unknown" to the handlers.
  std::atomic<std::uint64_t> version_{1};
  std::unique_ptr<char[]> read_buf_;  // kReadChunk bytes: the supervisor's reads
  JournalSink journal_;               // log_journal (supervisor thread)
  // The spawn helper (spawn_helper.hpp): used on the forking thread while the supervisor
  // holds mu_; ended by shutdown() and handoff() once the supervisor has stopped.
  std::unique_ptr<SpawnHelper> spawner_;
  bool spawner_failed_ = false;
  // PluginEnv::on_main_thread (guarded by mu_): children are forked through it when set.
  std::function<bool(const std::function<void()>&)> fork_on_main_;
  bool handed_off_ = false;  // guarded by shutdown_mu_: frozen for an exec, never shut down
  std::thread supervisor_;
  // Last, so destroyed first: its thread, which reports under mu_, ends while every other
  // member is still there.
  std::unique_ptr<Prober> prober_ =
      std::make_unique<Prober>([this](std::vector<ProbeReport>& r) { on_probe_reports(r); });
};

}  // namespace mgmt::process
