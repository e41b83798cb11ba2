// Readiness and health of the process backend's children: the backend's side (what the
// child is given, when a start counts, what an unhealthy child gets). The probes
// themselves run on the prober's thread (probes.hpp).
//
// A child with `ready:` stays `starting` until its probe passes: only then is it
// `running` (event process.started after process.ready), are its start waiters answered
// and may its dependents start (they wait for `running`). With start_seconds too, both
// must have happened. Not ready after start_timeout: the child is stopped (stop_signal,
// SIGKILL after stop_timeout) and its exit is a failed start (start_retries applies).
// Health checks run once the child is ready (or from the fork, without `ready:`).
#include <unistd.h>

#include <regex>

#include "mgmt/log.hpp"
#include "process_backend.hpp"

extern char** environ;

namespace mgmt::process {

namespace {

// Longest output line a log probe holds while waiting for its newline.
constexpr std::size_t kLogLineMax = 64 * 1024;

// The plan of an exec probe: the child's user, environment and folder, another command.
std::variant<ExecPlan, std::string> probe_plan(const ProcessSpec& spec, const Probe& probe,
                                               const EnvVars& file_env) {
  if (probe.kind != Probe::Kind::exec) return std::string();
  ProcessSpec s = spec;
  s.command = probe.argv.front();
  s.args.assign(probe.argv.begin() + 1, probe.argv.end());
  s.tty = false;
  auto plan = make_exec_plan(s, environ, file_env);
  if (auto* err = std::get_if<std::string>(&plan)) *err = "probe: " + *err;
  return plan;
}

// The user whose processes a notify sender may be (the child's).
uid_t probe_uid(const ManagedProcess& p) {
  const Identity& id = p.spec.identity;
  return id.switch_ids && !id.user.empty() ? id.uid : ::geteuid();
}

const Probe& none() {
  static const Probe kNone;
  return kNone;
}

}  // namespace

bool ProcessBackend::prepare_probes(const ManagedProcess& p, ExecPlan& plan,
                                    ProbeSetup& setup) {
  if (!p.spec.ready && !p.spec.health) return true;
  setup = Prober::prepare(p.spec);
  if (!setup.error.empty()) return false;
  for (const auto& [key, value] : setup.env) {
    const std::string prefix = key + "=";
    std::erase_if(plan.envp, [&](const std::string& kv) { return kv.rfind(prefix, 0) == 0; });
    plan.envp.push_back(prefix + value);
  }
  plan.ready_fd = setup.child_fd.get();
  plan.ready_fd_number = setup.child_fd_number;
  return true;
}

void ProcessBackend::watch_probes(ManagedProcess& p, ProbeSetup setup) {
  p.probe = ProbeState{};
  setup.child_fd.reset();  // the child has its copy: EOF once it and its children are gone
  if (!p.spec.ready && !p.spec.health) return;
  p.probe.token = setup.token;
  if (p.spec.health) p.probe.health = "starting";
  prober_->watch(std::move(setup), p.spec, p.child->pid(), probe_uid(p),
                 probe_plan(p.spec, p.spec.ready ? p.spec.ready->probe : none(), p.env_file_vars),
                 probe_plan(p.spec, p.spec.health ? p.spec.health->probe : none(),
                            p.env_file_vars));
}

void ProcessBackend::adopt_probes(ManagedProcess& p, const ProbeHandover& h) {
  prober_->adopt(h, p.spec, p.child->pid(), probe_uid(p),
                 probe_plan(p.spec, p.spec.ready ? p.spec.ready->probe : none(), p.env_file_vars),
                 probe_plan(p.spec, p.spec.health ? p.spec.health->probe : none(),
                            p.env_file_vars));
}

void ProcessBackend::end_probes(ManagedProcess& p) {
  if (p.probe.token == 0) return;
  if (prober_) prober_->forget(p.probe.token);
  p.probe.token = 0;
  p.probe.partial = {};
}

void ProcessBackend::mark_ready(ManagedProcess& p, const std::string& how,
                                std::chrono::milliseconds took) {
  p.probe.ready_seen = true;
  emit(&p, kEventReady, "ready after " + std::to_string(took.count()) + " ms (" + how + ")");
  if (log_) mgmt::log::info(*log_, "process {}: ready after {} ms ({})", p.spec.id, took.count(), how);
  // Running now, unless the exec has not been seen yet (on_exec_status goes on then) or
  // start_seconds is still running (its timer goes on then): through the timer, which the
  // supervisor runs in the pass that follows.
  if (p.state == state::starting && p.child && !p.exec_failed && p.child->status_fd() < 0 &&
      !p.up_at) {
    p.up_at = std::chrono::steady_clock::now();
  }
}

void ProcessBackend::watch_log(ManagedProcess& p, int stream, std::string_view chunk) {
  const Probe& probe = p.spec.ready->probe;
  if (probe.kind != Probe::Kind::log || p.probe.ready_seen || p.probe.token == 0 ||
      p.state != state::starting) {
    return;
  }
  std::string& line = p.probe.partial[static_cast<std::size_t>(stream)];
  while (!chunk.empty()) {
    const auto nl = chunk.find('\n');
    line.append(chunk.substr(0, nl));
    chunk = nl == std::string_view::npos ? std::string_view() : chunk.substr(nl + 1);
    if (nl == std::string_view::npos && line.size() < kLogLineMax) return;  // wait for the rest
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (std::regex_search(line, *probe.regex)) {
      const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
          std::chrono::steady_clock::now() - p.run_started);
      std::string shown = line.substr(0, 200);
      p.probe.last = "ok: " + std::string(stream == 0 ? "stdout" : "stderr") + ": " + shown;
      mark_ready(p, "log: \"" + shown + "\" matched /" + probe.text + "/", took);
      prober_->ready_seen(p.probe.token);  // health checks from now on
      p.probe.partial = {};
      return;
    }
    line.clear();
  }
}

