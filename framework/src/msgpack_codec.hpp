// Private building blocks of the MessagePack map codecs (messages.cpp, commands.cpp): a
// packer writing into a std::string, tolerant field readers whose errors name the field,
// and decode_map().
//
// Decoding rules, as the protocol asks: strings accept str, bin and nil; integers accept
// any width when the value fits; nil is the default of every field; unknown and non-str
// keys are ignored.
#pragma once

#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <msgpack.hpp>

#include "mgmt/wire.hpp"

namespace mgmt::codec {

// ---------------------------------------------------------------------------------------
// Encoding

struct StringBuffer {
  std::string& s;
  void write(const char* p, std::size_t n) { s.append(p, n); }
};
using Packer = msgpack::packer<StringBuffer>;

inline void put_str(Packer& pk, std::string_view v) {
  pk.pack_str(static_cast<std::uint32_t>(v.size()));
  pk.pack_str_body(v.data(), static_cast<std::uint32_t>(v.size()));
}
inline void put_key(Packer& pk, std::string_view k) { put_str(pk, k); }

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

inline const char* kind_of(const object& o) {
  switch (o.type) {
    case mt::NIL: return "nil";
    case mt::BOOLEAN: return "bool";
    case mt::POSITIVE_INTEGER:
    case mt::NEGATIVE_INTEGER: return "integer";
    case mt::FLOAT32:
    case mt::FLOAT64: return "float";
    case mt::STR: return "str";
    case mt::BIN: return "bin";
    case mt::ARRAY: return "array";
    case mt::MAP: return "map";
    case mt::EXT: return "ext";
  }
  return "unknown";
}

[[noreturn]] inline void wrong_kind(std::string_view field, const char* expected,
                                    const object& o) {
  throw DecodeError("field '" + std::string(field) + "': expected " + expected + ", got " +
                    kind_of(o));
}

inline void read(const object& o, std::string& out, std::string_view field) {
  switch (o.type) {
    case mt::STR: out.assign(o.via.str.ptr, o.via.str.size); return;
    case mt::BIN: out.assign(o.via.bin.ptr, o.via.bin.size); return;
    case mt::NIL: out.clear(); return;
    default: wrong_kind(field, "a string", o);
  }
}

inline void read(const object& o, bool& out, std::string_view field) {
  if (o.type == mt::BOOLEAN) {
    out = o.via.boolean;
  } else if (o.type == mt::NIL) {
    out = false;
  } else {
    wrong_kind(field, "a bool", o);
  }
}

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

// Calls visit(key, value) for every str-keyed pair of a map; nil counts as an empty map.
template <class Visit>
void for_each_field(const object& o, std::string_view field, Visit&& visit) {
  if (o.type == mt::NIL) return;
  if (o.type != mt::MAP) wrong_kind(field, "a map", o);
  for (std::uint32_t i = 0; i < o.via.map.size; ++i) {
    const auto& kv = o.via.map.ptr[i];
    if (kv.key.type != mt::STR) continue;
    visit(std::string_view(kv.key.via.str.ptr, kv.key.via.str.size), kv.val);
  }
}

// Calls each(element, "field[i]") for every element of an array; nil counts as empty.
template <class Each>
void for_each_element(const object& o, std::string_view field, const char* expected,
                      Each&& each) {
  if (o.type == mt::NIL) return;
  if (o.type != mt::ARRAY) wrong_kind(field, expected, o);
  for (std::uint32_t i = 0; i < o.via.array.size; ++i) {
    each(o.via.array.ptr[i], std::string(field) + "[" + std::to_string(i) + "]");
  }
}

inline std::string sub(std::string_view parent, std::string_view key) {
  if (parent.empty()) return std::string(key);
  return std::string(parent) + "." + std::string(key);
}

// Limits on what a payload may unpack into: they only stop a hostile payload from making
// the object tree (24 bytes per element) explode.
inline const msgpack::unpack_limit kLimits(/*array=*/1u << 20, /*map=*/1u << 16,
                                           /*str=*/kMaxPayload, /*bin=*/kMaxPayload,
                                           /*ext=*/kMaxPayload, /*depth=*/32);

// Unpacks `payload` as one msgpack value and hands the fields of its top-level map to
// `fields`. Empty on success, else what was wrong; an empty payload decodes to nothing.
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

}  // namespace mgmt::codec
