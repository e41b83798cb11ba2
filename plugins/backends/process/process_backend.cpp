#include "process_backend.hpp"

#include <dirent.h>
#include <poll.h>
#include <sys/epoll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iterator>
#include <map>
#include <set>
#include <system_error>

#include <spdlog/spdlog.h>

#include "group_rss.hpp"
#include "mgmt/log.hpp"
#include "proc_stat.hpp"

extern char** environ;

namespace mgmt::process {

namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

// How long a child may survive SIGKILL before shutdown stops waiting for it.
constexpr auto kKillGrace = std::chrono::seconds(2);
// Polling period for children without a pidfd (kernels before 5.3).
constexpr int kReapTickMs = 100;
// Orphans adopted as subreaper (or PID 1) send no pidfd event: look for them this often.
constexpr int kOrphanTickMs = 250;
// At shutdown, how long to wait for the last members of groups just killed.
constexpr auto kOrphanDrain = std::chrono::seconds(1);
constexpr std::size_t kKilledGroupsKept = 64;
// During a long pass of forks or exits, the registry is still saved this often.
constexpr auto kGroupsSaveEvery = std::chrono::milliseconds(100);
constexpr int kReapsPerPass = 1024;
constexpr std::size_t kReadChunk = 64 * 1024;
constexpr int kReadsPerWakeup = 16;
// At exit: enough for a full pipe many times over, bounded against a writer that escaped
// the process group and keeps the pipe open.
constexpr int kReadsAtExit = 256;
// Age of the children's memory sample past which list and status ask the supervisor for a
// new one (and answer with the one they have), and past which they scan /proc themselves.
constexpr std::int64_t kRssMaxAge = 1'000'000'000;
constexpr std::int64_t kRssSyncAge = 10'000'000'000;

std::int64_t steady_nanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::int64_t unix_nanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string command_line(const ProcessSpec& s) {
  std::string out = s.command;
  for (const auto& a : s.args) out += " " + a;
  return out;
}

int stream_index(LogStream s) { return s == LogStream::err ? 1 : 0; }
const char* stream_name(int s) { return s == 0 ? "stdout" : "stderr"; }

// "512 B", "64.0 KiB", "1.5 MiB".
std::string human_bytes(std::uint64_t n) {
  if (n < 1024) return std::to_string(n) + " B";
  static constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(n) / 1024.0;
  std::size_t u = 0;
  while (v >= 1023.95 && u + 1 < std::size(kUnits)) {
    v /= 1024.0;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f %s", v, kUnits[u]);
  return buf;
}

// A process that is down and will not come back by itself: a dependent waiting for it
// would wait forever.
bool down_for_good(const ManagedProcess& d) {
  return !d.spawn_requested && !d.child &&
         (d.state == state::pending || d.state == state::stopped || d.state == state::crashed ||
          d.state == state::failed);
}

// Invokes the completions collected under the lock; never call with the lock held.
template <class Completions>
void run(Completions& done) {
  for (auto& [cb, result] : done) cb(std::move(result));
  done.clear();
}

}  // namespace

ProcessBackend::ProcessBackend(const PluginEnv& env)
    : ProcessBackend(parse_backend_config(env.config, env.config_file), env.log) {
  std::lock_guard lock(mu_);  // the supervisor thread runs already
  fork_on_main_ = env.on_main_thread;
}

ProcessBackend::ProcessBackend(BackendConfig config, std::shared_ptr<spdlog::logger> log)
    : log_(std::move(log)),
      subreaper_wanted_(config.subreaper),
      state_dir_(config.state_dir.empty() ? default_state_dir() : config.state_dir),
      registry_(state_dir_),
      // Not zero-filled: only the pages that reads reach become resident.
      read_buf_(std::make_unique_for_overwrite<char[]>(kReadChunk)) {
  wake_fd_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake_fd_) throw std::system_error(errno, std::system_category(), "eventfd");
  epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_) throw std::system_error(errno, std::system_category(), "epoll_create1");
  const auto order = start_order(config.processes);
  for (auto& spec : config.processes) {
    procs_.push_back(std::make_unique<ManagedProcess>(std::move(spec)));
  }
  relink();
  for (std::size_t i : order) start_order_.push_back(procs_[i].get());
  {
    std::lock_guard lock(mu_);
    for (const auto& p : procs_) emit(p.get(), event::registered, command_line(p->spec));
  }
  supervisor_ = std::thread([this] { supervise(); });
}

ProcessBackend::~ProcessBackend() { shutdown(); }

// ---------------------------------------------------------------------------------------
// Public API (any thread; never waits on a child, except shutdown)

void ProcessBackend::start_all() {
  {
    std::lock_guard lock(mu_);
    if (shutting_down_) return;
    activate_requested_ = true;  // kill leftovers of a killed predecessor even if nothing starts
    for (ManagedProcess* p : start_order_) {
      if (p->spec.autostart && p->state == state::pending) manual_start(*p);
    }
  }
  wake();
}

void ProcessBackend::shutdown() {
  std::lock_guard once(shutdown_mu_);
  if (shut_down_ || handed_off_) return;  // handed off: the next program owns the children
  Completions done;
  {
    std::unique_lock lock(mu_);
    shutting_down_ = true;
    emit(nullptr, event::shutdown_requested, "stopping every process");
    for (const auto& p : procs_) {
      if (p->spawn_requested || p->state == state::restarting) {
        cancel_start(*p, " by shutdown", done);
      } else if (p->child && p->abandoned) {
        // A stop gave up on it earlier: one more try, then it is left behind. (One still
        // stopping goes on as it was; its timers abandon it if it cannot be killed.)
        p->child->signal_group(SIGKILL);
        const std::string what = "process " + p->spec.id + " (pid " +
                                 std::to_string(p->child->pid()) +
                                 ") did not exit after SIGKILL";
        if (log_) mgmt::log::error(*log_, "shutdown: {}; leaving it behind", what);
        emit(nullptr, event::shutdown_incomplete, what);
      } else if (p->child && p->state != state::stopping && !p->exec_failed) {
        p->stop_queued = true;  // the supervisor stops dependents before dependencies
      }
    }
  }
  wake();
  run(done);
  {
    std::unique_lock lock(mu_);
    reaped_.wait(lock, [this] { return all_children_gone(); });
    quit_ = true;
  }
  wake();
  supervisor_.join();
  // The supervisor is gone: what it owned is ours now. Nothing forks any more.
  spawner_.reset();
  final_reap();
  {
    std::lock_guard lock(mu_);
    const bool abandoned = std::any_of(procs_.begin(), procs_.end(),
                                       [](const auto& p) { return p->abandoned; });
    if (abandoned) {
      save_groups();  // a later mgmtd ends them
    } else {
      registry_.remove();
    }
  }
  if (set_subreaper_) ::prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0);
  shut_down_ = true;
}

std::vector<Entry> ProcessBackend::list() {
  std::vector<Entry> out;
  {
    std::lock_guard lock(mu_);
    out.reserve(procs_.size());
    for (const auto& p : procs_) {
      if (p->retired) continue;  // removed by a reload, its child still stopping
      out.push_back(p->entry());
    }
  }
  fill_rss(out);
  return out;
}

std::optional<Entry> ProcessBackend::status(std::string_view id) {
  std::vector<Entry> one(1);
  {
    std::lock_guard lock(mu_);
    const ManagedProcess* p = find(id);
    if (!p) return std::nullopt;
    one[0] = p->entry();
  }
  fill_rss(one);
  return std::move(one[0]);
}

// Resident memory of the children's process groups: see rss_ in the header.
void ProcessBackend::fill_rss(std::vector<Entry>& entries) {
  std::unique_lock rss_lock(rss_mu_);
  const std::int64_t age = steady_nanos() - rss_at_ns_.load(std::memory_order_relaxed);
  bool sync = age >= kRssSyncAge;
  for (std::size_t i = 0; !sync && i < entries.size(); ++i) {
    sync = entries[i].pid > 0 && rss_.count(static_cast<pid_t>(entries[i].pid)) == 0;
  }
  if (sync) {
    rss_lock.unlock();
    refresh_rss();
    rss_lock.lock();
  } else if (age >= kRssMaxAge) {
    want_fresh_rss();  // this answer uses the previous sample, at most kRssSyncAge old
  }
  for (auto& e : entries) {
    if (e.pid <= 0) continue;
    const auto it = rss_.find(static_cast<pid_t>(e.pid));
    if (it != rss_.end()) e.rss = it->second;
  }
}

