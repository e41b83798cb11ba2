// cliwrap's socket discovery, kept byte-for-byte in step with the Go CLI so that both
// clients find the same server from the same environment.
#include <cstdlib>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>

#include "mgmt/client.hpp"

namespace mgmt {

namespace {

constexpr std::string_view kSocketName = "manager.sock";

// An unset and an empty variable mean the same thing, as in Go's os.Getenv checks.
std::optional<std::string> env(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return std::nullopt;
  return std::string(v);
}

// Joins like Go's filepath.Join for the cases discovery meets: no doubled separator when
// `dir` ends in '/', and an empty `dir` yields just the name.
std::string join(std::string dir, std::string_view name) {
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  if (dir.empty()) return std::string(name);
  if (dir != "/") dir += '/';
  dir += name;
  return dir;
}

std::string trim(std::string_view s) {
  constexpr std::string_view ws = " \t\r\n\v\f";
  const auto b = s.find_first_not_of(ws);
  if (b == std::string_view::npos) return {};
  const auto e = s.find_last_not_of(ws);
  return std::string(s.substr(b, e - b + 1));
}

std::string temp_dir() { return env("TMPDIR").value_or("/tmp"); }

// The hint file's directory, or nullopt when it is missing, unreadable or blank.
std::optional<std::string> read_hint() {
  const std::string path = hint_file_path();
  if (path.empty()) return std::nullopt;
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::string line;
  std::getline(in, line);
  std::string dir = trim(line);
  if (dir.empty()) return std::nullopt;
  return dir;
}

}  // namespace

std::string user_cache_dir() {
  if (auto xdg = env("XDG_CACHE_HOME")) return *xdg;
  if (auto home = env("HOME")) return join(*home, ".cache");
  return {};  // Go's os.UserCacheDir fails here; the hint is then skipped.
}

std::string hint_file_path() {
  const std::string cache = user_cache_dir();
  if (cache.empty()) return {};
  return join(join(cache, "cliwrap"), "runtime-dir");
}

std::string discover_socket(const std::optional<std::string>& runtime_dir_flag) {
  if (runtime_dir_flag && !runtime_dir_flag->empty()) return join(*runtime_dir_flag, kSocketName);
  if (auto dir = env("CLIWRAP_RUNTIME_DIR")) return join(*dir, kSocketName);
  if (auto dir = read_hint()) return join(*dir, kSocketName);
  return join(join(temp_dir(), "cliwrap"), kSocketName);
}

std::string default_runtime_dir() {
  if (auto dir = env("CLIWRAP_RUNTIME_DIR")) return *dir;
  return join(temp_dir(), "cliwrap");
}

}  // namespace mgmt
