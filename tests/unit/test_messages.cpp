// MessagePack payload codec (docs/protocol.md "Payloads", tests/compat/vectors/README.md "How the Go
// encoder chooses encodings", messages.hpp): tolerant decoding, field-naming errors,
// hostile input, and the Entry extension keys.
//
// Payloads are built byte by byte here (namespace mp) so the tests control the exact
// msgpack format of every value, independent of any msgpack library.
#include <catch2/catch.hpp>

#include <cctype>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "mgmt/messages.hpp"
#include "mgmt/wire.hpp"

namespace {

__extension__ typedef __int128 i128;
__extension__ typedef unsigned __int128 u128;

std::string to_string(i128 v) {
  if (v == 0) return "0";
  const bool neg = v < 0;
  u128 m = neg ? static_cast<u128>(-(v + 1)) + 1 : static_cast<u128>(v);
  std::string s;
  while (m != 0) {
    s.insert(s.begin(), static_cast<char>('0' + static_cast<int>(m % 10)));
    m /= 10;
  }
  return neg ? "-" + s : s;
}

std::string hex(std::string_view s) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

std::string from_hex(std::string_view h) {
  std::string out;
  auto nib = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
  for (std::size_t i = 0; i + 1 < h.size(); i += 2)
    out += static_cast<char>(nib(h[i]) * 16 + nib(h[i + 1]));
  return out;
}

// ---------------------------------------------------------------------------------------
// A byte-exact msgpack builder.
namespace mp {

std::string byte(unsigned b) { return std::string(1, static_cast<char>(b)); }

std::string be(std::uint64_t v, int n) {
  std::string s;
  for (int i = n - 1; i >= 0; --i) s += static_cast<char>((v >> (8 * i)) & 0xFF);
  return s;
}

const std::string nil = byte(0xc0);
const std::string t = byte(0xc3);
const std::string f = byte(0xc2);

std::string pfix(std::uint64_t v) { return byte(static_cast<unsigned>(v)); }  // 0..127
std::string nfix(std::int64_t v) { return byte(static_cast<unsigned>(v) & 0xFF); }  // -32..-1
std::string u8(std::uint64_t v) { return byte(0xcc) + be(v, 1); }
std::string u16(std::uint64_t v) { return byte(0xcd) + be(v, 2); }
std::string u32(std::uint64_t v) { return byte(0xce) + be(v, 4); }
std::string u64(std::uint64_t v) { return byte(0xcf) + be(v, 8); }
std::string i8(std::int64_t v) { return byte(0xd0) + be(static_cast<std::uint64_t>(v), 1); }
std::string i16(std::int64_t v) { return byte(0xd1) + be(static_cast<std::uint64_t>(v), 2); }
std::string i32(std::int64_t v) { return byte(0xd2) + be(static_cast<std::uint64_t>(v), 4); }
std::string i64(std::int64_t v) { return byte(0xd3) + be(static_cast<std::uint64_t>(v), 8); }
std::string f32() { return byte(0xca) + be(0x3f800000u, 4); }           // 1.0f
std::string f64() { return byte(0xcb) + be(0x3ff0000000000000ULL, 8); }  // 1.0

std::string str(std::string_view s) {
  if (s.size() < 32) return byte(0xa0 | static_cast<unsigned>(s.size())) + std::string(s);
  if (s.size() < 256) return byte(0xd9) + be(s.size(), 1) + std::string(s);
  if (s.size() < 65536) return byte(0xda) + be(s.size(), 2) + std::string(s);
  return byte(0xdb) + be(s.size(), 4) + std::string(s);
}
std::string str8(std::string_view s) { return byte(0xd9) + be(s.size(), 1) + std::string(s); }
std::string str16(std::string_view s) { return byte(0xda) + be(s.size(), 2) + std::string(s); }
std::string str32(std::string_view s) { return byte(0xdb) + be(s.size(), 4) + std::string(s); }
std::string bin8(std::string_view s) { return byte(0xc4) + be(s.size(), 1) + std::string(s); }
std::string bin16(std::string_view s) { return byte(0xc5) + be(s.size(), 2) + std::string(s); }
std::string bin32(std::string_view s) { return byte(0xc6) + be(s.size(), 4) + std::string(s); }

std::string arr_hdr(std::size_t n) {
  if (n < 16) return byte(0x90 | static_cast<unsigned>(n));
  if (n < 65536) return byte(0xdc) + be(n, 2);
  return byte(0xdd) + be(n, 4);
}
std::string arr(const std::vector<std::string>& items) {
  std::string s = arr_hdr(items.size());
  for (const auto& i : items) s += i;
  return s;
}
std::string arr16(const std::vector<std::string>& items) {
  std::string s = byte(0xdc) + be(items.size(), 2);
  for (const auto& i : items) s += i;
  return s;
}
std::string arr32(const std::vector<std::string>& items) {
  std::string s = byte(0xdd) + be(items.size(), 4);
  for (const auto& i : items) s += i;
  return s;
}
std::string strs(const std::vector<std::string>& items) {
  std::string s = arr_hdr(items.size());
  for (const auto& i : items) s += str(i);
  return s;
}

using KV = std::vector<std::pair<std::string, std::string>>;  // key text, encoded value
std::string map_hdr(std::size_t n) {
  if (n < 16) return byte(0x80 | static_cast<unsigned>(n));
  if (n < 65536) return byte(0xde) + be(n, 2);
  return byte(0xdf) + be(n, 4);
}
std::string map(const KV& kvs) {
  std::string s = map_hdr(kvs.size());
  for (const auto& [k, v] : kvs) s += str(k) + v;
  return s;
}
std::string map16(const KV& kvs) {
  std::string s = byte(0xde) + be(kvs.size(), 2);
  for (const auto& [k, v] : kvs) s += str(k) + v;
  return s;
}
std::string map32(const KV& kvs) {
  std::string s = byte(0xdf) + be(kvs.size(), 4);
  for (const auto& [k, v] : kvs) s += str(k) + v;
  return s;
}

// Every encoding (format) able to carry v, from the smallest up.
std::vector<std::pair<std::string, std::string>> int_encodings(i128 v) {
  std::vector<std::pair<std::string, std::string>> out;
  const i128 u64max = static_cast<i128>(std::numeric_limits<std::uint64_t>::max());
  if (v >= 0 && v <= 127) out.emplace_back("positive fixint", pfix(static_cast<std::uint64_t>(v)));
  if (v >= -32 && v <= -1) out.emplace_back("negative fixint", nfix(static_cast<std::int64_t>(v)));
  if (v >= 0 && v <= 0xFF) out.emplace_back("uint8", u8(static_cast<std::uint64_t>(v)));
  if (v >= 0 && v <= 0xFFFF) out.emplace_back("uint16", u16(static_cast<std::uint64_t>(v)));
  if (v >= 0 && v <= 0xFFFFFFFFLL) out.emplace_back("uint32", u32(static_cast<std::uint64_t>(v)));
  if (v >= 0 && v <= u64max) out.emplace_back("uint64", u64(static_cast<std::uint64_t>(v)));
  if (v >= -128 && v <= 127) out.emplace_back("int8", i8(static_cast<std::int64_t>(v)));
  if (v >= -32768 && v <= 32767) out.emplace_back("int16", i16(static_cast<std::int64_t>(v)));
  if (v >= INT32_MIN && v <= INT32_MAX) out.emplace_back("int32", i32(static_cast<std::int64_t>(v)));
  if (v >= INT64_MIN && v <= INT64_MAX) out.emplace_back("int64", i64(static_cast<std::int64_t>(v)));
  return out;
}

}  // namespace mp

// ---------------------------------------------------------------------------------------
// A minimal msgpack reader, used only to inspect what our encoder produced.
struct Node {
  enum Kind { Nil, Bool, UInt, Int, Float, Str, Bin, Array, Map, Ext } kind = Nil;
  std::uint64_t u = 0;
  std::int64_t i = 0;
  bool b = false;
  std::string s;
  std::vector<Node> items;
  std::vector<std::pair<Node, Node>> kvs;

  const Node* get(std::string_view key) const {
    for (const auto& [k, v] : kvs)
      if (k.kind == Str && k.s == key) return &v;
    return nullptr;
  }
  std::vector<std::string> keys() const {
    std::vector<std::string> out;
    for (const auto& kv : kvs) out.push_back(kv.first.kind == Str ? kv.first.s : "<non-str key>");
    return out;
  }
};

struct Reader {
  std::string_view d;
  std::size_t pos = 0;
  bool ok = true;