void ProcessBackend::refresh_rss() {
  // Every current group, so that one scan serves list and status alike.
  std::set<pid_t> groups;
  {
    std::lock_guard lock(mu_);
    for (const auto& p : procs_) {
      if (p->child && !p->exec_failed) groups.insert(p->child->pid());
    }
  }
  // /proc is read without any lock: a child that exits meanwhile only reads as rss 0.
  auto fresh = group_rss(groups);
  for (const pid_t g : groups) fresh.emplace(g, 0);  // gone or unreadable: 0, no rescan
  bool differs;
  {
    std::lock_guard rss_lock(rss_mu_);
    differs = fresh != rss_;
    rss_ = std::move(fresh);
    rss_at_ns_.store(steady_nanos(), std::memory_order_relaxed);
  }
  if (differs) {
    std::lock_guard lock(mu_);
    changed();  // after the new values are visible: a cached list is rebuilt with them
  }
}

void ProcessBackend::want_fresh_rss() {
  const std::int64_t age = steady_nanos() - rss_at_ns_.load(std::memory_order_relaxed);
  if (age < kRssMaxAge) return;
  if (!rss_wanted_.exchange(true, std::memory_order_acq_rel)) wake();
}

std::uint64_t ProcessBackend::list_version() {
  want_fresh_rss();
  return version_.load(std::memory_order_acquire);
}

void ProcessBackend::start(std::string_view id, OpDone done) {
  OpResult immediate;
  {
    std::lock_guard lock(mu_);
    ManagedProcess* p = find(id);
    // A dependency (or a dependency's dependency) on its way down cannot be started yet.
    std::function<const ManagedProcess*(const ManagedProcess&)> stopping_dep =
        [&](const ManagedProcess& q) -> const ManagedProcess* {
      for (const ManagedProcess* d : q.deps) {
        if (d->state == state::stopping) return d;
        if (const ManagedProcess* s = stopping_dep(*d)) return s;
      }
      return nullptr;
    };
    if (!p) {
      immediate.err = std::string(kErrNotFound);
    } else if (shutting_down_) {
      immediate = {"the server is shutting down", p->entry()};
    } else if (p->state == state::running) {
      immediate = {"process " + p->spec.id + " is already running (pid " +
                       std::to_string(p->child ? p->child->pid() : 0) + ")",
                   p->entry()};
    } else if (p->state == state::stopping) {
      immediate = {"process " + p->spec.id + " is stopping; start it once it has stopped",
                   p->entry()};
    } else if (p->state == state::starting) {
      p->start_waiters.push_back(std::move(done));  // joins the start under way
      return;
    } else if (const ManagedProcess* d = stopping_dep(*p)) {
      immediate = {"process " + p->spec.id + " depends on " + d->spec.id +
                       ", which is stopping; start it once " + d->spec.id + " has stopped",
                   p->entry()};
    } else {
      // pending, stopped, crashed, failed, or restarting (a pending restart happens now).
      manual_start(*p);
      p->start_waiters.push_back(std::move(done));
      wake();
      return;
    }
  }
  done(std::move(immediate));
}

void ProcessBackend::stop(std::string_view id, OpDone done) {
  Completions completions;
  {
    std::lock_guard lock(mu_);
    ManagedProcess* p = find(id);
    if (!p) {
      completions.emplace_back(std::move(done), OpResult{std::string(kErrNotFound), {}});
    } else if (p->abandoned) {
      completions.emplace_back(
          std::move(done),
          OpResult{"process " + p->spec.id + " did not exit after SIGKILL", p->entry()});
    } else if (p->state == state::stopping) {
      p->restart_after_stop = false;  // a client's stop wins over a reload's restart
      p->stop_waiters.push_back(std::move(done));
    } else if (p->spawn_requested || p->state == state::restarting) {
      cancel_start(*p, "", completions);
      completions.emplace_back(std::move(done), OpResult{"", p->entry()});
    } else if (p->child && !p->exec_failed &&
               (p->state == state::running || p->state == state::starting)) {
      begin_stop(*p);
      p->stop_waiters.push_back(std::move(done));
      wake();
    } else {
      completions.emplace_back(
          std::move(done), OpResult{"process " + p->spec.id + " is not running (state " +
                                        std::string(p->state) + ")",
                                    p->entry()});
    }
  }
  run(completions);
}

std::string ProcessBackend::logs(const LogQuery& q, std::string& out) {
  std::lock_guard lock(mu_);
  ManagedProcess* p = find(q.id);
  if (!p) return std::string(kErrNotFound);
  const int s = stream_index(q.stream);
  out = p->logs[s].query(q.since_ns, q.last_lines);
  mark_read(*p, s);
  return {};
}

std::string ProcessBackend::logs_timed(const LogQuery& q, std::string& out,
                                       std::vector<std::int64_t>& times) {
  std::lock_guard lock(mu_);
  ManagedProcess* p = find(q.id);
  if (!p) return std::string(kErrNotFound);
  const int s = stream_index(q.stream);
  out = p->logs[s].query(q.since_ns, q.last_lines, &times);
  mark_read(*p, s);
  return {};
}

std::string ProcessBackend::reopen_logs() {
  // The files are written under mu_ (on_output): closed here, each is opened again by its
  // path at its next write.
  std::lock_guard lock(mu_);
  for (auto& p : procs_) {
    for (auto& f : p->files) {
      if (f) f->close();
    }
  }
  return {};
}

FollowResult ProcessBackend::follow_logs(const LogQuery& q,
                                         std::function<void(std::string_view)> on_chunk) {
  return follow_logs_timed(
      q, [cb = std::move(on_chunk)](std::string_view chunk, std::int64_t) { cb(chunk); });
}

FollowResult ProcessBackend::follow_logs_timed(
    const LogQuery& q, std::function<void(std::string_view, std::int64_t)> on_chunk) {
  FollowResult r;
  std::lock_guard lock(mu_);
  ManagedProcess* p = find(q.id);
  if (!p) {
    r.err = std::string(kErrNotFound);
    return r;
  }
  // Chunks are appended and published under mu_, so snapshot and subscription see a
  // single cut of the stream.
  const int s = stream_index(q.stream);
  if (q.from >= 0) {
    r.snapshot = p->logs[s].from(static_cast<std::uint64_t>(q.from));
    r.times = p->logs[s].from_times(static_cast<std::uint64_t>(q.from));
  } else {
    r.snapshot = p->logs[s].query(q.since_ns, q.last_lines, &r.times);
  }
  r.position = static_cast<std::int64_t>(p->logs[s].end_offset());
  r.subscription = p->followers[s].subscribe(
      [cb = std::move(on_chunk)](TimedChunk c) { cb(c.bytes, c.ts_ns); });
  mark_read(*p, s);
  return r;
}

std::unique_ptr<Subscription> ProcessBackend::subscribe_events(
    std::function<void(const Event&)> on_event) {
  return events_.subscribe(std::move(on_event));
}

void ProcessBackend::signal(std::string_view id, int signo, bool group, OpDone done) {
  OpResult r;
  {
    std::lock_guard lock(mu_);
    ManagedProcess* p = find(id);
    if (!p) {
      r.err = std::string(kErrNotFound);
    } else if (!p->child || p->exec_failed || p->abandoned ||
               !(p->state == state::running || p->state == state::starting ||
                 p->state == state::stopping)) {
      r = {"process " + p->spec.id + " is not running (state " + std::string(p->state) + ")",
           p->entry()};
    } else {
      // The child is reaped only under this lock, so its pid (and group) are still its own.
      const pid_t pid = p->child->pid();
      if (::kill(group ? -pid : pid, signo) != 0) {
        r.err = "kill " + std::to_string(group ? -pid : pid) + ": " +
                std::system_category().message(errno);
      }
      if (log_) {
        mgmt::log::info(*log_, "process {}: {} to {} {}", p->spec.id, signal_name(signo),
                        group ? "process group" : "pid", pid);
      }
      r.entry = p->entry();
    }
  }
  done(std::move(r));
}

