// What mgmtd tells systemd over the notify socket (Type=notify): READY=1 once the socket
// listens and the processes have been started, STATUS= kept current, RELOADING=1 …
// READY=1 around each reload, STOPPING=1 when shutdown begins, and WATCHDOG=1 from the I/O
// thread, so that a stuck I/O thread gets mgmtd restarted. Does nothing without
// NOTIFY_SOCKET.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "mgmt/backend.hpp"
#include "mgmt/server/server.hpp"
#include "runtime.hpp"
#include "systemd.hpp"

namespace spdlog {
class logger;
}

namespace mgmt::daemon {

class SystemdAgent {
 public:
  SystemdAgent(const Notifier& notifier, Server& server, Runtime& runtime,
               std::shared_ptr<spdlog::logger> log);
  ~SystemdAgent();
  SystemdAgent(const SystemdAgent&) = delete;
  SystemdAgent& operator=(const SystemdAgent&) = delete;

  // Serving: READY=1 with the first STATUS=.
  void ready();

 private:
  void send(const std::string& message);
  std::string status_line();
  void refresh_status();  // on the I/O thread

  const Notifier& notifier_;
  Server& server_;
  Runtime& runtime_;
  std::shared_ptr<spdlog::logger> log_;
  std::unique_ptr<Subscription> events_;
  std::atomic<bool> refresh_pending_{false};
  std::string last_status_;
  bool ready_ = false;
  bool send_failed_ = false;  // logged once
};

}  // namespace mgmt::daemon
