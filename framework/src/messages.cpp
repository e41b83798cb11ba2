// MessagePack map codec for the protocol's payloads.
//
// Encoding is a small writer of its own (see below). Decoding goes through msgpack-cxx's object tree and hand-written field readers rather
// than MSGPACK_DEFINE_MAP: the protocol needs nil accepted for lists and byte data and an
// error text naming the field, which the adaptors do not give.
#include "mgmt/messages.hpp"

#include <cstring>
#include <limits>
#include <stdexcept>
#include <type_traits>

#include <msgpack.hpp>

#include "msgpack_codec.hpp"

namespace mgmt {

namespace {

// ---------------------------------------------------------------------------------------
// Encoding
//
// Hand-written rather than msgpack-cxx's packer, which appends to the output a few bytes
// at a time (a list of 100 entries is ~1000 appends, each with its own capacity check and
// memcpy call, and the string regrows a dozen times). Every message is written twice by
// the same code: once into a Sizer that only counts bytes, then into a Writer over a
// string sized exactly once. The bytes are those msgpack-cxx writes: the smallest format
// for every length and integer (the compat tests compare them).

// Counts the bytes a message takes.
struct Sizer {
  std::size_t n = 0;
  void byte(std::uint8_t) { ++n; }
  void bytes(const void*, std::size_t len) { n += len; }
  template <int W>
  void be(std::uint64_t) { n += W; }
};

// Writes them into memory the Sizer measured.
struct Writer {
  char* p;
  void byte(std::uint8_t b) { *p++ = static_cast<char>(b); }
  void bytes(const void* src, std::size_t len) {
    std::memcpy(p, src, len);
    p += len;
  }
  template <int W>  // a constant width: the loop unrolls into plain stores
  void be(std::uint64_t v) {
    for (int i = W - 1; i >= 0; --i) {
      p[i] = static_cast<char>(v & 0xFF);
      v >>= 8;
    }
    p += W;
  }
};

// A marker byte followed by a big-endian length or value of W bytes.
template <int W, class Out>
void tagged(Out& o, std::uint8_t tag, std::uint64_t v) {
  o.byte(tag);
  o.template be<W>(v);
}

template <class Out>
void put_map(Out& o, std::uint32_t n) {
  if (n < 16) o.byte(static_cast<std::uint8_t>(0x80u | n));
  else if (n < 65536) tagged<2>(o, 0xde, n);
  else tagged<4>(o, 0xdf, n);
}

template <class Out>
void put_array(Out& o, std::uint32_t n) {
  if (n < 16) o.byte(static_cast<std::uint8_t>(0x90u | n));
  else if (n < 65536) tagged<2>(o, 0xdc, n);
  else tagged<4>(o, 0xdd, n);
}

template <class Out>
void put_str(Out& o, std::string_view v) {
  const auto l = static_cast<std::uint32_t>(v.size());
  if (l < 32) o.byte(static_cast<std::uint8_t>(0xa0u | l));
  else if (l < 256) tagged<1>(o, 0xd9, l);
  else if (l < 65536) tagged<2>(o, 0xda, l);
  else tagged<4>(o, 0xdb, l);
  o.bytes(v.data(), v.size());
}

template <class Out>
void put_bin(Out& o, std::string_view v) {
  const auto l = static_cast<std::uint32_t>(v.size());
  if (l < 256) tagged<1>(o, 0xc4, l);
  else if (l < 65536) tagged<2>(o, 0xc5, l);
  else tagged<4>(o, 0xc6, l);
  o.bytes(v.data(), v.size());
}

template <class Out>
void put_uint(Out& o, std::uint64_t d) {
  if (d < 128) o.byte(static_cast<std::uint8_t>(d));
  else if (d < 256) tagged<1>(o, 0xcc, d);
  else if (d < 65536) tagged<2>(o, 0xcd, d);
  else if (d < (1ull << 32)) tagged<4>(o, 0xce, d);
  else tagged<8>(o, 0xcf, d);
}

// Non-negative values take the unsigned formats, as msgpack-cxx's pack_int64 does.
template <class Out>
void put_int(Out& o, std::int64_t d) {
  if (d >= 0) {
    put_uint(o, static_cast<std::uint64_t>(d));
    return;
  }
  const auto u = static_cast<std::uint64_t>(d);
  if (d >= -32) o.byte(static_cast<std::uint8_t>(u));
  else if (d >= -128) tagged<1>(o, 0xd0, u);
  else if (d >= -32768) tagged<2>(o, 0xd1, u);
  else if (d >= -(1ll << 31)) tagged<4>(o, 0xd2, u);
  else tagged<8>(o, 0xd3, u);
}

template <class Out>
void put_bool(Out& o, bool b) {
  o.byte(b ? 0xc3 : 0xc2);
}

// A key: a string literal shorter than 32 bytes, pre-encoded at compile time as a fixstr,
// so writing it is one fixed-size copy the compiler inlines.
template <std::size_t N>
struct Key {
  static_assert(N - 1 < 32, "key too long for a fixstr");
  char b[N]{};
  constexpr Key(const char (&s)[N]) {  // NOLINT: implicit on purpose, put_key<"id">
    b[0] = static_cast<char>(0xa0u | (N - 1));
    for (std::size_t i = 0; i + 1 < N; ++i) b[i + 1] = s[i];
  }
};

template <Key K, class Out>
void put_key(Out& o) {
  o.bytes(K.b, sizeof K.b);
}

template <class Out>
void put_entry(Out& o, const Entry& e) {
  std::uint32_t n = 5;
  n += e.restarts != 0;
  n += e.started_at != 0;
  n += e.exit_code.has_value();
  n += e.exit_signal.has_value();
  n += !e.last_error.empty();
  n += !e.health.empty();
  n += !e.probe.empty();
  n += !e.status_text.empty();
  put_map(o, n);
  put_key<"id">(o);
  put_str(o, e.id);
  put_key<"name">(o);
  put_str(o, e.name);
  put_key<"state">(o);
  put_str(o, e.state);
  put_key<"pid">(o);
  put_int(o, e.pid);
  put_key<"rss">(o);
  put_uint(o, e.rss);
  if (e.restarts != 0) {
    put_key<"restarts">(o);
    put_uint(o, e.restarts);
  }
  if (e.started_at != 0) {
    put_key<"started_at">(o);
    put_int(o, e.started_at);
  }
  if (e.exit_code) {
    put_key<"exit_code">(o);
    put_int(o, *e.exit_code);
  }
  if (e.exit_signal) {
    put_key<"exit_signal">(o);
    put_int(o, *e.exit_signal);
  }
  if (!e.last_error.empty()) {
    put_key<"last_error">(o);
    put_str(o, e.last_error);
  }
  if (!e.health.empty()) {
    put_key<"health">(o);
    put_str(o, e.health);
  }
  if (!e.probe.empty()) {
    put_key<"probe">(o);
    put_str(o, e.probe);
  }
  if (!e.status_text.empty()) {
    put_key<"status_text">(o);
    put_str(o, e.status_text);
  }
}

// Most bytes an entry can take: its strings, plus every key (75 bytes together), the map
// header, four string headers (5 bytes at most) and seven integers (9 at most); 48 more
// for the keys and headers of health, probe and status_text.
std::size_t entry_bound(const Entry& e) {
  return 208 + e.id.size() + e.name.size() + e.state.size() + e.last_error.size() +
         e.health.size() + e.probe.size() + e.status_text.size();
}

// Writes with `body` into a string of `bound` bytes, then trims it: one pass, for messages
// (lists) whose exact size would take a pass of its own to measure.
template <class F>
std::string packed_within(std::size_t bound, F&& body) {
  std::string out(bound, '\0');
  Writer w{out.data()};
  body(w);
  out.resize(static_cast<std::size_t>(w.p - out.data()));
  return out;
}

// Runs `body` (a generic lambda taking Sizer& or Writer&) twice: measure, then write.
template <class F>
std::string packed(F&& body) {
  Sizer size;
  body(size);
  std::string out(size.n, '\0');
  Writer w{out.data()};
  body(w);
  return out;
}

// ---------------------------------------------------------------------------------------
// Decoding: the tolerant field readers of msgpack_codec.hpp, plus the protocol's own types.

using codec::decode_map;
using codec::DecodeError;
using codec::for_each_field;
using codec::read;
using codec::sub;
using codec::wrong_kind;
using msgpack::object;
namespace mt = msgpack::type;

void read(const object& o, std::optional<std::int64_t>& out, std::string_view field) {
  if (o.type == mt::NIL) {
    out.reset();
    return;
  }
  std::int64_t v = 0;
  read(o, v, field);
  out = v;
}

void read(const object& o, std::vector<std::string>& out, std::string_view field) {
  out.clear();
  if (o.type == mt::NIL) return;
  if (o.type != mt::ARRAY) wrong_kind(field, "an array of strings", o);
  out.resize(o.via.array.size);
  for (std::uint32_t i = 0; i < o.via.array.size; ++i) {
    read(o.via.array.ptr[i], out[i], std::string(field) + "[" + std::to_string(i) + "]");
  }
}

void read(const object& o, std::vector<std::int64_t>& out, std::string_view field) {
  out.clear();
  if (o.type == mt::NIL) return;
  if (o.type != mt::ARRAY) wrong_kind(field, "an array of integers", o);
  out.resize(o.via.array.size);
  for (std::uint32_t i = 0; i < o.via.array.size; ++i) {
    read(o.via.array.ptr[i], out[i], std::string(field) + "[" + std::to_string(i) + "]");
  }
}

void read(const object& o, Entry& e, std::string_view field) {
  e = Entry{};
  for_each_field(o, field, [&](std::string_view k, const object& v) {
    if (k == "id") read(v, e.id, sub(field, k));
    else if (k == "name") read(v, e.name, sub(field, k));
    else if (k == "state") read(v, e.state, sub(field, k));
    else if (k == "pid") read(v, e.pid, sub(field, k));
    else if (k == "rss") read(v, e.rss, sub(field, k));
    else if (k == "restarts") read(v, e.restarts, sub(field, k));
    else if (k == "started_at") read(v, e.started_at, sub(field, k));
    else if (k == "exit_code") read(v, e.exit_code, sub(field, k));
    else if (k == "exit_signal") read(v, e.exit_signal, sub(field, k));
    else if (k == "last_error") read(v, e.last_error, sub(field, k));
    else if (k == "health") read(v, e.health, sub(field, k));
    else if (k == "probe") read(v, e.probe, sub(field, k));
    else if (k == "status_text") read(v, e.status_text, sub(field, k));
  });
}

void read(const object& o, std::vector<Entry>& out, std::string_view field) {
  out.clear();
  if (o.type == mt::NIL) return;
  if (o.type != mt::ARRAY) wrong_kind(field, "an array of entries", o);
  out.resize(o.via.array.size);
  for (std::uint32_t i = 0; i < o.via.array.size; ++i) {
    read(o.via.array.ptr[i], out[i], std::string(field) + "[" + std::to_string(i) + "]");
  }
}

// The fast path for requests made of short strings only (status, start, stop): a fixmap
// whose keys are fixstr and whose values are fixstr or str8, and nothing after it. It
// hands each pair to `fields` and returns true; on anything else (another kind, nil, bin,
// a truncated or trailing byte) it returns false and the caller runs the full decoder,
// which accepts the rest and words the errors. It skips the object tree and its zone
// allocation, the bulk of decoding a 20-byte request.
template <class Fields>
bool decode_flat_strings(std::string_view payload, Fields&& fields) {
  const auto* p = reinterpret_cast<const unsigned char*>(payload.data());
  const auto* const end = p + payload.size();
  if (p == end || (*p & 0xf0) != 0x80) return false;
  for (std::size_t n = *p++ & 0x0f; n > 0; --n) {
    if (p == end || (*p & 0xe0) != 0xa0) return false;
    const std::size_t kl = *p++ & 0x1f;
    if (static_cast<std::size_t>(end - p) < kl) return false;
    const std::string_view key(reinterpret_cast<const char*>(p), kl);
    p += kl;
    if (p == end) return false;
    std::size_t vl = 0;
    if ((*p & 0xe0) == 0xa0) {
      vl = *p++ & 0x1f;
    } else if (*p == 0xd9 && end - p >= 2) {
      vl = p[1];
      p += 2;
    } else {
      return false;
    }
    if (static_cast<std::size_t>(end - p) < vl) return false;
    fields(key, std::string_view(reinterpret_cast<const char*>(p), vl));
    p += vl;
  }
  return p == end;
}

}  // namespace

// ---------------------------------------------------------------------------------------

std::string encode(const Entry& m) {
  return packed([&](auto& o) { put_entry(o, m); });
}

std::string encode(const ListResponse& m) {
  std::size_t bound = 1 + 8 + 5;  // map header, key, array header
  for (const auto& e : m.entries) bound += entry_bound(e);
  return packed_within(bound, [&](Writer& o) {
    put_map(o, 1);
    put_key<"entries">(o);
    put_array(o, static_cast<std::uint32_t>(m.entries.size()));
    for (const auto& e : m.entries) put_entry(o, e);
  });
}

std::string encode(const StatusRequest& m) {
  return packed([&](auto& o) {
    put_map(o, 1);
    put_key<"id">(o);
    put_str(o, m.id);
  });
}

std::string encode(const IdRequest& m) {
  return packed([&](auto& o) {
    put_map(o, 1);
    put_key<"id">(o);
    put_str(o, m.id);
  });
}

std::string encode(const StatusResponse& m) {
  return packed([&](auto& o) {
    put_map(o, 2);
    put_key<"entry">(o);
    put_entry(o, m.entry);
    put_key<"err">(o);
    put_str(o, m.err);
  });
}

std::string encode(const LogsRequest& m) {
  return packed([&](auto& o) {
    put_map(o, 3u + (m.sn != 0) + (m.ln != 0) + (m.from >= 0));
    put_key<"id">(o);
    put_str(o, m.id);
    put_key<"s">(o);
    put_uint(o, m.s);
    put_key<"f">(o);
    put_bool(o, m.f);
    if (m.sn != 0) {
      put_key<"sn">(o);
      put_int(o, m.sn);
    }
    if (m.ln != 0) {
      put_key<"ln">(o);
      put_int(o, m.ln);
    }
    if (m.from >= 0) {
      put_key<"from">(o);
      put_int(o, m.from);
    }
  });
}

std::string encode(const LogsStream& m) {
  return packed([&](auto& o) {
    put_map(o, (m.err.empty() ? 4u : 5u) + (m.pos >= 0) + (m.ts > 0) + !m.tss.empty());
    put_key<"id">(o);
    put_str(o, m.id);
    put_key<"s">(o);
    put_uint(o, m.s);
    put_key<"d">(o);
    put_bin(o, m.d);
    put_key<"eof">(o);
    put_bool(o, m.eof);
    if (!m.err.empty()) {
      put_key<"err">(o);
      put_str(o, m.err);
    }
    if (m.pos >= 0) {
      put_key<"pos">(o);
      put_int(o, m.pos);
    }
    if (m.ts > 0) {
      put_key<"ts">(o);
      put_int(o, m.ts);
    }
    if (!m.tss.empty()) {
      put_key<"tss">(o);
      put_array(o, static_cast<std::uint32_t>(m.tss.size()));
      for (const std::int64_t v : m.tss) put_int(o, v);
    }
  });
}

std::string encode(const EventsSubscribe& m) {
  return packed([&](auto& o) {
    put_map(o, (m.types.empty() ? 1u : 2u) + (m.after > 0) + (m.since > 0));
    put_key<"pids">(o);
    if (m.pids.empty()) {
      o.byte(0xc0);  // nil: what the Go client sends for "all"
    } else {
      put_array(o, static_cast<std::uint32_t>(m.pids.size()));
      for (const auto& p : m.pids) put_str(o, p);
    }
    if (!m.types.empty()) {
      put_key<"types">(o);
      put_array(o, static_cast<std::uint32_t>(m.types.size()));
      for (const auto& t : m.types) put_str(o, t);
    }
    if (m.after > 0) {
      put_key<"after">(o);
      put_uint(o, m.after);
    }
    if (m.since > 0) {
      put_key<"since">(o);
      put_int(o, m.since);
    }
  });
}

std::string encode(const EventsStream& m) {
  return packed([&](auto& o) {
    put_map(o, 4u + (m.n > 0));
    put_key<"pid">(o);
    put_str(o, m.pid);
    put_key<"t">(o);
    put_str(o, m.t);
    put_key<"ts">(o);
    put_int(o, m.ts);
    put_key<"sum">(o);
    put_str(o, m.sum);
    if (m.n > 0) {
      put_key<"n">(o);
      put_uint(o, m.n);
    }
  });
}

std::string error_reply(std::string_view err) {
  StatusResponse r;
  r.err = std::string(err);
  return encode(r);
}

// ---------------------------------------------------------------------------------------

std::string decode(std::string_view payload, ListRequest& out) {
  out = {};
  return decode_map(payload, [](std::string_view, const object&) {});
}

std::string decode(std::string_view payload, ListResponse& out) {
  out = {};
  return decode_map(payload, [&](std::string_view k, const object& v) {
    if (k == "entries") read(v, out.entries, k);
  });
}

std::string decode(std::string_view payload, StatusRequest& out) {
  out = {};
  if (decode_flat_strings(payload, [&](std::string_view k, std::string_view v) {
        if (k == "id") out.id.assign(v);
      })) {
    return {};
  }
  out = {};
  return decode_map(payload, [&](std::string_view k, const object& v) {
    if (k == "id") read(v, out.id, k);
  });
}

std::string decode(std::string_view payload, IdRequest& out) {
  out = {};
  if (decode_flat_strings(payload, [&](std::string_view k, std::string_view v) {
        if (k == "id") out.id.assign(v);
      })) {
    return {};
  }
  out = {};
  return decode_map(payload, [&](std::string_view k, const object& v) {
    if (k == "id") read(v, out.id, k);
  });
}

std::string decode(std::string_view payload, StatusResponse& out) {
  out = {};
  return decode_map(payload, [&](std::string_view k, const object& v) {
    if (k == "entry") read(v, out.entry, k);
    else if (k == "err") read(v, out.err, k);
  });
}

std::string decode(std::string_view payload, LogsRequest& out) {
  out = {};
  return decode_map(payload, [&](std::string_view k, const object& v) {
    if (k == "id") read(v, out.id, k);
    else if (k == "s") read(v, out.s, k);
    else if (k == "f") read(v, out.f, k);
    else if (k == "sn") read(v, out.sn, k);
    else if (k == "ln") read(v, out.ln, k);
    else if (k == "from") read(v, out.from, k);
  });
}

std::string decode(std::string_view payload, LogsStream& out) {
  out = {};
  return decode_map(payload, [&](std::string_view k, const object& v) {
    if (k == "id") read(v, out.id, k);
    else if (k == "s") read(v, out.s, k);
    else if (k == "d") read(v, out.d, k);
    else if (k == "eof") read(v, out.eof, k);
    else if (k == "err") read(v, out.err, k);
    else if (k == "pos") read(v, out.pos, k);
    else if (k == "ts") read(v, out.ts, k);
    else if (k == "tss") read(v, out.tss, k);
  });
}

std::string decode(std::string_view payload, EventsSubscribe& out) {
  out = {};
  return decode_map(payload, [&](std::string_view k, const object& v) {
    if (k == "pids") read(v, out.pids, k);
    else if (k == "types") read(v, out.types, k);
    else if (k == "after") read(v, out.after, k);
    else if (k == "since") read(v, out.since, k);
  });
}

std::string decode(std::string_view payload, EventsStream& out) {
  out = {};
  return decode_map(payload, [&](std::string_view k, const object& v) {
    if (k == "pid") read(v, out.pid, k);
    else if (k == "t") read(v, out.t, k);
    else if (k == "ts") read(v, out.ts, k);
    else if (k == "sum") read(v, out.sum, k);
    else if (k == "n") read(v, out.n, k);
  });
}

}  // namespace mgmt
