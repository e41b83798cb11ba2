#include "mgmt/server/access.hpp"

#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <algorithm>

#include "mgmt/wire.hpp"

namespace mgmt {

const char* right_name(Right r) noexcept { return r == Right::read ? "read" : "control"; }

Right default_right(std::uint8_t type) noexcept {
  switch (static_cast<MsgType>(type)) {
    case MsgType::ListRequest:
    case MsgType::StatusRequest:
    case MsgType::LogsRequest:
    case MsgType::EventsSubscribe:
      return Right::read;
    default:
      return Right::control;
  }
}

AccessPolicy::AccessPolicy(uid_t owner, std::vector<AccessRule> rules)
    : owner_(owner), rules_(std::move(rules)) {}

namespace {

// The supplementary groups of uid's user, plus `gid`.
std::vector<gid_t> groups_of(uid_t uid, gid_t gid) {
  std::vector<gid_t> out{gid};
  passwd pw{};
  passwd* found = nullptr;
  std::vector<char> buf(16384);
  if (::getpwuid_r(uid, &pw, buf.data(), buf.size(), &found) != 0 || found == nullptr) return out;
  int n = 64;
  std::vector<gid_t> groups(static_cast<std::size_t>(n));
  if (::getgrouplist(pw.pw_name, gid, groups.data(), &n) < 0) {
    groups.resize(static_cast<std::size_t>(n));
    if (::getgrouplist(pw.pw_name, gid, groups.data(), &n) < 0) return out;
  }
  groups.resize(static_cast<std::size_t>(n));
  return groups;
}

}  // namespace

unsigned AccessPolicy::rights_of(uid_t uid, gid_t gid) const {
  if (uid == owner_ || uid == 0) return kAllRights;
  unsigned rights = 0;
  std::vector<gid_t> groups;
  bool groups_loaded = false;
  for (const auto& rule : rules_) {
    if ((rights | rule.rights) == rights) continue;  // adds nothing
    bool match = std::find(rule.uids.begin(), rule.uids.end(), uid) != rule.uids.end();
    if (!match && !rule.gids.empty()) {
      if (!groups_loaded) {
        groups = groups_of(uid, gid);
        groups_loaded = true;
      }
      for (gid_t g : groups) {
        if (std::find(rule.gids.begin(), rule.gids.end(), g) != rule.gids.end()) match = true;
      }
    }
    if (match) rights |= rule.rights;
  }
  return rights;
}

}  // namespace mgmt
