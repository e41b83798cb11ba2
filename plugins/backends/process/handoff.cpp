// In-place upgrade of the process backend: handoff() freezes this backend and writes its
// state; adopt() rebuilds it in the next program (same pid, the children still running).
//
// Why the children survive: they were forked through PluginEnv::on_main_thread, so their
// parent is mgmtd's main thread, the one that calls execve and the only one execve keeps;
// their PR_SET_PDEATHSIG does not fire. In the next program they are children of the new
// main thread, which forks the new ones too. While no program supervises them (the exec),
// their output waits in the pipes and an exit leaves a zombie that the next program reaps
// through the pidfd like any other.
//
// State (MessagePack, version kHandoffVersion): {v, activated, processes: [{id, command,
// state, flags, counters, last exit, errors, timers as remaining nanoseconds, child (pid,
// start time, descriptor numbers, what its error texts need), log rings (chunks with
// their times and the stream offsets)}]}. A process is matched by id with the record the
// next program created from the same `config:`; the command line is checked to be sure.
#include <fcntl.h>

#include <algorithm>
#include <chrono>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "mgmt/log.hpp"
#include "process_backend.hpp"

namespace mgmt::process {

namespace {

using json = nlohmann::json;
using std::chrono::steady_clock;

constexpr std::uint32_t kHandoffVersion = 2;  // 2: readiness and health probes

std::string command_line_of(const ProcessSpec& s) {
  std::string out = s.command;
  for (const auto& a : s.args) out += " " + a;
  return out;
}

std::string_view state_named(const std::string& name) {
  for (const std::string_view s : {state::pending, state::starting, state::running,
                                   state::stopping, state::stopped, state::crashed,
                                   state::restarting, state::failed}) {
    if (s == name) return s;
  }
  return {};
}

json remaining(const std::optional<SteadyTime>& t, SteadyTime now) {
  if (!t) return nullptr;
  return std::max<std::int64_t>(0, std::chrono::duration_cast<std::chrono::nanoseconds>(*t - now).count());
}

std::optional<SteadyTime> deadline(const json& j, SteadyTime now) {
  if (j.is_null()) return std::nullopt;
  return now + std::chrono::nanoseconds(j.get<std::int64_t>());
}

template <class T>
json opt(const std::optional<T>& v) {
  return v ? json(*v) : json(nullptr);
}

template <class T>
std::optional<T> opt_of(const json& j) {
  if (j.is_null()) return std::nullopt;
  return j.get<T>();
}

json ring_json(const LogRing::Saved& r) {
  json chunks = json::array();
  for (const auto& [ts, bytes] : r.chunks) {
    chunks.push_back({ts, json::binary(std::vector<std::uint8_t>(bytes.begin(), bytes.end()))});
  }
  return {{"begin", r.begin},
          {"end", r.end},
          {"read_upto", r.read_upto},
          {"unread_dropped", r.unread_dropped},
          {"chunks", std::move(chunks)}};
}

LogRing::Saved ring_of(const json& j) {
  LogRing::Saved r;
  r.begin = j.at("begin");
  r.end = j.at("end");
  r.read_upto = j.at("read_upto");
  r.unread_dropped = j.at("unread_dropped");
  for (const auto& c : j.at("chunks")) {
    const auto& b = c.at(1).get_binary();
    r.chunks.emplace_back(c.at(0).get<std::int64_t>(), std::string(b.begin(), b.end()));
  }
  return r;
}

void set_cloexec(int fd) {
  if (fd < 0) return;
  const int flags = ::fcntl(fd, F_GETFD);
  if (flags >= 0) ::fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Child and LogRing

Child::Handover Child::handover() {
  Handover h;
  h.pid = pid_;
  h.start_time = start_time_;
  h.pidfd = pidfd_.release();
  h.out = streams_[out].release();
  h.err = streams_[err].release();
  h.status = status_.release();
  h.own_session = own_session_;
  h.path = path_;
  h.work_dir = work_dir_;
  h.oom_score_adj = oom_score_adj_;
  h.user = user_;
  h.group = group_;
  h.nice = nice_;
  return h;
}

Child Child::adopt(const Handover& h) {
  Child c;
  c.pid_ = h.pid;
  c.start_time_ = h.start_time;
  c.pidfd_.reset(h.pidfd);
  c.streams_[out].reset(h.out);
  c.streams_[err].reset(h.err);
  c.status_.reset(h.status);
  c.own_session_ = h.own_session;
  c.path_ = h.path;
  c.work_dir_ = h.work_dir;
  c.oom_score_adj_ = h.oom_score_adj;
  c.user_ = h.user;
  c.group_ = h.group;
  c.nice_ = h.nice;
  return c;
}

LogRing::Saved LogRing::save() const {
  Saved s;
  s.begin = begin_;
  s.end = end_;
  s.read_upto = read_upto_;
  s.unread_dropped = unread_dropped_;
  if (chunks_) {
    for (const auto& c : *chunks_) s.chunks.emplace_back(c.ts_ns, c.bytes);
  }
  return s;
}

std::string LogRing::from(std::uint64_t from) const {
  std::string out;
  if (!chunks_ || from >= end_) return out;
  // Chunks hold the stream's bytes [begin_, end_) in order.
  std::uint64_t at = begin_;
  for (const auto& c : *chunks_) {
    const std::uint64_t next = at + c.bytes.size();
    if (next > from) {
      const std::size_t skip = from > at ? static_cast<std::size_t>(from - at) : 0;
      out.append(c.bytes, skip, std::string::npos);
    }
    at = next;
  }
  return out;
}

void LogRing::restore(Saved saved) {
  if (chunks_) chunks_->clear();
  size_ = 0;
  overhead_ = 0;
  for (auto& [ts, bytes] : saved.chunks) {
    if (bytes.empty()) continue;
    if (!chunks_) chunks_.emplace();
    chunks_->push_back(Chunk{ts, std::move(bytes)});
    size_ += chunks_->back().bytes.size();
    overhead_ += overhead_of(chunks_->back());
  }
  // The stream's offsets: what the ring holds ends at `end` and starts `size_` before it.
  end_ = saved.end;
  begin_ = end_ >= size_ ? end_ - size_ : 0;
  read_upto_ = std::min(saved.read_upto, end_);
  unread_dropped_ = saved.unread_dropped;
  // Shrunk to the capacity as appends do (a smaller log_buffer would be a reload's business).
  while (chunks_ && !chunks_->empty() &&
         (size_ > capacity_ || overhead_ > overhead_budget())) {
    pop_front();
  }
}

// ---------------------------------------------------------------------------------------
// ProcessBackend

// The child's readiness and health: what the backend knows (ProbeState), and the prober's
// session (its schedule, the notify socket or ready pipe) whose descriptors go in `fds`.
json ProcessBackend::probe_json(ManagedProcess& p, std::vector<int>& fds) {
  json j;
  j["ready_seen"] = p.probe.ready_seen;
  j["health"] = p.probe.health;
  j["last"] = p.probe.last;
  j["status_text"] = p.probe.status_text;
  j["partial"] = p.probe.partial;
  j["session"] = nullptr;
  if (p.probe.token == 0) return j;
  const auto h = prober_->hand_over(p.probe.token);
  if (!h) return j;
  for (const int fd : {h->notify, h->ready_pipe}) {
    if (fd >= 0) fds.push_back(fd);
  }
  j["session"] = {{"token", h->token},         {"notify", h->notify},
                  {"ready_pipe", h->ready_pipe}, {"age_ns", h->age_ns},
                  {"is_ready", h->is_ready},   {"timed_out", h->timed_out},
                  {"unhealthy", h->unhealthy}, {"failures", h->failures},
                  {"last", h->last},           {"next_ns", opt(h->next_ns)},
                  {"watchdog_ns", opt(h->watchdog_ns)}};
  return j;
}

void ProcessBackend::adopt_probe_json(ManagedProcess& p, const json& j) {
  p.probe.ready_seen = j.at("ready_seen");
  p.probe.health = j.at("health").get<std::string>();
  p.probe.last = j.at("last").get<std::string>();
  p.probe.status_text = j.at("status_text").get<std::string>();
  p.probe.partial = j.at("partial").get<decltype(p.probe.partial)>();
  const json& s = j.at("session");
  if (s.is_null() || !p.child) return;
  ProbeHandover h;
  h.token = s.at("token");
  h.notify = s.at("notify");
  h.ready_pipe = s.at("ready_pipe");
  h.age_ns = s.at("age_ns");
  h.is_ready = s.at("is_ready");
  h.timed_out = s.at("timed_out");
  h.unhealthy = s.at("unhealthy");
  h.failures = s.at("failures");
  h.last = s.at("last").get<std::string>();
  h.next_ns = opt_of<std::int64_t>(s.at("next_ns"));
  h.watchdog_ns = opt_of<std::int64_t>(s.at("watchdog_ns"));
  p.probe.token = h.token;
  adopt_probes(p, h);
}

std::uint32_t ProcessBackend::handoff_version() { return kHandoffVersion; }

std::string ProcessBackend::handoff(Handoff& out) {
  std::lock_guard once(shutdown_mu_);
  if (shut_down_ || handed_off_) return "the process backend has shut down";
  {
    std::lock_guard lock(mu_);
    if (shutting_down_) return "the server is shutting down";
    if (!fork_on_main_) {
      return "this host forks the children on the backend's own thread: an exec would kill "
             "them (their parent-death signal follows that thread)";
    }
    for (const auto& p : procs_) {
      if (p->retired && p->child) {
        return "process " + p->spec.id +
               " was removed by a reload and is still stopping: upgrade once it has stopped";
      }
      if (p->next_spec || p->restart_after_stop) {
        return "process " + p->spec.id +
               " is being restarted for a reload: upgrade once it runs again";
      }
    }
    quit_ = true;
  }
  // The supervisor ends its pass (a fork it began is finished and recorded) and returns;
  // after it nothing reads the pipes or reaps until the next program does.
  wake();
  supervisor_.join();
  // The probe thread ends too (without mu_: it may be waiting for it to report); what it
  // had learnt is applied by then.
  prober_->stop();
  // Nothing forks any more; the helper would end at the exec anyway (its socket closes).
  spawner_.reset();

  Completions done;
  {
    std::lock_guard lock(mu_);
    const SteadyTime now = steady_clock::now();
    json procs = json::array();
    for (const auto& ptr : procs_) {
      ManagedProcess& p = *ptr;
      if (p.retired) continue;  // no child (checked above): nothing to hand over
      // Their clients' connections close for the exec; the answer tells why.
      finish_waiters(p.start_waiters, "mgmtd is upgrading in place: ask again", p, done);
      finish_waiters(p.stop_waiters, "mgmtd is upgrading in place: ask again", p, done);
      json j;
      j["id"] = p.spec.id;
      j["command"] = command_line_of(p.spec);
      j["state"] = std::string(p.state);
      j["spawn_requested"] = p.spawn_requested;
      // Set by a health check that failed after the checks above (the probe thread ran
      // until it was stopped): the child is being stopped to start again.
      j["restart_after_stop"] = p.restart_after_stop;
      j["exec_failed"] = p.exec_failed;
      j["abandoned"] = p.abandoned;
      j["restarts"] = p.restarts;
      j["consecutive"] = p.consecutive;
      j["started_at"] = p.started_at;
      j["ran_ns"] = std::chrono::duration_cast<std::chrono::nanoseconds>(now - p.run_started).count();
      j["exit_code"] = opt(p.exit_code);
      j["exit_signal"] = opt(p.exit_signal);
      j["last_error"] = p.last_error;
      j["kill_reason"] = p.kill_reason;
      j["start_failures"] = p.start_failures;
      j["env_file_vars"] = p.env_file_vars;
      j["over_rss"] = p.over_rss;
      j["timers"] = {{"restart", remaining(p.restart_at, now)},
                     {"up", remaining(p.up_at, now)},
                     {"kill", remaining(p.kill_at, now)},
                     {"give_up", remaining(p.give_up_at, now)},
                     {"sample", remaining(p.sample_at, now)}};
      if (p.child) {
        // The descriptors are the next program's now: this (frozen) backend never closes
        // them, even if it is destroyed (a host that adopts within one process: the tests).
        const Child::Handover h = p.child->handover();
        j["child"] = {{"pid", h.pid},         {"start_time", h.start_time},
                      {"pidfd", h.pidfd},     {"out", h.out},
                      {"err", h.err},         {"status", h.status},
                      {"own_session", h.own_session},
                      {"path", h.path},       {"work_dir", h.work_dir},
                      {"oom_score_adj", h.oom_score_adj},
                      {"user", h.user},       {"group", h.group},
                      {"nice", opt(h.nice)}};
        for (const int fd : {h.pidfd, h.out, h.err, h.status}) {
          if (fd >= 0) out.fds.push_back(fd);
        }
      } else {
        j["child"] = nullptr;
      }
      j["probe"] = probe_json(p, out.fds);
      j["logs"] = {ring_json(p.logs[0].save()), ring_json(p.logs[1].save())};
      j["overflow_reported"] = p.overflow_reported;
      j["unread_dropped_seen"] = p.unread_dropped_seen;
      procs.push_back(std::move(j));
    }
    json state;
    state["v"] = kHandoffVersion;
    state["activated"] = activate_requested_;
    state["processes"] = std::move(procs);
    const auto bytes = json::to_msgpack(state);
    out.version = kHandoffVersion;
    out.state.assign(bytes.begin(), bytes.end());
    handed_off_ = true;
    if (log_) {
      mgmt::log::info(*log_, "handing {} process{} over to the next program ({} descriptors)",
                      procs_.size(), procs_.size() == 1 ? "" : "es", out.fds.size());
    }
  }
  for (auto& [cb, result] : done) cb(std::move(result));  // without the lock
  return {};
}

std::string ProcessBackend::adopt(const Handoff& in) {
  if (in.version < 1 || in.version > kHandoffVersion) {
    return "the process backend reads handoff versions 1 to " + std::to_string(kHandoffVersion) +
           ", not " + std::to_string(in.version);
  }
  for (const int fd : in.fds) set_cloexec(fd);
  json state;
  try {
    state = json::from_msgpack(in.state.begin(), in.state.end());
  } catch (const std::exception& e) {
    return std::string("malformed process backend state: ") + e.what();
  }
  std::size_t children = 0;
  try {
    std::lock_guard lock(mu_);
    // Checked before anything is taken: every process must be one of ours, as it was.
    for (const auto& j : state.at("processes")) {
      const std::string id = j.at("id");
      const ManagedProcess* p = find(id);
      if (!p) return "process " + id + " of the previous program is not configured";
      if (command_line_of(p->spec) != j.at("command").get<std::string>()) {
        return "process " + id + " runs " + j.at("command").get<std::string>() +
               ", configured as " + command_line_of(p->spec);
      }
      if (state_named(j.at("state")).empty()) {
        return "process " + id + ": unknown state " + j.at("state").get<std::string>();
      }
    }
    const SteadyTime now = steady_clock::now();
    for (const auto& j : state.at("processes")) {
      ManagedProcess& p = *find(j.at("id").get<std::string>());
      p.state = state_named(j.at("state"));
      p.spawn_requested = j.at("spawn_requested");
      p.restart_after_stop = j.value("restart_after_stop", false);
      p.exec_failed = j.at("exec_failed");
      p.abandoned = j.at("abandoned");
      p.restarts = j.at("restarts");
      p.consecutive = j.at("consecutive");
      p.started_at = j.at("started_at");
      p.run_started = now - std::chrono::nanoseconds(j.at("ran_ns").get<std::int64_t>());
      p.exit_code = opt_of<std::int64_t>(j.at("exit_code"));
      p.exit_signal = opt_of<std::int64_t>(j.at("exit_signal"));
      p.last_error = j.at("last_error").get<std::string>();
      p.kill_reason = j.at("kill_reason").get<std::string>();
      p.start_failures = j.at("start_failures");
      p.env_file_vars = j.at("env_file_vars").get<EnvVars>();
      p.over_rss = j.at("over_rss");
      const json& t = j.at("timers");
      p.restart_at = deadline(t.at("restart"), now);
      p.up_at = deadline(t.at("up"), now);
      p.kill_at = deadline(t.at("kill"), now);
      p.give_up_at = deadline(t.at("give_up"), now);
      p.sample_at = deadline(t.at("sample"), now);
      if (const json& c = j.at("child"); !c.is_null()) {
        Child::Handover h;
        h.pid = c.at("pid");
        h.start_time = c.at("start_time");
        h.pidfd = c.at("pidfd");
        h.out = c.at("out");
        h.err = c.at("err");
        h.status = c.at("status");
        h.own_session = c.at("own_session");
        h.path = c.at("path").get<std::string>();
        h.work_dir = c.at("work_dir").get<std::string>();
        h.oom_score_adj = c.at("oom_score_adj").get<std::string>();
        h.user = c.at("user").get<std::string>();
        h.group = c.at("group").get<std::string>();
        h.nice = opt_of<int>(c.at("nice"));
        p.child.emplace(Child::adopt(h));
        ++p.child_serial;
        ++children;
      }
      // Version 1 had no probes (it refused to hand a child with probes over).
      if (const auto it = j.find("probe"); it != j.end()) adopt_probe_json(p, *it);
      for (int s : {0, 1}) p.logs[s].restore(ring_of(j.at("logs").at(s)));
      p.overflow_reported = j.at("overflow_reported").get<decltype(p.overflow_reported)>();
      p.unread_dropped_seen = j.at("unread_dropped_seen").get<decltype(p.unread_dropped_seen)>();
    }
    activate_requested_ = state.at("activated");
    changed();
    save_groups();  // no-op until the supervisor has opened the registry (activate())
  } catch (const std::exception& e) {
    return std::string("malformed process backend state: ") + e.what();
  }
  wake();  // the supervisor polls the adopted descriptors from its next pass
  if (log_) {
    mgmt::log::info(*log_, "adopted {} running child{} from the previous program", children,
                    children == 1 ? "" : "ren");
  }
  return {};
}

}  // namespace mgmt::process
