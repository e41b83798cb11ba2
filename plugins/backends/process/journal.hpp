// Output of supervised processes sent to the systemd journal (`log_journal: true`), over
// journald's native protocol: one datagram per line to /run/systemd/journal/socket, each
// a list of fields (MESSAGE, PRIORITY, SYSLOG_IDENTIFIER, ...). No libsystemd needed.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>

#include <cstddef>
#include <string>
#include <string_view>

#include "unique_fd.hpp"

namespace mgmt::process {

inline constexpr std::string_view kJournalSocket = "/run/systemd/journal/socket";
// Longest line sent as one entry; a longer one is sent in pieces of this size (journald
// splits its own stdout streams the same way, at its LineMax default of 48 KiB).
inline constexpr std::size_t kJournalLineMax = 48 * 1024;

// One line of one process.
struct JournalEntry {
  std::string_view message;     // without its newline
  int priority = 6;             // 6 (info) for stdout, 3 (err) for stderr
  std::string_view identifier;  // SYSLOG_IDENTIFIER: the process id
  std::string_view stream;      // MGMT_STREAM: stdout, stderr
  pid_t pid = 0;                // SYSLOG_PID: the child's pid (0: not sent)
};

// The datagram of `e`: "FIELD=value\n" per field, or, for a value holding a newline,
// "FIELD\n", its size as 64-bit little-endian, the value and "\n" (the protocol's binary
// form). Fields: MESSAGE, PRIORITY, SYSLOG_IDENTIFIER, SYSLOG_PID, MGMT_PROCESS, MGMT_STREAM.
std::string encode_journal_entry(const JournalEntry& e);

// Cuts a stream's output into lines: `emit(line)` for each line ended in `chunk` (the
// partial one before it first), keeping the unended rest in `partial`; a line reaching
// kJournalLineMax is emitted in pieces.
template <class Emit>
void journal_lines(std::string& partial, std::string_view chunk, Emit&& emit) {
  while (!chunk.empty()) {
    const auto nl = chunk.find('\n');
    const std::string_view part = chunk.substr(0, nl);
    if (nl == std::string_view::npos && partial.size() + part.size() < kJournalLineMax) {
      partial.append(part);
      return;
    }
    const std::size_t room = kJournalLineMax - std::min(partial.size(), kJournalLineMax);
    if (part.size() > room) {  // too long: a piece now, the rest goes on
      partial.append(part.substr(0, room));
      emit(std::string_view(partial));
      partial.clear();
      chunk.remove_prefix(room);
      continue;
    }
    if (partial.empty()) {
      emit(part);
    } else {
      partial.append(part);
      emit(std::string_view(partial));
      partial.clear();
    }
    chunk = nl == std::string_view::npos ? std::string_view() : chunk.substr(nl + 1);
  }
}

// The sending end. Never blocks: a full journal drops the line (counted by the caller).
// Not thread-safe; the backend's supervisor thread is its only user.
class JournalSink {
 public:
  explicit JournalSink(std::string path = std::string(kJournalSocket));

  enum class Result { sent, full, failed };
  // Sends `e`; on `failed`, `why` says what ("/run/systemd/journal/socket: No such file or
  // directory").
  Result send(const JournalEntry& e, std::string& why);

  const std::string& path() const noexcept { return path_; }

 private:
  std::string path_;
  UniqueFd fd_;
  sockaddr_un addr_{};
  socklen_t addr_len_ = 0;
};

}  // namespace mgmt::process
