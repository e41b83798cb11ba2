#include "upgrade.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "mgmt/log.hpp"
#include "mgmt/plugin.hpp"
#include "runtime.hpp"
#include "systemd.hpp"

extern char** environ;

namespace mgmt::daemon {

namespace {

using json = nlohmann::json;

// Loading every plugin takes well under a second; under a sanitizer on a loaded machine,
// several.
constexpr auto kCheckTimeout = std::chrono::seconds(60);
constexpr std::size_t kCheckOutputMax = 64 * 1024;

std::string errno_text(int err) { return std::strerror(err); }

json binary_of(std::string_view s) {
  return json::binary(std::vector<std::uint8_t>(s.begin(), s.end()));
}

std::string text_of_binary(const json& j) {
  const auto& b = j.get_binary();
  return std::string(b.begin(), b.end());
}

json stats_json(const StatsSnapshot& s) {
  json j;
  j["total"] = s.connections_total;
  j["refused"] = s.connections_refused;
  j["slow"] = s.slow_readers_dropped;
  j["timeouts"] = s.timeouts;
  j["denied"] = s.denied;
  j["bad_frames"] = s.bad_frames;
  j["spilled"] = s.frames_spilled;
  j["dropped"] = s.frames_dropped;
  j["stalls"] = s.stalls;
  j["requests"] = s.requests;
  j["latency_buckets"] = s.latency_buckets;
  j["latency_count"] = s.latency_count;
  j["latency_sum_us"] = s.latency_sum_us;
  return j;
}

StatsSnapshot stats_of(const json& j) {
  StatsSnapshot s;
  s.connections_total = j.value("total", std::uint64_t{0});
  s.connections_refused = j.value("refused", std::uint64_t{0});
  s.slow_readers_dropped = j.value("slow", std::uint64_t{0});
  s.timeouts = j.value("timeouts", std::uint64_t{0});
  s.denied = j.value("denied", std::uint64_t{0});
  s.bad_frames = j.value("bad_frames", std::uint64_t{0});
  s.frames_spilled = j.value("spilled", std::uint64_t{0});
  s.frames_dropped = j.value("dropped", std::uint64_t{0});
  s.stalls = j.value("stalls", std::uint64_t{0});
  if (j.contains("requests")) {
    const auto& r = j.at("requests");
    for (std::size_t i = 0; i < s.requests.size() && i < r.size(); ++i) s.requests[i] = r[i];
  }
  if (j.contains("latency_buckets")) {
    const auto& b = j.at("latency_buckets");
    for (std::size_t i = 0; i < s.latency_buckets.size() && i < b.size(); ++i) {
      s.latency_buckets[i] = b[i];
    }
  }
  s.latency_count = j.value("latency_count", std::uint64_t{0});
  s.latency_sum_us = j.value("latency_sum_us", std::uint64_t{0});
  return s;
}

// The value of "<label>: N" on a line of `text`, if any.
std::optional<std::uint32_t> reported(const std::string& text, const std::string& label) {
  const std::string key = label + ": ";
  for (std::size_t at = text.find(key); at != std::string::npos; at = text.find(key, at + 1)) {
    if (at != 0 && text[at - 1] != ' ' && text[at - 1] != '\n') continue;
    const char* p = text.c_str() + at + key.size();
    char* end = nullptr;
    const unsigned long v = std::strtoul(p, &end, 10);
    if (end != p) return static_cast<std::uint32_t>(v);
  }
  return std::nullopt;
}

// The last lines of a program's output, for a refusal.
std::string tail(const std::string& out) {
  std::string t = out;
  while (!t.empty() && (t.back() == '\n' || t.back() == ' ')) t.pop_back();
  std::size_t from = t.size();
  for (int lines = 0; lines < 3 && from != std::string::npos && from > 0; ++lines) {
    from = t.rfind('\n', from - 1);
  }
  t = from == std::string::npos ? t : t.substr(from + 1);
  for (char& c : t) {
    if (c == '\n') c = ' ';
  }
  return t.empty() ? "(no output)" : t;
}

void set_cloexec(int fd, bool on) {
  const int flags = ::fcntl(fd, F_GETFD);
  if (flags < 0) return;
  ::fcntl(fd, F_SETFD, on ? (flags | FD_CLOEXEC) : (flags & ~FD_CLOEXEC));
}

}  // namespace

std::string encode_image(const UpgradeImage& image) {
  json j;
  j["v"] = kUpgradeImageVersion;
  j["from"] = image.from_version;
  j["started_at"] = image.started_at;
  j["upgrades"] = image.upgrades;
  j["stats"] = stats_json(image.stats);
  j["listen_fd"] = image.listen_fd;
  j["listen_owned"] = image.listen_owned;
  j["backend_config"] = image.backend_config;
  j["backend"] = {{"version", image.backend.version},
                  {"state", binary_of(image.backend.state)},
                  {"fds", image.backend.fds}};
  j["next_event"] = image.next_event;
  json events = json::array();
  for (const auto& e : image.events) {
    events.push_back({{"n", e.seq},
                      {"pid", e.event.pid},
                      {"type", e.event.type},
                      {"ts", e.event.ts},
                      {"summary", e.event.summary}});
  }
  j["events"] = std::move(events);
  const auto bytes = json::to_msgpack(j);
  return std::string(bytes.begin(), bytes.end());
}

std::string decode_image(std::string_view bytes, UpgradeImage& out) {
  try {
    const json j = json::from_msgpack(bytes.begin(), bytes.end());
    const auto v = j.at("v").get<std::uint32_t>();
    if (v != kUpgradeImageVersion) {
      return "state image version " + std::to_string(v) + ", this mgmtd reads " +
             std::to_string(kUpgradeImageVersion);
    }
    out = {};
    out.from_version = j.value("from", std::string());
    out.started_at = j.at("started_at").get<std::int64_t>();
    out.upgrades = j.at("upgrades").get<std::uint32_t>();
    out.stats = stats_of(j.at("stats"));
    out.listen_fd = j.at("listen_fd").get<int>();
    out.listen_owned = j.at("listen_owned").get<bool>();
    out.backend_config = j.at("backend_config").get<std::string>();
    const json& b = j.at("backend");
    out.backend.version = b.at("version").get<std::uint32_t>();
    out.backend.state = text_of_binary(b.at("state"));
    out.backend.fds = b.at("fds").get<std::vector<int>>();
    out.next_event = j.value("next_event", std::uint64_t{1});
    for (const auto& e : j.value("events", json::array())) {
      JournalEvent je;
      je.seq = e.at("n").get<std::uint64_t>();
      je.event.pid = e.at("pid").get<std::string>();
      je.event.type = e.at("type").get<std::string>();
      je.event.ts = e.at("ts").get<std::int64_t>();
      je.event.summary = e.at("summary").get<std::string>();
      out.events.push_back(std::move(je));
    }
  } catch (const std::exception& e) {
    return std::string("malformed state image: ") + e.what();
  }
  return {};
}

std::optional<UpgradeImage> take_upgrade_image() {
  const char* v = std::getenv(kImageEnv);
  if (v == nullptr) return std::nullopt;
  const std::string text = v;
  ::unsetenv(kImageEnv);
  char* end = nullptr;
  const long fd = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || fd < 0) {
    throw std::runtime_error(std::string(kImageEnv) + "=" + text + " is not a descriptor");
  }
  std::string bytes;
  char buf[65536];
  off_t off = 0;
  while (true) {
    const ssize_t n = ::pread(static_cast<int>(fd), buf, sizeof buf, off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      throw std::runtime_error("cannot read the upgrade state image (descriptor " + text +
                               "): " + errno_text(errno));
    }
    if (n == 0) break;
    bytes.append(buf, static_cast<std::size_t>(n));
    off += n;
  }
  ::close(static_cast<int>(fd));
  UpgradeImage image;
  if (std::string err = decode_image(bytes, image); !err.empty()) throw std::runtime_error(err);
  return image;
}

