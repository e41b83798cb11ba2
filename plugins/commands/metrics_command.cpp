// metrics {} → {err, text, listen} on the request's type: mgmtd's state in the Prometheus
// text format (`mgmtctl metrics` prints `text`). The plugin also serves the same text over
// HTTP (GET /metrics) on `listen`, a loopback address unless `allow_remote: true`.
//
// Threads: the exposition is always rendered on mgmtd's I/O thread, in handle(), where the
// backend and the server's counters may be read. The HTTP thread gets it by sending this
// very command to mgmtd's own socket (found among the process's listening Unix sockets),
// so it touches no server state itself; a scrape therefore also counts as one request of
// this command's type.
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "metrics_http.hpp"
#include "metrics_render.hpp"
#include "mgmt/client.hpp"
#include "mgmt/commands.hpp"
#include "mgmt/plugin.hpp"

namespace {

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string msgpack(const nlohmann::json& j) {
  const auto bytes = nlohmann::json::to_msgpack(j);
  return std::string(bytes.begin(), bytes.end());
}

// The path of a listening AF_UNIX socket of this process: mgmtd's own (it has no other).
// Found from /proc alone (the inodes of our descriptors, matched in /proc/net/unix), without
// touching descriptors that other threads own.
std::string own_listening_socket() {
  std::set<std::string> inodes;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd", ec)) {
    std::error_code lec;
    const std::string target = std::filesystem::read_symlink(e.path(), lec).string();
    if (!lec && target.rfind("socket:[", 0) == 0 && target.back() == ']') {
      inodes.insert(target.substr(8, target.size() - 9));
    }
  }
  if (inodes.empty()) return {};
  std::ifstream net("/proc/net/unix");
  std::string line;
  std::getline(net, line);  // Num RefCount Protocol Flags Type St Inode Path
  while (std::getline(net, line)) {
    std::istringstream f(line);
    std::string num, refs, proto, flags, type, st, inode, path;
    if (!(f >> num >> refs >> proto >> flags >> type >> st >> inode >> path)) continue;
    constexpr unsigned long kAcceptCon = 0x10000;  // __SO_ACCEPTCON: listening
    if ((std::strtoul(flags.c_str(), nullptr, 16) & kAcceptCon) == 0) continue;
    if (path.empty() || path[0] != '/' || !inodes.count(inode)) continue;
    return path;
  }
  return {};
}

class MetricsCommand final : public mgmt::Handler {
 public:
  explicit MetricsCommand(const mgmt::PluginEnv& env)
      : backend_(env.backend), server_(env.server), log_(env.log) {
    const YAML::Node& c = env.config;
    std::string listen = "127.0.0.1:9464";
    bool allow_remote = false;
    if (c && !c.IsNull()) {
      if (!c.IsMap()) throw std::invalid_argument("metrics: config must be a map {listen, allow_remote}");
      for (const auto& kv : c) {
        const auto key = kv.first.as<std::string>();
        if (key != "listen" && key != "allow_remote") {
          throw std::invalid_argument("metrics: unknown config key \"" + key +
                                      "\" (known: listen, allow_remote)");
        }
      }
      try {
        if (c["listen"]) listen = c["listen"].as<std::string>();
        if (c["allow_remote"]) allow_remote = c["allow_remote"].as<bool>();
      } catch (const YAML::Exception&) {
        throw std::invalid_argument(
            "metrics: listen must be \"ADDRESS:PORT\" (or off) and allow_remote true or false");
      }
    }
    // Our own message type, for the HTTP thread's requests: mgmtd records each plugin just
    // before creating it, so we are the last command of our name in the list so far.
    if (server_ != nullptr) {
      for (const auto& p : server_->plugins) {
        if (p.kind == mgmt::PluginKind::command && p.name == MGMT_PLUGIN_NAME) self_type_ = p.type;
      }
    }
    if (listen != "off" && listen != "none" && !listen.empty()) {
      const auto addr = mgmt::metrics::parse_listen(listen, allow_remote);  // throws: refused
      http_ = std::make_unique<mgmt::metrics::HttpServer>(
          addr, [this](std::string& why) { return fetch(why); },
          // Serve once mgmtd serves: never during `mgmtd --check`, which does not listen.
          [this] {
            socket_ = own_listening_socket();
            return !socket_.empty();
          },
          log_);
    }
  }

