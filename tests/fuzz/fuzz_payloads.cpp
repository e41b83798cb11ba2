// Fuzz target: one payload, decoded as every message type. Whatever decodes must re-encode
// to bytes that decode to the same encoding again (our encoding is canonical).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "payload_decoders.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  mgmt::fuzz::decode_all(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