std::string upgrade_binary() {
  if (const char* test = std::getenv(kTestBinaryEnv); test != nullptr && *test != '\0') {
    std::string b = test;
    ::unsetenv(kTestBinaryEnv);
    return b;
  }
  std::error_code ec;
  std::string exe = std::filesystem::read_symlink("/proc/self/exe", ec).string();
  if (ec) return {};
  // A file replaced since it was executed (a package upgrade) reads "<path> (deleted)".
  static constexpr std::string_view kDeleted = " (deleted)";
  if (exe.size() > kDeleted.size() &&
      exe.compare(exe.size() - kDeleted.size(), kDeleted.size(), kDeleted) == 0) {
    exe.resize(exe.size() - kDeleted.size());
  }
  return exe;
}

std::string check_binary(const std::string& binary, const std::vector<std::string>& args,
                         std::uint32_t handoff_version) {
  if (binary.empty()) return "the path of the mgmtd binary is unknown";
  if (::access(binary.c_str(), X_OK) != 0) {
    return "cannot execute " + binary + ": " + errno_text(errno);
  }
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return "pipe: " + errno_text(errno);
  posix_spawn_file_actions_t fa;
  ::posix_spawn_file_actions_init(&fa);
  ::posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  ::posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
  ::posix_spawn_file_actions_adddup2(&fa, fds[1], 2);
  std::vector<std::string> argv_s{binary};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  argv_s.emplace_back("--check");
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  const int rc = ::posix_spawn(&pid, binary.c_str(), &fa, nullptr, argv.data(), environ);
  ::posix_spawn_file_actions_destroy(&fa);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    return "cannot run " + binary + " --check: " + errno_text(rc);
  }
  std::string out;
  const auto deadline = std::chrono::steady_clock::now() + kCheckTimeout;
  bool timed_out = false;
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    if (left <= 0) {
      timed_out = true;
      break;
    }
    pollfd p{fds[0], POLLIN, 0};
    const int n = ::poll(&p, 1, static_cast<int>(left));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) continue;
    char buf[4096];
    const ssize_t r = ::read(fds[0], buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    if (out.size() < kCheckOutputMax) out.append(buf, static_cast<std::size_t>(r));
  }
  ::close(fds[0]);
  if (timed_out) ::kill(pid, SIGKILL);
  // The process backend, as subreaper, may reap this child before we do (it reaps every
  // zombie that is not one of its own): then only the output tells.
  int status = 0;
  pid_t w;
  do {
    w = ::waitpid(pid, &status, 0);
  } while (w < 0 && errno == EINTR);
  const std::string what = binary + " --check";
  if (timed_out) return what + " did not finish within " + std::to_string(kCheckTimeout.count()) + " s";
  if (w == pid && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
    return what + " failed (" +
           (WIFEXITED(status) ? "exit code " + std::to_string(WEXITSTATUS(status))
                              : "killed by signal " + std::to_string(WTERMSIG(status))) +
           "): " + tail(out);
  }
  if (out.find(": OK\n") == std::string::npos) {
    return what + " did not accept the configuration: " + tail(out);
  }
  const auto abi = reported(out, "plugin ABI");
  const auto image = reported(out, "upgrade image");
  const auto handoff = reported(out, "backend handoff");
  if (!abi || !image || !handoff) {
    return binary + " does not report what it can adopt (plugin ABI, upgrade image, backend "
                    "handoff): an mgmtd without in-place upgrades; restart mgmtd instead";
  }
  if (*abi < kFirstUpgradeAbi) {
    return binary + " loads plugin ABI " + std::to_string(*abi) +
           ", which cannot take over in place (ABI " + std::to_string(kFirstUpgradeAbi) +
           " or later needed); this mgmtd loads ABI " + std::to_string(kAbiVersion);
  }
  if (*image != kUpgradeImageVersion) {
    return binary + " reads upgrade image version " + std::to_string(*image) +
           ", this mgmtd writes version " + std::to_string(kUpgradeImageVersion);
  }
  if (*handoff < handoff_version) {
    return binary + "'s backend adopts handoff versions up to " + std::to_string(*handoff) +
           ", this backend writes version " + std::to_string(handoff_version);
  }
  return {};
}