  std::uint64_t take(int n) {
    if (pos + static_cast<std::size_t>(n) > d.size()) {
      ok = false;
      pos = d.size();
      return 0;
    }
    std::uint64_t v = 0;
    for (int k = 0; k < n; ++k) v = (v << 8) | static_cast<unsigned char>(d[pos++]);
    return v;
  }
  std::string bytes(std::uint64_t n) {
    if (n > d.size() - pos) {
      ok = false;
      pos = d.size();
      return {};
    }
    std::string s(d.substr(pos, n));
    pos += n;
    return s;
  }
  Node read() {
    Node n;
    if (!ok) return n;
    const unsigned c = static_cast<unsigned>(take(1));
    if (!ok) return n;
    auto signed_of = [](std::uint64_t raw, int bytes) {
      const int shift = 64 - 8 * bytes;
      return static_cast<std::int64_t>(raw << shift) >> shift;
    };
    if (c <= 0x7f) { n.kind = Node::UInt; n.u = c; }
    else if (c >= 0xe0) { n.kind = Node::Int; n.i = static_cast<std::int8_t>(c); }
    else if ((c & 0xf0) == 0x80) { n.kind = Node::Map; read_map(n, c & 0x0f); }
    else if ((c & 0xf0) == 0x90) { n.kind = Node::Array; read_arr(n, c & 0x0f); }
    else if ((c & 0xe0) == 0xa0) { n.kind = Node::Str; n.s = bytes(c & 0x1f); }
    else switch (c) {
      case 0xc0: n.kind = Node::Nil; break;
      case 0xc2: n.kind = Node::Bool; n.b = false; break;
      case 0xc3: n.kind = Node::Bool; n.b = true; break;
      case 0xc4: n.kind = Node::Bin; n.s = bytes(take(1)); break;
      case 0xc5: n.kind = Node::Bin; n.s = bytes(take(2)); break;
      case 0xc6: n.kind = Node::Bin; n.s = bytes(take(4)); break;
      case 0xca: n.kind = Node::Float; take(4); break;
      case 0xcb: n.kind = Node::Float; take(8); break;
      case 0xcc: n.kind = Node::UInt; n.u = take(1); break;
      case 0xcd: n.kind = Node::UInt; n.u = take(2); break;
      case 0xce: n.kind = Node::UInt; n.u = take(4); break;
      case 0xcf: n.kind = Node::UInt; n.u = take(8); break;
      case 0xd0: n.kind = Node::Int; n.i = signed_of(take(1), 1); break;
      case 0xd1: n.kind = Node::Int; n.i = signed_of(take(2), 2); break;
      case 0xd2: n.kind = Node::Int; n.i = signed_of(take(4), 4); break;
      case 0xd3: n.kind = Node::Int; n.i = static_cast<std::int64_t>(take(8)); break;
      case 0xd9: n.kind = Node::Str; n.s = bytes(take(1)); break;
      case 0xda: n.kind = Node::Str; n.s = bytes(take(2)); break;
      case 0xdb: n.kind = Node::Str; n.s = bytes(take(4)); break;
      case 0xdc: n.kind = Node::Array; read_arr(n, take(2)); break;
      case 0xdd: n.kind = Node::Array; read_arr(n, take(4)); break;
      case 0xde: n.kind = Node::Map; read_map(n, take(2)); break;
      case 0xdf: n.kind = Node::Map; read_map(n, take(4)); break;
      case 0xd4: n.kind = Node::Ext; bytes(2); break;
      case 0xd5: n.kind = Node::Ext; bytes(3); break;
      case 0xd6: n.kind = Node::Ext; bytes(5); break;
      case 0xd7: n.kind = Node::Ext; bytes(9); break;
      case 0xd8: n.kind = Node::Ext; bytes(17); break;
      case 0xc7: n.kind = Node::Ext; bytes(take(1) + 1); break;
      case 0xc8: n.kind = Node::Ext; bytes(take(2) + 1); break;
      case 0xc9: n.kind = Node::Ext; bytes(take(4) + 1); break;
      default: ok = false; break;
    }
    return n;
  }
  void read_arr(Node& n, std::uint64_t count) {
    for (std::uint64_t k = 0; k < count && ok; ++k) n.items.push_back(read());
  }
  void read_map(Node& n, std::uint64_t count) {
    for (std::uint64_t k = 0; k < count && ok; ++k) {
      Node key = read();
      Node val = read();
      n.kvs.emplace_back(std::move(key), std::move(val));
    }
  }
};

// Parses a whole payload; fails the test if it is not exactly one well-formed object.
Node inspect(std::string_view payload) {
  Reader r{payload};
  Node n = r.read();
  INFO("payload " << hex(payload));
  REQUIRE(r.ok);
  REQUIRE(r.pos == payload.size());
  return n;
}

bool has_key(const Node& m, std::string_view key) { return m.get(key) != nullptr; }

// ---------------------------------------------------------------------------------------
// Error texts must name the field: the field must appear as a whole word (so "invalid"
// does not count as naming "id").
bool names_field(std::string_view err, std::string_view field) {
  std::vector<std::string> words;
  std::string cur;
  for (char c : err) {
    if (std::isalnum(static_cast<unsigned char>(c)) || c == '_') {
      cur += c;
    } else if (!cur.empty()) {
      words.push_back(cur);
      cur.clear();
    }
  }
  if (!cur.empty()) words.push_back(cur);
  for (const auto& w : words)
    if (w == field) return true;
  return false;
}

// ---------------------------------------------------------------------------------------
// Equality of decoded values (the structs declare no operator==).
bool same(const mgmt::Entry& a, const mgmt::Entry& b) {
  return a.id == b.id && a.name == b.name && a.state == b.state && a.pid == b.pid &&
         a.rss == b.rss && a.restarts == b.restarts && a.started_at == b.started_at &&
         a.exit_code == b.exit_code && a.exit_signal == b.exit_signal &&
         a.last_error == b.last_error;
}
bool same(const mgmt::ListResponse& a, const mgmt::ListResponse& b) {
  if (a.entries.size() != b.entries.size()) return false;
  for (std::size_t k = 0; k < a.entries.size(); ++k)
    if (!same(a.entries[k], b.entries[k])) return false;
  return true;
}
bool same(const mgmt::StatusRequest& a, const mgmt::StatusRequest& b) { return a.id == b.id; }
bool same(const mgmt::StatusResponse& a, const mgmt::StatusResponse& b) {
  return same(a.entry, b.entry) && a.err == b.err;
}
bool same(const mgmt::IdRequest& a, const mgmt::IdRequest& b) { return a.id == b.id; }
bool same(const mgmt::LogsRequest& a, const mgmt::LogsRequest& b) {
  return a.id == b.id && a.s == b.s && a.f == b.f && a.sn == b.sn && a.ln == b.ln;
}
bool same(const mgmt::LogsStream& a, const mgmt::LogsStream& b) {
  return a.id == b.id && a.s == b.s && a.d == b.d && a.eof == b.eof && a.err == b.err;
}
bool same(const mgmt::EventsSubscribe& a, const mgmt::EventsSubscribe& b) {
  return a.pids == b.pids && a.types == b.types;
}
bool same(const mgmt::EventsStream& a, const mgmt::EventsStream& b) {
  return a.pid == b.pid && a.t == b.t && a.ts == b.ts && a.sum == b.sum;
}

template <class T>
std::string dec(std::string_view payload) {
  T out;
  return mgmt::decode(payload, out);
}

template <class T>
T must_decode(std::string_view payload) {
  T out;
  const std::string err = mgmt::decode(payload, out);
  INFO("payload " << hex(payload));
  REQUIRE(err == "");
  return out;
}

// Decode `payload` as T, then re-encode and decode again; returns a problem or "".
template <class T>
std::string decode_reencode(std::string_view payload, bool& decoded) {
  T first;
  decoded = mgmt::decode(payload, first).empty();
  if (!decoded) return "";
  if constexpr (std::is_same_v<T, mgmt::ListRequest>) {
    return "";
  } else {
    const std::string again = mgmt::encode(first);
    T second;
    const std::string err = mgmt::decode(again, second);
    if (!err.empty()) return "re-encoded value does not decode: " + err;
    if (!same(first, second)) return "re-encoded value decodes differently";
    return "";
  }
}

struct Outcome {
  bool threw = false;
  bool decoded = false;
  std::string problem;
};

// Runs the decoder for `type` (plus re-encode check) and never lets an exception escape.
Outcome run_decoder(std::uint8_t type, std::string_view payload) {
  Outcome o;
  try {
    switch (type) {
      case 0xA0: o.problem = decode_reencode<mgmt::ListRequest>(payload, o.decoded); break;
      case 0xA1: o.problem = decode_reencode<mgmt::ListResponse>(payload, o.decoded); break;
      case 0xA2: o.problem = decode_reencode<mgmt::StatusRequest>(payload, o.decoded); break;
      case 0xA3: o.problem = decode_reencode<mgmt::StatusResponse>(payload, o.decoded); break;
      case 0xA4: o.problem = decode_reencode<mgmt::LogsRequest>(payload, o.decoded); break;
      case 0xA5: o.problem = decode_reencode<mgmt::LogsStream>(payload, o.decoded); break;
      case 0xA6: o.problem = decode_reencode<mgmt::EventsSubscribe>(payload, o.decoded); break;
      case 0xA7: o.problem = decode_reencode<mgmt::EventsStream>(payload, o.decoded); break;
      default: o.problem = decode_reencode<mgmt::IdRequest>(payload, o.decoded); break;
    }
  } catch (const std::exception& e) {
    o.threw = true;
    o.problem = std::string("exception: ") + e.what();
  } catch (...) {
    o.threw = true;
    o.problem = "non-standard exception";
  }
  return o;
}

const std::uint8_t kAllTypes[] = {0xA0, 0xA1, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7, 0xA8};

// Payloads of the Go wire vectors (tests/compat/vectors/*.bin after the 17-byte header).
struct GoPayload {
  const char* name;
  std::uint8_t type;
  const char* hex;
};
const GoPayload kGoPayloads[] = {
    {"01_list_request", 0xa0, ""},
    {"02_list_response_empty", 0xa1, "81a7656e7472696573c0"},
    {"03_list_response_one", 0xa1, "81a7656e74726965739185a26964a3776562a46e616d65a3576562a57374617465a772756e6e696e67a3706964cd1092a3727373cf0000000000c00000"},
    {"04_list_response_three", 0xa1, "81a7656e74726965739385a26964a161a46e616d65a0a57374617465a770656e64696e67a370696400a3727373cf000000000000000085a26964a3622d32a46e616d65b0c39c62657277616368756e6720e29c93a57374617465a763726173686564a3706964ce00011170a3727373cf000000012a05f20085a26964a3635f33a46e616d65a6776f726b6572a57374617465a773746f70706564a3706964ce7fffffffa3727373cfffffffffffffffff"},
    {"05_status_request", 0xa2, "81a26964a3776562"},
    {"06_status_response_entry", 0xa3, "82a5656e74727985a26964a3776562a46e616d65a3576562a57374617465a772756e6e696e67a3706964cd1092a3727373cf000000000000012ca3657272a0"},
    {"07_status_response_err", 0xa3, "82a5656e74727985a26964a0a46e616d65a0a57374617465a0a370696400a3727373cf0000000000000000a3657272ba636c69777261703a2070726f63657373206e6f7420666f756e64"},
    {"08_stop_request", 0xa9, "81a26964a3776562"},
    {"09_start_request", 0xa8, "81a26964a3776562"},
    {"10_logs_request_plain", 0xa4, "83a26964a3776562a173cc01a166c2"},
    {"11_logs_request_follow", 0xa4, "83a26964a3776562a173cc00a166c3"},
    {"12_logs_request_filters", 0xa4, "85a26964a3776562a173cc00a166c2a2736ed3187afca76f25cd15a26c6e32"},
    {"13_logs_stream_eof", 0xa5, "84a26964a3776562a173cc00a164c4080001fffe6f6b0a00a3656f66c3"},
    {"14_logs_stream_more", 0xa5, "84a26964a3776562a173cc01a164c41c7061727469616c206c696e6520776974686f7574206e65776c696e65a3656f66c2"},
    {"15_logs_stream_empty", 0xa5, "84a26964a3776562a173cc00a164c0a3656f66c3"},
    {"16_events_subscribe_all", 0xa6, "81a470696473c0"},
    {"17_events_subscribe_filtered", 0xa6, "82a47069647392a3776562a26462a5747970657392af70726f636573732e73746172746564af70726f636573732e63726173686564"},
    {"18_events_stream", 0xa7, "84a3706964a3776562a174af70726f636573732e63726173686564a27473d3187afca7a2a868b1a373756db370726f636573732e6372617368656420776562"},
    {"19_status_response_unknown_type", 0xa3, "82a5656e74727985a26964a0a46e616d65a0a57374617465a0a370696400a3727373cf0000000000000000a3657272b9756e6b6e6f776e207265717565737420747970652030786138"},
};

// Values of every msgpack kind, used as values of keys the decoder does not know.
std::vector<std::pair<std::string, std::string>> junk_values() {
  using namespace mp;
  return {
      {"int", pfix(7)},
      {"negative int", i64(-5)},
      {"uint64", u64(0xFFFFFFFFFFFFFFFFULL)},
      {"str", str("hello")},
      {"str16", str16(std::string(300, 'x'))},
      {"bin", bin8(std::string("\x00\xff", 2))},
      {"nil", nil},
      {"true", t},
      {"false", f},
      {"float32", f32()},
      {"float64", f64()},
      {"empty array", arr({})},
      {"empty map", map({})},
      {"nested array", arr({pfix(1), map({{"x", arr({nil, str("y")})}}), arr({arr({})})})},
      {"nested map", map({{"a", map({{"b", arr({pfix(1), pfix(2), map({{"c", str("d")}})})}})},
                          {"id", i64(-1)},
                          {"pid", str("not a pid")}})},
      {"array16 of maps", arr16({map({{"id", pfix(1)}}), map({}), map16({{"z", nil}})})},
      {"fixext1", byte(0xd4) + byte(0x01) + byte(0x00)},
      {"fixext8 timestamp", byte(0xd7) + byte(0xff) + be(0, 8)},
      {"ext8", byte(0xc7) + byte(0x03) + byte(0x05) + std::string("abc")},
  };
}

}  // namespace

