// Semantic versions of plugins and the constraints mgmt.yaml puts on them.
#pragma once

#include <compare>
#include <string>
#include <string_view>
#include <vector>

namespace mgmt {

struct Version {
  unsigned major = 0, minor = 0, patch = 0;
  auto operator<=>(const Version&) const = default;
  std::string str() const;
};

// "1", "1.2", "1.2.3" (a "-pre" or "+build" suffix is accepted and ignored).
// Throws std::invalid_argument saying what is wrong.
Version parse_version(std::string_view text);

// A space-separated list of comparators that must all hold, e.g. ">=1.2 <2".
// Operators: >= > <= < = == and ^ (same major, at least) and ~ (same minor, at least).
class VersionConstraint {
 public:
  VersionConstraint() = default;  // matches everything
  // Throws std::invalid_argument naming the bad comparator.
  explicit VersionConstraint(std::string_view text);
  bool matches(const Version& v) const;
  bool empty() const { return terms_.empty(); }
  const std::string& text() const { return text_; }

 private:
  enum class Op { ge, gt, le, lt, eq, caret, tilde };
  struct Term {
    Op op;
    Version v;
  };
  std::vector<Term> terms_;
  std::string text_;
};

}  // namespace mgmt