Upgrader::Upgrader(Server& server, Runtime& runtime, const Notifier& notifier,
                   std::shared_ptr<spdlog::logger> log, std::string binary,
                   std::vector<std::string> args, bool listen_owned)
    : server_(server),
      runtime_(runtime),
      notifier_(notifier),
      log_(std::move(log)),
      binary_(std::move(binary)),
      args_(std::move(args)),
      listen_owned_(listen_owned) {}

Upgrader::~Upgrader() {
  if (checker_.joinable()) checker_.join();
}

void Upgrader::request(std::function<void(const std::string&)> done) {
  auto refuse = [&](const std::string& why) {
    mgmt::log::error(*log_, "upgrade refused, nothing changed: {}", why);
    done(why);
  };
  if (busy_) return refuse("an upgrade is already under way");
  const std::uint32_t handoff = runtime_.backend().handoff_version();
  if (handoff == 0) {
    return refuse("the backend (" + runtime_.info().plugins.front().name +
                  ") cannot hand its processes over to a new program: restart mgmtd instead");
  }
  busy_ = true;
  mgmt::log::info(*log_, "upgrade: checking {} with the running configuration", binary_);
  if (checker_.joinable()) checker_.join();  // the previous check, long finished
  checker_ = std::thread([this, handoff, done = std::move(done)] {
    std::string err = check_binary(binary_, args_, handoff);
    server_.post([this, err = std::move(err), done] { checked(err, done); });
  });
}

