// Parsing of `ready:` and `health:` (probe_spec.hpp).
#include <arpa/inet.h>

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <initializer_list>
#include <map>
#include <optional>
#include <stdexcept>

#include "mgmt/units.hpp"
#include "probe_spec.hpp"
#include "process_config.hpp"

namespace mgmt::process {

namespace {

class ProbeReader {
 public:
  explicit ProbeReader(const std::string& file) : file_(file) {}

  [[noreturn]] void fail(const YAML::Node& n, const std::string& msg) const {
    const YAML::Mark m = n.Mark();
    if (m.is_null()) throw std::runtime_error(file_ + ": " + msg);
    throw std::runtime_error(file_ + ":" + std::to_string(m.line + 1) + ":" +
                             std::to_string(m.column + 1) + ": " + msg);
  }

  std::string scalar(const YAML::Node& n, const std::string& what) const {
    if (!n.IsScalar() || n.Scalar().empty()) fail(n, what + " must be a non-empty string");
    return n.Scalar();
  }

  std::chrono::milliseconds duration(const YAML::Node& n, const std::string& what,
                                     std::chrono::milliseconds min) const {
    const std::string s = n.IsScalar() ? n.Scalar() : std::string();
    const auto d = parse_duration(s);
    if (!d || *d > std::chrono::hours(24 * 365)) {
      fail(n, what + " must be a duration such as 250ms, 5s or 2m (got \"" + s + "\")");
    }
    if (*d < min) fail(n, what + " must be at least " + std::to_string(min.count()) + "ms");
    return *d;
  }

  // Every key of the map, refusing unknown ones; the probe kind found among them.
  std::map<std::string, YAML::Node> fields(const YAML::Node& n, const std::string& section,
                                           std::initializer_list<std::string_view> extra,
                                           std::initializer_list<std::string_view> kinds,
                                           const std::string& example) const {
    if (!n.IsMap()) fail(n, section + " must be a map such as " + example);
    std::map<std::string, YAML::Node> out;
    for (const auto& kv : n) {
      const std::string key = kv.first.IsScalar() ? kv.first.Scalar() : std::string();
      const bool known = std::find(kinds.begin(), kinds.end(), key) != kinds.end() ||
                         std::find(extra.begin(), extra.end(), key) != extra.end();
      if (!known) {
        std::string list;
        for (auto k : kinds) list += (list.empty() ? "" : ", ") + std::string(k);
        for (auto k : extra) list += ", " + std::string(k);
        fail(kv.first, "unknown key \"" + key + "\" in " + section + " (expected one of: " +
                           list + ")");
      }
      out.emplace(key, kv.second);
    }
    return out;
  }

  // host:port, [v6]:port; localhost is 127.0.0.1. Only addresses: resolving a name could
  // block the probe thread, and probes check services on this machine.
  void address(const YAML::Node& n, std::string_view text, const std::string& what,
               Probe& p) const {
    std::string host;
    std::string_view port;
    if (!text.empty() && text.front() == '[') {
      const auto close = text.find(']');
      if (close != std::string_view::npos && close + 1 < text.size() && text[close + 1] == ':') {
        host = std::string(text.substr(1, close - 1));
        port = text.substr(close + 2);
      }
    } else if (const auto colon = text.rfind(':'); colon != std::string_view::npos) {
      host = std::string(text.substr(0, colon));
      port = text.substr(colon + 1);
    }
    if (host == "localhost") host = "127.0.0.1";
    unsigned v = 0;
    const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), v);
    in6_addr a6{};
    in_addr a4{};
    const bool ip = ::inet_pton(AF_INET, host.c_str(), &a4) == 1 ||
                    ::inet_pton(AF_INET6, host.c_str(), &a6) == 1;
    if (port.empty() || ec != std::errc() || end != port.data() + port.size() || v == 0 ||
        v > 65535 || !ip) {
      fail(n, what + " must be an IP address and port such as 127.0.0.1:5432, [::1]:80 or "
                     "localhost:8080 (got \"" + std::string(text) + "\")");
    }
    p.host = host;
    p.port = static_cast<std::uint16_t>(v);
  }