void ProcessBackend::on_probe_reports(std::vector<ProbeReport>& reports) {
  {
    std::lock_guard lock(mu_);
    for (const auto& r : reports) {
      ManagedProcess* p = find(r.id);
      // For an earlier child, or one already on its way down: nothing to do.
      if (p == nullptr || !p->child || p->probe.token != r.token || p->exec_failed) continue;
      switch (r.kind) {
        case ProbeReport::Kind::ready:
          if (p->probe.ready_seen || p->state != state::starting) break;
          p->probe.last = r.last;
          mark_ready(*p, r.text, r.took);
          break;
        case ProbeReport::Kind::not_ready: {
          if (p->probe.ready_seen || p->state != state::starting) break;
          p->probe.last = r.last;
          // Stopped like a client stop, but still `starting`: its exit is a failed start.
          p->kill_reason = r.text;
          p->last_error = r.text;
          changed();
          if (log_) mgmt::log::warn(*log_, "process {}: {}; stopping it", p->spec.id, r.text);
          p->child->signal(p->spec.stop_signal, p->spec.stop_group);
          p->kill_at = std::chrono::steady_clock::now() + p->spec.stop_timeout;
          break;
        }
        case ProbeReport::Kind::status:
          if (p->probe.status_text != r.text) {
            p->probe.status_text = r.text;
            changed();
          }
          break;
        case ProbeReport::Kind::health: {
          const std::string before = p->probe.health;
          if (r.ok) {
            p->probe.health = "healthy";
          } else if (r.changed) {
            p->probe.health = "unhealthy";
          }
          if (p->probe.last != r.last || p->probe.health != before) {
            p->probe.last = r.last;
            changed();
          }
          if (!r.changed || p->state != state::running) break;
          if (r.ok) {
            emit(p, kEventHealthy, "healthy again: " + r.last);
            if (log_) mgmt::log::info(*log_, "process {}: healthy again", p->spec.id);
            break;
          }
          const HealthCheck& h = *p->spec.health;
          std::string summary = r.text;
          switch (h.on_unhealthy) {
            case HealthCheck::Action::restart:
              summary += "; restarting pid " + std::to_string(p->child->pid());
              break;
            case HealthCheck::Action::log:
              summary += "; logged only (on_unhealthy: log)";
              break;
            case HealthCheck::Action::signal:
              summary += "; " + signal_name(h.signal) + " to process group " +
                         std::to_string(p->child->pid());
              break;
          }
          if (log_) mgmt::log::warn(*log_, "process {}: unhealthy: {}", p->spec.id, summary);
          emit(p, kEventUnhealthy, summary);
          if (h.on_unhealthy == HealthCheck::Action::restart) {
            // Stopped and started again (its dependents are left alone, as for a stop).
            p->last_error = "unhealthy: " + r.text;
            ++p->restarts;
            begin_stop(*p);
            p->restart_after_stop = true;
          } else if (h.on_unhealthy == HealthCheck::Action::signal) {
            p->child->signal_group(h.signal);
          }
          break;
        }
      }
    }
  }
  wake();  // a start that now counts, dependents to start, a kill timer to run
}

}  // namespace mgmt::process