// =======================================================================================
// Defaults

TEST_CASE("messages: an empty payload decodes to the defaults", "[messages]") {
  for (const std::string& payload : {std::string(), std::string("\x80"),
                                    std::string("\xde\x00\x00", 3),
                                    std::string("\xdf\x00\x00\x00\x00", 5)}) {
    INFO("payload " << hex(payload));
    {
      mgmt::ListRequest m;
      CHECK(mgmt::decode(payload, m) == "");
    }
    {
      auto m = must_decode<mgmt::ListResponse>(payload);
      CHECK(m.entries.empty());
    }
    {
      auto m = must_decode<mgmt::StatusRequest>(payload);
      CHECK(m.id == "");
    }
    {
      auto m = must_decode<mgmt::StatusResponse>(payload);
      CHECK(same(m.entry, mgmt::Entry{}));
      CHECK(m.err == "");
    }
    {
      auto m = must_decode<mgmt::IdRequest>(payload);
      CHECK(m.id == "");
    }
    {
      auto m = must_decode<mgmt::LogsRequest>(payload);
      CHECK(same(m, mgmt::LogsRequest{}));
      CHECK(m.s == 0);
      CHECK_FALSE(m.f);
      CHECK(m.sn == 0);
      CHECK(m.ln == 0);
    }
    {
      auto m = must_decode<mgmt::LogsStream>(payload);
      CHECK(same(m, mgmt::LogsStream{}));
      CHECK(m.d.empty());
      CHECK_FALSE(m.eof);
    }
    {
      auto m = must_decode<mgmt::EventsSubscribe>(payload);
      CHECK(m.pids.empty());
      CHECK(m.types.empty());
    }
    {
      auto m = must_decode<mgmt::EventsStream>(payload);
      CHECK(same(m, mgmt::EventsStream{}));
    }
  }
}

TEST_CASE("messages: missing keys keep their defaults", "[messages]") {
  using namespace mp;
  SECTION("LogsRequest with only an id") {
    auto m = must_decode<mgmt::LogsRequest>(map({{"id", str("web")}}));
    CHECK(m.id == "web");
    CHECK(m.s == 0);
    CHECK_FALSE(m.f);
    CHECK(m.sn == 0);
    CHECK(m.ln == 0);
  }
  SECTION("LogsRequest with only ln") {
    auto m = must_decode<mgmt::LogsRequest>(map({{"ln", pfix(5)}}));
    CHECK(m.id == "");
    CHECK(m.ln == 5);
  }
  SECTION("Entry with only a state") {
    auto m = must_decode<mgmt::ListResponse>(map({{"entries", arr({map({{"state", str("running")}})})}}));
    REQUIRE(m.entries.size() == 1);
    mgmt::Entry expected;
    expected.state = "running";
    CHECK(same(m.entries[0], expected));
    CHECK_FALSE(m.entries[0].exit_code.has_value());
    CHECK_FALSE(m.entries[0].exit_signal.has_value());
  }
  SECTION("Entry as an empty map") {
    auto m = must_decode<mgmt::ListResponse>(map({{"entries", arr({map({}), map({})})}}));
    REQUIRE(m.entries.size() == 2);
    CHECK(same(m.entries[0], mgmt::Entry{}));
    CHECK(same(m.entries[1], mgmt::Entry{}));
  }
  SECTION("StatusResponse with only err") {
    auto m = must_decode<mgmt::StatusResponse>(map({{"err", str("boom")}}));
    CHECK(m.err == "boom");
    CHECK(same(m.entry, mgmt::Entry{}));
  }
  SECTION("StatusResponse with only entry") {
    auto m = must_decode<mgmt::StatusResponse>(map({{"entry", map({{"id", str("x")}, {"pid", pfix(3)}})}}));
    CHECK(m.err == "");
    CHECK(m.entry.id == "x");
    CHECK(m.entry.pid == 3);
  }
  SECTION("LogsStream with only eof") {
    auto m = must_decode<mgmt::LogsStream>(map({{"eof", t}}));
    CHECK(m.eof);
    CHECK(m.d.empty());
    CHECK(m.id == "");
  }
  SECTION("EventsSubscribe with only types") {
    auto m = must_decode<mgmt::EventsSubscribe>(map({{"types", strs({"log.overflow"})}}));
    CHECK(m.pids.empty());
    CHECK(m.types == std::vector<std::string>{"log.overflow"});
  }
  SECTION("EventsStream with only ts") {
    auto m = must_decode<mgmt::EventsStream>(map({{"ts", i64(-1)}}));
    CHECK(m.ts == -1);
    CHECK(m.pid == "");
    CHECK(m.t == "");
    CHECK(m.sum == "");
  }
}