void Upgrader::checked(const std::string& err,
                       const std::function<void(const std::string&)>& done) {
  busy_ = false;
  auto refuse = [&](const std::string& why) {
    mgmt::log::error(*log_, "upgrade refused, nothing changed: {}", why);
    done(why);
  };
  if (!err.empty()) return refuse(err);
  // A SIGTERM during the check: the shutdown goes on, and the processes stop with it.
  if (server_.stopping()) return refuse("mgmtd is shutting down");
  notifier_.send("RELOADING=1\n" + monotonic_usec() + "\nSTATUS=upgrading in place to " +
                 binary_);
  Handoff handoff;
  if (std::string why = runtime_.backend().handoff(handoff); !why.empty()) {
    notifier_.send("READY=1\nSTATUS=" + status_summary(runtime_.backend().list()));
    return refuse(why);
  }
  busy_ = true;  // for good: the server stops now
  const ServerInfo& info = runtime_.info();
  image_.from_version = info.version;
  image_.started_at = info.started_at;
  image_.upgrades = info.upgrades + 1;
  image_.stats = server_.stats().snapshot();
  image_.listen_owned = listen_owned_;
  image_.backend_config = runtime_.backend_config_text();
  image_.backend = std::move(handoff);
  runtime_.journal_snapshot(image_.next_event, image_.events);
  mgmt::log::info(*log_, "upgrade: {} takes over (upgrade {}); closing every connection",
                  binary_, image_.upgrades);
  done("");
  image_.listen_fd = server_.end_for_upgrade();
  pending_ = true;
}

void Upgrader::exec() {
  std::vector<int> keep = image_.backend.fds;
  if (image_.listen_fd >= 0) keep.push_back(image_.listen_fd);
  const std::string bytes = encode_image(image_);
  const int fd = ::memfd_create("mgmtd-upgrade-state", 0);
  bool written = fd >= 0;
  for (std::size_t off = 0; written && off < bytes.size();) {
    const ssize_t n = ::write(fd, bytes.data() + off, bytes.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) written = false;
    else off += static_cast<std::size_t>(n);
  }
  if (!written) {
    mgmt::log::critical(*log_, "upgrade: cannot write the state image: {}", errno_text(errno));
    return;
  }
  for (const int k : keep) set_cloexec(k, false);

  std::vector<std::string> env_s;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) env_s.emplace_back(*e);
  for (auto& v : notifier_.environment()) env_s.push_back(std::move(v));
  env_s.push_back(std::string(kImageEnv) + "=" + std::to_string(fd));
  std::vector<char*> envp;
  for (auto& e : env_s) envp.push_back(e.data());
  envp.push_back(nullptr);
  auto run = [&](const std::string& path) {
    std::vector<std::string> argv_s{binary_};
    argv_s.insert(argv_s.end(), args_.begin(), args_.end());
    std::vector<char*> argv;
    for (auto& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);
    log_->flush();
    ::execve(path.c_str(), argv.data(), envp.data());
    return errno_text(errno);
  };
  const std::string err = run(binary_);
  mgmt::log::error(*log_, "upgrade: cannot execute {}: {}; executing the running program again",
                   binary_, err);
  const std::string again = run("/proc/self/exe");
  mgmt::log::critical(*log_, "upgrade: cannot execute the running program either: {}", again);
}

}  // namespace mgmt::daemon
