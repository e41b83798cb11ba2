#include "mgmt/server/version.hpp"

#include <charconv>
#include <stdexcept>

namespace mgmt {

std::string Version::str() const {
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
}

Version parse_version(std::string_view text) {
  const std::string original(text);
  if (auto cut = text.find_first_of("-+"); cut != std::string_view::npos) text = text.substr(0, cut);
  if (text.empty()) throw std::invalid_argument("empty version");
  unsigned parts[3] = {0, 0, 0};
  int n = 0;
  while (true) {
    if (n == 3) throw std::invalid_argument("version \"" + original + "\" has more than 3 parts");
    const char* b = text.data();
    const char* e = text.data() + text.size();
    auto [p, ec] = std::from_chars(b, e, parts[n]);
    if (ec != std::errc() || p == b) {
      throw std::invalid_argument("version \"" + original + "\" is not of the form 1.2.3");
    }
    ++n;
    text.remove_prefix(static_cast<std::size_t>(p - b));
    if (text.empty()) break;
    if (text.front() != '.') {
      throw std::invalid_argument("version \"" + original + "\" is not of the form 1.2.3");
    }
    text.remove_prefix(1);
  }
  return Version{parts[0], parts[1], parts[2]};
}

VersionConstraint::VersionConstraint(std::string_view text) : text_(text) {
  std::size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && (text[i] == ' ' || text[i] == ',')) ++i;
    if (i == text.size()) break;
    std::size_t j = i;
    while (j < text.size() && text[j] != ' ' && text[j] != ',') ++j;
    std::string_view tok = text.substr(i, j - i);
    i = j;

    Op op = Op::eq;
    auto take = [&](std::string_view prefix, Op o) {
      if (tok.substr(0, prefix.size()) == prefix) {
        op = o;
        tok.remove_prefix(prefix.size());
        return true;
      }
      return false;
    };
    take(">=", Op::ge) || take("<=", Op::le) || take("==", Op::eq) || take(">", Op::gt) ||
        take("<", Op::lt) || take("=", Op::eq) || take("^", Op::caret) || take("~", Op::tilde);
    if (tok.empty()) {
      throw std::invalid_argument("version constraint \"" + text_ +
                                  "\": an operator without a version");
    }
    try {
      terms_.push_back(Term{op, parse_version(tok)});
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument("version constraint \"" + text_ + "\": " + e.what());
    }
  }
}

bool VersionConstraint::matches(const Version& v) const {
  for (const auto& t : terms_) {
    bool ok = false;
    switch (t.op) {
      case Op::ge: ok = v >= t.v; break;
      case Op::gt: ok = v > t.v; break;
      case Op::le: ok = v <= t.v; break;
      case Op::lt: ok = v < t.v; break;
      case Op::eq: ok = v == t.v; break;
      case Op::caret: ok = v >= t.v && v.major == t.v.major; break;
      case Op::tilde: ok = v >= t.v && v.major == t.v.major && v.minor == t.v.minor; break;
    }
    if (!ok) return false;
  }
  return true;
}

}  // namespace mgmt