TEST_CASE("messages: ListRequest accepts no payload or an empty map", "[messages]") {
  CHECK(dec<mgmt::ListRequest>("") == "");
  CHECK(dec<mgmt::ListRequest>("\x80") == "");
  CHECK(dec<mgmt::ListRequest>(mp::map({{"future", mp::pfix(1)}})) == "");  // unknown key
}

// =======================================================================================
// Unknown keys

TEST_CASE("messages: unknown keys of any kind are ignored", "[messages]") {
  using namespace mp;
  for (const auto& [what, junk] : junk_values()) {
    INFO("unknown value: " << what);
    {
      auto m = must_decode<mgmt::StatusRequest>(
          map({{"zz", junk}, {"id", str("web")}, {"ID", junk}, {"idx", junk}}));
      CHECK(m.id == "web");
    }
    {
      auto m = must_decode<mgmt::IdRequest>(map({{"id", str("web")}, {"", junk}}));
      CHECK(m.id == "web");
    }
    {
      auto m = must_decode<mgmt::LogsRequest>(map({{"new", junk},
                                                   {"id", str("web")},
                                                   {"s", u8(1)},
                                                   {"mid", junk},
                                                   {"f", t},
                                                   {"sn", i64(5)},
                                                   {"ln", pfix(9)},
                                                   {"last", junk}}));
      CHECK(m.id == "web");
      CHECK(m.s == 1);
      CHECK(m.f);
      CHECK(m.sn == 5);
      CHECK(m.ln == 9);
    }
    {
      auto m = must_decode<mgmt::LogsStream>(
          map({{"id", str("w")}, {"x", junk}, {"d", bin8("ab")}, {"eof", t}, {"s", u8(1)}}));
      CHECK(m.id == "w");
      CHECK(m.d == "ab");
      CHECK(m.eof);
      CHECK(m.s == 1);
    }
    {
      auto m = must_decode<mgmt::EventsSubscribe>(
          map({{"pids", strs({"a"})}, {"x", junk}, {"types", strs({"t"})}}));
      CHECK(m.pids == std::vector<std::string>{"a"});
      CHECK(m.types == std::vector<std::string>{"t"});
    }
    {
      auto m = must_decode<mgmt::EventsStream>(map(
          {{"pid", str("p")}, {"t", str("tt")}, {"ts", pfix(1)}, {"sum", str("s")}, {"extra", junk}}));
      CHECK(m.pid == "p");
      CHECK(m.t == "tt");
      CHECK(m.ts == 1);
      CHECK(m.sum == "s");
    }
    {
      // Unknown keys at the top level and inside nested entries.
      const std::string entry = map({{"id", str("web")},
                                     {"cpu", junk},
                                     {"name", str("Web")},
                                     {"state", str("running")},
                                     {"pid", pfix(42)},
                                     {"rss", u64(7)},
                                     {"labels", junk}});
      auto l = must_decode<mgmt::ListResponse>(map({{"v", junk}, {"entries", arr({entry, entry})}, {"w", junk}}));
      REQUIRE(l.entries.size() == 2);
      CHECK(l.entries[1].id == "web");
      CHECK(l.entries[1].name == "Web");
      CHECK(l.entries[1].state == "running");
      CHECK(l.entries[1].pid == 42);
      CHECK(l.entries[1].rss == 7);
      auto s = must_decode<mgmt::StatusResponse>(map({{"entry", entry}, {"err", str("")}, {"q", junk}}));
      CHECK(s.entry.id == "web");
      CHECK(s.entry.pid == 42);
    }
  }
}

TEST_CASE("messages: keys may come in any order and with any str width", "[messages]") {
  using namespace mp;
  // Keys built by hand with str8/str16 formats instead of fixstr.
  const std::string payload = byte(0x84) + str16("eof") + t + str8("d") + bin8("x") +
                              str32("s") + pfix(1) + str8("id") + str("web");
  auto m = must_decode<mgmt::LogsStream>(payload);
  CHECK(m.id == "web");
  CHECK(m.s == 1);
  CHECK(m.d == "x");
  CHECK(m.eof);
}

TEST_CASE("messages: any str, bin, array and map width is accepted", "[messages]") {
  using namespace mp;
  const std::string long_name(70000, 'n');
  SECTION("str widths") {
    for (const auto& enc : {str("web"), str8("web"), str16("web"), str32("web")}) {
      INFO(hex(enc));
      CHECK(must_decode<mgmt::StatusRequest>(map({{"id", enc}})).id == "web");
    }
    CHECK(must_decode<mgmt::EventsStream>(map({{"sum", str(long_name)}})).sum == long_name);
    CHECK(must_decode<mgmt::StatusRequest>(map({{"id", str("")}})).id == "");
    const std::string with_nul("a\0b", 3);
    CHECK(must_decode<mgmt::StatusRequest>(map({{"id", str(with_nul)}})).id == with_nul);
  }
  SECTION("bin widths") {
    const std::string data("\x00\x01\xff\xfe ok\n\x00", 8);
    for (const auto& enc : {bin8(data), bin16(data), bin32(data)}) {
      INFO(hex(enc));
      CHECK(must_decode<mgmt::LogsStream>(map({{"d", enc}})).d == data);
    }
    std::string big(70000, '\0');
    for (std::size_t k = 0; k < big.size(); ++k) big[k] = static_cast<char>(k * 7);
    CHECK(must_decode<mgmt::LogsStream>(map({{"d", bin32(big)}})).d == big);
    CHECK(must_decode<mgmt::LogsStream>(map({{"d", bin8("")}})).d.empty());
  }
  SECTION("array widths") {
    const std::vector<std::string> two = {str("a"), str("b")};
    for (const auto& enc : {arr(two), arr16(two), arr32(two)}) {
      INFO(hex(enc));
      CHECK(must_decode<mgmt::EventsSubscribe>(map({{"pids", enc}})).pids ==
            std::vector<std::string>{"a", "b"});
    }
    std::vector<std::string> many;
    for (int k = 0; k < 20; ++k) many.push_back(map({{"pid", pfix(static_cast<std::uint64_t>(k))}}));
    auto l = must_decode<mgmt::ListResponse>(map({{"entries", arr(many)}}));
    REQUIRE(l.entries.size() == 20);
    CHECK(l.entries[19].pid == 19);
  }
  SECTION("map widths") {
    const KV kv = {{"id", str("web")}};
    for (const auto& enc : {map(kv), map16(kv), map32(kv)}) {
      INFO(hex(enc));
      CHECK(must_decode<mgmt::StatusRequest>(enc).id == "web");
      CHECK(must_decode<mgmt::StatusResponse>(map({{"entry", enc}})).entry.id == "web");
    }
  }
}

// =======================================================================================
// Nil

TEST_CASE("messages: nil decodes to an empty list or empty byte data", "[messages]") {
  using namespace mp;
  {
    mgmt::ListResponse m;
    m.entries.resize(1);
    REQUIRE(mgmt::decode(map({{"entries", nil}}), m) == "");
    CHECK(m.entries.empty());
  }
  {
    auto m = must_decode<mgmt::EventsSubscribe>(map({{"pids", nil}, {"types", nil}}));
    CHECK(m.pids.empty());
    CHECK(m.types.empty());
  }
  {
    auto m = must_decode<mgmt::LogsStream>(map({{"id", str("web")}, {"d", nil}, {"eof", t}}));
    CHECK(m.d.empty());
    CHECK(m.id == "web");
    CHECK(m.eof);
  }
  {
    // Empty arrays are the other spelling of "all".
    auto m = must_decode<mgmt::EventsSubscribe>(map({{"pids", arr({})}, {"types", arr16({})}}));
    CHECK(m.pids.empty());
    CHECK(m.types.empty());
    CHECK(must_decode<mgmt::ListResponse>(map({{"entries", arr({})}})).entries.empty());
  }
}

TEST_CASE("messages: str for byte data (not specified by the protocol)", "[messages]") {
  // docs/protocol.md only says byte slices are bin. Either accepting a str for `d` (as the Go
  // decoder does) or rejecting it naming the field is acceptable; silently mangling is not.
  mgmt::LogsStream m;
  const std::string err = mgmt::decode(mp::map({{"d", mp::str("text")}, {"eof", mp::t}}), m);
  if (err.empty()) {
    CHECK(m.d == "text");
    CHECK(m.eof);
  } else {
    INFO(err);
    CHECK(names_field(err, "d"));
  }
}

