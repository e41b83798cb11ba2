// A small state file of the live process groups of one backend, so that a later mgmtd can
// end what a SIGKILLed one left behind.
//
// PR_SET_PDEATHSIG kills a child when the thread that forked it dies, but not the child's
// own children: when mgmtd is SIGKILLed, the grandchildren in each supervised process group
// live on, unsupervised. No helper process can fix that (a helper is killed the same way,
// or has to outlive mgmtd and becomes the unsupervised thing itself). So every backend
// records, in <state_dir>/process-<pid>-<n>.state, who it is (pid, start time, pid namespace)
// and each live group (pgid, the leader's start time, session, id). At start-up, before
// anything is spawned, a backend reads the files of instances that are gone and SIGKILLs
// what is left of their groups: that ends the leftovers and keeps a restarted mgmtd from
// running a second copy of anything.
//
// A process is taken for a member of a recorded group only when its pgid, its session and
// a start time no earlier than the leader's all match, so that a recycled pid does not
// make an unrelated process a target. Files of a live owner, or of another pid namespace,
// are left alone.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace mgmt::process {

struct GroupRecord {
  pid_t pgid = 0;                // = the leader's pid
  std::uint64_t start_time = 0;  // the leader's, from /proc/<pid>/stat
  pid_t session = 0;
  std::string id;  // the process id in the config (no spaces)
};

class GroupRegistry {
 public:
  explicit GroupRegistry(std::string dir);

  // Creates the folder (mode 0700) or checks that it belongs to this user and is not
  // writable by others, then kills and forgets what gone instances left. Returns "" or why
  // the folder cannot be used (the registry then does nothing). `notes` receives one line
  // per leftover group that was killed.
  std::string open(std::vector<std::string>& notes);

  // Rewrites this instance's file with `groups` (no-op when open() failed).
  void save(const std::vector<GroupRecord>& groups);
  // Deletes this instance's file.
  void remove();

  bool usable() const noexcept { return usable_; }
  const std::string& dir() const noexcept { return dir_; }
  const std::string& file() const noexcept { return file_; }

 private:
  std::string dir_;
  std::string file_;
  std::string owner_line_;
  bool usable_ = false;
};

}  // namespace mgmt::process
