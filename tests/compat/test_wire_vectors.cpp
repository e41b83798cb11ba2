// Compatibility with the Go reference implementation of the cliwrap management protocol.
//
// Every frame in tests/compat/vectors/ was written by the Go codec. For each one we check the
// header, decode the payload to exactly the values tests/compat/vectors/README.md lists, re-encode
// with our codec, and decode again. Our encodings are then inspected independently with
// msgpack-cxx for the properties the Go decoder relies on (docs/protocol.md "Payloads").
#include <catch2/catch.hpp>

#include <msgpack.hpp>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "mgmt/messages.hpp"
#include "mgmt/wire.hpp"

#ifndef MGMT_WIRE_VECTORS_DIR
#error "MGMT_WIRE_VECTORS_DIR must name the wire-vector directory"
#endif

namespace {

namespace fs = std::filesystem;

const std::string kUberwachung = "\xc3\x9c" "berwachung \xe2\x9c\x93";  // "Überwachung ✓"

std::string hex(std::string_view s) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

std::string read_vector(const std::string& name) {
  const fs::path path = fs::path(MGMT_WIRE_VECTORS_DIR) / (name + ".bin");
  std::ifstream in(path, std::ios::binary);
  INFO("reading " << path.string());
  REQUIRE(in.good());
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Checks a complete frame's header against the README and returns its payload.
std::string check_frame(const std::string& frame, std::uint8_t type, std::uint64_t seq) {
  REQUIRE(frame.size() >= mgmt::kHeaderSize);
  const auto* bytes = reinterpret_cast<const std::uint8_t*>(frame.data());
  CHECK(bytes[0] == 0xC1);
  CHECK(bytes[1] == 0xD9);
  CHECK(bytes[2] == 0x01);
  mgmt::FrameHeader h;
  REQUIRE(mgmt::parse_header(bytes, h) == mgmt::HeaderError::none);
  CHECK(h.type == type);
  CHECK(h.seq == seq);
  CHECK(h.flags == 0);
  CHECK(h.length == frame.size() - mgmt::kHeaderSize);
  return frame.substr(mgmt::kHeaderSize);
}

// ---------------------------------------------------------------------------------------
// Independent inspection with msgpack-cxx.

msgpack::object_handle unpack_whole(std::string_view payload) {
  std::size_t offset = 0;
  msgpack::object_handle oh;
  INFO("payload " << hex(payload));
  REQUIRE_NOTHROW(oh = msgpack::unpack(payload.data(), payload.size(), offset));
  CHECK(offset == payload.size());  // exactly one object, nothing after it
  return oh;
}

std::string key_of(const msgpack::object& k) {
  REQUIRE(k.type == msgpack::type::STR);  // map keys are str, never bin
  return std::string(k.via.str.ptr, k.via.str.size);
}

const msgpack::object* find(const msgpack::object& map, std::string_view key) {
  if (map.type != msgpack::type::MAP) return nullptr;
  for (std::uint32_t i = 0; i < map.via.map.size; ++i) {
    const auto& kv = map.via.map.ptr[i];
    if (kv.key.type == msgpack::type::STR &&
        std::string_view(kv.key.via.str.ptr, kv.key.via.str.size) == key)
      return &kv.val;
  }
  return nullptr;
}

enum class Kind { Str, Bin, UInt, Int, Bool, Entry, EntryList, StrList };

struct KeyRule {
  const char* key;
  Kind kind;
  bool required = false;       // the Go side expects it to always be there
  bool nil_ok = false;         // nil is a legal spelling (nil slices)
  bool omit_when_zero = false;  // omitempty on the Go side: absent when zero/empty
};

using Schema = std::vector<KeyRule>;

const Schema kEntrySchema = {
    {"id", Kind::Str, true},          {"name", Kind::Str, true},
    {"state", Kind::Str, true},       {"pid", Kind::Int, true},
    {"rss", Kind::UInt, true},
    // Extensions: present only when set.
    {"restarts", Kind::UInt, false, false, true},
    {"started_at", Kind::Int, false, false, true},
    {"exit_code", Kind::Int},
    {"exit_signal", Kind::Int},
    {"last_error", Kind::Str, false, false, true},
};

void check_schema(const msgpack::object& obj, const Schema& schema, const std::string& where);

void check_kind(const msgpack::object& v, const KeyRule& rule, const std::string& where) {
  INFO(where << "." << rule.key);
  if (v.type == msgpack::type::NIL) {
    CHECK(rule.nil_ok);
    return;
  }
  switch (rule.kind) {
    case Kind::Str:
      CHECK(v.type == msgpack::type::STR);
      break;
    case Kind::Bin:
      CHECK(v.type == msgpack::type::BIN);  // byte data is bin, never str
      break;
    case Kind::UInt:
      CHECK(v.type == msgpack::type::POSITIVE_INTEGER);
      break;
    case Kind::Int:
      CHECK((v.type == msgpack::type::POSITIVE_INTEGER ||
             v.type == msgpack::type::NEGATIVE_INTEGER));
      break;
    case Kind::Bool:
      CHECK(v.type == msgpack::type::BOOLEAN);
      break;
    case Kind::Entry:
      REQUIRE(v.type == msgpack::type::MAP);
      check_schema(v, kEntrySchema, where + "." + rule.key);
      break;
    case Kind::EntryList:
      REQUIRE(v.type == msgpack::type::ARRAY);
      for (std::uint32_t i = 0; i < v.via.array.size; ++i) {
        REQUIRE(v.via.array.ptr[i].type == msgpack::type::MAP);  // structs are maps
        check_schema(v.via.array.ptr[i], kEntrySchema,
                     where + "." + rule.key + "[" + std::to_string(i) + "]");
      }
      break;
    case Kind::StrList:
      REQUIRE(v.type == msgpack::type::ARRAY);
      for (std::uint32_t i = 0; i < v.via.array.size; ++i)
        CHECK(v.via.array.ptr[i].type == msgpack::type::STR);
      break;
  }
}

bool is_zero(const msgpack::object& v) {
  switch (v.type) {
    case msgpack::type::NIL: return true;
    case msgpack::type::BOOLEAN: return !v.via.boolean;
    case msgpack::type::POSITIVE_INTEGER: return v.via.u64 == 0;
    case msgpack::type::NEGATIVE_INTEGER: return v.via.i64 == 0;
    case msgpack::type::STR: return v.via.str.size == 0;
    case msgpack::type::BIN: return v.via.bin.size == 0;
    case msgpack::type::ARRAY: return v.via.array.size == 0;
    case msgpack::type::MAP: return v.via.map.size == 0;
    default: return false;
  }
}

void check_schema(const msgpack::object& obj, const Schema& schema, const std::string& where) {
  INFO(where);
  REQUIRE(obj.type == msgpack::type::MAP);  // every struct is a map, never an array
  std::set<std::string> seen;
  for (std::uint32_t i = 0; i < obj.via.map.size; ++i) {
    const std::string key = key_of(obj.via.map.ptr[i].key);
    INFO("key '" << key << "'");
    CHECK(seen.insert(key).second);  // no duplicate keys
    const auto rule = std::find_if(schema.begin(), schema.end(),
                                   [&](const KeyRule& r) { return key == r.key; });
    CHECK(rule != schema.end());  // only the protocol's short keys (and Entry extensions)
    if (rule == schema.end()) continue;
    const auto& v = obj.via.map.ptr[i].val;
    check_kind(v, *rule, where);
    if (rule->omit_when_zero) CHECK_FALSE(is_zero(v));
  }
  for (const auto& rule : schema) {
    if (!rule.required) continue;
    INFO("required key '" << rule.key << "'");
    CHECK(seen.count(rule.key) == 1);
  }
}

template <class T>
const Schema& schema_of() {
  static const Schema list_response = {{"entries", Kind::EntryList, false, true}};
  static const Schema id_only = {{"id", Kind::Str}};
  static const Schema status_response = {{"entry", Kind::Entry, true}, {"err", Kind::Str, true}};
  static const Schema logs_request = {{"id", Kind::Str},
                                      {"s", Kind::UInt},
                                      {"f", Kind::Bool},
                                      {"sn", Kind::Int, false, false, true},
                                      {"ln", Kind::Int, false, false, true}};
  static const Schema logs_stream = {{"id", Kind::Str, true},
                                     {"s", Kind::UInt, true},
                                     {"d", Kind::Bin, true, true},
                                     {"eof", Kind::Bool, true},
                                     // Extension: only when the request failed.
                                     {"err", Kind::Str, false, false, true}};
  static const Schema events_subscribe = {{"pids", Kind::StrList, false, true},
                                          {"types", Kind::StrList, false, false, true}};
  static const Schema events_stream = {{"pid", Kind::Str, true},
                                       {"t", Kind::Str, true},
                                       {"ts", Kind::Int, true},
                                       {"sum", Kind::Str, true}};
  if constexpr (std::is_same_v<T, mgmt::ListResponse>) return list_response;
  else if constexpr (std::is_same_v<T, mgmt::StatusRequest>) return id_only;
  else if constexpr (std::is_same_v<T, mgmt::IdRequest>) return id_only;
  else if constexpr (std::is_same_v<T, mgmt::StatusResponse>) return status_response;
  else if constexpr (std::is_same_v<T, mgmt::LogsRequest>) return logs_request;
  else if constexpr (std::is_same_v<T, mgmt::LogsStream>) return logs_stream;
  else if constexpr (std::is_same_v<T, mgmt::EventsSubscribe>) return events_subscribe;
  else if constexpr (std::is_same_v<T, mgmt::EventsStream>) return events_stream;
  else if constexpr (std::is_same_v<T, mgmt::Entry>) return kEntrySchema;
  else {
    static const Schema none = {};  // ListRequest: no keys at all
    return none;
  }
}

template <class T>
void inspect_encoding(std::string_view payload, const std::string& where) {
  INFO(where << " payload " << hex(payload));
  REQUIRE_FALSE(payload.empty());
  const auto oh = unpack_whole(payload);
  check_schema(oh.get(), schema_of<T>(), where);
}

// What the Go decoder would see: a canonical text in which key order, integer width,
// nil-versus-empty and absent-versus-zero (Go defaults missing keys) no longer matter, but
// str versus bin and every value still do.
std::string canonical(const msgpack::object& v) {
  if (is_zero(v) && v.type != msgpack::type::MAP) return "~";
  switch (v.type) {
    case msgpack::type::BOOLEAN: return "T";
    case msgpack::type::POSITIVE_INTEGER: return "i" + std::to_string(v.via.u64);
    case msgpack::type::NEGATIVE_INTEGER: return "i" + std::to_string(v.via.i64);
    case msgpack::type::STR: return "s:" + hex(std::string_view(v.via.str.ptr, v.via.str.size));
    case msgpack::type::BIN: return "b:" + hex(std::string_view(v.via.bin.ptr, v.via.bin.size));
    case msgpack::type::ARRAY: {
      std::string s = "[";
      for (std::uint32_t i = 0; i < v.via.array.size; ++i) s += canonical(v.via.array.ptr[i]) + ",";
      return s + "]";
    }
    case msgpack::type::MAP: {
      std::map<std::string, std::string> fields;
      for (std::uint32_t i = 0; i < v.via.map.size; ++i) {
        const auto& kv = v.via.map.ptr[i];
        const std::string c = canonical(kv.val);
        if (c == "~") continue;
        fields[canonical(kv.key)] = c;
      }
      if (fields.empty()) return "~";
      std::string s = "{";
      for (const auto& [k, c] : fields) s += k + "=" + c + ",";
      return s + "}";
    }
    default: return "?";
  }
}

std::string canonical(std::string_view payload) {
  if (payload.empty()) return "~";
  const auto oh = unpack_whole(payload);
  return canonical(oh.get());
}

// ---------------------------------------------------------------------------------------
// Integer widths in our output (docs/protocol.md, "Payloads": mgmtd writes every integer in
// its smallest form). A raw walk, since msgpack-cxx hides the width.
struct WidthWalker {
  std::string_view d;
  std::size_t pos = 0;
  std::vector<std::string> issues{};
  bool ok = true;

  std::uint64_t take(std::size_t n) {
    if (n > d.size() - pos) {
      ok = false;
      pos = d.size();
      return 0;
    }
    std::uint64_t v = 0;
    for (std::size_t k = 0; k < n; ++k) v = (v << 8) | static_cast<unsigned char>(d[pos++]);
    return v;
  }
  void skip(std::uint64_t n) {
    if (n > d.size() - pos) {
      ok = false;
      pos = d.size();
      return;
    }
    pos += n;
  }
  static std::size_t min_size_unsigned(std::uint64_t v) {
    return v <= 0x7f ? 1 : v <= 0xff ? 2 : v <= 0xffff ? 3 : v <= 0xffffffffULL ? 5 : 9;
  }
  static std::size_t min_size_signed(std::int64_t v) {
    if (v >= 0) return min_size_unsigned(static_cast<std::uint64_t>(v));
    return v >= -32 ? 1 : v >= -128 ? 2 : v >= -32768 ? 3 : v >= INT32_MIN ? 5 : 9;
  }
  void integer(std::size_t start, std::size_t size, bool is_signed, std::uint64_t raw) {
    std::size_t want;
    std::string value;
    if (is_signed) {
      const int shift = static_cast<int>(64 - 8 * (size - 1));
      const auto v = static_cast<std::int64_t>(raw << shift) >> shift;
      want = min_size_signed(v);
      value = std::to_string(v);
    } else {
      want = min_size_unsigned(raw);
      value = std::to_string(raw);
    }
    if (want != size)
      issues.push_back("integer " + value + " at offset " + std::to_string(start) + " takes " +
                       std::to_string(size) + " bytes, smallest is " + std::to_string(want));
  }
  void walk() {
    if (!ok) return;
    const std::size_t start = pos;
    const auto c = static_cast<unsigned>(take(1));
    if (!ok) return;
    if (c <= 0x7f || c >= 0xe0) return;
    if ((c & 0xf0) == 0x80) { for (unsigned k = 0; k < 2 * (c & 0x0f); ++k) walk(); return; }
    if ((c & 0xf0) == 0x90) { for (unsigned k = 0; k < (c & 0x0f); ++k) walk(); return; }
    if ((c & 0xe0) == 0xa0) { skip(c & 0x1f); return; }
    switch (c) {
      case 0xc0: case 0xc2: case 0xc3: return;
      case 0xc4: case 0xd9: skip(take(1)); return;
      case 0xc5: case 0xda: skip(take(2)); return;
      case 0xc6: case 0xdb: skip(take(4)); return;
      case 0xca: skip(4); return;
      case 0xcb: skip(8); return;
      case 0xcc: integer(start, 2, false, take(1)); return;
      case 0xcd: integer(start, 3, false, take(2)); return;
      case 0xce: integer(start, 5, false, take(4)); return;
      case 0xcf: integer(start, 9, false, take(8)); return;
      case 0xd0: integer(start, 2, true, take(1)); return;
      case 0xd1: integer(start, 3, true, take(2)); return;
      case 0xd2: integer(start, 5, true, take(4)); return;
      case 0xd3: integer(start, 9, true, take(8)); return;
      case 0xdc: { const auto n = take(2); for (std::uint64_t k = 0; k < n && ok; ++k) walk(); return; }
      case 0xdd: { const auto n = take(4); for (std::uint64_t k = 0; k < n && ok; ++k) walk(); return; }
      case 0xde: { const auto n = take(2); for (std::uint64_t k = 0; k < 2 * n && ok; ++k) walk(); return; }
      case 0xdf: { const auto n = take(4); for (std::uint64_t k = 0; k < 2 * n && ok; ++k) walk(); return; }
      case 0xd4: skip(2); return;
      case 0xd5: skip(3); return;
      case 0xd6: skip(5); return;
      case 0xd7: skip(9); return;
      case 0xd8: skip(17); return;
      case 0xc7: skip(take(1) + 1); return;
      case 0xc8: skip(take(2) + 1); return;
      case 0xc9: skip(take(4) + 1); return;
      default: ok = false; return;
    }
  }
};

// ---------------------------------------------------------------------------------------
// One vector: header, decoded values, re-encoding, inspection of our encoding.

template <class T>
void check_vector(const std::string& name, std::uint8_t type, std::uint64_t seq,
                  const std::function<void(const T&)>& check_values) {
  INFO("vector " << name);
  const std::string frame = read_vector(name);
  const std::string go_payload = check_frame(frame, type, seq);

  // Our frame writer reproduces the Go header byte for byte.
  CHECK(mgmt::make_frame(type, seq, go_payload) == frame);

  T go;
  {
    INFO("decoding the Go payload " << hex(go_payload));
    const std::string err = mgmt::decode(go_payload, go);
    INFO("error: " << err);
    REQUIRE(err.empty());
    check_values(go);
  }

  if constexpr (!std::is_same_v<T, mgmt::ListRequest>) {
    const std::string ours = mgmt::encode(go);
    const std::string our_frame = mgmt::make_frame(type, seq, ours);
    const std::string payload = check_frame(our_frame, type, seq);
    CHECK(payload == ours);
    T back;
    {
      INFO("decoding our re-encoding " << hex(ours));
      const std::string err = mgmt::decode(payload, back);
      INFO("error: " << err);
      REQUIRE(err.empty());
      check_values(back);
    }
    // Independent inspection: the Go decoder's view of our bytes.
    inspect_encoding<T>(ours, "our re-encoding of " + name);
    INFO("ours " << hex(ours) << "\ngo   " << hex(go_payload));
    CHECK(canonical(ours) == canonical(go_payload));
  }
  // The schema is checked against the Go bytes too, so it reflects what Go really sends.
  if (!go_payload.empty()) inspect_encoding<T>(go_payload, "Go payload of " + name);
}

struct VectorInfo {
  const char* name;
  std::uint8_t type;
};

// The table of tests/compat/vectors/README.md: file number = seq.
const VectorInfo kVectors[] = {
    {"01_list_request", 0xA0},
    {"02_list_response_empty", 0xA1},
    {"03_list_response_one", 0xA1},
    {"04_list_response_three", 0xA1},
    {"05_status_request", 0xA2},
    {"06_status_response_entry", 0xA3},
    {"07_status_response_err", 0xA3},
    {"08_stop_request", 0xA9},
    {"09_start_request", 0xA8},
    {"10_logs_request_plain", 0xA4},
    {"11_logs_request_follow", 0xA4},
    {"12_logs_request_filters", 0xA4},
    {"13_logs_stream_eof", 0xA5},
    {"14_logs_stream_more", 0xA5},
    {"15_logs_stream_empty", 0xA5},
    {"16_events_subscribe_all", 0xA6},
    {"17_events_subscribe_filtered", 0xA6},
    {"18_events_stream", 0xA7},
    {"19_status_response_unknown_type", 0xA3},
};

template <class T>
std::string reencode_as(std::string_view payload) {
  T m;
  REQUIRE(mgmt::decode(payload, m) == "");
  return mgmt::encode(m);
}

// Decodes a Go payload by its type and returns our encoding of the value ("" for a list
// request, which has no payload).
std::string reencode(std::uint8_t type, std::string_view payload) {
  switch (type) {
    case 0xA1: return reencode_as<mgmt::ListResponse>(payload);
    case 0xA2: return reencode_as<mgmt::StatusRequest>(payload);
    case 0xA3: return reencode_as<mgmt::StatusResponse>(payload);
    case 0xA4: return reencode_as<mgmt::LogsRequest>(payload);
    case 0xA5: return reencode_as<mgmt::LogsStream>(payload);
    case 0xA6: return reencode_as<mgmt::EventsSubscribe>(payload);
    case 0xA7: return reencode_as<mgmt::EventsStream>(payload);
    case 0xA8:
    case 0xA9: return reencode_as<mgmt::IdRequest>(payload);
    default: return "";
  }
}

void check_entry(const mgmt::Entry& e, std::string_view id, std::string_view name,
                 std::string_view state, std::int64_t pid, std::uint64_t rss) {
  CHECK(e.id == id);
  CHECK(e.name == name);
  CHECK(e.state == state);
  CHECK(e.pid == pid);
  CHECK(e.rss == rss);
  // Go never sends the extension keys: they stay unset.
  CHECK(e.restarts == 0);
  CHECK(e.started_at == 0);
  CHECK_FALSE(e.exit_code.has_value());
  CHECK_FALSE(e.exit_signal.has_value());
  CHECK(e.last_error.empty());
}

void check_empty_entry(const mgmt::Entry& e) { check_entry(e, "", "", "", 0, 0); }

}  // namespace

// =======================================================================================

TEST_CASE("vectors: the directory holds exactly the files of the README table", "[compat]") {
  std::set<std::string> on_disk;
  for (const auto& de : fs::directory_iterator(MGMT_WIRE_VECTORS_DIR)) {
    if (de.path().extension() == ".bin") on_disk.insert(de.path().stem().string());
  }
  std::set<std::string> table;
  for (const auto& v : kVectors) table.insert(v.name);
  CHECK(on_disk == table);
  // Every file's seq is its number and its type is the table's.
  std::uint64_t seq = 0;
  for (const auto& v : kVectors) {
    ++seq;
    INFO(v.name);
    CHECK(std::stoul(std::string(v.name).substr(0, 2)) == seq);
    check_frame(read_vector(v.name), v.type, seq);
  }
}

TEST_CASE("vector 01_list_request", "[compat]") {
  const std::string frame = read_vector("01_list_request");
  CHECK(frame.size() == mgmt::kHeaderSize);
  CHECK(check_frame(frame, 0xA0, 1).empty());
  check_vector<mgmt::ListRequest>("01_list_request", 0xA0, 1, [](const mgmt::ListRequest&) {});
  // Our list request: no payload, or an empty map (docs/protocol.md); the frame is byte-identical
  // when we send none.
  CHECK(mgmt::make_frame(0xA0, 1, "") == frame);
}

TEST_CASE("vector 02_list_response_empty", "[compat]") {
  check_vector<mgmt::ListResponse>("02_list_response_empty", 0xA1, 2,
                                   [](const mgmt::ListResponse& m) { CHECK(m.entries.empty()); });
}

TEST_CASE("vector 03_list_response_one", "[compat]") {
  check_vector<mgmt::ListResponse>("03_list_response_one", 0xA1, 3, [](const mgmt::ListResponse& m) {
    REQUIRE(m.entries.size() == 1);
    check_entry(m.entries[0], "web", "Web", "running", 4242, 12582912);
  });
}

TEST_CASE("vector 04_list_response_three", "[compat]") {
  check_vector<mgmt::ListResponse>("04_list_response_three", 0xA1, 4, [](const mgmt::ListResponse& m) {
    REQUIRE(m.entries.size() == 3);
    check_entry(m.entries[0], "a", "", "pending", 0, 0);
    check_entry(m.entries[1], "b-2", kUberwachung, "crashed", 70000, 5000000000ULL);
    check_entry(m.entries[2], "c_3", "worker", "stopped", 2147483647,
                std::numeric_limits<std::uint64_t>::max());
    CHECK(m.entries[1].name.size() == 16);  // UTF-8 bytes kept as they are
    CHECK(m.entries[2].rss == 18446744073709551615ULL);
  });
}

TEST_CASE("vector 05_status_request", "[compat]") {
  check_vector<mgmt::StatusRequest>("05_status_request", 0xA2, 5,
                                    [](const mgmt::StatusRequest& m) { CHECK(m.id == "web"); });
}

TEST_CASE("vector 06_status_response_entry", "[compat]") {
  check_vector<mgmt::StatusResponse>("06_status_response_entry", 0xA3, 6,
                                     [](const mgmt::StatusResponse& m) {
                                       check_entry(m.entry, "web", "Web", "running", 4242, 300);
                                       CHECK(m.err == "");
                                     });
}

TEST_CASE("vector 07_status_response_err", "[compat]") {
  check_vector<mgmt::StatusResponse>("07_status_response_err", 0xA3, 7,
                                     [](const mgmt::StatusResponse& m) {
                                       check_empty_entry(m.entry);
                                       CHECK(m.err == "cliwrap: process not found");
                                       CHECK(m.err == mgmt::kErrNotFound);
                                     });
}

TEST_CASE("vector 08_stop_request", "[compat]") {
  check_vector<mgmt::IdRequest>("08_stop_request", 0xA9, 8,
                                [](const mgmt::IdRequest& m) { CHECK(m.id == "web"); });
}

TEST_CASE("vector 09_start_request", "[compat]") {
  check_vector<mgmt::IdRequest>("09_start_request", 0xA8, 9,
                                [](const mgmt::IdRequest& m) { CHECK(m.id == "web"); });
}

TEST_CASE("vector 10_logs_request_plain", "[compat]") {
  check_vector<mgmt::LogsRequest>("10_logs_request_plain", 0xA4, 10, [](const mgmt::LogsRequest& m) {
    CHECK(m.id == "web");
    CHECK(m.s == 1);
    CHECK_FALSE(m.f);
    CHECK(m.sn == 0);  // absent sn/ln default to 0
    CHECK(m.ln == 0);
  });
}

TEST_CASE("vector 11_logs_request_follow", "[compat]") {
  check_vector<mgmt::LogsRequest>("11_logs_request_follow", 0xA4, 11, [](const mgmt::LogsRequest& m) {
    CHECK(m.id == "web");
    CHECK(m.s == 0);
    CHECK(m.f);
    CHECK(m.sn == 0);
    CHECK(m.ln == 0);
  });
}

TEST_CASE("vector 12_logs_request_filters", "[compat]") {
  check_vector<mgmt::LogsRequest>("12_logs_request_filters", 0xA4, 12, [](const mgmt::LogsRequest& m) {
    CHECK(m.id == "web");
    CHECK(m.s == 0);
    CHECK_FALSE(m.f);
    CHECK(m.sn == 1764000000123456789LL);
    CHECK(m.ln == 50);
  });
}

TEST_CASE("vector 13_logs_stream_eof", "[compat]") {
  check_vector<mgmt::LogsStream>("13_logs_stream_eof", 0xA5, 13, [](const mgmt::LogsStream& m) {
    CHECK(m.id == "web");
    CHECK(m.s == 0);
    CHECK(m.d == std::string("\x00\x01\xff\xfe\x6f\x6b\x0a\x00", 8));
    CHECK(m.d.size() == 8);
    CHECK(m.eof);
  });
}

TEST_CASE("vector 14_logs_stream_more", "[compat]") {
  check_vector<mgmt::LogsStream>("14_logs_stream_more", 0xA5, 14, [](const mgmt::LogsStream& m) {
    CHECK(m.id == "web");
    CHECK(m.s == 1);
    CHECK(m.d == "partial line without newline");
    CHECK_FALSE(m.eof);
  });
}

TEST_CASE("vector 15_logs_stream_empty", "[compat]") {
  check_vector<mgmt::LogsStream>("15_logs_stream_empty", 0xA5, 15, [](const mgmt::LogsStream& m) {
    CHECK(m.id == "web");
    CHECK(m.s == 0);
    CHECK(m.d.empty());  // nil decodes to empty
    CHECK(m.eof);
  });
}

TEST_CASE("vector 16_events_subscribe_all", "[compat]") {
  check_vector<mgmt::EventsSubscribe>("16_events_subscribe_all", 0xA6, 16,
                                      [](const mgmt::EventsSubscribe& m) {
                                        CHECK(m.pids.empty());   // nil
                                        CHECK(m.types.empty());  // absent
                                      });
}

TEST_CASE("vector 17_events_subscribe_filtered", "[compat]") {
  check_vector<mgmt::EventsSubscribe>(
      "17_events_subscribe_filtered", 0xA6, 17, [](const mgmt::EventsSubscribe& m) {
        CHECK(m.pids == std::vector<std::string>{"web", "db"});
        CHECK(m.types == std::vector<std::string>{"process.started", "process.crashed"});
        CHECK(m.types[0] == mgmt::event::started);
        CHECK(m.types[1] == mgmt::event::crashed);
      });
}

TEST_CASE("vector 18_events_stream", "[compat]") {
  check_vector<mgmt::EventsStream>("18_events_stream", 0xA7, 18, [](const mgmt::EventsStream& m) {
    CHECK(m.pid == "web");
    CHECK(m.t == "process.crashed");
    CHECK(m.ts == 1764000000987654321LL);
    CHECK(m.sum == "process.crashed web");
  });
}

TEST_CASE("vector 19_status_response_unknown_type", "[compat]") {
  check_vector<mgmt::StatusResponse>("19_status_response_unknown_type", 0xA3, 19,
                                     [](const mgmt::StatusResponse& m) {
                                       check_empty_entry(m.entry);
                                       CHECK(m.err == "unknown request type 0xa8");
                                     });
}

TEST_CASE("vectors: error_reply matches the Go server's unknown-type answer", "[compat]") {
  const std::string text = "unknown request type " + mgmt::type_hex(0xa8);
  CHECK(text == "unknown request type 0xa8");
  const std::string ours = mgmt::error_reply(text);
  mgmt::StatusResponse m;
  REQUIRE(mgmt::decode(ours, m) == "");
  check_empty_entry(m.entry);
  CHECK(m.err == "unknown request type 0xa8");

  const std::string go_payload =
      check_frame(read_vector("19_status_response_unknown_type"), 0xA3, 19);
  mgmt::StatusResponse go;
  REQUIRE(mgmt::decode(go_payload, go) == "");
  CHECK(go.err == m.err);
  // What a Go client sees from our reply is what it sees from the Go server's.
  inspect_encoding<mgmt::StatusResponse>(ours, "error_reply");
  CHECK(canonical(ours) == canonical(go_payload));
  // And the full frame, with the request's seq echoed.
  const std::string frame = mgmt::make_frame(0xA3, 19, ours);
  CHECK(check_frame(frame, 0xA3, 19) == ours);
}

TEST_CASE("vectors: our requests omit sn, ln and types when zero or empty", "[compat]") {
  SECTION("LogsRequest without filters") {
    mgmt::LogsRequest r;
    r.id = "web";
    r.s = 1;
    const std::string p = mgmt::encode(r);
    inspect_encoding<mgmt::LogsRequest>(p, "LogsRequest");
    const auto oh = unpack_whole(p);
    CHECK(find(oh.get(), "sn") == nullptr);
    CHECK(find(oh.get(), "ln") == nullptr);
    const auto* id = find(oh.get(), "id");
    REQUIRE(id != nullptr);
    CHECK(id->as<std::string>() == "web");
    const auto* s = find(oh.get(), "s");
    REQUIRE(s != nullptr);
    CHECK(s->as<std::uint64_t>() == 1);
  }
  SECTION("LogsRequest with only one filter") {
    mgmt::LogsRequest r;
    r.id = "web";
    r.ln = 50;
    const std::string p = mgmt::encode(r);
    inspect_encoding<mgmt::LogsRequest>(p, "LogsRequest ln only");
    const auto oh = unpack_whole(p);
    CHECK(find(oh.get(), "sn") == nullptr);
    REQUIRE(find(oh.get(), "ln") != nullptr);
    CHECK(find(oh.get(), "ln")->as<std::int64_t>() == 50);
  }
  SECTION("LogsRequest with negative sn keeps it") {
    mgmt::LogsRequest r;
    r.sn = -1;
    const std::string p = mgmt::encode(r);
    inspect_encoding<mgmt::LogsRequest>(p, "LogsRequest sn<0");
    const auto oh = unpack_whole(p);
    REQUIRE(find(oh.get(), "sn") != nullptr);
    CHECK(find(oh.get(), "sn")->as<std::int64_t>() == -1);
  }
  SECTION("EventsSubscribe for everything") {
    const std::string p = mgmt::encode(mgmt::EventsSubscribe{});
    inspect_encoding<mgmt::EventsSubscribe>(p, "EventsSubscribe{}");
    const auto oh = unpack_whole(p);
    CHECK(find(oh.get(), "types") == nullptr);
    const auto* pids = find(oh.get(), "pids");
    if (pids != nullptr)
      CHECK((pids->type == msgpack::type::NIL ||
             (pids->type == msgpack::type::ARRAY && pids->via.array.size == 0)));
  }
  SECTION("EventsSubscribe with types only") {
    mgmt::EventsSubscribe m;
    m.types = {"process.failed"};
    const std::string p = mgmt::encode(m);
    inspect_encoding<mgmt::EventsSubscribe>(p, "EventsSubscribe types");
    const auto oh = unpack_whole(p);
    REQUIRE(find(oh.get(), "types") != nullptr);
    CHECK(find(oh.get(), "types")->as<std::vector<std::string>>() ==
          std::vector<std::string>{"process.failed"});
  }
}

TEST_CASE("vectors: responses carry every key the Go client reads", "[compat]") {
  // Zero-valued responses are the hardest case: nothing may be dropped as "empty".
  SECTION("StatusResponse{}") {
    const std::string p = mgmt::encode(mgmt::StatusResponse{});
    inspect_encoding<mgmt::StatusResponse>(p, "StatusResponse{}");
    const auto oh = unpack_whole(p);
    const auto* entry = find(oh.get(), "entry");
    REQUIRE(entry != nullptr);
    for (const char* k : {"id", "name", "state", "pid", "rss"}) {
      INFO(k);
      CHECK(find(*entry, k) != nullptr);
    }
  }
  SECTION("ListResponse with a zero entry") {
    const std::string p = mgmt::encode(mgmt::ListResponse{{mgmt::Entry{}}});
    inspect_encoding<mgmt::ListResponse>(p, "ListResponse{{}}");
  }
  SECTION("LogsStream{}") {
    const std::string p = mgmt::encode(mgmt::LogsStream{});
    inspect_encoding<mgmt::LogsStream>(p, "LogsStream{}");
  }
  SECTION("LogsStream with binary data") {
    mgmt::LogsStream m;
    m.id = "web";
    m.d = std::string("\xff\x00text", 6);
    const std::string p = mgmt::encode(m);
    inspect_encoding<mgmt::LogsStream>(p, "LogsStream binary");
    const auto oh = unpack_whole(p);
    const auto* d = find(oh.get(), "d");
    REQUIRE(d != nullptr);
    REQUIRE(d->type == msgpack::type::BIN);
    CHECK(std::string(d->via.bin.ptr, d->via.bin.size) == m.d);
  }
  SECTION("LogsStream with text-only data is still bin") {
    mgmt::LogsStream m;
    m.d = "hello\n";
    const auto oh = unpack_whole(mgmt::encode(m));
    const auto* d = find(oh.get(), "d");
    REQUIRE(d != nullptr);
    CHECK(d->type == msgpack::type::BIN);
  }
  SECTION("LogsStream with the err extension") {
    mgmt::LogsStream m;
    m.id = "web";
    m.s = 2;
    m.d = "no stream 2";
    m.err = "no stream 2";
    m.eof = true;
    const std::string p = mgmt::encode(m);
    inspect_encoding<mgmt::LogsStream>(p, "LogsStream err");
    const auto oh = unpack_whole(p);
    REQUIRE(find(oh.get(), "d") != nullptr);
    CHECK(find(oh.get(), "d")->type == msgpack::type::BIN);
    REQUIRE(find(oh.get(), "eof") != nullptr);
    CHECK(find(oh.get(), "eof")->as<bool>());
    REQUIRE(find(oh.get(), "err") != nullptr);
    CHECK(find(oh.get(), "err")->as<std::string>() == "no stream 2");
  }
  SECTION("EventsStream{}") {
    const std::string p = mgmt::encode(mgmt::EventsStream{});
    inspect_encoding<mgmt::EventsStream>(p, "EventsStream{}");
  }
  SECTION("Entry with every extension set") {
    mgmt::Entry e;
    e.id = "web";
    e.pid = -1;
    e.rss = std::numeric_limits<std::uint64_t>::max();
    e.restarts = 2;
    e.started_at = 1764000000123456789LL;
    e.exit_code = 137;
    e.exit_signal = 9;
    e.last_error = "boom";
    const std::string p = mgmt::encode(mgmt::StatusResponse{e, ""});
    inspect_encoding<mgmt::StatusResponse>(p, "StatusResponse with extensions");
    const auto oh = unpack_whole(p);
    const auto* entry = find(oh.get(), "entry");
    REQUIRE(entry != nullptr);
    REQUIRE(find(*entry, "rss") != nullptr);
    CHECK(find(*entry, "rss")->as<std::uint64_t>() == std::numeric_limits<std::uint64_t>::max());
    REQUIRE(find(*entry, "pid") != nullptr);
    CHECK(find(*entry, "pid")->as<std::int64_t>() == -1);
  }
}

TEST_CASE("vectors: our encoder uses the smallest integer encodings", "[compat]") {
  // docs/protocol.md, "Payloads": mgmtd writes every integer in its smallest form.
  // The README allows the Go side's fixed widths on receipt; this checks what we send.
  std::vector<std::string> payloads;
  mgmt::Entry e;
  for (std::uint64_t rss : {0ULL, 1ULL, 127ULL, 128ULL, 255ULL, 256ULL, 65535ULL, 65536ULL,
                            4294967295ULL, 4294967296ULL, 18446744073709551615ULL}) {
    e.rss = rss;
    payloads.push_back(mgmt::encode(e));
  }
  for (std::int64_t v : {std::int64_t{0}, std::int64_t{-1}, std::int64_t{-32}, std::int64_t{-33},
                         std::int64_t{-128}, std::int64_t{-129}, std::int64_t{-32768},
                         std::int64_t{-32769}, std::int64_t{INT32_MIN},
                         std::int64_t{INT32_MIN} - 1, INT64_MIN, std::int64_t{70000},
                         std::int64_t{2147483647}, INT64_MAX}) {
    e = {};
    e.pid = v;
    e.started_at = v;
    e.exit_code = v;
    payloads.push_back(mgmt::encode(e));
    mgmt::LogsRequest r;
    r.sn = v;
    r.ln = v;
    payloads.push_back(mgmt::encode(r));
    payloads.push_back(mgmt::encode(mgmt::EventsStream{"p", "t", v, "s"}));
  }
  for (std::uint8_t s : {0, 1, 127, 128, 255}) {
    mgmt::LogsStream m;
    m.s = s;
    payloads.push_back(mgmt::encode(m));
  }
  // Our re-encodings of every Go vector.
  for (const auto& v : kVectors) {
    const std::string go = read_vector(v.name).substr(mgmt::kHeaderSize);
    payloads.push_back(reencode(v.type, go));
  }
  payloads.push_back(mgmt::error_reply("unknown request type 0xa8"));
  payloads.erase(std::remove(payloads.begin(), payloads.end(), std::string()), payloads.end());
  for (const auto& p : payloads) {
    WidthWalker w{p};
    w.walk();
    INFO("payload " << hex(p));
    CHECK(w.ok);
    CHECK(w.pos == p.size());
    std::string issues;
    for (const auto& i : w.issues) issues += i + "\n";
    INFO(issues);
    CHECK(w.issues.empty());
  }
}
