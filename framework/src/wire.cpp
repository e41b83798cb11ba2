#include "mgmt/wire.hpp"

#include <cstdio>

namespace mgmt {

namespace {

std::uint64_t load_be(const std::uint8_t* p, int n) noexcept {
  std::uint64_t v = 0;
  for (int i = 0; i < n; ++i) v = (v << 8) | p[i];
  return v;
}

void store_be(std::uint64_t v, std::uint8_t* p, int n) noexcept {
  for (int i = n - 1; i >= 0; --i) {
    p[i] = static_cast<std::uint8_t>(v & 0xFF);
    v >>= 8;
  }
}

}  // namespace

HeaderError parse_header(const std::uint8_t* b, FrameHeader& out,
                         std::uint32_t max_payload) noexcept {
  if (b[0] != kMagic0 || b[1] != kMagic1) return HeaderError::bad_magic;
  if (b[2] != kWireVersion) return HeaderError::bad_version;
  out.type = b[3];
  out.flags = b[4];
  out.seq = load_be(b + 5, 8);
  out.length = static_cast<std::uint32_t>(load_be(b + 13, 4));
  if (out.length > kMaxPayload || out.length > max_payload) return HeaderError::too_large;
  return HeaderError::none;
}

void write_header(const FrameHeader& h, std::uint8_t* out) noexcept {
  out[0] = kMagic0;
  out[1] = kMagic1;
  out[2] = kWireVersion;
  out[3] = h.type;
  out[4] = h.flags;
  store_be(h.seq, out + 5, 8);
  store_be(h.length, out + 13, 4);
}

std::string_view describe(HeaderError e) noexcept {
  switch (e) {
    case HeaderError::none:
      return "ok";
    case HeaderError::bad_magic:
      return "bad magic (not a cliwrap management frame)";
    case HeaderError::bad_version:
      return "unsupported protocol version";
    case HeaderError::too_large:
      return "frame length over the limit";
  }
  return "unknown header error";
}

std::string make_frame(std::uint8_t type, std::uint64_t seq, std::string_view payload) {
  // One allocation of the exact size; the payload is copied once (no zero-fill first).
  std::uint8_t head[kHeaderSize];
  write_header(FrameHeader{type, 0, seq, static_cast<std::uint32_t>(payload.size())}, head);
  std::string frame;
  frame.reserve(kHeaderSize + payload.size());
  frame.append(reinterpret_cast<const char*>(head), kHeaderSize);
  frame.append(payload);
  return frame;
}

std::string type_hex(std::uint8_t type) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "0x%02x", static_cast<unsigned>(type));
  return buf;
}

}  // namespace mgmt