  // The probe kind found in `f` (exactly one of `kinds`), with its value read.
  Probe probe(const YAML::Node& n, const std::map<std::string, YAML::Node>& f,
              const std::string& section, std::initializer_list<std::string_view> kinds,
              bool optional) const {
    Probe p;
    const YAML::Node* value = nullptr;
    std::string kind;
    for (auto k : kinds) {
      const auto it = f.find(std::string(k));
      if (it == f.end()) continue;
      if (value != nullptr) {
        fail(it->second, section + " takes one probe, not both " + kind + " and " +
                             std::string(k));
      }
      value = &it->second;
      kind = std::string(k);
    }
    if (value == nullptr) {
      if (optional) return p;
      std::string list;
      for (auto k : kinds) list += (list.empty() ? "" : ", ") + std::string(k);
      fail(n, section + " needs a probe: one of " + list);
    }
    const YAML::Node& v = *value;
    if (kind == "exec") {
      p.kind = Probe::Kind::exec;
      if (v.IsScalar()) {
        p.argv = {"/bin/sh", "-c", scalar(v, section + ".exec")};
      } else if (v.IsSequence() && v.size() > 0) {
        for (const auto& a : v) p.argv.push_back(scalar(a, "each word of " + section + ".exec"));
      } else {
        fail(v, section + ".exec must be a command as a list, e.g. [pg_isready, -q], or a "
                          "shell line");
      }
      for (const auto& a : p.argv) p.text += (p.text.empty() ? "" : " ") + a;
    } else if (kind == "tcp") {
      p.kind = Probe::Kind::tcp;
      p.text = v.IsScalar() ? v.Scalar() : std::string();
      address(v, p.text, section + ".tcp", p);
    } else if (kind == "http") {
      p.kind = Probe::Kind::http;
      p.text = v.IsScalar() ? v.Scalar() : std::string();
      std::string_view url = p.text;
      if (url.rfind("https://", 0) == 0) {
        fail(v, section + ".http: https is not supported; probe a plain HTTP port, or use "
                          "exec: [curl, -fsS, URL]");
      }
      if (url.rfind("http://", 0) != 0) {
        fail(v, section + ".http must be a URL such as http://127.0.0.1:8080/health (got \"" +
                    p.text + "\")");
      }
      url.remove_prefix(7);
      const auto slash = url.find('/');
      std::string authority(url.substr(0, slash));
      p.path = slash == std::string_view::npos ? "/" : std::string(url.substr(slash));
      const bool has_port = authority.rfind(':') != std::string::npos &&
                            (authority.find(']') == std::string::npos ||
                             authority.rfind(':') > authority.find(']'));
      if (!has_port) authority += ":80";
      address(v, authority, section + ".http's host", p);
      for (char c : p.path) {
        if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f) {
          fail(v, section + ".http: the URL must not contain spaces or control characters");
        }
      }
    } else if (kind == "file") {
      p.kind = Probe::Kind::file;
      p.text = scalar(v, section + ".file");
      std::filesystem::path path(p.text);
      if (path.is_relative()) path = std::filesystem::path(file_).parent_path() / path;
      std::error_code ec;
      const auto abs = std::filesystem::absolute(path, ec);
      p.path = (ec ? path : abs).lexically_normal().string();
    } else if (kind == "log") {
      p.kind = Probe::Kind::log;
      p.text = scalar(v, section + ".log");
      try {
        p.regex = std::make_shared<const std::regex>(p.text, std::regex::ECMAScript);
      } catch (const std::regex_error& e) {
        fail(v, section + ".log is not a valid regular expression (ECMAScript): " +
                    std::string(e.what()) + " (got \"" + p.text + "\")");
      }
    } else if (kind == "notify") {
      p.kind = Probe::Kind::notify;
      bool on = false;
      if (!v.IsScalar() || !YAML::convert<bool>::decode(v, on) || !on) {
        fail(v, section + ".notify must be true (the child sends READY=1 to $NOTIFY_SOCKET)");
      }
      p.text = "READY=1";
    } else if (kind == "fd") {
      p.kind = Probe::Kind::fd;
      const std::string s = v.IsScalar() ? v.Scalar() : std::string();
      int fd = 0;
      const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), fd);
      if (s.empty() || ec != std::errc() || end != s.data() + s.size() || fd < 3 || fd > 1023) {
        fail(v, section + ".fd must be a descriptor number from 3 to 1023 such as 3 (got \"" +
                    s + "\")");
      }
      p.fd = fd;
      p.text = "a newline on fd " + s;
    }
    if (const auto it = f.find("interval"); it != f.end()) {
      p.interval = duration(it->second, section + ".interval", std::chrono::milliseconds(10));
    }
    if (const auto it = f.find("timeout"); it != f.end()) {
      p.timeout = duration(it->second, section + ".timeout", std::chrono::milliseconds(1));
    }
    return p;
  }

 private:
  const std::string& file_;
};

}  // namespace