// =======================================================================================
// Integers: any width when the value fits, an error naming the field when it does not.

namespace {

struct IntField {
  const char* name;  // field name as it must appear in an error
  const char* where;
  i128 min;
  i128 max;
  // Builds a payload carrying the encoded value in the field.
  std::function<std::string(const std::string&)> payload;
  // Decodes; on success stores the field's value.
  std::function<std::string(std::string_view, std::optional<i128>&)> read;
};

template <class T, class Get>
std::function<std::string(std::string_view, std::optional<i128>&)> reader(Get get) {
  return [get](std::string_view p, std::optional<i128>& v) {
    T m;
    std::string err = mgmt::decode(p, m);
    if (err.empty()) v = get(m);
    return err;
  };
}

std::optional<i128> opt(const std::optional<std::int64_t>& o) {
  if (!o) return std::nullopt;
  return static_cast<i128>(*o);
}

std::vector<IntField> int_fields() {
  using namespace mp;
  const i128 i64min = INT64_MIN, i64max = INT64_MAX;
  const i128 u64max = static_cast<i128>(std::numeric_limits<std::uint64_t>::max());
  std::vector<IntField> out;
  struct EntryField {
    const char* name;
    i128 min, max;
    std::function<std::optional<i128>(const mgmt::Entry&)> get;
  };
  const EntryField entry_fields[] = {
      {"pid", i64min, i64max, [](const mgmt::Entry& e) { return std::optional<i128>(e.pid); }},
      {"rss", 0, u64max, [](const mgmt::Entry& e) { return std::optional<i128>(e.rss); }},
      {"restarts", 0, u64max, [](const mgmt::Entry& e) { return std::optional<i128>(e.restarts); }},
      {"started_at", i64min, i64max,
       [](const mgmt::Entry& e) { return std::optional<i128>(e.started_at); }},
      {"exit_code", i64min, i64max, [](const mgmt::Entry& e) { return opt(e.exit_code); }},
      {"exit_signal", i64min, i64max, [](const mgmt::Entry& e) { return opt(e.exit_signal); }},
  };
  for (const auto& ef : entry_fields) {
    const std::string key = ef.name;
    auto get = ef.get;
    out.push_back({ef.name, "StatusResponse.entry", ef.min, ef.max,
                   [key](const std::string& v) {
                     return map({{"entry", map({{"id", str("web")}, {key, v}})}, {"err", str("")}});
                   },
                   reader<mgmt::StatusResponse>([get](const mgmt::StatusResponse& m) {
                     return get(m.entry);
                   })});
    out.push_back({ef.name, "ListResponse.entries[1]", ef.min, ef.max,
                   [key](const std::string& v) {
                     return map({{"entries", arr({map({}), map({{key, v}, {"id", str("x")}})})}});
                   },
                   reader<mgmt::ListResponse>([get](const mgmt::ListResponse& m) -> std::optional<i128> {
                     if (m.entries.size() != 2) return static_cast<i128>(-424242);
                     return get(m.entries[1]);
                   })});
  }
  out.push_back({"s", "LogsRequest", 0, 255,
                 [](const std::string& v) { return map({{"id", str("web")}, {"s", v}, {"f", f}}); },
                 reader<mgmt::LogsRequest>([](const mgmt::LogsRequest& m) { return std::optional<i128>(m.s); })});
  out.push_back({"sn", "LogsRequest", i64min, i64max,
                 [](const std::string& v) { return map({{"id", str("web")}, {"sn", v}}); },
                 reader<mgmt::LogsRequest>([](const mgmt::LogsRequest& m) { return std::optional<i128>(m.sn); })});
  out.push_back({"ln", "LogsRequest", i64min, i64max,
                 [](const std::string& v) { return map({{"ln", v}, {"id", str("web")}}); },
                 reader<mgmt::LogsRequest>([](const mgmt::LogsRequest& m) { return std::optional<i128>(m.ln); })});
  out.push_back({"s", "LogsStream", 0, 255,
                 [](const std::string& v) { return map({{"id", str("web")}, {"s", v}, {"d", nil}, {"eof", t}}); },
                 reader<mgmt::LogsStream>([](const mgmt::LogsStream& m) { return std::optional<i128>(m.s); })});
  out.push_back({"ts", "EventsStream", i64min, i64max,
                 [](const std::string& v) { return map({{"pid", str("web")}, {"ts", v}}); },
                 reader<mgmt::EventsStream>([](const mgmt::EventsStream& m) { return std::optional<i128>(m.ts); })});
  return out;
}

const i128 kIntValues[] = {
    0, 1, 5, 127, 128, 255, 256, 300, 32767, 32768, 65535, 65536, 70000,
    2147483647LL, 2147483648LL, 4294967295LL, 4294967296LL, 9007199254740993LL,
    static_cast<i128>(INT64_MAX), static_cast<i128>(INT64_MAX) + 1,
    static_cast<i128>(std::numeric_limits<std::uint64_t>::max()),
    -1, -5, -32, -33, -128, -129, -32768, -32769, -2147483648LL, -2147483649LL,
    static_cast<i128>(INT64_MIN) + 1, static_cast<i128>(INT64_MIN)};

}  // namespace

TEST_CASE("messages: every integer field accepts every width that holds the value",
          "[messages]") {
  for (const auto& field : int_fields()) {
    for (i128 v : kIntValues) {
      if (v < field.min || v > field.max) continue;
      for (const auto& [format, enc] : mp::int_encodings(v)) {
        const std::string payload = field.payload(enc);
        INFO(field.where << "." << field.name << " = " << to_string(v) << " as " << format
                         << "; payload " << hex(payload));
        std::optional<i128> got;
        const std::string err = field.read(payload, got);
        CHECK(err == "");
        REQUIRE(got.has_value());
        CHECK(to_string(*got) == to_string(v));
      }
    }
  }
}

TEST_CASE("messages: an integer that does not fit its field is an error naming the field",
          "[messages]") {
  for (const auto& field : int_fields()) {
    for (i128 v : kIntValues) {
      if (v >= field.min && v <= field.max) continue;
      for (const auto& [format, enc] : mp::int_encodings(v)) {
        const std::string payload = field.payload(enc);
        INFO(field.where << "." << field.name << " = " << to_string(v) << " as " << format
                         << "; payload " << hex(payload));
        std::optional<i128> got;
        const std::string err = field.read(payload, got);
        INFO("error: " << err);
        CHECK_FALSE(err.empty());
        CHECK(names_field(err, field.name));
      }
    }
  }
}

TEST_CASE("messages: out-of-range examples: s = 300, pid over int64, negative rss", "[messages]") {
  using namespace mp;
  std::string err = dec<mgmt::LogsRequest>(map({{"id", str("web")}, {"s", u16(300)}}));
  INFO(err);
  CHECK(names_field(err, "s"));
  err = dec<mgmt::LogsStream>(map({{"s", u16(300)}}));
  CHECK(names_field(err, "s"));
  err = dec<mgmt::ListResponse>(map({{"entries", arr({map({{"pid", u64(0x8000000000000000ULL)}})})}}));
  CHECK(names_field(err, "pid"));
  err = dec<mgmt::StatusResponse>(map({{"entry", map({{"rss", i8(-1)}})}}));
  CHECK(names_field(err, "rss"));
  err = dec<mgmt::EventsStream>(map({{"ts", u64(0xFFFFFFFFFFFFFFFFULL)}}));
  CHECK(names_field(err, "ts"));
}

// =======================================================================================
// Wrong kinds of value