std::string ProcessBackend::reconfigure(const YAML::Node& config, const std::string& file) {
  // 1. Validate everything before touching anything.
  BackendConfig next;
  try {
    next = parse_backend_config(config, file);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  // Backend-wide settings that only take effect at start-up. Refused rather than ignored,
  // so that a reload never claims to have applied what it has not.
  auto where = [&](const char* key) {
    YAML::Node n = config;
    if (config && config.IsMap() && config[key]) n = config[key];
    const YAML::Mark m = n ? n.Mark() : YAML::Mark::null_mark();
    if (m.is_null()) return file;
    return file + ":" + std::to_string(m.line + 1) + ":" + std::to_string(m.column + 1);
  };
  const std::string dir = next.state_dir.empty() ? default_state_dir() : next.state_dir;
  if (dir != state_dir_) {
    return where("state_dir") + ": state_dir cannot change while mgmtd runs (now " + state_dir_ +
           ", asked for " + dir + "); keep it, or restart mgmtd to move it";
  }
  if (next.subreaper != subreaper_wanted_) {
    return where("subreaper") + ": subreaper cannot change while mgmtd runs (now " +
           (subreaper_wanted_ ? "true" : "false") + "); keep it, or restart mgmtd to change it";
  }

  // What the env files hold now, read before taking the lock: a running child whose files
  // changed since it started is restarted, as for a change of its `env`. (A file that
  // cannot be read is no reason to stop a running child; its next start reports it.)
  std::map<std::string, EnvVars> file_envs;
  for (const auto& spec : next.processes) {
    if (spec.env_files.empty()) continue;
    auto vars = read_env_files(spec.env_files);
    if (auto* v = std::get_if<EnvVars>(&vars)) file_envs.emplace(spec.id, std::move(*v));
  }

  // 2. Apply, all under the lock: clients see the old set or the new one, never a mix.
  const auto order = start_order(next.processes);
  Completions done;
  {
    std::lock_guard lock(mu_);
    if (shutting_down_) return "the server is shutting down";
    std::set<std::string> wanted;
    for (const auto& spec : next.processes) wanted.insert(spec.id);
    // Removed: stopped like a client stop, erased by the supervisor once the child is gone.
    for (const auto& p : procs_) {
      if (!p->retired && wanted.count(p->spec.id) == 0) retire(*p, done);
    }
    // Changed ones take their spec (or restart towards it); new ones get a record.
    std::vector<ManagedProcess*> in_file_order;
    std::vector<ManagedProcess*> to_start;
    std::vector<std::unique_ptr<ManagedProcess>> added;
    for (const auto& spec : next.processes) {
      if (ManagedProcess* p = find(spec.id)) {
        in_file_order.push_back(p);
        auto fields = changed_fields(p->latest_spec(), spec);
        const auto files = file_envs.find(spec.id);
        if (!p->next_spec && p->alive() && !p->exec_failed && files != file_envs.end() &&
            spec.env_files == p->spec.env_files && files->second != p->env_file_vars) {
          fields.emplace_back("env_file contents");
        }
        if (!fields.empty()) change(*p, spec, fields, to_start);
        continue;
      }
      added.push_back(std::make_unique<ManagedProcess>(spec));
      ManagedProcess* p = added.back().get();
      in_file_order.push_back(p);
      emit(p, event::registered, command_line(p->spec));
      if (p->spec.autostart && activate_requested_) to_start.push_back(p);
    }
    // The new order: live records as in the file, then the retired ones.
    std::vector<std::unique_ptr<ManagedProcess>> records;
    records.reserve(in_file_order.size() + procs_.size());
    // Owner of each record by address: a search per record made a reload of 10,000
    // processes O(N^2).
    std::unordered_map<const ManagedProcess*, std::unique_ptr<ManagedProcess>*> owner;
    owner.reserve(procs_.size() + added.size());
    for (auto& q : procs_) owner.emplace(q.get(), &q);
    for (auto& q : added) owner.emplace(q.get(), &q);
    for (ManagedProcess* p : in_file_order) records.push_back(std::move(*owner.at(p)));
    for (auto& q : procs_) {
      if (q) records.push_back(std::move(q));  // retired
    }
    procs_ = std::move(records);
    by_id_.clear();  // rebuilt by the next find()
    changed();  // the order of the list follows the file
    start_order_.clear();
    for (std::size_t i : order) start_order_.push_back(in_file_order[i]);
    relink();
    // Starts last, in dependency order, once the links are those of the new set.
    const std::set<ManagedProcess*> starting(to_start.begin(), to_start.end());
    for (ManagedProcess* p : start_order_) {
      if (starting.count(p) > 0) manual_start(*p);
    }
    if (log_) {
      mgmt::log::info(*log_, "process backend reconfigured: {} process{}", in_file_order.size(),
                      in_file_order.size() == 1 ? "" : "es");
    }
  }
  wake();
  run(done);
  return {};
}

std::string ProcessBackend::state_file() const {
  std::lock_guard lock(mu_);
  return state_file_;
}

// ---------------------------------------------------------------------------------------
// Helpers (mu_ held)

ManagedProcess* ProcessBackend::find(std::string_view id) {
  auto lookup = [&]() -> ManagedProcess* {
    const auto it = by_id_.find(std::string(id));
    if (it == by_id_.end() || it->second >= procs_.size()) return nullptr;
    ManagedProcess* p = procs_[it->second].get();
    return !p->retired && p->spec.id == id ? p : nullptr;
  };
  if (ManagedProcess* p = lookup()) return p;
  // Not found, or the index is stale: rebuild it (O(processes), like the scan it replaces).
  by_id_.clear();
  for (std::size_t i = 0; i < procs_.size(); ++i) {
    if (!procs_[i]->retired) by_id_[procs_[i]->spec.id] = i;
  }
  return lookup();
}

void ProcessBackend::relink() {
  for (const auto& p : procs_) {
    p->deps.clear();
    p->dependents.clear();
  }
  for (const auto& p : procs_) {
    if (p->retired) continue;
    for (const auto& dep : p->latest_spec().depends_on) {
      if (ManagedProcess* d = find(dep)) {
        p->deps.push_back(d);
        d->dependents.push_back(p.get());
      }
    }
  }
}

void ProcessBackend::change(ManagedProcess& p, ProcessSpec spec,
                            const std::vector<std::string>& fields,
                            std::vector<ManagedProcess*>& to_start) {
  std::string list;
  for (const auto& f : fields) list += (list.empty() ? "" : ", ") + f;
  const bool restart = needs_restart(fields);
  if (log_) mgmt::log::info(*log_, "process {}: configuration changed ({})", p.spec.id, list);
  changed();
  std::string how;
  bool stop_now = false;
  if (restart) {
    // Another program, in effect: its counts start over.
    p.restarts = 0;
    p.consecutive = 0;
    p.start_failures = 0;
  }
  if (!p.child) {
    p.next_spec.reset();
    p.set_spec(std::move(spec));
    how = "no restart needed: not running, taken at its next start";
    // A pending start forks with the new spec anyway; a pending restart of a changed
    // program happens now.
    if (restart && p.state == state::restarting) {
      to_start.push_back(&p);
      how = "restart needed: the pending restart happens now";
    }
  } else if (p.next_spec) {
    // Already on its way to an earlier reload's spec: this one replaces it.
    *p.next_spec = std::move(spec);
    how = "restart needed: taken when the child being stopped has exited";
  } else if (!restart) {
    // Nothing the running program sees: taken at once, the child runs on (same pid, logs
    // and counters). Timers that are running follow the new values.
    const bool resources_changed = spec.resources != p.spec.resources;
    p.set_spec(std::move(spec));
    if (resources_changed) {
      p.over_rss = false;
      p.sample_at.reset();
      if (p.spec.resources.max_rss > 0) {
        p.sample_at = steady_clock::now() + p.spec.resources.sample_interval;
      }
    }
    if (p.up_at) p.up_at = p.run_started + p.spec.start_seconds;
    how = "no restart needed: applied in place, pid " + std::to_string(p.child->pid()) + " kept";
  } else {
    // The child runs the old spec: it is stopped (with the old stop settings) and the new
    // spec is taken once it is reaped.
    p.next_spec = std::make_unique<ProcessSpec>(std::move(spec));
    if (!p.exec_failed && (p.state == state::running || p.state == state::starting)) {
      how = "restart needed: stopping pid " + std::to_string(p.child->pid()) +
            " to start it again";
      stop_now = true;
    } else {
      // Already stopping (a client's stop, or an earlier reload's restart): it goes on as
      // it was.
      how = "restart needed: taken when the child being stopped has exited";
    }
  }
  emit(&p, kEventReconfigured, "changed: " + list + "; " + how);
  if (stop_now) {  // after the event, which says why
    begin_stop(p);
    p.restart_after_stop = true;
  }
}

void ProcessBackend::retire(ManagedProcess& p, Completions& done) {
  if (log_) mgmt::log::info(*log_, "process {}: removed from the configuration", p.spec.id);
  p.retired = true;
  changed();
  p.next_spec.reset();
  p.restart_after_stop = false;
  p.stop_queued = false;
  if (p.spawn_requested || p.state == state::restarting) {
    cancel_start(p, ": removed from the configuration", done);
  } else if (p.child && !p.exec_failed &&
             (p.state == state::running || p.state == state::starting)) {
    begin_stop(p);
  }
  // Stopping already, or a failed exec waiting to be reaped: the supervisor reaps it as usual.
}

bool ProcessBackend::predecessor_alive(const ManagedProcess& p) const {
  return std::any_of(procs_.begin(), procs_.end(), [&](const auto& q) {
    return q->retired && q->child && q->spec.id == p.spec.id;
  });
}

void ProcessBackend::emit(const ManagedProcess* p, std::string_view type, std::string summary) {
  changed();  // every lifecycle event goes with a change list() shows
  Event e;
  e.pid = p ? p->spec.id : std::string();
  e.type = std::string(type);
  e.ts = unix_nanos();
  e.summary = std::move(summary);
  events_.publish(e);
}

void ProcessBackend::wake() {
  const std::uint64_t one = 1;
  [[maybe_unused]] const auto n = ::write(wake_fd_.get(), &one, sizeof one);
}

void ProcessBackend::manual_start(ManagedProcess& p) {
  // Dependencies that are down come first (their events too); ones on their way up, or
  // waiting out a restart backoff, are waited for.
  for (ManagedProcess* d : p.deps) {
    if (down_for_good(*d)) manual_start(*d);
  }
  p.restart_at.reset();
  p.consecutive = 0;
  p.start_failures = 0;
  p.last_error.clear();
  request_start(p);
}

void ProcessBackend::request_start(ManagedProcess& p) {
  p.state = state::starting;
  p.spawn_requested = true;
  emit(&p, event::starting, command_line(p.spec));
}

void ProcessBackend::begin_stop(ManagedProcess& p) {
  p.stop_queued = false;
  p.up_at.reset();  // a stop during start_seconds: the start no longer comes
  p.state = state::stopping;
  p.kill_at = steady_clock::now() + p.spec.stop_timeout;
  const pid_t pid = p.child->pid();
  emit(&p, event::stopping,
       signal_name(p.spec.stop_signal) + (p.spec.stop_group ? " to process group " : " to pid ") +
           std::to_string(pid) + ", SIGKILL in " + std::to_string(p.spec.stop_timeout.count()) +
           " ms");
  p.child->signal(p.spec.stop_signal, p.spec.stop_group);
}

void ProcessBackend::cancel_start(ManagedProcess& p, std::string_view why, Completions& done) {
  const bool was_restart = p.state == state::restarting;
  p.spawn_requested = false;
  p.restart_at.reset();
  p.state = state::stopped;
  emit(&p, event::stopped,
       std::string(was_restart ? "restart" : "start") + " cancelled" + std::string(why));
  finish_waiters(p.start_waiters, "process " + p.spec.id + " was stopped before it started", p,
                 done);
}

void ProcessBackend::finish_waiters(std::vector<OpDone>& waiters, const std::string& err,
                                    const ManagedProcess& p, Completions& done) {
  for (auto& w : waiters) done.emplace_back(std::move(w), OpResult{err, p.entry()});
  waiters.clear();
}

void ProcessBackend::mark_read(ManagedProcess& p, int s) {
  p.logs[s].mark_read();
  p.overflow_reported[s] = false;  // the next loss is news again
}

bool ProcessBackend::all_children_gone() const {
  return std::all_of(procs_.begin(), procs_.end(), [](const auto& p) { return !p->alive(); });
}

// ---------------------------------------------------------------------------------------
// Supervisor thread

void ProcessBackend::supervise() {
  // Which process and which of its descriptors a watched descriptor stands for.
  enum class Kind { wake, exec_status, out, err, exit };
  struct Watch {
    ManagedProcess* p = nullptr;  // null: not watched (or the wake descriptor)
    Kind kind = Kind::wake;
    std::uint64_t serial = 0;  // p->child_serial: the same number, another child's pipe
    bool operator==(const Watch&) const = default;
  };
  // The children's descriptors are watched through one epoll set kept in step with the
  // records, so a wakeup costs what is ready rather than every child's descriptors (a
  // poll() over 3N descriptors four times a second was most of the idle CPU at thousands
  // of processes). `watched` is what the set holds, indexed by descriptor (numbers are
  // small and dense: 24 bytes per descriptor, no node per entry); `seen` marks those still
  // wanted in the current pass; `ready`, what the last wait returned.
  //
  // A descriptor closed here leaves the set by itself once no process holds it; while a
  // child being forked still holds a copy (until its exec closes it), the set may report
  // the old pipe under a number that now names another. Harmless: every handler below
  // checks the descriptor is the child's and reads without blocking.
  std::vector<Watch> watched;
  std::vector<std::uint32_t> seen;
  std::uint32_t pass = 0;
  std::vector<int> live;  // descriptors in the set besides the wake descriptor
  // More ready at once than fit are reported by the next wait (level-triggered).
  std::vector<epoll_event> ready(1024);
  std::vector<std::pair<int, Watch>> todo;
  int nready = 0;
  const int ep = epoll_.get();
  auto watch = [ep](int fd) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (::epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0) return true;
    return errno == EEXIST && ::epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev) == 0;
  };
  if (!watch(wake_fd_.get()) && log_) {
    mgmt::log::critical(*log_, "process backend: cannot watch its wake-up descriptor: {}",
                        std::system_category().message(errno));
  }

  std::unique_lock lock(mu_);
  while (true) {
    Completions done;
    // 1. What the last wait reported: per process the exec status first, then output,
    //    then the exit, so output and a failed exec precede the exit (sorted by kind).
    todo.clear();
    for (int i = 0; i < nready; ++i) {
      const int fd = ready[static_cast<std::size_t>(i)].data.fd;
      if (fd == wake_fd_.get()) {
        todo.emplace_back(fd, Watch{});
      } else if (static_cast<std::size_t>(fd) < watched.size() && watched[fd].p != nullptr) {
        todo.emplace_back(fd, watched[fd]);
      }
    }
    std::stable_sort(todo.begin(), todo.end(),
                     [](const auto& a, const auto& b) { return a.second.kind < b.second.kind; });
    for (const auto& [fd, w] : todo) {
      ManagedProcess* p = w.p;
      switch (w.kind) {
        case Kind::wake: {
          std::uint64_t n;
          [[maybe_unused]] const auto r = ::read(wake_fd_.get(), &n, sizeof n);
          break;
        }
        case Kind::exec_status:
          if (p->child && p->child->status_fd() == fd) on_exec_status(*p, done);
          break;
        case Kind::out:
        case Kind::err: {
          const int s = w.kind == Kind::out ? Child::out : Child::err;
          if (p->child && p->child->stream_fd(static_cast<Child::Stream>(s)) == fd) {
            on_output(*p, s, false);
          }
          break;
        }
        case Kind::exit:
          if (p->child && p->child->pidfd() == fd) on_exit(*p, done);
          break;
      }
    }
    bool tick = false;  // some child has no pidfd: look for its exit periodically
    for (const auto& p : procs_) {
      if (p->child && p->child->pidfd() < 0) {
        on_exit(*p, done);
        tick = tick || p->child.has_value();
      }
    }
    reap_orphans(done);

    // 2. Timers and memory samples, then the stops shutdown queued, then forks asked for
    //    by start() or by a restart timer.
    auto now = steady_clock::now();
    on_timers(now, done);
    sample_rss(lock, now);
    if (rss_wanted_.exchange(false, std::memory_order_acq_rel)) {
      lock.unlock();
      refresh_rss();
      lock.lock();
    }
    if (shutting_down_) stop_queued();
    if (!activated_ && !quit_ &&
        (activate_requested_ ||
         std::any_of(procs_.begin(), procs_.end(), [](const auto& p) { return p->spawn_requested; }))) {
      activate(lock);
    }
    start_ready(done);
    // Every record the last wait named has been used: records removed by a reload and
    // done with can go now (their descriptors are closed, so `watched` forgets them below).
    erase_retired(done);
    flush_groups();
    if (all_children_gone()) reaped_.notify_all();
    if (quit_) {
      lock.unlock();
      run(done);
      return;
    }

    // 3. The epoll set in step with the children: what is new is added, what is gone
    //    forgotten.
    ++pass;
    for (const auto& p : procs_) {
      if (!p->child) continue;
      const Child& c = *p->child;
      auto want = [&](int fd, Kind k) {
        if (fd < 0) return;
        const auto i = static_cast<std::size_t>(fd);
        if (i >= watched.size()) {
          watched.resize(i + 1);
          seen.resize(i + 1, 0);
        }
        seen[i] = pass;
        const Watch w{p.get(), k, p->child_serial};
        if (watched[i] == w) return;
        // New, or the number now names another child's descriptor. Recorded once the set
        // has it, so a failed add is tried again at the next pass.
        if (!watch(fd)) {
          if (log_) {
            mgmt::log::error(*log_, "process backend: cannot watch descriptor {}: {}", fd,
                             std::system_category().message(errno));
          }
          return;
        }
        if (watched[i].p == nullptr) live.push_back(fd);
        watched[i] = w;
      };
      want(c.status_fd(), Kind::exec_status);
      want(c.stream_fd(Child::out), Kind::out);
      want(c.stream_fd(Child::err), Kind::err);
      want(c.pidfd(), Kind::exit);
    }
    // A descriptor no longer wanted has been closed (that is the only way one goes): the
    // kernel has taken it out of the set. No EPOLL_CTL_DEL: by now its number may name a
    // descriptor another thread has opened.
    std::erase_if(live, [&](int fd) {
      const auto i = static_cast<std::size_t>(fd);
      if (seen[i] == pass) return false;
      watched[i] = Watch{};
      return true;
    });

    now = steady_clock::now();
    int timeout = poll_timeout_ms(now);
    auto at_most = [&timeout](int ms) { timeout = timeout < 0 ? ms : std::min(timeout, ms); };
    if (tick) at_most(kReapTickMs);
    if (reaper_) at_most(kOrphanTickMs);

    lock.unlock();
    run(done);
    // Only this thread opens or closes child descriptors, so the set stays valid while
    // the lock is released.
    nready = ::epoll_wait(ep, ready.data(), static_cast<int>(ready.size()), timeout);
    if (nready < 0) nready = 0;
    lock.lock();
  }
}

