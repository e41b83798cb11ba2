// MessagePack map codec for the protocol's payloads.
//
// Decoding goes through msgpack-cxx's object tree and hand-written field readers rather
// than MSGPACK_DEFINE_MAP: the protocol needs nil accepted for lists and byte data and an
// error text naming the field, which the adaptors do not give.
#include "mgmt/messages.hpp"

#include <limits>
#include <stdexcept>
#include <type_traits>

#include <msgpack.hpp>

namespace mgmt {

namespace {

// ---------------------------------------------------------------------------------------
// Encoding

struct StringBuffer {
  std::string& s;
  void write(const char* p, std::size_t n) { s.append(p, n); }
};
using Packer = msgpack::packer<StringBuffer>;

void put_str(Packer& pk, std::string_view v) {
  pk.pack_str(static_cast<std::uint32_t>(v.size()));
  pk.pack_str_body(v.data(), static_cast<std::uint32_t>(v.size()));
}
void put_bin(Packer& pk, std::string_view v) {
  pk.pack_bin(static_cast<std::uint32_t>(v.size()));
  pk.pack_bin_body(v.data(), static_cast<std::uint32_t>(v.size()));
}
void put_key(Packer& pk, std::string_view k) { put_str(pk, k); }

void put_entry(Packer& pk, const Entry& e) {
  std::uint32_t n = 5;
  n += e.restarts != 0;
  n += e.started_at != 0;
  n += e.exit_code.has_value();
  n += e.exit_signal.has_value();
  n += !e.last_error.empty();
  pk.pack_map(n);
  put_key(pk, "id");
  put_str(pk, e.id);
  put_key(pk, "name");
  put_str(pk, e.name);
  put_key(pk, "state");
  put_str(pk, e.state);
  put_key(pk, "pid");
  pk.pack_int64(e.pid);
  put_key(pk, "rss");
  pk.pack_uint64(e.rss);
  if (e.restarts != 0) {
    put_key(pk, "restarts");
    pk.pack_uint64(e.restarts);
  }
  if (e.started_at != 0) {
    put_key(pk, "started_at");
    pk.pack_int64(e.started_at);
  }
  if (e.exit_code) {
    put_key(pk, "exit_code");
    pk.pack_int64(*e.exit_code);
  }
  if (e.exit_signal) {
    put_key(pk, "exit_signal");
    pk.pack_int64(*e.exit_signal);
  }
  if (!e.last_error.empty()) {
    put_key(pk, "last_error");
    put_str(pk, e.last_error);
  }
}

template <class F>
std::string packed(F&& body) {
  std::string out;
  StringBuffer buf{out};
  Packer pk(buf);
  body(pk);
  return out;
}

// ---------------------------------------------------------------------------------------
// Decoding

struct DecodeError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

using msgpack::object;
namespace mt = msgpack::type;

const char* kind_of(const object& o) {
  switch (o.type) {
    case mt::NIL:
      return "nil";
    case mt::BOOLEAN:
      return "bool";
    case mt::POSITIVE_INTEGER:
    case mt::NEGATIVE_INTEGER:
      return "integer";
    case mt::FLOAT32:
    case mt::FLOAT64:
      return "float";
    case mt::STR:
      return "str";
    case mt::BIN:
      return "bin";
    case mt::ARRAY:
      return "array";
    case mt::MAP:
      return "map";
    case mt::EXT:
      return "ext";
  }
  return "unknown";
}

[[noreturn]] void wrong_kind(std::string_view field, const char* expected, const object& o) {
  throw DecodeError("field '" + std::string(field) + "': expected " + expected + ", got " +
                    kind_of(o));
}

// Strings and byte data: str or bin (Go's decoder takes either), nil as empty.
void read(const object& o, std::string& out, std::string_view field) {
  switch (o.type) {
    case mt::STR:
      out.assign(o.via.str.ptr, o.via.str.size);
      return;
    case mt::BIN:
      out.assign(o.via.bin.ptr, o.via.bin.size);
      return;
    case mt::NIL:
      out.clear();
      return;
    default:
      wrong_kind(field, "a string", o);
  }
}

void read(const object& o, bool& out, std::string_view field) {
  if (o.type == mt::BOOLEAN) {
    out = o.via.boolean;
  } else if (o.type == mt::NIL) {
    out = false;
  } else {
    wrong_kind(field, "a bool", o);
  }
}

// Any integer width is accepted as long as the value fits the field.
template <class T>
  requires std::is_integral_v<T>
void read(const object& o, T& out, std::string_view field) {
  if (o.type == mt::POSITIVE_INTEGER) {
    if (o.via.u64 > static_cast<std::uint64_t>(std::numeric_limits<T>::max())) {
      throw DecodeError("field '" + std::string(field) + "': value " + std::to_string(o.via.u64) +
                        " out of range");
    }
    out = static_cast<T>(o.via.u64);
  } else if (o.type == mt::NEGATIVE_INTEGER) {
    if constexpr (std::is_unsigned_v<T>) {
      throw DecodeError("field '" + std::string(field) + "': negative value " +
                        std::to_string(o.via.i64) + " for an unsigned field");
    } else {
      if (o.via.i64 < static_cast<std::int64_t>(std::numeric_limits<T>::min())) {
        throw DecodeError("field '" + std::string(field) + "': value " +
                          std::to_string(o.via.i64) + " out of range");
      }
      out = static_cast<T>(o.via.i64);
    }
  } else if (o.type == mt::NIL) {
    out = 0;
  } else {
    wrong_kind(field, "an integer", o);
  }
}

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

// Calls visit(key, value) for every str-keyed pair of a map; nil counts as an empty map.
template <class Visit>
void for_each_field(const object& o, std::string_view field, Visit&& visit) {
  if (o.type == mt::NIL) return;
  if (o.type != mt::MAP) wrong_kind(field, "a map", o);
  for (std::uint32_t i = 0; i < o.via.map.size; ++i) {
    const auto& kv = o.via.map.ptr[i];
    if (kv.key.type != mt::STR) continue;  // not one of ours: ignore like any unknown key
    visit(std::string_view(kv.key.via.str.ptr, kv.key.via.str.size), kv.val);
  }
}

std::string sub(std::string_view parent, std::string_view key) {
  if (parent.empty()) return std::string(key);
  return std::string(parent) + "." + std::string(key);
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

// Limits on what a payload may unpack into. Requests are tiny; these only stop a hostile
// payload from making the object tree (24 bytes per element) explode.
const msgpack::unpack_limit kLimits(/*array=*/1u << 20, /*map=*/1u << 16, /*str=*/kMaxPayload,
                                    /*bin=*/kMaxPayload, /*ext=*/kMaxPayload, /*depth=*/32);

// Unpacks `payload` as one msgpack value and hands its top-level map to `fields`.
template <class Fields>
std::string decode_map(std::string_view payload, Fields&& fields) {
  if (payload.empty()) return {};
  try {
    std::size_t off = 0;
    msgpack::object_handle oh =
        msgpack::unpack(payload.data(), payload.size(), off, nullptr, nullptr, kLimits);
    if (off != payload.size()) {
      return "payload has " + std::to_string(payload.size() - off) +
             " trailing bytes after the msgpack map";
    }
    const object& root = oh.get();
    if (root.type != mt::MAP && root.type != mt::NIL) {
      return std::string("payload is not a msgpack map (got ") + kind_of(root) + ")";
    }
    for_each_field(root, "", fields);
    return {};
  } catch (const DecodeError& e) {
    return e.what();
  } catch (const msgpack::insufficient_bytes&) {
    return "payload is truncated msgpack";
  } catch (const std::exception& e) {
    return std::string("payload is not valid msgpack: ") + e.what();
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------

std::string encode(const Entry& m) {
  return packed([&](Packer& pk) { put_entry(pk, m); });
}

std::string encode(const ListResponse& m) {
  return packed([&](Packer& pk) {
    pk.pack_map(1);
    put_key(pk, "entries");
    pk.pack_array(static_cast<std::uint32_t>(m.entries.size()));
    for (const auto& e : m.entries) put_entry(pk, e);
  });
}

std::string encode(const StatusRequest& m) {
  return packed([&](Packer& pk) {
    pk.pack_map(1);
    put_key(pk, "id");
    put_str(pk, m.id);
  });
}

std::string encode(const IdRequest& m) {
  return packed([&](Packer& pk) {
    pk.pack_map(1);
    put_key(pk, "id");
    put_str(pk, m.id);
  });
}

std::string encode(const StatusResponse& m) {
  return packed([&](Packer& pk) {
    pk.pack_map(2);
    put_key(pk, "entry");
    put_entry(pk, m.entry);
    put_key(pk, "err");
    put_str(pk, m.err);
  });
}

std::string encode(const LogsRequest& m) {
  return packed([&](Packer& pk) {
    pk.pack_map(3 + (m.sn != 0) + (m.ln != 0));
    put_key(pk, "id");
    put_str(pk, m.id);
    put_key(pk, "s");
    pk.pack_uint8(m.s);
    put_key(pk, "f");
    pk.pack(m.f);
    if (m.sn != 0) {
      put_key(pk, "sn");
      pk.pack_int64(m.sn);
    }
    if (m.ln != 0) {
      put_key(pk, "ln");
      pk.pack_int64(m.ln);
    }
  });
}

std::string encode(const LogsStream& m) {
  return packed([&](Packer& pk) {
    pk.pack_map(m.err.empty() ? 4 : 5);
    put_key(pk, "id");
    put_str(pk, m.id);
    put_key(pk, "s");
    pk.pack_uint8(m.s);
    put_key(pk, "d");
    put_bin(pk, m.d);
    put_key(pk, "eof");
    pk.pack(m.eof);
    if (!m.err.empty()) {
      put_key(pk, "err");
      put_str(pk, m.err);
    }
  });
}

std::string encode(const EventsSubscribe& m) {
  return packed([&](Packer& pk) {
    pk.pack_map(m.types.empty() ? 1 : 2);
    put_key(pk, "pids");
    if (m.pids.empty()) {
      pk.pack_nil();  // what the Go client sends for "all"
    } else {
      pk.pack_array(static_cast<std::uint32_t>(m.pids.size()));
      for (const auto& p : m.pids) put_str(pk, p);
    }
    if (!m.types.empty()) {
      put_key(pk, "types");
      pk.pack_array(static_cast<std::uint32_t>(m.types.size()));
      for (const auto& t : m.types) put_str(pk, t);
    }
  });
}

std::string encode(const EventsStream& m) {
  return packed([&](Packer& pk) {
    pk.pack_map(4);
    put_key(pk, "pid");
    put_str(pk, m.pid);
    put_key(pk, "t");
    put_str(pk, m.t);
    put_key(pk, "ts");
    pk.pack_int64(m.ts);
    put_key(pk, "sum");
    put_str(pk, m.sum);
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
  return decode_map(payload, [&](std::string_view k, const object& v) {
    if (k == "id") read(v, out.id, k);
  });
}

std::string decode(std::string_view payload, IdRequest& out) {
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
  });
}

std::string decode(std::string_view payload, EventsSubscribe& out) {
  out = {};
  return decode_map(payload, [&](std::string_view k, const object& v) {
    if (k == "pids") read(v, out.pids, k);
    else if (k == "types") read(v, out.types, k);
  });
}

std::string decode(std::string_view payload, EventsStream& out) {
  out = {};
  return decode_map(payload, [&](std::string_view k, const object& v) {
    if (k == "pid") read(v, out.pid, k);
    else if (k == "t") read(v, out.t, k);
    else if (k == "ts") read(v, out.ts, k);
    else if (k == "sum") read(v, out.sum, k);
  });
}

}  // namespace mgmt
