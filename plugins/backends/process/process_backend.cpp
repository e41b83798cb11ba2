#include "process_backend.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <set>
#include <system_error>

#include <spdlog/spdlog.h>

#include "group_rss.hpp"

extern char** environ;

namespace mgmt::process {

namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

// A run that lasted this long resets the consecutive-restart count (and so the backoff).
constexpr auto kStableRun = std::chrono::seconds(10);
// How long a child may survive SIGKILL before shutdown stops waiting for it.
constexpr auto kKillGrace = std::chrono::seconds(2);
// Polling period for children without a pidfd (kernels before 5.3).
constexpr int kReapTickMs = 100;
constexpr std::size_t kReadChunk = 64 * 1024;
constexpr int kReadsPerWakeup = 16;
// At exit: enough for a full pipe many times over, bounded against a writer that escaped
// the process group and keeps the pipe open.
constexpr int kReadsAtExit = 256;

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

// Invokes the completions collected under the lock; never call with the lock held.
template <class Completions>
void run(Completions& done) {
  for (auto& [cb, result] : done) cb(std::move(result));
  done.clear();
}

}  // namespace

ProcessBackend::ProcessBackend(const PluginEnv& env)
    : ProcessBackend(parse_backend_config(env.config, env.config_file), env.log) {}

ProcessBackend::ProcessBackend(BackendConfig config, std::shared_ptr<spdlog::logger> log)
    : log_(std::move(log)), read_buf_(kReadChunk) {
  wake_fd_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake_fd_) throw std::system_error(errno, std::system_category(), "eventfd");
  for (auto& spec : config.processes) {
    procs_.push_back(std::make_unique<ManagedProcess>(std::move(spec)));
  }
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
    for (const auto& p : procs_) {
      if (p->spec.autostart && p->state == state::pending) request_start(*p);
    }
  }
  wake();
}