void ProcessBackend::activate(std::unique_lock<std::mutex>& lock) {
  activated_ = true;
  lock.unlock();
  session_ = ::getsid(0);
  const bool pid1 = ::getpid() == 1;
  std::string subreaper_error;
  if (subreaper_wanted_ && !pid1) {
    if (::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0) {
      set_subreaper_ = true;
    } else {
      subreaper_error = std::system_category().message(errno);
    }
  }
  reaper_ = pid1 || set_subreaper_;
  // Before anything is spawned: end what a killed predecessor left behind.
  std::vector<std::string> notes;
  const std::string err = registry_.open(notes);
  lock.lock();
  if (registry_.usable()) state_file_ = registry_.file();
  if (!log_) return;
  for (const auto& note : notes) mgmt::log::warn(*log_, "{}", note);
  if (!err.empty()) {
    mgmt::log::error(*log_,
                     "{}: process groups are not recorded, so children's children outlive a "
                     "SIGKILLed mgmtd",
                     err);
  }
  if (!subreaper_error.empty()) {
    mgmt::log::warn(*log_, "cannot become child subreaper ({}): orphans go to init",
                    subreaper_error);
  }
  mgmt::log::debug(*log_, "{}; state file {}",
                   pid1             ? "running as PID 1: reaping every orphan"
                   : set_subreaper_ ? "child subreaper: reaping orphaned descendants"
                                    : "not reaping orphans",
                   registry_.usable() ? registry_.file() : std::string("(none)"));
}

