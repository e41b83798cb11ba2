// systemd's service protocols, spoken without libsystemd: readiness and status
// notifications (sd_notify's datagrams to $NOTIFY_SOCKET), the watchdog, and socket
// activation ($LISTEN_FDS). Each is taken from the environment once, at start-up, and the
// variables are removed so that supervised processes do not inherit mgmtd's.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mgmt/messages.hpp"

namespace mgmt::daemon {

class Notifier {
 public:
  // Reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID, then unsets them.
  Notifier();
  ~Notifier();
  Notifier(const Notifier&) = delete;
  Notifier& operator=(const Notifier&) = delete;

  bool enabled() const { return fd_ >= 0; }
  // Sends one notification ("READY=1", "STATUS=…", several lines joined by '\n'). Never
  // blocks and never throws; a failure is returned ("" when sent or when disabled).
  std::string send(std::string_view message) const;
  // How often to send WATCHDOG=1: half of WATCHDOG_USEC, when systemd asked this process.
  std::optional<std::chrono::microseconds> watchdog_interval() const { return watchdog_; }
  // The notify socket's address as given (for messages).
  const std::string& address() const { return address_; }
  // The variables read at start-up, for a program that replaces this one with the same pid
  // (an in-place upgrade): NOTIFY_SOCKET, and WATCHDOG_USEC with WATCHDOG_PID when the
  // watchdog is ours. Empty without a notify socket.
  std::vector<std::string> environment() const;

 private:
  int fd_ = -1;
  std::string address_;
  long long watchdog_usec_ = 0;
  std::optional<std::chrono::microseconds> watchdog_;
};

// "MONOTONIC_USEC=<CLOCK_MONOTONIC now>", as RELOADING=1 must carry.
std::string monotonic_usec();

// A one-line summary of the processes for STATUS=: "12 processes: 11 running, 1 failed".
std::string status_summary(const std::vector<Entry>& entries);

// Socket activation. When LISTEN_PID is this process and LISTEN_FDS names descriptors
// (from 3 on), returns the first that is a listening Unix stream socket, close-on-exec
// from now on; the others are closed. nullopt without socket activation. Unsets LISTEN_PID,
// LISTEN_FDS and LISTEN_FDNAMES either way. `note` says what was found when it is worth a
// log line (descriptors that were not used, or none usable).
std::optional<int> take_listen_fd(std::string& note);

}  // namespace mgmt::daemon