  // The HTTP thread ends before the rest. We may be destroyed on the I/O thread (a reload)
  // while that thread waits for the I/O thread to answer its request: cut it short.
  ~MetricsCommand() override {
    {
      std::lock_guard lock(fetch_mu_);
      stopping_ = true;
      if (fetch_fd_ >= 0) ::shutdown(fetch_fd_, SHUT_RDWR);
    }
    http_.reset();
  }

  void handle(std::shared_ptr<mgmt::Exchange> ex) override {
    self_type_.store(ex->type(), std::memory_order_relaxed);
    nlohmann::json answer;
    answer["err"] = "";
    answer["text"] = render();
    answer["listen"] = http_ ? http_->bound_address() : std::string();
    mgmt::reply_command(*ex, msgpack(answer));
  }

 private:
  // I/O thread.
  std::string render() {
    mgmt::metrics::Input in;
    in.now_ns = now_ns();
    in.server = server_;
    std::optional<mgmt::StatsSnapshot> stats;
    if (server_ != nullptr && server_->stats != nullptr) stats = server_->stats->snapshot();
    if (stats) in.stats = &*stats;
    std::vector<mgmt::Entry> procs;
    if (backend_ != nullptr) {
      procs = backend_->list();
      in.processes = &procs;
    }
    in.scrapes = ++scrapes_;
    return mgmt::metrics::render(in);
  }

  // HTTP thread: this command, asked over mgmtd's own socket.
  std::optional<std::string> fetch(std::string& why) {
    const int type = self_type_.load(std::memory_order_relaxed);
    if (type < 0) {
      why = "the metrics plugin does not know its message type";
      return std::nullopt;
    }
    if (socket_.empty()) socket_ = own_listening_socket();
    if (socket_.empty()) {
      why = "mgmtd is not listening yet";
      return std::nullopt;
    }
    try {
      mgmt::Client c(socket_);
      {
        std::lock_guard lock(fetch_mu_);
        if (stopping_) {
          why = "the metrics plugin is stopping";
          return std::nullopt;
        }
        fetch_fd_ = c.fd();
      }
      struct Forget {  // before `c` closes the descriptor
        MetricsCommand& self;
        ~Forget() {
          std::lock_guard lock(self.fetch_mu_);
          self.fetch_fd_ = -1;
        }
      } forget{*this};
      const timeval tv{10, 0};
      ::setsockopt(c.fd(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      ::setsockopt(c.fd(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
      const auto f = c.call(static_cast<std::uint8_t>(type), msgpack(nlohmann::json::object()));
      const auto j = nlohmann::json::from_msgpack(f.payload, true, false);
      if (!j.is_object()) throw std::runtime_error("the answer is not a map");
      if (j.contains("err") && j["err"].is_string() && !j["err"].get<std::string>().empty()) {
        throw std::runtime_error(j["err"].get<std::string>());
      }
      if (f.header.type != type || !j.contains("text") || !j["text"].is_string()) {
        throw std::runtime_error("unexpected answer of type " + mgmt::type_hex(f.header.type));
      }
      return j["text"].get<std::string>();
    } catch (const std::exception& e) {
      socket_.clear();  // found again next time (the socket may have moved)
      why = e.what();
      return std::nullopt;
    }
  }

  mgmt::Backend* backend_;
  const mgmt::ServerInfo* server_;
  std::shared_ptr<spdlog::logger> log_;
  std::uint64_t scrapes_ = 0;             // I/O thread
  std::atomic<int> self_type_{-1};
  std::string socket_;                    // HTTP thread
  std::mutex fetch_mu_;                   // guards the two below
  int fetch_fd_ = -1;                     // the HTTP thread's request in flight
  bool stopping_ = false;
  std::unique_ptr<mgmt::metrics::HttpServer> http_;  // last: stopped first
};

}  // namespace

MGMT_COMMAND_PLUGIN(MetricsCommand, MGMT_PLUGIN_NAME, MGMT_PLUGIN_VERSION,
                    "Prometheus metrics: processes and the server, over HTTP and as a command")