void ProcessBackend::start_ready(Completions& done) {
  // predecessor_alive() scans every record: only worth it while a removed one still runs
  // (this pass retires none).
  const bool any_retired = std::any_of(procs_.begin(), procs_.end(),
                                       [](const auto& q) { return q->retired && q->child; });
  // In dependency order, so a failure reaches every dependent in this one pass.
  for (ManagedProcess* p : start_order_) {
    if (!p->spawn_requested || p->child) continue;  // a failed exec may wait to be reaped
    const ManagedProcess* blocker = nullptr;
    bool ready = true;
    for (const ManagedProcess* d : p->deps) {
      if (down_for_good(*d) && !blocker) blocker = d;
      ready = ready && d->state == state::running;
    }
    if (blocker) {
      p->spawn_requested = false;
      std::string why = "dependency " + blocker->spec.id + " is " + std::string(blocker->state);
      if (!blocker->last_error.empty()) why += " (" + blocker->last_error + ")";
      fail_start(*p, why, done);
      continue;
    }
    // A removed process of the same id is still on its way down: never two at once.
    if (ready && !(any_retired && predecessor_alive(*p))) spawn(*p, done);
  }
}

void ProcessBackend::stop_queued() {
  // Dependents first: a process is stopped once nothing that depends on it still runs.
  for (const auto& p : procs_) {
    if (!p->stop_queued) continue;
    if (!p->child || p->exec_failed || p->state == state::stopping) {
      p->stop_queued = false;
      continue;
    }
    const bool dependents_down = std::all_of(p->dependents.begin(), p->dependents.end(),
                                             [](const ManagedProcess* d) { return !d->alive(); });
    if (dependents_down) begin_stop(*p);
  }
}

void ProcessBackend::spawn(ManagedProcess& p, Completions& done) {
  p.spawn_requested = false;
  // Read at each start, so an edited file takes effect at the next one. (Small files,
  // read under the lock: a start is rare next to everything else the lock guards.)
  EnvVars file_env;
  if (!p.spec.env_files.empty()) {
    auto vars = read_env_files(p.spec.env_files);
    if (auto* err = std::get_if<std::string>(&vars)) return fail_start(p, *err, done);
    file_env = std::move(std::get<EnvVars>(vars));
  }
  auto plan = make_exec_plan(p.spec, environ, file_env);
  if (auto* err = std::get_if<std::string>(&plan)) return fail_start(p, *err, done);
  ProbeSetup probes;
  if (!prepare_probes(p, std::get<ExecPlan>(plan), probes)) return fail_start(p, probes.error, done);
  // Forked by the main thread when mgmtd offers it, so that children survive an in-place
  // upgrade (see PluginEnv::on_main_thread).
  std::variant<Child, std::string> child = std::string("mgmtd is exiting");
  if (!fork_on_main_) {
    child = spawn_child(std::get<ExecPlan>(plan));
  } else {
    (void)fork_on_main_([&] { child = spawn_child(std::get<ExecPlan>(plan)); });
  }
  if (auto* err = std::get_if<std::string>(&child)) return fail_start(p, *err, done);
  p.child.emplace(std::move(std::get<Child>(child)));
  ++p.child_serial;
  p.env_file_vars = std::move(file_env);
  p.exec_failed = false;
  p.kill_reason.clear();
  p.over_rss = false;
  p.started_at = unix_nanos();
  p.run_started = steady_clock::now();
  p.sample_at.reset();
  if (p.spec.resources.max_rss > 0) p.sample_at = p.run_started + p.spec.resources.sample_interval;
  changed();  // a pid and a start time
  groups_changed();
  watch_probes(p, std::move(probes));
  if (log_) mgmt::log::debug(*log_, "process {}: spawned pid {}", p.spec.id, p.child->pid());
}

