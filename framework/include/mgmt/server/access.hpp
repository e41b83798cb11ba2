// Who may do what on the socket: rights derived from the peer's credentials (SO_PEERCRED).
#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <cstdint>
#include <string>
#include <vector>

namespace mgmt {

// Rights a request may need. A connection holds a set of them (a bit mask).
enum class Right : std::uint8_t { read = 1, control = 2 };
inline constexpr unsigned kAllRights = 3;

constexpr unsigned bit(Right r) noexcept { return static_cast<unsigned>(r); }
const char* right_name(Right r) noexcept;

// The right a request type needs unless the configuration says otherwise: list, status,
// logs and events read; everything else (start, stop, extra commands) controls.
Right default_right(std::uint8_t type) noexcept;

// One `access.rules` entry: the users (by uid) and groups (by gid) it names get `rights`.
struct AccessRule {
  std::vector<uid_t> uids;
  std::vector<gid_t> gids;
  unsigned rights = 0;
};

class AccessPolicy {
 public:
  // The owner (the uid mgmtd runs as) and root always hold every right.
  explicit AccessPolicy(uid_t owner = ::geteuid(), std::vector<AccessRule> rules = {});

  // Rights of a peer. Groups match the peer's primary gid or any supplementary group of
  // its user (looked up once per connection).
  unsigned rights_of(uid_t uid, gid_t gid) const;
  bool has_rules() const { return !rules_.empty(); }

 private:
  uid_t owner_;
  std::vector<AccessRule> rules_;
};

}  // namespace mgmt
