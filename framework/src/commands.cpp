// Codec of the stock extra commands' payloads, and signal names.
#include "mgmt/commands.hpp"

#include <signal.h>
#include <string.h>  // sigabbrev_np

#include <cctype>
#include <charconv>
#include <tuple>

#include "msgpack_codec.hpp"

namespace mgmt {

using namespace codec;

namespace {

void read(const object& o, PluginReport& p, std::string_view field) {
  p = PluginReport{};
  for_each_field(o, field, [&](std::string_view k, const object& v) {
    if (k == "type") codec::read(v, p.type, sub(field, k));
    else if (k == "name") codec::read(v, p.name, sub(field, k));
    else if (k == "kind") codec::read(v, p.kind, sub(field, k));
    else if (k == "version") codec::read(v, p.version, sub(field, k));
    else if (k == "path") codec::read(v, p.path, sub(field, k));
  });
}

void put_plugin(Packer& pk, const PluginReport& p) {
  pk.pack_map(5);
  put_key(pk, "type");
  pk.pack_uint8(p.type);
  put_key(pk, "name");
  put_str(pk, p.name);
  put_key(pk, "kind");
  put_str(pk, p.kind);
  put_key(pk, "version");
  put_str(pk, p.version);
  put_key(pk, "path");
  put_str(pk, p.path);
}

// A decimal number, nothing else; -1 when `s` is not one (or too large to be a signal).
int parse_small_number(std::string_view s) noexcept {
  if (s.empty() || s.size() > 4) return -1;
  int n = 0;
  const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
  if (ec != std::errc() || p != s.data() + s.size()) return -1;
  return n;
}

}  // namespace

// ---------------------------------------------------------------------------------------

std::string encode(const SignalRequest& m) {
  return packed([&](Packer& pk) {
    pk.pack_map(3);
    put_key(pk, "id");
    put_str(pk, m.id);
    put_key(pk, "sig");
    put_str(pk, m.sig);
    put_key(pk, "group");
    pk.pack(m.group);
  });
}

std::string encode(const InfoRequest&) {
  return packed([](Packer& pk) { pk.pack_map(0); });
}

std::string encode(const InfoResponse& m) {
  return packed([&](Packer& pk) {
    pk.pack_map(10);
    put_key(pk, "version");
    put_str(pk, m.version);
    put_key(pk, "abi");
    pk.pack_uint32(m.abi);
    put_key(pk, "started_at");
    pk.pack_int64(m.started_at);
    put_key(pk, "uptime");
    pk.pack_int64(m.uptime);
    put_key(pk, "pid");
    pk.pack_int64(m.pid);
    put_key(pk, "config");
    put_str(pk, m.config);
    put_key(pk, "plugins");
    pk.pack_array(static_cast<std::uint32_t>(m.plugins.size()));
    for (const auto& p : m.plugins) put_plugin(pk, p);
    put_key(pk, "err");
    put_str(pk, m.err);
    put_key(pk, "upgraded_at");
    pk.pack_int64(m.upgraded_at);
    put_key(pk, "upgrades");
    pk.pack_uint32(m.upgrades);
  });
}

std::string encode(const UpgradeResponse& m) {
  return packed([&](Packer& pk) {
    pk.pack_map(3);
    put_key(pk, "binary");
    put_str(pk, m.binary);
    put_key(pk, "upgrades");
    pk.pack_uint32(m.upgrades);
    put_key(pk, "err");
    put_str(pk, m.err);
  });
}

std::string encode(const ReloadRequest& m) {
  return packed([&](Packer& pk) {
    pk.pack_map(1);
    put_key(pk, "what");
    put_str(pk, m.what);
  });
}

std::string encode(const ReloadResponse& m) {
  return packed([&](Packer& pk) {
    pk.pack_map(2);
    put_key(pk, "err");
    put_str(pk, m.err);
    put_key(pk, "done");
    put_str(pk, m.done);
  });
}

std::string command_error(std::string_view err) {
  return packed([&](Packer& pk) {
    pk.pack_map(1);
    put_key(pk, "err");
    put_str(pk, err);
  });
}

std::string decode(std::string_view payload, SignalRequest& out) {
  out = {};
  return decode_map(payload, [&](std::string_view k, const object& v) {
    if (k == "id") codec::read(v, out.id, k);
    else if (k == "sig") codec::read(v, out.sig, k);
    else if (k == "group") codec::read(v, out.group, k);
  });
}

std::string decode(std::string_view payload, InfoRequest& out) {
  out = {};
  return decode_map(payload, [](std::string_view, const object&) {});
}

std::string decode(std::string_view payload, InfoResponse& out) {
  out = {};
  return decode_map(payload, [&](std::string_view k, const object& v) {
    if (k == "version") codec::read(v, out.version, k);
    else if (k == "abi") codec::read(v, out.abi, k);
    else if (k == "started_at") codec::read(v, out.started_at, k);
    else if (k == "uptime") codec::read(v, out.uptime, k);
    else if (k == "pid") codec::read(v, out.pid, k);
    else if (k == "config") codec::read(v, out.config, k);
    else if (k == "err") codec::read(v, out.err, k);
    else if (k == "upgraded_at") codec::read(v, out.upgraded_at, k);
    else if (k == "upgrades") codec::read(v, out.upgrades, k);
    else if (k == "plugins") {
      for_each_element(v, k, "an array of plugins", [&](const object& e, const std::string& f) {
        out.plugins.emplace_back();
        read(e, out.plugins.back(), f);
      });
    }
  });
}

std::string decode(std::string_view payload, UpgradeResponse& out) {
  out = {};
  return decode_map(payload, [&](std::string_view k, const object& v) {
    if (k == "binary") codec::read(v, out.binary, k);
    else if (k == "upgrades") codec::read(v, out.upgrades, k);
    else if (k == "err") codec::read(v, out.err, k);
  });
}

std::string decode(std::string_view payload, ReloadRequest& out) {
  out = {};
  return decode_map(payload, [&](std::string_view k, const object& v) {
    if (k == "what") codec::read(v, out.what, k);
  });
}

std::string decode(std::string_view payload, ReloadResponse& out) {
  out = {};
  return decode_map(payload, [&](std::string_view k, const object& v) {
    if (k == "err") codec::read(v, out.err, k);
    else if (k == "done") codec::read(v, out.done, k);
  });
}

// ---------------------------------------------------------------------------------------
// Signal names

int signal_number(std::string_view name) noexcept {
  if (const int n = parse_small_number(name); n >= 0) {
    return n >= 1 && n <= SIGRTMAX ? n : 0;
  }
  char buf[16];
  if (name.size() >= sizeof buf) return 0;
  std::size_t len = 0;
  for (const char c : name) buf[len++] = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  std::string_view up(buf, len);
  if (up.size() > 3 && up.substr(0, 3) == "SIG") up.remove_prefix(3);

  // Real-time signals: RTMIN, RTMIN+n, RTMAX, RTMAX-n.
  for (const auto& [base_name, base, sign] :
       {std::tuple{std::string_view("RTMIN"), SIGRTMIN, 1},
        std::tuple{std::string_view("RTMAX"), SIGRTMAX, -1}}) {
    if (up.substr(0, 5) != base_name) continue;
    std::string_view rest = up.substr(5);
    if (rest.empty()) return base;
    if (rest[0] != (sign > 0 ? '+' : '-')) return 0;
    const int off = parse_small_number(rest.substr(1));
    if (off < 0) return 0;
    const int n = base + sign * off;
    return n >= SIGRTMIN && n <= SIGRTMAX ? n : 0;
  }

  // Aliases glibc's table does not spell.
  if (up == "IOT") return SIGABRT;
  if (up == "POLL") return SIGIO;
  if (up == "CLD") return SIGCHLD;
  for (int s = 1; s < SIGRTMIN; ++s) {
    const char* abbrev = sigabbrev_np(s);
    if (abbrev != nullptr && up == abbrev) return s;
  }
  return 0;
}

std::string signal_name(int signo) {
  if (signo >= SIGRTMIN && signo <= SIGRTMAX) {
    if (signo == SIGRTMIN) return "SIGRTMIN";
    if (signo == SIGRTMAX) return "SIGRTMAX";
    return "SIGRTMIN+" + std::to_string(signo - SIGRTMIN);
  }
  if (signo > 0) {
    if (const char* abbrev = sigabbrev_np(signo)) return std::string("SIG") + abbrev;
  }
  return "signal " + std::to_string(signo);
}

}  // namespace mgmt
