// Fuzz target: a byte stream as a connection would deliver it. Frames are cut from it the
// way a session does (header check, length, payload) and every payload is decoded as the
// message its type names, then as every other message.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "mgmt/messages.hpp"
#include "mgmt/wire.hpp"
#include "payload_decoders.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::size_t off = 0;
  while (size - off >= mgmt::kHeaderSize) {
    mgmt::FrameHeader h;
    if (mgmt::parse_header(data + off, h) != mgmt::HeaderError::none) break;  // connection closed
    off += mgmt::kHeaderSize;
    if (h.length > size - off) break;  // would wait for more bytes
    const std::string_view payload(reinterpret_cast<const char*>(data + off), h.length);
    off += h.length;
    mgmt::fuzz::decode_all(payload);
  }
  return 0;
}