void ProcessBackend::fail_start(ManagedProcess& p, const std::string& err, Completions& done) {
  p.last_error = err;
  p.state = state::failed;
  emit(&p, event::failed, err);
  if (log_) mgmt::log::error(*log_, "process {}: {}", p.spec.id, err);
  finish_waiters(p.start_waiters, err, p, done);
}

void ProcessBackend::on_exec_status(ManagedProcess& p, Completions& done) {
  const auto result = p.child->read_exec_status();
  if (!result) return;
  if (!result->empty()) {
    p.exec_failed = true;  // the exit that follows is not the program's
    if (p.state == state::starting) return fail_start(p, *result, done);
    p.last_error = *result;
    changed();
  } else if (p.state == state::starting) {
    if (p.spec.start_seconds.count() > 0) {
      // Executed; it counts as started (and its start waiters are answered) once it has
      // stayed up start_seconds (on_timers).
      p.up_at = p.run_started + p.spec.start_seconds;
      return;
    }
    if (awaiting_ready(p)) return;  // running once ready (mark_ready)
    return now_running(p, done);
  } else if (p.spec.start_seconds.count() > 0) {
    // Stopped before its exec was even seen: short of start_seconds, so the start did not
    // happen; the exit answers its waiters (record_exit).
    return;
  }
  finish_waiters(p.start_waiters, *result, p, done);
}

void ProcessBackend::now_running(ManagedProcess& p, Completions& done) {
  p.up_at.reset();
  p.start_failures = 0;
  p.state = state::running;
  std::string summary = "pid " + std::to_string(p.child->pid());
  if (p.spec.start_seconds.count() > 0) {
    summary += " (up " + std::to_string(p.spec.start_seconds.count()) + " ms)";
  }
  emit(&p, event::started, std::move(summary));
  finish_waiters(p.start_waiters, "", p, done);
}

void ProcessBackend::failed_start(ManagedProcess& p, const std::string& how,
                                  steady_clock::duration ran_for, Completions& done) {
  const std::string early =
      how + " after " + std::to_string(std::chrono::duration_cast<milliseconds>(ran_for).count()) +
      (p.spec.ready ? std::string(" ms, before it was ready")
                    : " ms, before start_seconds (" +
                          std::to_string(p.spec.start_seconds.count()) + " ms)");
  p.state = state::crashed;
  emit(&p, event::crashed, early);
  if (shutting_down_) {
    finish_waiters(p.start_waiters, "process " + p.spec.id + " " + early, p, done);
    return;
  }
  if (p.start_failures >= p.spec.start_retries) {
    const std::uint32_t starts = p.start_failures + 1;
    p.state = state::failed;
    p.last_error = "gave up after " + std::to_string(starts) + " failed start" +
                   (starts == 1 ? "" : "s") + " (last: " + early + ")";
    emit(&p, event::failed, p.last_error);
    if (log_) mgmt::log::error(*log_, "process {}: {}", p.spec.id, p.last_error);
    finish_waiters(p.start_waiters, p.last_error, p, done);
    return;
  }
  // Retried with the restart backoff, whatever the restart policy (as supervisord's
  // startretries); start waiters wait on for the outcome.
  ++p.start_failures;
  ++p.restarts;
  auto delay = p.spec.restart_backoff;
  for (std::uint32_t i = 1; i < p.start_failures && delay < p.spec.restart_backoff_max; ++i) {
    delay *= 2;
  }
  delay = std::min(delay, p.spec.restart_backoff_max);
  p.state = state::restarting;
  emit(&p, event::restarting,
       early + ": next attempt in " + std::to_string(delay.count()) + " ms (start retry " +
           std::to_string(p.start_failures) + " of " + std::to_string(p.spec.start_retries) + ")");
  p.restart_at = steady_clock::now() + delay;
}

void ProcessBackend::on_output(ManagedProcess& p, int s, bool drain) {
  Child& c = *p.child;
  const auto stream = static_cast<Child::Stream>(s);
  // Bounded per wakeup so one chatty child cannot starve the others; at exit, read what
  // is left and close.
  const int reads = drain ? kReadsAtExit : kReadsPerWakeup;
  for (int i = 0; i < reads; ++i) {
    const ssize_t n = ::read(c.stream_fd(stream), read_buf_.get(), kReadChunk);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN && !drain) return;
    if (n <= 0) {  // EOF, an error, or nothing left after the exit
      c.close_stream(stream);
      return;
    }
    const std::string_view chunk(read_buf_.get(), static_cast<std::size_t>(n));
    if (p.spec.ready) watch_log(p, s, chunk);
    // Followers get every chunk whole: with one listening, nothing is lost unread.
    const std::int64_t now = unix_nanos();
    p.logs[s].append(now, chunk, p.followers[s].has_subscribers(), p.last_stream == s);
    p.last_stream = s;
    if (p.files[s]) {
      const std::string err = p.files[s]->write(chunk, now);
      if (!err.empty() && !p.file_error_reported[s]) {
        p.file_error_reported[s] = true;  // once per run, not once per chunk
        p.last_error = "log file: " + err;
        changed();
        if (log_) mgmt::log::error(*log_, "process {}: {}", p.spec.id, p.last_error);
      }
    }
    if (p.spec.log_files.journal) to_journal(p, s, chunk, false);
    p.followers[s].publish(TimedChunk{chunk, now});
    const std::uint64_t unread = p.logs[s].unread_dropped();
    if (unread > p.unread_dropped_seen[s]) {
      const std::uint64_t lost = unread - p.unread_dropped_seen[s];
      p.unread_dropped_seen[s] = unread;
      if (!p.overflow_reported[s]) {
        p.overflow_reported[s] = true;  // until a client reads this stream again
        std::string summary = std::string(stream_name(s)) + ": " + std::to_string(lost) +
                              " bytes no client had read were dropped from the " +
                              std::to_string(p.logs[s].capacity()) + "-byte ring";
        if (p.files[s]) summary += " (the file " + p.files[s]->path() + " has them)";
        emit(&p, event::log_overflow, std::move(summary));
      }
    }
  }
  if (drain) c.close_stream(stream);
}

std::variant<Child, std::string> ProcessBackend::spawn_child(const ExecPlan& plan) {
  if (spawner_ && spawner_->broken()) {
    if (log_) {
      mgmt::log::warn(*log_, "the spawn helper (pid {}) is gone; starting another",
                      spawner_->pid());
    }
    spawner_.reset();
  }
  if (!spawner_ && !spawner_failed_) {
    std::string why;
    spawner_ = SpawnHelper::start(why, spawn_helper_program());
    if (!spawner_) {
      spawner_failed_ = true;  // said once; mgmtd forks each child itself from now on
      if (log_) {
        mgmt::log::warn(*log_, "cannot start the spawn helper ({}); forking each child directly",
                        why);
      }
    }
  }
  if (spawner_) {
    auto r = spawner_->spawn(plan);
    if (!spawner_->broken()) return r;
    if (log_) mgmt::log::warn(*log_, "{}; forking this child directly", std::get<std::string>(r));
  }
  return Child::spawn(plan);
}

