#include "systemd_agent.hpp"

#include <spdlog/spdlog.h>

#include "mgmt/log.hpp"

namespace mgmt::daemon {

SystemdAgent::SystemdAgent(const Notifier& notifier, Server& server, Runtime& runtime,
                           std::shared_ptr<spdlog::logger> log)
    : notifier_(notifier), server_(server), runtime_(runtime), log_(std::move(log)) {
  if (!notifier_.enabled()) return;
  server_.on_shutdown([this] { send("STOPPING=1\nSTATUS=stopping every process"); });
  runtime_.on_reload_events([this](bool ended) {
    if (ended) {
      send("READY=1\n" + status_line());
    } else {
      send("RELOADING=1\n" + monotonic_usec() + "\nSTATUS=reloading the configuration");
    }
  });
  if (const auto every = notifier_.watchdog_interval()) {
    server_.every(std::chrono::duration_cast<std::chrono::milliseconds>(*every),
                  [this] { send("WATCHDOG=1"); });
    mgmt::log::info(*log_, "systemd watchdog: WATCHDOG=1 every {} ms", every->count() / 1000);
  }
  // Every event may change a count: the summary is rebuilt on the I/O thread, once per
  // burst (a refresh already queued covers the events that follow it).
  events_ = runtime_.backend().subscribe_events([this](const Event&) {
    if (!refresh_pending_.exchange(true)) server_.post([this] { refresh_status(); });
  });
}

SystemdAgent::~SystemdAgent() {
  events_.reset();
  if (notifier_.enabled()) runtime_.on_reload_events(nullptr);
}

void SystemdAgent::ready() {
  if (!notifier_.enabled()) return;
  ready_ = true;
  send("READY=1\n" + status_line());
}

void SystemdAgent::send(const std::string& message) {
  const std::string err = notifier_.send(message);
  if (!err.empty() && !send_failed_) {
    send_failed_ = true;
    mgmt::log::warn(*log_, "{} (further failures are not logged)", err);
  }
}

std::string SystemdAgent::status_line() {
  last_status_ = status_summary(runtime_.backend().list());
  return "STATUS=" + last_status_;
}

void SystemdAgent::refresh_status() {
  refresh_pending_.store(false);
  if (!ready_) return;  // READY=1 carries the first one
  const std::string before = last_status_;
  const std::string line = status_line();
  if (last_status_ != before) send(line);
}

}  // namespace mgmt::daemon