std::string describe(const Probe& p) {
  switch (p.kind) {
    case Probe::Kind::none: return "none";
    case Probe::Kind::exec: return "exec " + p.text;
    case Probe::Kind::tcp: return "tcp " + p.text;
    case Probe::Kind::http: return "http " + p.text;
    case Probe::Kind::file: return "file " + p.path;
    case Probe::Kind::log: return "log /" + p.text + "/";
    case Probe::Kind::notify: return "notify";
    case Probe::Kind::fd: return "fd " + std::to_string(p.fd);
  }
  return "?";
}

ReadyCheck parse_ready(const YAML::Node& n, const std::string& file) {
  const ProbeReader r(file);
  const auto f = r.fields(n, "ready", {"interval", "timeout", "start_timeout"},
                          {"exec", "tcp", "http", "file", "log", "notify", "fd"},
                          "{tcp: \"127.0.0.1:5432\"} or {notify: true}");
  ReadyCheck c;
  c.probe = r.probe(n, f, "ready",
                    {"exec", "tcp", "http", "file", "log", "notify", "fd"}, false);
  if (const auto it = f.find("start_timeout"); it != f.end()) {
    c.start_timeout =
        r.duration(it->second, "ready.start_timeout", std::chrono::milliseconds(10));
  }
  return c;
}

HealthCheck parse_health(const YAML::Node& n, const std::string& file) {
  const ProbeReader r(file);
  if (n.IsMap()) {
    for (const auto& kv : n) {
      const std::string key = kv.first.IsScalar() ? kv.first.Scalar() : std::string();
      if (key == "log" || key == "notify" || key == "fd") {
        r.fail(kv.first, "health takes exec, tcp, http or file probes, not " + key +
                             " (" + key + " is a `ready:` probe; a notify process can be "
                             "watched with `watchdog:`)");
      }
    }
  }
  const auto f = r.fields(n, "health",
                          {"interval", "timeout", "retries", "watchdog", "on_unhealthy"},
                          {"exec", "tcp", "http", "file"},
                          "{http: \"http://127.0.0.1:8080/health\", interval: 10s}");
  HealthCheck c;
  c.probe = r.probe(n, f, "health", {"exec", "tcp", "http", "file"}, f.count("watchdog") > 0);
  if (const auto it = f.find("retries"); it != f.end()) {
    const std::string s = it->second.IsScalar() ? it->second.Scalar() : std::string();
    unsigned v = 0;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || ec != std::errc() || end != s.data() + s.size() || v < 1 || v > 1000) {
      r.fail(it->second, "health.retries must be a whole number from 1 to 1000 such as 3 (got "
                         "\"" + s + "\")");
    }
    c.retries = v;
  }
  if (const auto it = f.find("watchdog"); it != f.end()) {
    c.watchdog = r.duration(it->second, "health.watchdog", std::chrono::milliseconds(10));
  }
  if (const auto it = f.find("on_unhealthy"); it != f.end()) {
    const YAML::Node& v = it->second;
    const std::string s = v.IsScalar() ? v.Scalar() : std::string();
    if (s == "restart") {
      c.on_unhealthy = HealthCheck::Action::restart;
    } else if (s == "log") {
      c.on_unhealthy = HealthCheck::Action::log;
    } else if (s.rfind("signal:", 0) == 0 && parse_signal(s.substr(7)) > 0) {
      c.on_unhealthy = HealthCheck::Action::signal;
      c.signal = parse_signal(s.substr(7));
    } else {
      r.fail(v, "health.on_unhealthy must be restart, log or signal:NAME such as signal:SIGHUP "
                "(got \"" + s + "\")");
    }
  }
  return c;
}

}  // namespace mgmt::process