void ProcessBackend::to_journal(ManagedProcess& p, int s, std::string_view chunk, bool end) {
  const pid_t pid = p.child ? p.child->pid() : 0;
  auto send = [&](std::string_view line) {
    JournalEntry e;
    e.message = line;
    e.priority = s == 0 ? 6 : 3;
    e.identifier = p.spec.id;
    e.stream = stream_name(s);
    e.pid = pid;
    std::string why;
    switch (journal_.send(e, why)) {
      case JournalSink::Result::sent:
        break;
      case JournalSink::Result::full:
        ++p.journal_dropped;
        break;
      case JournalSink::Result::failed:
        if (!p.journal_error_reported) {
          p.journal_error_reported = true;  // once per run, not once per line
          p.last_error = "journal: " + why;
          changed();
          if (log_) mgmt::log::error(*log_, "process {}: {}", p.spec.id, p.last_error);
        }
        break;
    }
  };
  journal_lines(p.journal_partial[s], chunk, send);
  if (end && !p.journal_partial[s].empty()) {
    send(p.journal_partial[s]);
    p.journal_partial[s].clear();
  }
  if (p.journal_dropped > 0 && (end || p.journal_dropped % 1000 == 1)) {
    if (log_) {
      mgmt::log::warn(*log_, "process {}: the journal is not keeping up: {} line{} dropped",
                      p.spec.id, p.journal_dropped, p.journal_dropped == 1 ? "" : "s");
    }
    if (end) p.journal_dropped = 0;
  }
}

void ProcessBackend::on_exit(ManagedProcess& p, Completions& done) {
  if (record_exit(p, done)) after_exit(p);
}

void ProcessBackend::after_exit(ManagedProcess& p) {
  if (p.next_spec) {
    p.set_spec(std::move(*p.next_spec));
    p.next_spec.reset();
    changed();
  }
  if (!p.restart_after_stop) return;
  p.restart_after_stop = false;
  if (shutting_down_ || p.retired || p.child || p.spawn_requested) return;
  manual_start(p);  // with its dependencies, like a client's start
}

void ProcessBackend::erase_retired(Completions& done) {
  for (auto it = procs_.begin(); it != procs_.end();) {
    ManagedProcess& p = **it;
    if (!p.retired || p.child || p.spawn_requested) {
      ++it;
      continue;
    }
    // Normally none are left by now; never leave a caller waiting on a record that is gone.
    finish_waiters(p.start_waiters, "process " + p.spec.id + " was removed from the configuration",
                   p, done);
    finish_waiters(p.stop_waiters, "", p, done);
    if (log_) mgmt::log::debug(*log_, "process {}: record removed", p.spec.id);
    it = procs_.erase(it);
  }
}

bool ProcessBackend::record_exit(ManagedProcess& p, Completions& done) {
  Child& c = *p.child;
  if (!c.has_exited()) return false;
  // While the leader is an unreaped zombie its pid cannot be reused, so the group signal
  // reaches only what it left behind in its group.
  c.signal_group(SIGKILL);
  const auto status = c.try_reap();
  if (!status) return false;
  killed_groups_.push_back(c.pid());
  if (killed_groups_.size() > kKilledGroupsKept) killed_groups_.pop_front();
  if (c.status_fd() >= 0) on_exec_status(p, done);
  for (int s : {0, 1}) {
    if (c.stream_fd(static_cast<Child::Stream>(s)) >= 0) on_output(p, s, true);
  }
  for (auto& f : p.files) {
    if (f) f->close();  // reopened (appending) by the next run
  }
  p.file_error_reported = {false, false};
  for (int s : {0, 1}) {
    if (p.spec.log_files.journal) to_journal(p, s, {}, true);  // a last line with no newline
    p.journal_partial[s].clear();
  }
  p.journal_error_reported = false;
  const bool exec_failed = p.exec_failed;
  const auto ran_for = steady_clock::now() - p.run_started;
  p.child.reset();
  end_probes(p);
  changed();  // no pid any more; the state, exit code and signal follow below, still locked
  groups_changed();
  if (p.abandoned && log_) {
    mgmt::log::warn(*log_, "process {}: given up on after SIGKILL, has exited after all",
                    p.spec.id);
  }
  p.abandoned = false;
  p.exec_failed = false;
  p.kill_at.reset();
  p.give_up_at.reset();
  p.sample_at.reset();
  p.up_at.reset();
  std::string how = describe(*status);
  if (!p.kill_reason.empty()) how += " (" + p.kill_reason + ")";
  if (exec_failed) {
    // Reported when the exec failed; the exit code is that of the failed fork.
    if (p.state == state::stopping) {
      p.state = state::failed;
      finish_waiters(p.stop_waiters, "", p, done);
    }
    return true;
  }
  p.exit_code = status->code;
  p.exit_signal = status->signal;
  if (log_) mgmt::log::info(*log_, "process {}: {}", p.spec.id, how);

  if (p.state == state::stopping) {
    p.state = state::stopped;
    emit(&p, event::stopped, how);
    finish_waiters(p.stop_waiters, "", p, done);
    // Stopped while it was still short of start_seconds: its start did not happen, unless
    // a reload restarts it now (its start answers them then).
    if (!p.restart_after_stop || shutting_down_ || p.retired) {
      finish_waiters(p.start_waiters, "process " + p.spec.id + " was stopped before it started",
                     p, done);
    }
    return true;
  }
  // An exit nobody asked for: before start_seconds, a failed start.
  if (p.state == state::starting) {
    failed_start(p, how, ran_for, done);
    return true;
  }
  const auto& ok = p.spec.success_exit_codes;
  const bool clean =
      !status->signal && status->code && std::find(ok.begin(), ok.end(), *status->code) != ok.end();
  if (clean) {
    p.state = state::stopped;
    emit(&p, event::stopped, how);
  } else {
    p.state = state::crashed;
    emit(&p, event::crashed, how);
  }
  const RestartPolicy policy = p.spec.restart;
  const bool restart = !shutting_down_ && (policy == RestartPolicy::always ||
                                           (policy == RestartPolicy::on_failure && !clean));
  if (!restart) return true;
  if (ran_for >= p.spec.restart_reset_after) p.consecutive = 0;  // a stable run
  if (p.spec.max_restarts > 0 && p.consecutive >= p.spec.max_restarts) {
    p.state = state::failed;
    p.last_error = "gave up after " + std::to_string(p.consecutive) + " attempt" +
                   (p.consecutive == 1 ? "" : "s") + " (last: " + how + ")";
    emit(&p, event::failed, p.last_error);
    if (log_) mgmt::log::error(*log_, "process {}: {}", p.spec.id, p.last_error);
    return true;
  }
  ++p.consecutive;
  ++p.restarts;
  auto delay = p.spec.restart_backoff;
  for (std::uint32_t i = 1; i < p.consecutive && delay < p.spec.restart_backoff_max; ++i) {
    delay *= 2;
  }
  delay = std::min(delay, p.spec.restart_backoff_max);
  p.state = state::restarting;
  std::string summary = how + ": next attempt in " + std::to_string(delay.count()) +
                        " ms (attempt " + std::to_string(p.consecutive);
  if (p.spec.max_restarts > 0) summary += " of " + std::to_string(p.spec.max_restarts);
  emit(&p, event::restarting, summary + ")");
  // Timed from after the event, so the gap between its timestamp and the next start's is
  // never shorter than the delay it announces.
  p.restart_at = steady_clock::now() + delay;
  return true;
}

void ProcessBackend::on_timers(SteadyTime now, Completions& done) {
  for (const auto& ptr : procs_) {
    ManagedProcess& p = *ptr;
    if (p.restart_at && now >= *p.restart_at) {
      p.restart_at.reset();
      request_start(p);  // forked right after the timers, once its dependencies run
    }
    if (p.up_at && now >= *p.up_at) {
      p.up_at.reset();
      if (p.child && !p.exec_failed && p.state == state::starting && !awaiting_ready(p)) {
        now_running(p, done);
      }
    }
    if (p.kill_at && now >= *p.kill_at && p.child) {
      p.kill_at.reset();
      p.give_up_at = now + kKillGrace;
      if (log_) {
        mgmt::log::warn(*log_, "process {}: still running {} ms after SIGTERM, sending SIGKILL",
                        p.spec.id, p.spec.stop_timeout.count());
      }
      p.child->signal_group(SIGKILL);
    }
    if (p.give_up_at && now >= *p.give_up_at && p.child) {
      p.give_up_at.reset();
      // Uninterruptible sleep, or a kill that cannot reach it: nobody waits for it any
      // more (not a client's stop, not shutdown), but its pidfd stays polled, so if it
      // ever exits it is still reaped and recorded as stopped.
      const std::string what = "process " + p.spec.id + " (pid " +
                               std::to_string(p.child->pid()) + ") did not exit after SIGKILL";
      if (log_) mgmt::log::error(*log_, "{}; no longer waiting for it", what);
      p.abandoned = true;
      p.last_error = what;
      changed();
      if (shutting_down_) emit(nullptr, event::shutdown_incomplete, what);
      finish_waiters(p.stop_waiters, what, p, done);
    }
  }
}