TEST_CASE("messages: a value of the wrong kind is an error naming the field", "[messages]") {
  using namespace mp;
  struct Case {
    const char* what;
    const char* field;
    std::function<std::string()> run;
  };
  auto entry_in_status = [](const std::string& key, const std::string& v) {
    return dec<mgmt::StatusResponse>(map({{"entry", map({{"id", str("web")}, {key, v}})}, {"err", str("")}}));
  };
  auto entry_in_list = [](const std::string& key, const std::string& v) {
    return dec<mgmt::ListResponse>(map({{"entries", arr({map({{key, v}})})}}));
  };

  const std::vector<std::pair<const char*, std::string>> not_int = {
      {"str", str("42")}, {"true", t}, {"array", arr({pfix(1)})}, {"map", map({{"v", pfix(1)}})},
      {"float32", f32()}, {"float64", f64()}, {"bin", bin8("1")}};
  const std::vector<std::pair<const char*, std::string>> not_str = {
      {"int", pfix(1)}, {"negative int", nfix(-1)}, {"true", t}, {"array", arr({str("x")})},
      {"map", map({{"x", str("y")}})}, {"float64", f64()}};
  const std::vector<std::pair<const char*, std::string>> not_bool = {
      {"int 1", pfix(1)}, {"int 0", pfix(0)}, {"str", str("true")}, {"array", arr({})},
      {"map", map({})}, {"float32", f32()}};
  const std::vector<std::pair<const char*, std::string>> not_bin = {
      {"int", pfix(1)}, {"true", t}, {"array", arr({pfix(1)})}, {"map", map({})}, {"float64", f64()}};
  const std::vector<std::pair<const char*, std::string>> not_list = {
      {"map", map({{"a", str("b")}})}, {"str", str("web")}, {"int", pfix(1)}, {"true", t},
      {"bin", bin8("ab")}, {"float64", f64()}};
  const std::vector<std::pair<const char*, std::string>> not_map = {
      {"str", str("web")}, {"int", pfix(1)}, {"true", t}, {"array", arr({str("web")})},
      {"bin", bin8("ab")}};

  std::vector<Case> cases;
  for (const auto& [kind, v] : not_str) {
    const std::string val = v;
    cases.push_back({kind, "id", [val] { return dec<mgmt::StatusRequest>(map({{"id", val}})); }});
    cases.push_back({kind, "id", [val] { return dec<mgmt::IdRequest>(map({{"id", val}})); }});
    cases.push_back({kind, "id", [val] { return dec<mgmt::LogsRequest>(map({{"id", val}})); }});
    cases.push_back({kind, "id", [val] { return dec<mgmt::LogsStream>(map({{"id", val}})); }});
    cases.push_back({kind, "err", [val] { return dec<mgmt::StatusResponse>(map({{"err", val}})); }});
    cases.push_back({kind, "err", [val] { return dec<mgmt::LogsStream>(map({{"eof", t}, {"err", val}})); }});
    cases.push_back({kind, "pid", [val] { return dec<mgmt::EventsStream>(map({{"pid", val}})); }});
    cases.push_back({kind, "t", [val] { return dec<mgmt::EventsStream>(map({{"t", val}})); }});
    cases.push_back({kind, "sum", [val] { return dec<mgmt::EventsStream>(map({{"sum", val}})); }});
    for (const char* key : {"id", "name", "state", "last_error"}) {
      cases.push_back({kind, key, [=] { return entry_in_status(key, val); }});
      cases.push_back({kind, key, [=] { return entry_in_list(key, val); }});
    }
    cases.push_back({kind, "pids", [val] { return dec<mgmt::EventsSubscribe>(map({{"pids", arr({str("a"), val})}})); }});
    cases.push_back({kind, "types", [val] { return dec<mgmt::EventsSubscribe>(map({{"types", arr({val})}})); }});
  }
  for (const auto& [kind, v] : not_int) {
    const std::string val = v;
    for (const char* key : {"pid", "rss", "restarts", "started_at", "exit_code", "exit_signal"}) {
      cases.push_back({kind, key, [=] { return entry_in_status(key, val); }});
      cases.push_back({kind, key, [=] { return entry_in_list(key, val); }});
    }
    cases.push_back({kind, "s", [val] { return dec<mgmt::LogsRequest>(map({{"s", val}})); }});
    cases.push_back({kind, "sn", [val] { return dec<mgmt::LogsRequest>(map({{"sn", val}})); }});
    cases.push_back({kind, "ln", [val] { return dec<mgmt::LogsRequest>(map({{"ln", val}})); }});
    cases.push_back({kind, "s", [val] { return dec<mgmt::LogsStream>(map({{"s", val}})); }});
    cases.push_back({kind, "ts", [val] { return dec<mgmt::EventsStream>(map({{"ts", val}})); }});
  }
  for (const auto& [kind, v] : not_bool) {
    const std::string val = v;
    cases.push_back({kind, "f", [val] { return dec<mgmt::LogsRequest>(map({{"id", str("web")}, {"f", val}})); }});
    cases.push_back({kind, "eof", [val] { return dec<mgmt::LogsStream>(map({{"eof", val}})); }});
  }
  for (const auto& [kind, v] : not_bin) {
    const std::string val = v;
    cases.push_back({kind, "d", [val] { return dec<mgmt::LogsStream>(map({{"d", val}})); }});
  }
  for (const auto& [kind, v] : not_list) {
    const std::string val = v;
    cases.push_back({kind, "entries", [val] { return dec<mgmt::ListResponse>(map({{"entries", val}})); }});
    cases.push_back({kind, "pids", [val] { return dec<mgmt::EventsSubscribe>(map({{"pids", val}})); }});
    cases.push_back({kind, "types", [val] { return dec<mgmt::EventsSubscribe>(map({{"types", val}})); }});
  }
  for (const auto& [kind, v] : not_map) {
    const std::string val = v;
    cases.push_back({kind, "entry", [val] { return dec<mgmt::StatusResponse>(map({{"entry", val}, {"err", str("")}})); }});
    // An element of entries that is not a map: the error names the list.
    cases.push_back({kind, "entries", [val] { return dec<mgmt::ListResponse>(map({{"entries", arr({map({}), val})}})); }});
  }

  for (const auto& c : cases) {
    std::string err;
    bool threw = false;
    try {
      err = c.run();
    } catch (...) {
      threw = true;
    }
    INFO("field '" << c.field << "' given " << c.what << " -> error: \"" << err << "\"");
    CHECK_FALSE(threw);
    CHECK_FALSE(err.empty());
    CHECK(names_field(err, c.field));
  }
}

TEST_CASE("messages: wrong-kind examples: pid as str, entries as map, id as int", "[messages]") {
  using namespace mp;
  std::string err = dec<mgmt::ListResponse>(
      map({{"entries", arr({map({{"id", str("web")}, {"pid", str("4242")}})})}}));
  INFO(err);
  CHECK(names_field(err, "pid"));
  err = dec<mgmt::ListResponse>(map({{"entries", map({{"id", str("web")}})}}));
  CHECK(names_field(err, "entries"));
  err = dec<mgmt::StatusRequest>(map({{"id", pfix(7)}}));
  CHECK(names_field(err, "id"));
}

// =======================================================================================
// Payloads that are not one map

TEST_CASE("messages: a payload that is not a map is an error", "[messages]") {
  using namespace mp;
  const std::vector<std::pair<const char*, std::string>> not_maps = {
      {"empty array", arr({})},
      {"array (Go's as-array struct form)", arr({str("web")})},
      {"array of entries", arr({arr({})})},
      {"positive fixint", pfix(1)},
      {"uint64", u64(5)},
      {"negative int", nfix(-1)},
      {"str", str("web")},
      {"bin", bin8("web")},
      {"true", t},
      {"float64", f64()},
      {"reserved byte 0xc1", byte(0xc1)},
  };
  for (const auto& [what, payload] : not_maps) {
    for (std::uint8_t type : kAllTypes) {
      INFO(what << " as type " << mgmt::type_hex(type));
      const Outcome o = run_decoder(type, payload);
      CHECK_FALSE(o.threw);
      CHECK_FALSE(o.decoded);
    }
  }
}

TEST_CASE("messages: a nil payload (not specified by the protocol)", "[messages]") {
  // docs/protocol.md says every struct is a map and a ListRequest is no payload or an empty map;
  // it says nothing of a payload that is msgpack nil. The Go decoder takes nil as the zero
  // struct. Either that or an error is acceptable; anything else is not.
  const std::string nil = mp::nil;
  for (std::uint8_t type : kAllTypes) {
    INFO("as " << mgmt::type_hex(type));
    const Outcome o = run_decoder(type, nil);
    CHECK_FALSE(o.threw);
    CHECK(o.problem == "");
  }
  mgmt::StatusResponse s;
  if (mgmt::decode(nil, s).empty()) {
    CHECK(same(s.entry, mgmt::Entry{}));
    CHECK(s.err.empty());
  }
  mgmt::LogsRequest r;
  if (mgmt::decode(nil, r).empty()) CHECK(same(r, mgmt::LogsRequest{}));
  // nil followed by anything is never one value.
  for (std::uint8_t type : kAllTypes) CHECK_FALSE(run_decoder(type, nil + mp::nil).decoded);
}

TEST_CASE("messages: trailing bytes after the map are an error", "[messages]") {
  using namespace mp;
  const std::vector<std::string> tails = {byte(0x00), byte(0xc0), byte(0x80), map({{"id", str("x")}}),
                                          std::string("garbage")};
  for (const auto& g : kGoPayloads) {
    std::string base = from_hex(g.hex);
    if (base.empty()) base = map({});
    for (const auto& tail : tails) {
      INFO(g.name << " + " << hex(tail));
      const Outcome o = run_decoder(g.type, base + tail);
      CHECK_FALSE(o.threw);
      CHECK_FALSE(o.decoded);
    }
  }
}

TEST_CASE("messages: every truncation of every Go payload is an error", "[messages]") {
  // A msgpack value is self-delimiting, so no proper non-empty prefix is a whole value.
  std::size_t runs = 0;
  for (const auto& g : kGoPayloads) {
    const std::string full = from_hex(g.hex);
    for (std::size_t len = 1; len < full.size(); ++len) {
      for (std::uint8_t type : kAllTypes) {
        const Outcome o = run_decoder(type, std::string_view(full).substr(0, len));
        ++runs;
        if (o.threw || o.decoded) {
          INFO(g.name << " cut to " << len << " bytes, decoded as " << mgmt::type_hex(type)
                      << ": " << (o.threw ? o.problem : std::string("accepted")));
          CHECK_FALSE(o.threw);
          CHECK_FALSE(o.decoded);
        }
      }
    }
  }
  CHECK(runs > 1000);
}

