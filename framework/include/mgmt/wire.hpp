// Frame layer of the cliwrap management protocol: the 17-byte header and its limits.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace mgmt {

inline constexpr std::uint8_t kMagic0 = 0xC1;
inline constexpr std::uint8_t kMagic1 = 0xD9;
inline constexpr std::uint8_t kWireVersion = 0x01;
inline constexpr std::size_t kHeaderSize = 17;
// Largest payload the protocol allows (16 MiB). A longer frame cannot be resynchronised.
inline constexpr std::uint32_t kMaxPayload = 16u * 1024u * 1024u;

// Message types. 0xAA..0xAF are free for extra commands.
enum class MsgType : std::uint8_t {
  ListRequest = 0xA0,
  ListResponse = 0xA1,
  StatusRequest = 0xA2,
  StatusResponse = 0xA3,
  LogsRequest = 0xA4,
  LogsStream = 0xA5,
  EventsSubscribe = 0xA6,
  EventsStream = 0xA7,
  StartRequest = 0xA8,
  StopRequest = 0xA9,
};
inline constexpr std::uint8_t kFirstCommandType = 0xAA;
inline constexpr std::uint8_t kLastCommandType = 0xAF;

constexpr std::uint8_t to_byte(MsgType t) noexcept { return static_cast<std::uint8_t>(t); }

// Decoded frame header. Flags are carried but have no meaning for management traffic.
struct FrameHeader {
  std::uint8_t type = 0;
  std::uint8_t flags = 0;
  std::uint64_t seq = 0;
  std::uint32_t length = 0;
};

// Why a header was rejected. Every one of these closes the connection: the stream
// cannot be resynchronised after a bad header.
enum class HeaderError : std::uint8_t { none, bad_magic, bad_version, too_large };

// Parses exactly kHeaderSize bytes. `max_payload` lets a server enforce a lower limit.
HeaderError parse_header(const std::uint8_t* bytes, FrameHeader& out,
                         std::uint32_t max_payload = kMaxPayload) noexcept;
void write_header(const FrameHeader& h, std::uint8_t* out) noexcept;
std::string_view describe(HeaderError e) noexcept;

// A complete frame (header + payload) as one contiguous buffer, ready to write.
std::string make_frame(std::uint8_t type, std::uint64_t seq, std::string_view payload);

// "0xa8": the spelling the protocol uses in error texts.
std::string type_hex(std::uint8_t type);

}  // namespace mgmt
