// The spawn helper: a small process that forks the supervised children on mgmtd's behalf.
//
// Why. A fork copies the forking process's page tables and descriptor table, and the
// child's exec then closes every inherited close-on-exec descriptor. mgmtd holds three
// descriptors per running child (two pipes and a pidfd) and its memory grows with the
// number of processes, so each fork of mgmtd itself costs O(N) and starting N processes
// O(N^2) (1.67 ms per process at 4,000 against 0.86 ms at 100). The helper is forked once,
// on the first start as a program of its own; it keeps one descriptor (its socket) and
// little memory, so a spawn costs the same at any N.
//
// Why a program of its own. A copy of mgmtd made by fork would copy mgmtd's page tables at
// each of its own forks (everything mgmtd had allocated, the parsed configuration
// included), and keep as private memory every page mgmtd changes afterwards: 9.9 MB at
// 1,500 processes. The helper therefore executes `mgmtd-spawn` (installed beside the
// plugins) at once, which holds only what spawning needs (Private_Dirty 300 kB). Without
// that program mgmtd forks each child itself.
//
// How the children stay mgmtd's. The helper creates a child with clone(CLONE_PARENT): its
// parent is the helper's parent, mgmtd, exactly as if mgmtd had forked it (mgmtd reaps it,
// its pidfd and pipes are mgmtd's, and its parent-death signal follows the mgmtd thread
// that started the helper, as it followed the thread that forked before). The helper makes
// the pipes, the pidfd and the exec status pipe as Child::spawn always has, and passes them
// back over its socket (SCM_RIGHTS) with the rest of the Child (its Handover), then closes
// its copies.
//
// Protocol on a SOCK_STREAM socketpair, one request at a time: a request is a 4-byte
// length and a MessagePack ExecPlan, with the readiness pipe's write end attached when the
// plan has one; the answer is a 4-byte length and a MessagePack {err} or Child::Handover,
// with the child's descriptors attached. The helper exits at the end of its socket (mgmtd
// closed it, or exited: its end is close-on-exec, so an in-place upgrade ends it too).
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <variant>

#include "child.hpp"
#include "unique_fd.hpp"

namespace mgmt::process {

// The helper program installed beside the plugins (<prefix>/lib/mgmtd/mgmtd-spawn, found
// from the path of the code that calls this), or "" when there is none.
std::string spawn_helper_program();

// mgmtd-spawn's main: `argv[1]` is mgmtd's pid, fd 3 its socket. Not for running by hand.
int spawn_helper_main(int argc, char** argv);

class SpawnHelper {
 public:
  // Forks the helper from the calling thread (the children's parent-death signal follows
  // that thread), which executes `program` (spawn_helper_program()): a fresh, small
  // process. nullptr and `error` when there is no program or it does not start (the
  // caller then forks the children itself).
  static std::unique_ptr<SpawnHelper> start(std::string& error, const std::string& program);
  // Closes the socket and waits for the helper to exit.
  ~SpawnHelper();
  SpawnHelper(const SpawnHelper&) = delete;
  SpawnHelper& operator=(const SpawnHelper&) = delete;

  // Child::spawn(plan) done by the helper; the child is this process's child. On a broken
  // helper (it died, the socket failed) `broken()` turns true and the text says so.
  std::variant<Child, std::string> spawn(const ExecPlan& plan);
  bool broken() const noexcept { return broken_; }
  pid_t pid() const noexcept { return pid_; }
  // The supervisor reaped the helper (it had exited): broken, and not waited for again.
  void reaped() noexcept {
    reaped_ = true;
    broken_ = true;
  }

 private:
  SpawnHelper(pid_t pid, UniqueFd sock) : pid_(pid), sock_(std::move(sock)) {}
  pid_t pid_;
  UniqueFd sock_;
  bool broken_ = false;
  bool reaped_ = false;
};

}  // namespace mgmt::process