TEST_CASE("messages: hostile sizes are refused without crashing", "[messages][hostile]") {
  using namespace mp;
  const std::vector<std::pair<const char*, std::string>> inputs = {
      {"map32 claiming 4G pairs", byte(0xdf) + be(0xFFFFFFFFu, 4)},
      {"map16 claiming 65535 pairs", byte(0xde) + be(0xFFFF, 2)},
      {"entries array32 claiming 4G items", byte(0x81) + str("entries") + byte(0xdd) + be(0xFFFFFFFFu, 4)},
      {"pids array32 claiming 2G items", byte(0x81) + str("pids") + byte(0xdd) + be(0x7FFFFFFFu, 4)},
      {"id str32 claiming 4G bytes", byte(0x81) + str("id") + byte(0xdb) + be(0xFFFFFFFFu, 4) + "web"},
      {"d bin32 claiming 4G bytes", byte(0x81) + str("d") + byte(0xc6) + be(0xFFFFFFFFu, 4) + "x"},
      {"unknown key with map32 of 4G pairs", byte(0x82) + str("id") + str("web") + str("zz") + byte(0xdf) + be(0xFFFFFFFFu, 4)},
      {"unknown key with ext32 of 4G bytes", byte(0x81) + str("zz") + byte(0xc9) + be(0xFFFFFFFFu, 4) + byte(1)},
      {"entry map32 claiming 4G pairs", byte(0x81) + str("entry") + byte(0xdf) + be(0xFFFFFFFFu, 4)},
      {"top map with 2^31 pairs of nothing", byte(0xdf) + be(0x80000000u, 4) + str("id") + str("x")},
  };
  for (const auto& [what, payload] : inputs) {
    for (std::uint8_t type : kAllTypes) {
      INFO(what << " as type " << mgmt::type_hex(type));
      const Outcome o = run_decoder(type, payload);
      INFO(o.problem);
      CHECK_FALSE(o.threw);
      CHECK_FALSE(o.decoded);
    }
  }
}

TEST_CASE("messages: deeply nested unknown values do not crash", "[messages][hostile]") {
  // 1,000,000 nested arrays under an unknown key: 1 MB, well inside a 16 MiB frame.
  const std::size_t depth = 1000000;
  std::string deep = mp::byte(0x82) + mp::str("id") + mp::str("web") + mp::str("zz");
  deep += std::string(depth, '\x91');
  deep += mp::nil;
  for (std::uint8_t type : {std::uint8_t{0xA2}, std::uint8_t{0xA1}, std::uint8_t{0xA5}}) {
    const Outcome o = run_decoder(type, deep);
    INFO("as " << mgmt::type_hex(type) << ": " << o.problem);
    CHECK_FALSE(o.threw);
    // Accepting (unknown key ignored) or refusing with an error are both fine.
  }
  const Outcome truncated = run_decoder(0xA2, std::string_view(deep).substr(0, deep.size() - 1));
  CHECK_FALSE(truncated.threw);
  CHECK_FALSE(truncated.decoded);
}

TEST_CASE("messages: random and mutated payloads never crash", "[messages]") {
  std::mt19937 rng(0xC1D901u);  // fixed seed: reproducible
  auto rnd = [&](std::size_t n) { return static_cast<std::size_t>(rng() % n); };
  std::vector<std::string> seeds;
  for (const auto& g : kGoPayloads) seeds.push_back(from_hex(g.hex));

  std::size_t threw = 0, not_map_accepted = 0, reencode_problems = 0, accepted = 0;
  std::string first_failure;
  const int iterations = 4000;
  for (int it = 0; it < iterations; ++it) {
    std::string in;
    switch (it % 5) {
      case 0: {  // random bytes
        in.resize(rnd(64));
        for (auto& c : in) c = static_cast<char>(rng());
        break;
      }
      case 1: {  // random bytes behind a map header, so decoders get past the first byte
        in = mp::byte(0x80 | static_cast<unsigned>(rnd(16)));
        const std::size_t n = rnd(64);
        for (std::size_t k = 0; k < n; ++k) in += static_cast<char>(rng());
        break;
      }
      case 2: {  // a Go payload with a few bytes overwritten
        in = seeds[rnd(seeds.size())];
        if (in.empty()) in = "\x80";
        const std::size_t flips = 1 + rnd(3);
        for (std::size_t k = 0; k < flips; ++k) in[rnd(in.size())] = static_cast<char>(rng());
        break;
      }
      case 3: {  // a Go payload with bytes inserted or removed
        in = seeds[rnd(seeds.size())];
        if (in.empty()) in = "\x80";
        const std::size_t at = rnd(in.size() + 1);
        if (rng() % 2) {
          std::string ins(1 + rnd(4), '\0');
          for (auto& c : ins) c = static_cast<char>(rng());
          in.insert(at, ins);
        } else if (at < in.size()) {
          in.erase(at, 1 + rnd(4));
        }
        break;
      }
      default: {  // two Go payloads spliced
        const std::string& a = seeds[rnd(seeds.size())];
        const std::string& b = seeds[rnd(seeds.size())];
        in = a.substr(0, rnd(a.size() + 1)) + b.substr(rnd(b.size() + 1));
        break;
      }
    }
    // A leading nil is left out here: see "a nil payload" below.
    const bool starts_with_map =
        in.empty() || (static_cast<unsigned char>(in[0]) & 0xf0) == 0x80 ||
        static_cast<unsigned char>(in[0]) == 0xde || static_cast<unsigned char>(in[0]) == 0xdf ||
        static_cast<unsigned char>(in[0]) == 0xc0;
    for (std::uint8_t type : kAllTypes) {
      const Outcome o = run_decoder(type, in);
      bool bad = false;
      if (o.threw) { ++threw; bad = true; }
      if (o.decoded && !starts_with_map) { ++not_map_accepted; bad = true; }
      if (o.decoded) ++accepted;
      if (!o.problem.empty() && !o.threw) { ++reencode_problems; bad = true; }
      if (bad && first_failure.empty())
        first_failure = "type " + mgmt::type_hex(type) + " input " + hex(in) + ": " +
                        (o.problem.empty() ? std::string("non-map accepted") : o.problem);
    }
  }
  INFO("first failure: " << first_failure);
  INFO("accepted " << accepted << " of " << iterations * 9);
  CHECK(threw == 0);
  CHECK(not_map_accepted == 0);
  CHECK(reencode_problems == 0);
}

// =======================================================================================
// Round trips of our own encoding, and the Entry extensions

TEST_CASE("messages: every message round-trips with extreme values", "[messages]") {
  mgmt::Entry full;
  full.id = "b-2";
  full.name = "\xc3\x9c" "berwachung \xe2\x9c\x93";
  full.state = "crashed";
  full.pid = std::numeric_limits<std::int64_t>::min();
  full.rss = std::numeric_limits<std::uint64_t>::max();
  full.restarts = 0xFFFFFFFFFFFFFFFFULL;
  full.started_at = std::numeric_limits<std::int64_t>::max();
  full.exit_code = -1;
  full.exit_signal = 9;
  full.last_error = "spawn: no such file";
  mgmt::Entry plain;
  plain.id = "a";
  plain.state = "pending";
  plain.pid = 70000;
  plain.rss = 5000000000ULL;

  {
    mgmt::ListResponse m;
    m.entries = {full, plain, mgmt::Entry{}};
    CHECK(same(must_decode<mgmt::ListResponse>(mgmt::encode(m)), m));
    CHECK(same(must_decode<mgmt::ListResponse>(mgmt::encode(mgmt::ListResponse{})), mgmt::ListResponse{}));
  }
  {
    mgmt::StatusResponse m;
    m.entry = full;
    m.err = "x";
    CHECK(same(must_decode<mgmt::StatusResponse>(mgmt::encode(m)), m));
  }
  {
    mgmt::StatusRequest m{"web"};
    CHECK(same(must_decode<mgmt::StatusRequest>(mgmt::encode(m)), m));
  }
  {
    mgmt::IdRequest m{std::string(300, 'i')};
    CHECK(same(must_decode<mgmt::IdRequest>(mgmt::encode(m)), m));
  }
  for (std::int64_t sn : {std::int64_t{0}, std::int64_t{1}, std::int64_t{-1}, INT64_MIN, INT64_MAX,
                          std::int64_t{1764000000123456789LL}}) {
    mgmt::LogsRequest m;
    m.id = "web";
    m.s = 255;
    m.f = true;
    m.sn = sn;
    m.ln = sn / 2;
    INFO("sn " << sn);
    CHECK(same(must_decode<mgmt::LogsRequest>(mgmt::encode(m)), m));
  }
  {
    mgmt::LogsStream m;
    m.id = "web";
    m.s = 1;
    m.d = std::string("\x00\x01\xff\xfe" "ok\n\x00", 8);
    m.eof = true;
    CHECK(same(must_decode<mgmt::LogsStream>(mgmt::encode(m)), m));
    m.d = std::string(70000, '\xff');
    CHECK(same(must_decode<mgmt::LogsStream>(mgmt::encode(m)), m));
    m.d.clear();
    CHECK(same(must_decode<mgmt::LogsStream>(mgmt::encode(m)), m));
    m.d = "no such stream";
    m.err = "no such stream";
    CHECK(same(must_decode<mgmt::LogsStream>(mgmt::encode(m)), m));
  }
  {
    mgmt::EventsSubscribe m;
    m.pids = {"web", "", "db"};
    m.types = {"process.started"};
    CHECK(same(must_decode<mgmt::EventsSubscribe>(mgmt::encode(m)), m));
    CHECK(same(must_decode<mgmt::EventsSubscribe>(mgmt::encode(mgmt::EventsSubscribe{})),
               mgmt::EventsSubscribe{}));
  }
  {
    mgmt::EventsStream m{"web", "process.crashed", INT64_MIN, "sum"};
    CHECK(same(must_decode<mgmt::EventsStream>(mgmt::encode(m)), m));
  }
}