void ProcessBackend::sample_rss(std::unique_lock<std::mutex>& lock, SteadyTime now) {
  std::set<pid_t> groups;
  std::vector<ManagedProcess*> due;
  for (const auto& p : procs_) {
    if (!p->sample_at || now < *p->sample_at) continue;
    p->sample_at = now + p->spec.resources.sample_interval;
    if (p->child && !p->exec_failed && p->state == state::running) {
      groups.insert(p->child->pid());
      due.push_back(p.get());
    }
  }
  if (groups.empty()) return;
  // /proc is scanned without the lock. Only this thread reaps, so every child sampled is
  // still the same process (and group) afterwards.
  lock.unlock();
  const auto rss = group_rss(groups);
  lock.lock();
  for (ManagedProcess* p : due) {
    if (!p->child || p->state != state::running) continue;  // stopped meanwhile
    const pid_t pgid = p->child->pid();
    const auto it = rss.find(pgid);
    const std::uint64_t bytes = it == rss.end() ? 0 : it->second;
    const Resources& r = p->spec.resources;
    if (bytes <= r.max_rss) {
      p->over_rss = false;
      continue;
    }
    if (p->over_rss) continue;  // one action per excursion above the limit
    p->over_rss = true;
    std::string summary = "rss " + human_bytes(bytes) + " over max_rss " + human_bytes(r.max_rss) +
                          ": ";
    switch (r.on_exceed.action) {
      case OnExceed::Action::kill:
        p->kill_reason = "max_rss " + human_bytes(r.max_rss) + " exceeded: rss " + human_bytes(bytes);
        p->last_error = p->kill_reason;
        summary += "SIGKILL to process group " + std::to_string(pgid);
        p->child->signal_group(SIGKILL);
        break;
      case OnExceed::Action::signal:
        summary += signal_name(r.on_exceed.signal) + " to process group " + std::to_string(pgid);
        p->child->signal_group(r.on_exceed.signal);
        break;
      case OnExceed::Action::log:
        summary += "logged only (on_exceed: log)";
        break;
    }
    if (log_) mgmt::log::warn(*log_, "process {}: {}", p->spec.id, summary);
    emit(p, kEventMaxRss, std::move(summary));
  }
}

void ProcessBackend::reap_orphans(Completions& done) {
  if (!reaper_) return;
  std::unordered_map<pid_t, ManagedProcess*> children;
  for (int i = 0; i < kReapsPerPass; ++i) {
    siginfo_t info{};
    if (::waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT) != 0) {
      if (errno == EINTR) continue;
      return;  // ECHILD: no children at all
    }
    const pid_t pid = info.si_pid;
    if (pid == 0) return;  // no zombie
    if (spawner_ && pid == spawner_->pid()) {
      // The spawn helper has exited (killed?): reaped here like any zombie; the next start
      // begins a new one. (spawner_ is only changed while this thread waits in a start.)
      int status = 0;
      ::waitpid(pid, &status, WNOHANG);
      spawner_->reaped();
      if (log_) mgmt::log::warn(*log_, "the spawn helper (pid {}) has exited", pid);
      continue;
    }
    // Built at the first zombie of the pass, then O(1) per zombie: a scan per zombie made
    // the exits of N children O(N^2). Nothing forks during the pass; a pid reaped below is
    // never peeked again.
    if (children.empty()) {
      for (const auto& p : procs_) {
        if (p->child) children.emplace(p->child->pid(), p.get());
      }
    }
    const auto found = children.find(pid);
    ManagedProcess* owner = found == children.end() ? nullptr : found->second;
    if (owner) {
      on_exit(*owner, done);  // one of ours: reaped by pid, its status recorded
      if (owner->child && owner->child->pid() == pid) return;  // not reaped after all
      continue;
    }
    int status = 0;
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r != pid) return;
    if (log_) {
      ExitStatus s;
      if (WIFEXITED(status)) s.code = WEXITSTATUS(status);
      if (WIFSIGNALED(status)) s.signal = WTERMSIG(status);
      mgmt::log::debug(*log_, "reaped orphan pid {} ({})", pid, describe(s));
    }
  }
}

void ProcessBackend::final_reap() {
  if (!reaper_) return;
  // Members of groups killed a moment ago may still be dying; once they are zombies they
  // are ours to reap (as subreaper), and after this nobody would. So may an abandoned
  // child that the parent-death signal has just killed with the supervisor thread.
  const auto deadline = steady_clock::now() + kOrphanDrain;
  std::set<pid_t> groups(killed_groups_.begin(), killed_groups_.end());
  std::set<pid_t> pids;
  {
    std::lock_guard lock(mu_);
    for (const auto& p : procs_) {
      if (p->child) pids.insert(p->child->pid());
    }
  }
  groups.insert(pids.begin(), pids.end());
  Completions done;
  // The I/O thread still serves list, status and logs: records change under mu_ as ever,
  // and completions run without it.
  auto reap = [&] {
    {
      std::lock_guard lock(mu_);
      reap_orphans(done);
    }
    run(done);
  };
  while (true) {
    reap();
    bool dying = false;
    if (!groups.empty()) {
      DIR* proc = ::opendir("/proc");
      while (proc != nullptr && !dying) {
        const dirent* e = ::readdir(proc);
        if (e == nullptr) break;
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        const auto st = read_proc_stat(std::string(e->d_name));
        dying = st && st->state != 'Z' && st->state != 'X' &&
                (groups.count(st->pgrp) > 0 ||
                 pids.count(static_cast<pid_t>(std::atol(e->d_name))) > 0);
      }
      if (proc != nullptr) ::closedir(proc);
    }
    if (!dying || steady_clock::now() >= deadline) break;
    ::poll(nullptr, 0, 5);
  }
  reap();
}

void ProcessBackend::groups_changed() {
  groups_dirty_ = true;
  if (steady_clock::now() - groups_saved_at_ >= kGroupsSaveEvery) flush_groups();
}

void ProcessBackend::flush_groups() {
  if (!groups_dirty_) return;
  groups_dirty_ = false;
  groups_saved_at_ = steady_clock::now();
  save_groups();
}

void ProcessBackend::save_groups() {
  if (!registry_.usable()) return;
  std::vector<GroupRecord> groups;
  for (const auto& p : procs_) {
    if (!p->child) continue;
    // A child on a terminal leads a session of its own.
    const pid_t session = p->child->own_session() ? p->child->pid() : session_;
    groups.push_back(GroupRecord{p->child->pid(), p->child->start_time(), session, p->spec.id});
  }
  registry_.save(groups);
}

int ProcessBackend::poll_timeout_ms(SteadyTime now) const {
  std::optional<SteadyTime> next;
  auto consider = [&](const std::optional<SteadyTime>& t) {
    if (t && (!next || *t < *next)) next = t;
  };
  for (const auto& p : procs_) {
    consider(p->restart_at);
    consider(p->up_at);
    consider(p->kill_at);
    consider(p->give_up_at);
    consider(p->sample_at);
  }
  if (!next) return -1;
  if (*next <= now) return 0;
  // Rounded up: waking a little early would only spin.
  const auto ms = std::chrono::ceil<milliseconds>(*next - now).count();
  return static_cast<int>(std::min<std::int64_t>(ms, 24 * 3600 * 1000));
}

}  // namespace mgmt::process
