// Helpers shared by the process backend's unit tests: a backend built from YAML, start and
// stop as blocking calls, an event recorder, and checks on children and zombies.
#pragma once

#include <dirent.h>
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <catch2/catch.hpp>
#include <yaml-cpp/yaml.h>

#include "mgmt/backend.hpp"
#include "mgmt/plugin.hpp"
#include "process_backend.hpp"

namespace mgmt::test {

// Children of this test process that exited and were never reaped.
inline int zombies() {
  int count = 0;
  const std::string me = std::to_string(::getpid());
  DIR* proc = ::opendir("/proc");
  while (const dirent* e = ::readdir(proc)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    std::ifstream in(std::string("/proc/") + e->d_name + "/stat");
    std::string line;
    if (!std::getline(in, line)) continue;
    const auto close = line.rfind(')');
    if (close == std::string::npos) continue;
    char st = 0;
    std::string ppid;
    std::istringstream fields(line.substr(close + 1));
    fields >> st >> ppid;
    if (st == 'Z' && ppid == me) ++count;
  }
  ::closedir(proc);
  return count;
}

// True when `pid` no longer runs (gone, or a zombie some other parent has yet to reap).
inline bool process_gone(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return true;
  const auto close = line.rfind(')');
  return close != std::string::npos && close + 2 < line.size() && line[close + 2] == 'Z';
}

// A scratch directory for marker files, removed at the end of the test.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    char tmpl[] = "/tmp/mgmt-process-test-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return (path / name).string(); }
};

inline void touch(const std::string& path) { std::ofstream(path) << ""; }

inline std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline bool exists(const std::string& path) { return std::filesystem::exists(path); }

// Records every event of the backend's subscription.
class EventLog {
 public:
  explicit EventLog(Backend& b)
      : sub_(b.subscribe_events([this](const Event& e) {
          std::lock_guard lock(mu_);
          events_.push_back(e);
        })) {}

  std::vector<Event> all() const {
    std::lock_guard lock(mu_);
    return events_;
  }
  std::size_t size() const {
    std::lock_guard lock(mu_);
    return events_.size();
  }
  // `pid`'s events, and their types, in order.
  std::vector<Event> of(const std::string& pid) const {
    std::lock_guard lock(mu_);
    std::vector<Event> out;
    for (const auto& e : events_) {
      if (e.pid == pid) out.push_back(e);
    }
    return out;
  }
  std::vector<std::string> types(const std::string& pid) const {
    std::vector<std::string> out;
    for (const auto& e : of(pid)) out.push_back(e.type);
    return out;
  }
  bool has(const std::string& pid, std::string_view type) const { return count(pid, type) > 0; }
  int count(const std::string& pid, std::string_view type) const {
    int n = 0;
    for (const auto& t : types(pid)) n += t == type ? 1 : 0;
    return n;
  }
  // The summaries of `pid`'s events of `type`, in order.
  std::vector<std::string> summaries(const std::string& pid, std::string_view type) const {
    std::vector<std::string> out;
    for (const auto& e : of(pid)) {
      if (e.type == type) out.push_back(e.summary);
    }
    return out;
  }
  // The first such summary, or "(none)".
  std::string summary_of(const std::string& pid, std::string_view type) const {
    const auto all = summaries(pid, type);
    return all.empty() ? "(none)" : all.front();
  }
  // Index of the n-th (0-based) event of `pid` and `type` among all events; -1 if none.
  int index(const std::string& pid, std::string_view type, int nth = 0) const {
    std::lock_guard lock(mu_);
    for (std::size_t i = 0; i < events_.size(); ++i) {
      if (events_[i].pid == pid && events_[i].type == type && nth-- == 0) {
        return static_cast<int>(i);
      }
    }
    return -1;
  }

 private:
  mutable std::mutex mu_;
  std::vector<Event> events_;
  std::unique_ptr<Subscription> sub_;
};

inline std::unique_ptr<process::ProcessBackend> make_backend(const std::string& yaml) {
  PluginEnv env;
  env.config = YAML::Load(yaml);
  env.config_file = "test.yaml";
  return std::make_unique<process::ProcessBackend>(env);
}

inline std::string reload(Backend& b, const std::string& yaml) {
  return b.reconfigure(YAML::Load(yaml), "new.yaml");
}

// One process running `script` under /bin/sh -c, plus extra YAML lines for its entry.
inline std::string sh_process(const std::string& id, const std::string& script,
                              const std::string& extra = "") {
  YAML::Emitter quoted;
  quoted << YAML::DoubleQuoted << script;
  return "  - id: " + id + "\n    command: /bin/sh\n    args: [-c, " + quoted.c_str() + "]\n" +
         extra;
}

inline std::future<OpResult> async_call(bool start, Backend& b, const std::string& id) {
  auto promise = std::make_shared<std::promise<OpResult>>();
  auto future = promise->get_future();
  auto done = [promise](OpResult r) { promise->set_value(std::move(r)); };
  if (start) b.start(id, done);
  else b.stop(id, done);
  return future;
}
inline OpResult call(bool start, Backend& b, const std::string& id) {
  auto future = async_call(start, b, id);
  REQUIRE(future.wait_for(std::chrono::seconds(20)) == std::future_status::ready);
  return future.get();
}
inline OpResult start(Backend& b, const std::string& id) { return call(true, b, id); }
inline OpResult stop(Backend& b, const std::string& id) { return call(false, b, id); }

inline std::string state_of(Backend& b, const std::string& id) {
  const auto e = b.status(id);
  return e ? e->state : "(unknown)";
}
inline std::int64_t pid_of(Backend& b, const std::string& id) {
  const auto e = b.status(id);
  return e ? e->pid : -1;
}
inline std::vector<std::string> ids(Backend& b) {
  std::vector<std::string> out;
  for (const auto& e : b.list()) out.push_back(e.id);
  return out;
}

inline std::string logs_of(Backend& b, const std::string& id, LogStream s = LogStream::out) {
  std::string out;
  LogQuery q;
  q.id = id;
  q.stream = s;
  REQUIRE(b.logs(q, out).empty());
  return out;
}

}  // namespace mgmt::test