TEST_CASE("messages: our encodings are maps with str keys", "[messages]") {
  mgmt::Entry e;
  e.id = "x";
  const std::vector<std::string> payloads = {
      mgmt::encode(mgmt::ListResponse{{e}}),   mgmt::encode(mgmt::ListResponse{}),
      mgmt::encode(mgmt::StatusRequest{"a"}),  mgmt::encode(mgmt::StatusResponse{}),
      mgmt::encode(mgmt::IdRequest{"a"}),      mgmt::encode(mgmt::LogsRequest{}),
      mgmt::encode(mgmt::LogsStream{}),        mgmt::encode(mgmt::EventsSubscribe{}),
      mgmt::encode(mgmt::EventsStream{}),      mgmt::encode(e),
      mgmt::error_reply("boom")};
  for (const auto& p : payloads) {
    const Node n = inspect(p);
    INFO(hex(p));
    CHECK(n.kind == Node::Map);
    for (const auto& kv : n.kvs) CHECK(kv.first.kind == Node::Str);
  }
}

TEST_CASE("messages: Entry extension keys round-trip and are omitted when unset", "[messages]") {
  SECTION("unset extensions are not on the wire") {
    mgmt::Entry e;
    e.id = "web";
    e.name = "Web";
    e.state = "running";
    e.pid = 4242;
    e.rss = 300;
    for (const std::string& payload : {mgmt::encode(e)}) {
      const Node n = inspect(payload);
      REQUIRE(n.kind == Node::Map);
      const std::vector<std::string> keys = n.keys();
      INFO("keys of " << hex(payload));
      CHECK(keys.size() == 5);
      for (const char* k : {"id", "name", "state", "pid", "rss"}) CHECK(has_key(n, k));
      for (const char* k : {"restarts", "started_at", "exit_code", "exit_signal", "last_error"})
        CHECK_FALSE(has_key(n, k));
    }
    // The same inside the messages that carry entries.
    const Node s = inspect(mgmt::encode(mgmt::StatusResponse{e, ""}));
    REQUIRE(s.get("entry") != nullptr);
    CHECK(s.get("entry")->kvs.size() == 5);
    const Node l = inspect(mgmt::encode(mgmt::ListResponse{{e}}));
    REQUIRE(l.get("entries") != nullptr);
    REQUIRE(l.get("entries")->items.size() == 1);
    CHECK(l.get("entries")->items[0].kvs.size() == 5);
  }
  SECTION("set extensions are on the wire and come back") {
    mgmt::Entry e;
    e.id = "web";
    e.state = "crashed";
    e.restarts = 3;
    e.started_at = 1764000000123456789LL;
    e.exit_code = 0;  // set, even though zero
    e.exit_signal = 9;
    e.last_error = "exec: no such file";
    const Node n = inspect(mgmt::encode(e));
    for (const char* k : {"id", "name", "state", "pid", "rss", "restarts", "started_at",
                          "exit_code", "exit_signal", "last_error"}) {
      INFO(k);
      CHECK(has_key(n, k));
    }
    const Node* code = n.get("exit_code");
    REQUIRE(code != nullptr);
    CHECK(((code->kind == Node::UInt && code->u == 0) || (code->kind == Node::Int && code->i == 0)));
    const Node* err = n.get("last_error");
    REQUIRE(err != nullptr);
    CHECK(err->kind == Node::Str);

    mgmt::StatusResponse sr{e, ""};
    const auto back = must_decode<mgmt::StatusResponse>(mgmt::encode(sr));
    CHECK(same(back.entry, e));
    REQUIRE(back.entry.exit_code.has_value());
    CHECK(*back.entry.exit_code == 0);
    REQUIRE(back.entry.exit_signal.has_value());
    CHECK(*back.entry.exit_signal == 9);
    CHECK(back.entry.restarts == 3);
    CHECK(back.entry.started_at == 1764000000123456789LL);
    CHECK(back.entry.last_error == "exec: no such file");

    const auto list = must_decode<mgmt::ListResponse>(mgmt::encode(mgmt::ListResponse{{e, mgmt::Entry{}}}));
    REQUIRE(list.entries.size() == 2);
    CHECK(same(list.entries[0], e));
    CHECK_FALSE(list.entries[1].exit_code.has_value());
  }
  SECTION("each extension on its own") {
    std::vector<std::pair<std::string, mgmt::Entry>> one;
    mgmt::Entry e;
    e.restarts = 1;
    one.emplace_back("restarts", e);
    e = {};
    e.started_at = -5;
    one.emplace_back("started_at", e);
    e = {};
    e.exit_code = -1;
    one.emplace_back("exit_code", e);
    e = {};
    e.exit_signal = 0;
    one.emplace_back("exit_signal", e);
    e = {};
    e.last_error = "x";
    one.emplace_back("last_error", e);
    for (const auto& [key, entry] : one) {
      INFO(key);
      const Node n = inspect(mgmt::encode(entry));
      CHECK(n.kvs.size() == 6);
      CHECK(has_key(n, key));
      const auto back = must_decode<mgmt::StatusResponse>(mgmt::encode(mgmt::StatusResponse{entry, ""}));
      CHECK(same(back.entry, entry));
    }
  }
}

TEST_CASE("messages: LogsStream err extension round-trips and is omitted when empty",
          "[messages]") {
  mgmt::LogsStream m;
  m.id = "web";
  m.s = 1;
  m.d = "data";
  {
    const Node n = inspect(mgmt::encode(m));
    CHECK(n.kvs.size() == 4);
    CHECK_FALSE(has_key(n, "err"));
    CHECK(must_decode<mgmt::LogsStream>(mgmt::encode(m)).err.empty());
  }
  m.d = "stream 2 does not exist";
  m.err = "stream 2 does not exist";
  m.eof = true;
  {
    const Node n = inspect(mgmt::encode(m));
    CHECK(n.kvs.size() == 5);
    REQUIRE(n.get("err") != nullptr);
    CHECK(n.get("err")->kind == Node::Str);
    CHECK(n.get("err")->s == m.err);
    REQUIRE(n.get("d") != nullptr);
    CHECK(n.get("d")->kind == Node::Bin);  // Go clients still read the text from `d`
    CHECK(same(must_decode<mgmt::LogsStream>(mgmt::encode(m)), m));
  }
  // A Go-encoded frame (no err key) decodes with err empty.
  CHECK(must_decode<mgmt::LogsStream>(from_hex(kGoPayloads[12].hex)).err.empty());
}

TEST_CASE("messages: unknown values nested a few levels deep are ignored", "[messages]") {
  // Future clients may send structured extension values; 16 levels is far more than any.
  std::string nested = mp::nil;
  for (int k = 0; k < 16; ++k) nested = (k % 2 ? mp::arr({nested, mp::pfix(1)}) : mp::map({{"k", nested}}));
  auto m = must_decode<mgmt::StatusRequest>(mp::map({{"x", nested}, {"id", mp::str("web")}}));
  CHECK(m.id == "web");
  auto l = must_decode<mgmt::ListResponse>(
      mp::map({{"entries", mp::arr({mp::map({{"id", mp::str("a")}, {"x", nested}})})}}));
  REQUIRE(l.entries.size() == 1);
  CHECK(l.entries[0].id == "a");
}

TEST_CASE("messages: error_reply is a StatusResponse with an empty entry", "[messages]") {
  const auto m = must_decode<mgmt::StatusResponse>(mgmt::error_reply("unknown request type 0xa8"));
  CHECK(m.err == "unknown request type 0xa8");
  CHECK(same(m.entry, mgmt::Entry{}));
  const Node n = inspect(mgmt::error_reply(mgmt::kErrNotFound));
  CHECK(has_key(n, "entry"));
  CHECK(has_key(n, "err"));
  REQUIRE(n.get("err") != nullptr);
  CHECK(n.get("err")->s == mgmt::kErrNotFound);
}