void ProcessBackend::shutdown() {
  std::lock_guard once(shutdown_mu_);
  if (shut_down_) return;
  Completions done;
  {
    std::unique_lock lock(mu_);
    shutting_down_ = true;
    emit(nullptr, event::shutdown_requested, "stopping every process");
    for (const auto& p : procs_) {
      if (p->spawn_requested || p->state == state::restarting) {
        cancel_start(*p, " by shutdown", done);
      } else if (p->child && p->state != state::stopping && !p->exec_failed) {
        begin_stop(*p);
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
  shut_down_ = true;
}

std::vector<Entry> ProcessBackend::list() {
  std::vector<Entry> out;
  std::set<pid_t> groups;
  {
    std::lock_guard lock(mu_);
    out.reserve(procs_.size());
    for (const auto& p : procs_) {
      out.push_back(p->entry());
      if (out.back().pid > 0) groups.insert(static_cast<pid_t>(out.back().pid));
    }
  }
  // /proc is read without the lock: a child that exits meanwhile only reads as rss 0.
  const auto rss = group_rss(groups);
  for (auto& e : out) {
    const auto it = rss.find(static_cast<pid_t>(e.pid));
    if (e.pid > 0 && it != rss.end()) e.rss = it->second;
  }
  return out;
}

std::optional<Entry> ProcessBackend::status(std::string_view id) {
  Entry e;
  {
    std::lock_guard lock(mu_);
    const ManagedProcess* p = find(id);
    if (!p) return std::nullopt;
    e = p->entry();
  }
  if (e.pid > 0) {
    const auto rss = group_rss({static_cast<pid_t>(e.pid)});
    if (const auto it = rss.find(static_cast<pid_t>(e.pid)); it != rss.end()) e.rss = it->second;
  }
  return e;
}

void ProcessBackend::start(std::string_view id, OpDone done) {
  OpResult immediate;
  {
    std::lock_guard lock(mu_);
    ManagedProcess* p = find(id);
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
    } else {
      // pending, stopped, crashed, failed, or restarting (a pending restart happens now).
      p->restart_at.reset();
      p->consecutive = 0;
      p->last_error.clear();
      request_start(*p);
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
  const ManagedProcess* p = find(q.id);
  if (!p) return std::string(kErrNotFound);
  out = p->logs[stream_index(q.stream)].query(q.since_ns, q.last_lines);
  return {};
}

FollowResult ProcessBackend::follow_logs(const LogQuery& q,
                                         std::function<void(std::string_view)> on_chunk) {
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
  r.snapshot = p->logs[s].query(q.since_ns, q.last_lines);
  r.subscription = p->followers[s].subscribe(std::move(on_chunk));
  return r;
}

std::unique_ptr<Subscription> ProcessBackend::subscribe_events(
    std::function<void(const Event&)> on_event) {
  return events_.subscribe(std::move(on_event));
}

// ---------------------------------------------------------------------------------------
// Helpers (mu_ held)

ManagedProcess* ProcessBackend::find(std::string_view id) {
  for (const auto& p : procs_) {
    if (p->spec.id == id) return p.get();
  }
  return nullptr;
}

void ProcessBackend::emit(const ManagedProcess* p, std::string_view type, std::string summary) {
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

void ProcessBackend::request_start(ManagedProcess& p) {
  p.state = state::starting;
  p.spawn_requested = true;
  emit(&p, event::starting, command_line(p.spec));
}

void ProcessBackend::begin_stop(ManagedProcess& p) {
  p.state = state::stopping;
  p.kill_at = steady_clock::now() + p.spec.stop_timeout;
  const pid_t pid = p.child->pid();
  emit(&p, event::stopping,
       "SIGTERM to process group " + std::to_string(pid) + ", SIGKILL in " +
           std::to_string(p.spec.stop_timeout.count()) + " ms");
  p.child->signal_group(SIGTERM);
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

bool ProcessBackend::all_children_gone() const {
  return std::all_of(procs_.begin(), procs_.end(),
                     [](const auto& p) { return !p->child || p->abandoned; });
}

// ---------------------------------------------------------------------------------------
// Supervisor thread

void ProcessBackend::supervise() {
  // Which process and which of its descriptors each pollfd stands for.
  enum class Kind { wake, exec_status, out, err, exit };
  struct Slot {
    ManagedProcess* p;
    Kind kind;
  };
  std::vector<pollfd> fds;
  std::vector<Slot> slots;

  std::unique_lock lock(mu_);
  while (true) {
    Completions done;
    // 1. What the last poll reported, in slot order: per process the exec status first,
    //    then output, then the exit, so output and a failed exec precede the exit.
    for (std::size_t i = 0; i < fds.size(); ++i) {
      if (fds[i].revents == 0) continue;
      ManagedProcess* p = slots[i].p;
      switch (slots[i].kind) {
        case Kind::wake: {
          std::uint64_t n;
          [[maybe_unused]] const auto r = ::read(wake_fd_.get(), &n, sizeof n);
          break;
        }
        case Kind::exec_status:
          if (p->child && p->child->status_fd() == fds[i].fd) on_exec_status(*p, done);
          break;
        case Kind::out:
        case Kind::err: {
          const int s = slots[i].kind == Kind::out ? Child::out : Child::err;
          if (p->child && p->child->stream_fd(static_cast<Child::Stream>(s)) == fds[i].fd) {
            on_output(*p, s, false);
          }
          break;
        }
        case Kind::exit:
          if (p->child && p->child->pidfd() == fds[i].fd) on_exit(*p, done);
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

    // 2. Timers, then forks asked for by start() or by a restart timer.
    const auto now = steady_clock::now();
    on_timers(now, done);
    for (const auto& p : procs_) {
      // A child whose exec failed may still wait to be reaped; the new one forks after.
      if (p->spawn_requested && !p->child) spawn(*p, done);
    }
    if (all_children_gone()) reaped_.notify_all();
    if (quit_) {
      lock.unlock();
      run(done);
      return;
    }

    // 3. Wait for the next thing to happen.
    fds.clear();
    slots.clear();
    fds.push_back({wake_fd_.get(), POLLIN, 0});
    slots.push_back({nullptr, Kind::wake});
    for (const auto& p : procs_) {
      if (!p->child) continue;
      const Child& c = *p->child;
      auto add = [&](int fd, Kind k) {
        if (fd < 0) return;
        fds.push_back({fd, POLLIN, 0});
        slots.push_back({p.get(), k});
      };
      add(c.status_fd(), Kind::exec_status);
      add(c.stream_fd(Child::out), Kind::out);
      add(c.stream_fd(Child::err), Kind::err);
      add(c.pidfd(), Kind::exit);
    }
    int timeout = poll_timeout_ms(now);
    if (tick) timeout = timeout < 0 ? kReapTickMs : std::min(timeout, kReapTickMs);

    lock.unlock();
    run(done);
    // Only this thread opens or closes child descriptors, so the set stays valid while
    // the lock is released.
    const int n = ::poll(fds.data(), fds.size(), timeout);
    if (n < 0) {
      for (auto& f : fds) f.revents = 0;
    }
    lock.lock();
  }
}

void ProcessBackend::spawn(ManagedProcess& p, Completions& done) {
  p.spawn_requested = false;
  auto plan = make_exec_plan(p.spec, environ);
  if (auto* err = std::get_if<std::string>(&plan)) return fail_start(p, *err, done);
  auto child = Child::spawn(std::get<ExecPlan>(plan));
  if (auto* err = std::get_if<std::string>(&child)) return fail_start(p, *err, done);
  p.child.emplace(std::move(std::get<Child>(child)));
  p.exec_failed = false;
  p.started_at = unix_nanos();
  p.run_started = steady_clock::now();
  if (log_) log_->debug("process {}: spawned pid {}", p.spec.id, p.child->pid());
}

void ProcessBackend::fail_start(ManagedProcess& p, const std::string& err, Completions& done) {
  p.last_error = err;
  p.state = state::failed;
  emit(&p, event::failed, err);
  if (log_) log_->error("process {}: {}", p.spec.id, err);
  finish_waiters(p.start_waiters, err, p, done);
}

void ProcessBackend::on_exec_status(ManagedProcess& p, Completions& done) {
  const auto result = p.child->read_exec_status();
  if (!result) return;
  if (!result->empty()) {
    p.exec_failed = true;  // the exit that follows is not the program's
    if (p.state == state::starting) return fail_start(p, *result, done);
    p.last_error = *result;
  } else if (p.state == state::starting) {
    p.state = state::running;
    emit(&p, event::started, "pid " + std::to_string(p.child->pid()));
  }
  finish_waiters(p.start_waiters, *result, p, done);
}

void ProcessBackend::on_output(ManagedProcess& p, int s, bool drain) {
  Child& c = *p.child;
  const auto stream = static_cast<Child::Stream>(s);
  // Bounded per wakeup so one chatty child cannot starve the others; at exit, read what
  // is left and close.
  const int reads = drain ? kReadsAtExit : kReadsPerWakeup;
  for (int i = 0; i < reads; ++i) {
    const ssize_t n = ::read(c.stream_fd(stream), read_buf_.data(), read_buf_.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN && !drain) return;
    if (n <= 0) {  // EOF, an error, or nothing left after the exit
      c.close_stream(stream);
      return;
    }
    const std::string_view chunk(read_buf_.data(), static_cast<std::size_t>(n));
    const std::size_t dropped = p.logs[s].append(unix_nanos(), chunk);
    p.followers[s].publish(chunk);
    if (dropped > 0 && !p.overflow_reported[s]) {
      p.overflow_reported[s] = true;
      emit(&p, event::log_overflow,
           std::string(s == 0 ? "stdout" : "stderr") + " buffer full (" +
               std::to_string(p.logs[s].capacity()) + " bytes): dropping the oldest output");
    }
  }
  if (drain) c.close_stream(stream);
}

void ProcessBackend::on_exit(ManagedProcess& p, Completions& done) {
  Child& c = *p.child;
  if (!c.has_exited()) return;
  // While the leader is an unreaped zombie its pid cannot be reused, so the group signal
  // reaches only what it left behind in its group.
  c.signal_group(SIGKILL);
  const auto status = c.try_reap();
  if (!status) return;
  if (c.status_fd() >= 0) on_exec_status(p, done);
  for (int s : {0, 1}) {
    if (c.stream_fd(static_cast<Child::Stream>(s)) >= 0) on_output(p, s, true);
  }
  const bool exec_failed = p.exec_failed;
  const auto ran_for = steady_clock::now() - p.run_started;
  p.child.reset();
  p.exec_failed = false;
  p.kill_at.reset();
  p.give_up_at.reset();
  const std::string how = describe(*status);
  if (exec_failed) {
    // Reported when the exec failed; the exit code is that of the failed fork.
    if (p.state == state::stopping) {
      p.state = state::failed;
      finish_waiters(p.stop_waiters, "", p, done);
    }
    return;
  }
  p.exit_code = status->code;
  p.exit_signal = status->signal;
  if (log_) log_->info("process {}: {}", p.spec.id, how);

  if (p.state == state::stopping) {
    p.state = state::stopped;
    emit(&p, event::stopped, how);
    finish_waiters(p.stop_waiters, "", p, done);
    return;
  }
  // An exit nobody asked for.
  const bool clean = status->code == 0 && !status->signal;
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
  if (!restart) return;
  if (ran_for >= kStableRun) p.consecutive = 0;
  if (p.spec.max_restarts > 0 && p.consecutive >= p.spec.max_restarts) {
    p.state = state::failed;
    p.last_error = "gave up after " + std::to_string(p.consecutive) + " restarts";
    emit(&p, event::failed, p.last_error);
    if (log_) log_->error("process {}: {} (last: {})", p.spec.id, p.last_error, how);
    return;
  }
  ++p.consecutive;
  ++p.restarts;
  auto delay = p.spec.restart_backoff;
  for (std::uint32_t i = 1; i < p.consecutive && delay < p.spec.restart_backoff_max; ++i) {
    delay *= 2;
  }
  delay = std::min(delay, p.spec.restart_backoff_max);
  p.state = state::restarting;
  p.restart_at = steady_clock::now() + delay;
  emit(&p, event::restarting,
       "restart " + std::to_string(p.consecutive) + " in " + std::to_string(delay.count()) +
           " ms");
}

void ProcessBackend::on_timers(SteadyTime now, Completions& done) {
  for (const auto& ptr : procs_) {
    ManagedProcess& p = *ptr;
    if (p.restart_at && now >= *p.restart_at) {
      p.restart_at.reset();
      request_start(p);  // forked right after the timers
    }
    if (p.kill_at && now >= *p.kill_at && p.child) {
      p.kill_at.reset();
      p.give_up_at = now + kKillGrace;
      if (log_) {
        log_->warn("process {}: still running {} ms after SIGTERM, sending SIGKILL", p.spec.id,
                   p.spec.stop_timeout.count());
      }
      p.child->signal_group(SIGKILL);
    }
    if (p.give_up_at && now >= *p.give_up_at && p.child) {
      p.give_up_at.reset();
      const std::string what = "process " + p.spec.id + " (pid " +
                               std::to_string(p.child->pid()) + ") did not exit after SIGKILL";
      if (log_) log_->error("{}", what);
      if (shutting_down_) {
        p.abandoned = true;
        emit(nullptr, event::shutdown_incomplete, what);
        finish_waiters(p.stop_waiters, what, p, done);
      }
    }
  }
}

int ProcessBackend::poll_timeout_ms(SteadyTime now) const {
  std::optional<SteadyTime> next;
  auto consider = [&](const std::optional<SteadyTime>& t) {
    if (t && (!next || *t < *next)) next = t;
  };
  for (const auto& p : procs_) {
    consider(p->restart_at);
    consider(p->kill_at);
    consider(p->give_up_at);
  }
  if (!next) return -1;
  if (*next <= now) return 0;
  // Rounded up: waking a little early would only spin.
  const auto ms = std::chrono::ceil<milliseconds>(*next - now).count();
  return static_cast<int>(std::min<std::int64_t>(ms, 24 * 3600 * 1000));
}

}  // namespace mgmt::process
