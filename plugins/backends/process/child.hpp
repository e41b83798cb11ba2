// One running child: fork/exec in its own process group, with its stdout/stderr pipes, a
// pidfd to learn of its exit, and a status pipe that reports a failed exec.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "process_config.hpp"
#include "unique_fd.hpp"

namespace mgmt::process {

// Everything the forked child needs, prepared beforehand: after fork() only
// async-signal-safe calls are allowed.
struct ExecPlan {
  std::string path;  // resolved executable
  std::vector<std::string> argv;
  std::vector<std::string> envp;  // "KEY=value"
  std::string work_dir;           // "" = stay in the server's
  // Applied in the child before exec, in this order (privileged ones before the switch).
  std::vector<RLimit> rlimits;
  std::optional<int> nice;
  std::string oom_score_adj;  // the decimal text to write; "" = leave it
  int umask = -1;
  Identity identity;  // switched when identity.switch_ids
  bool tty = false;   // a pseudo-terminal for stdin, stdout and stderr
  std::uint16_t tty_cols = 80;
  std::uint16_t tty_rows = 24;
  // `ready: {fd: N}`: this descriptor (a pipe's write end, ours) becomes fd N in the child.
  int ready_fd = -1;
  int ready_fd_number = -1;
};

// Builds the environment (mgmtd's `base_env`, or only its PATH with clear_env; then the
// user's HOME, USER, LOGNAME and SHELL; then `file_env`, the env files' pairs; then the
// spec's env; then MGMT_PROCESS_ID and MGMT_INSTANCE), resolves the command in the
// resulting PATH and copies what the child applies before exec. Returns the plan, or an
// error text when the command is not found.
std::variant<ExecPlan, std::string> make_exec_plan(const ProcessSpec& spec,
                                                   const char* const* base_env,
                                                   const EnvVars& file_env = {});

// How a child ended. Both empty when it was reaped by someone else.
struct ExitStatus {
  std::optional<int> code;
  std::optional<int> signal;
};

// "exit code 3", "killed by SIGSEGV".
std::string describe(const ExitStatus& s);
// "SIGTERM"; "signal 42" for unnamed ones.
std::string signal_name(int sig);

class Child {
 public:
  enum Stream { out = 0, err = 1 };

  // Forks and execs `plan`. Returns the child, or an error text when a pipe, the
  // pseudo-terminal or fork failed. Whatever fails in the child (a limit the kernel
  // refuses, the switch of user, chdir, exec) is reported later through read_exec_status().
  // With plan.tty the child leads a session of its own, on the terminal, and stream_fd(out)
  // reads the terminal (stderr included; stream_fd(err) is -1).
  // `as_sibling` (the spawn helper): clone(CLONE_PARENT) instead of fork, so the child is
  // the caller's parent's child, not the caller's.
  static std::variant<Child, std::string> spawn(const ExecPlan& plan, bool as_sibling = false);

  Child(Child&&) noexcept = default;
  Child& operator=(Child&&) noexcept = default;
  ~Child() = default;

  pid_t pid() const noexcept { return pid_; }
  // From /proc/<pid>/stat at spawn: with the pid, names this child even after pid reuse.
  std::uint64_t start_time() const noexcept { return start_time_; }
  // Readable once the child has exited; -1 when pidfd_open is unavailable (poll instead).
  int pidfd() const noexcept { return pidfd_.get(); }
  // Read ends, non-blocking; -1 once closed.
  int stream_fd(Stream s) const noexcept { return streams_[s].get(); }
  void close_stream(Stream s) noexcept { streams_[s].reset(); }
  // Open until the exec outcome is known.
  int status_fd() const noexcept { return status_.get(); }

  // Call when status_fd() is readable. nullopt: nothing yet. "": the exec succeeded (or the
  // child died before reaching it). Otherwise why it failed, e.g.
  // "exec /nope: No such file or directory".
  std::optional<std::string> read_exec_status();

  // Signals the child's whole process group, and the child itself (wherever its group).
  void signal_group(int sig) const noexcept;
  // signal_group(sig) when `group`, else the child alone.
  void signal(int sig, bool group) const noexcept;
  // The child leads a session of its own (tty), else it is in mgmtd's session.
  bool own_session() const noexcept { return own_session_; }
  // True once the child has exited (it is a zombie or already gone), without reaping it:
  // until it is reaped its pid, and so its process group id, cannot be reused.
  bool has_exited() const noexcept;
  // waitpid(pid, WNOHANG): nullopt while it is still running.
  std::optional<ExitStatus> try_reap();

  // In-place upgrade (handoff.cpp): what this child is made of, to rebuild it in the next
  // program. handover() gives its descriptors away (they stay open across the exec, same
  // numbers): this object no longer closes them.
  struct Handover {
    pid_t pid = 0;
    std::uint64_t start_time = 0;
    int pidfd = -1, out = -1, err = -1, status = -1;
    bool own_session = false;
    std::string path, work_dir, oom_score_adj, user, group;
    std::optional<int> nice;
  };
  Handover handover();
  // Takes ownership of the descriptors.
  static Child adopt(const Handover& h);

 private:
  Child() = default;

  pid_t pid_ = 0;
  std::uint64_t start_time_ = 0;
  UniqueFd pidfd_;
  UniqueFd streams_[2];
  UniqueFd status_;
  bool own_session_ = false;
  // For the texts of read_exec_status().
  std::string path_;
  std::string work_dir_;
  std::optional<int> nice_;
  std::string oom_score_adj_;
  std::string user_;
  std::string group_;
};

}  // namespace mgmt::process
