// Frame layer of the cliwrap management protocol (PROTOCOL.md, "Frame"): the 17-byte
// header, its limits and the helpers around it.
#include <catch2/catch.hpp>

#include <array>
#include <cstdint>
#include <set>
#include <string>
#include <string_view>

#include "mgmt/wire.hpp"

namespace {

using Header = std::array<std::uint8_t, mgmt::kHeaderSize>;

// A header laid out by hand from the protocol table, independent of write_header.
Header raw_header(std::uint8_t type, std::uint8_t flags, std::uint64_t seq, std::uint32_t length,
                  std::uint8_t m0 = 0xC1, std::uint8_t m1 = 0xD9, std::uint8_t version = 0x01) {
  Header h{};
  h[0] = m0;
  h[1] = m1;
  h[2] = version;
  h[3] = type;
  h[4] = flags;
  for (int i = 0; i < 8; ++i) h[5 + i] = static_cast<std::uint8_t>(seq >> (56 - 8 * i));
  for (int i = 0; i < 4; ++i) h[13 + i] = static_cast<std::uint8_t>(length >> (24 - 8 * i));
  return h;
}

mgmt::HeaderError parse(const Header& h, mgmt::FrameHeader& out,
                        std::uint32_t max = mgmt::kMaxPayload) {
  return mgmt::parse_header(h.data(), out, max);
}

}  // namespace

TEST_CASE("wire: protocol constants match PROTOCOL.md", "[wire]") {
  STATIC_REQUIRE(mgmt::kMagic0 == 0xC1);
  STATIC_REQUIRE(mgmt::kMagic1 == 0xD9);
  STATIC_REQUIRE(mgmt::kWireVersion == 0x01);
  STATIC_REQUIRE(mgmt::kHeaderSize == 17);
  STATIC_REQUIRE(mgmt::kMaxPayload == 16u * 1024u * 1024u);
  STATIC_REQUIRE(mgmt::to_byte(mgmt::MsgType::ListRequest) == 0xA0);
  STATIC_REQUIRE(mgmt::to_byte(mgmt::MsgType::ListResponse) == 0xA1);
  STATIC_REQUIRE(mgmt::to_byte(mgmt::MsgType::StatusRequest) == 0xA2);
  STATIC_REQUIRE(mgmt::to_byte(mgmt::MsgType::StatusResponse) == 0xA3);
  STATIC_REQUIRE(mgmt::to_byte(mgmt::MsgType::LogsRequest) == 0xA4);
  STATIC_REQUIRE(mgmt::to_byte(mgmt::MsgType::LogsStream) == 0xA5);
  STATIC_REQUIRE(mgmt::to_byte(mgmt::MsgType::EventsSubscribe) == 0xA6);
  STATIC_REQUIRE(mgmt::to_byte(mgmt::MsgType::EventsStream) == 0xA7);
  STATIC_REQUIRE(mgmt::to_byte(mgmt::MsgType::StartRequest) == 0xA8);
  STATIC_REQUIRE(mgmt::to_byte(mgmt::MsgType::StopRequest) == 0xA9);
  STATIC_REQUIRE(mgmt::kFirstCommandType == 0xAA);
  STATIC_REQUIRE(mgmt::kLastCommandType == 0xAF);
}

TEST_CASE("wire: write_header lays out the protocol table, big-endian", "[wire]") {
  mgmt::FrameHeader h;
  h.type = 0xA4;
  h.flags = 0;
  h.seq = 0x0102030405060708ULL;
  h.length = 0x00ABCDEFu;
  Header out{};
  out.fill(0x55);
  mgmt::write_header(h, out.data());
  const Header expected = {0xC1, 0xD9, 0x01, 0xA4, 0x00, 0x01, 0x02, 0x03, 0x04,
                           0x05, 0x06, 0x07, 0x08, 0x00, 0xAB, 0xCD, 0xEF};
  CHECK(out == expected);
  CHECK(out == raw_header(0xA4, 0, 0x0102030405060708ULL, 0x00ABCDEFu));

  SECTION("extreme seq and length values are written verbatim") {
    h.seq = 0xFFFFFFFFFFFFFFFFULL;
    h.length = 0x0A0B0C0Du;  // over the limit: writing does not judge, parsing does
    mgmt::write_header(h, out.data());
    CHECK(out == raw_header(0xA4, 0, 0xFFFFFFFFFFFFFFFFULL, 0x0A0B0C0Du));
  }
}

TEST_CASE("wire: header round trip", "[wire]") {
  const std::uint64_t seqs[] = {0, 1, 19, 0xFF, 0x100, 0x0102030405060708ULL, 0x8000000000000000ULL,
                                0xFFFFFFFFFFFFFFFFULL};
  const std::uint32_t lengths[] = {0, 1, 0xFF, 0x100, 0x010203, mgmt::kMaxPayload - 1,
                                   mgmt::kMaxPayload};
  const std::uint8_t types[] = {0xA0, 0xA3, 0xA8, 0xA9, 0xAF, 0x00, 0x05, 0xFF};
  for (auto type : types) {
    for (auto seq : seqs) {
      for (auto length : lengths) {
        mgmt::FrameHeader in;
        in.type = type;
        in.flags = 0;
        in.seq = seq;
        in.length = length;
        Header buf{};
        mgmt::write_header(in, buf.data());
        mgmt::FrameHeader out;
        INFO("type " << int(type) << " seq " << seq << " length " << length);
        REQUIRE(parse(buf, out) == mgmt::HeaderError::none);
        CHECK(out.type == type);
        CHECK(out.flags == 0);
        CHECK(out.seq == seq);
        CHECK(out.length == length);
      }
    }
  }
}

TEST_CASE("wire: parse_header reads big-endian seq and length", "[wire]") {
  mgmt::FrameHeader out;
  REQUIRE(parse(raw_header(0xA2, 0, 0x1122334455667788ULL, 0x00010203u), out) ==
          mgmt::HeaderError::none);
  CHECK(out.type == 0xA2);
  CHECK(out.seq == 0x1122334455667788ULL);
  CHECK(out.length == 0x00010203u);

  // The header of wire vector 05_status_request, as the Go implementation wrote it.
  const Header go = {0xc1, 0xd9, 0x01, 0xa2, 0x00, 0x00, 0x00, 0x00, 0x00,
                     0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x08};
  REQUIRE(parse(go, out) == mgmt::HeaderError::none);
  CHECK(out.type == 0xA2);
  CHECK(out.flags == 0);
  CHECK(out.seq == 5);
  CHECK(out.length == 8);
}

TEST_CASE("wire: flags are carried and never rejected", "[wire]") {
  // "send 0, ignore on receipt": any flag bits must parse.
  for (unsigned flags : {0x00u, 0x01u, 0x02u, 0x04u, 0x07u, 0xFFu}) {
    mgmt::FrameHeader out;
    INFO("flags " << flags);
    REQUIRE(parse(raw_header(0xA0, static_cast<std::uint8_t>(flags), 3, 0), out) ==
            mgmt::HeaderError::none);
    CHECK(out.flags == flags);
    CHECK(out.seq == 3);
  }
}

TEST_CASE("wire: unknown message types are not a header error", "[wire]") {
  // An unknown type is answered with a StatusResponse and the connection stays open, so
  // the header layer must let every type byte through.
  for (unsigned type = 0; type <= 0xFF; ++type) {
    mgmt::FrameHeader out;
    INFO("type " << type);
    REQUIRE(parse(raw_header(static_cast<std::uint8_t>(type), 0, 1, 0), out) ==
            mgmt::HeaderError::none);
    CHECK(out.type == type);
  }
}

TEST_CASE("wire: bad magic is rejected", "[wire]") {
  mgmt::FrameHeader out;
  SECTION("first byte wrong") {
    CHECK(parse(raw_header(0xA0, 0, 1, 0, 0x00, 0xD9), out) == mgmt::HeaderError::bad_magic);
    CHECK(parse(raw_header(0xA0, 0, 1, 0, 0xC0, 0xD9), out) == mgmt::HeaderError::bad_magic);
    CHECK(parse(raw_header(0xA0, 0, 1, 0, 0xD9, 0xD9), out) == mgmt::HeaderError::bad_magic);
  }
  SECTION("second byte wrong") {
    CHECK(parse(raw_header(0xA0, 0, 1, 0, 0xC1, 0x00), out) == mgmt::HeaderError::bad_magic);
    CHECK(parse(raw_header(0xA0, 0, 1, 0, 0xC1, 0xD8), out) == mgmt::HeaderError::bad_magic);
    CHECK(parse(raw_header(0xA0, 0, 1, 0, 0xC1, 0xC1), out) == mgmt::HeaderError::bad_magic);
  }
  SECTION("bytes swapped") {
    CHECK(parse(raw_header(0xA0, 0, 1, 0, 0xD9, 0xC1), out) == mgmt::HeaderError::bad_magic);
  }
  SECTION("all zero") {
    Header zero{};
    CHECK(parse(zero, out) == mgmt::HeaderError::bad_magic);
  }
}

TEST_CASE("wire: unknown versions are rejected", "[wire]") {
  mgmt::FrameHeader out;
  for (unsigned v : {0x00u, 0x02u, 0x03u, 0x10u, 0xFFu}) {
    INFO("version " << v);
    CHECK(parse(raw_header(0xA0, 0, 1, 0, 0xC1, 0xD9, static_cast<std::uint8_t>(v)), out) ==
          mgmt::HeaderError::bad_version);
  }
  CHECK(parse(raw_header(0xA0, 0, 1, 0, 0xC1, 0xD9, 0x01), out) == mgmt::HeaderError::none);
}

TEST_CASE("wire: payload length limit", "[wire]") {
  mgmt::FrameHeader out;
  SECTION("exactly 16 MiB is accepted") {
    REQUIRE(parse(raw_header(0xA1, 0, 1, 16u * 1024u * 1024u), out) == mgmt::HeaderError::none);
    CHECK(out.length == 16u * 1024u * 1024u);
  }
  SECTION("one byte over 16 MiB is rejected") {
    CHECK(parse(raw_header(0xA1, 0, 1, 16u * 1024u * 1024u + 1u), out) ==
          mgmt::HeaderError::too_large);
  }
  SECTION("huge lengths are rejected") {
    CHECK(parse(raw_header(0xA1, 0, 1, 0x80000000u), out) == mgmt::HeaderError::too_large);
    CHECK(parse(raw_header(0xA1, 0, 1, 0xFFFFFFFFu), out) == mgmt::HeaderError::too_large);
  }
  SECTION("zero length is legal") {
    REQUIRE(parse(raw_header(0xA0, 0, 1, 0), out) == mgmt::HeaderError::none);
    CHECK(out.length == 0);
  }
  SECTION("a lower max_payload argument is enforced") {
    CHECK(parse(raw_header(0xA1, 0, 1, 1024), out, 1024) == mgmt::HeaderError::none);
    CHECK(parse(raw_header(0xA1, 0, 1, 1025), out, 1024) == mgmt::HeaderError::too_large);
    CHECK(parse(raw_header(0xA1, 0, 1, 0), out, 0) == mgmt::HeaderError::none);
    CHECK(parse(raw_header(0xA1, 0, 1, 1), out, 0) == mgmt::HeaderError::too_large);
    CHECK(parse(raw_header(0xA1, 0, 1, mgmt::kMaxPayload), out, 4096) ==
          mgmt::HeaderError::too_large);
  }
}

TEST_CASE("wire: describe names every header error", "[wire]") {
  const auto magic = mgmt::describe(mgmt::HeaderError::bad_magic);
  const auto version = mgmt::describe(mgmt::HeaderError::bad_version);
  const auto large = mgmt::describe(mgmt::HeaderError::too_large);
  CHECK_FALSE(magic.empty());
  CHECK_FALSE(version.empty());
  CHECK_FALSE(large.empty());
  const std::set<std::string_view> distinct = {magic, version, large};
  CHECK(distinct.size() == 3);
  (void)mgmt::describe(mgmt::HeaderError::none);  // must not crash
}

TEST_CASE("wire: make_frame", "[wire]") {
  SECTION("empty payload is a bare header with length 0") {
    const std::string f = mgmt::make_frame(0xA0, 1, "");
    // Byte-identical to wire vector 01_list_request.
    const Header go = {0xc1, 0xd9, 0x01, 0xa0, 0x00, 0x00, 0x00, 0x00, 0x00,
                       0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00};
    REQUIRE(f.size() == mgmt::kHeaderSize);
    CHECK(std::string(reinterpret_cast<const char*>(go.data()), go.size()) == f);
  }
  SECTION("header then payload, binary-safe") {
    const std::string payload("\x81\xa2id\xa3w\x00b\xff", 9);
    const std::string f = mgmt::make_frame(0xA2, 0x0102030405060708ULL, payload);
    REQUIRE(f.size() == mgmt::kHeaderSize + payload.size());
    Header h{};
    for (std::size_t i = 0; i < h.size(); ++i) h[i] = static_cast<std::uint8_t>(f[i]);
    CHECK(h == raw_header(0xA2, 0, 0x0102030405060708ULL, 9));
    mgmt::FrameHeader out;
    REQUIRE(parse(h, out) == mgmt::HeaderError::none);
    CHECK(out.type == 0xA2);
    CHECK(out.flags == 0);
    CHECK(out.seq == 0x0102030405060708ULL);
    CHECK(out.length == payload.size());
    CHECK(f.substr(mgmt::kHeaderSize) == payload);
  }
  SECTION("byte-identical to wire vector 05_status_request") {
    const std::uint8_t go[] = {0xc1, 0xd9, 0x01, 0xa2, 0x00, 0x00, 0x00, 0x00, 0x00,
                               0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x08, 0x81,
                               0xa2, 0x69, 0x64, 0xa3, 0x77, 0x65, 0x62};
    const std::string expected(reinterpret_cast<const char*>(go), sizeof go);
    CHECK(mgmt::make_frame(0xA2, 5, expected.substr(mgmt::kHeaderSize)) == expected);
  }
  SECTION("a large payload keeps its length") {
    const std::string payload(70000, '\xA5');
    const std::string f = mgmt::make_frame(0xA5, 7, payload);
    REQUIRE(f.size() == mgmt::kHeaderSize + 70000);
    CHECK(static_cast<std::uint8_t>(f[13]) == 0x00);
    CHECK(static_cast<std::uint8_t>(f[14]) == 0x01);
    CHECK(static_cast<std::uint8_t>(f[15]) == 0x11);
    CHECK(static_cast<std::uint8_t>(f[16]) == 0x70);
  }
}

TEST_CASE("wire: type_hex spells types the way the protocol's error texts do", "[wire]") {
  CHECK(mgmt::type_hex(0xa8) == "0xa8");
  CHECK(mgmt::type_hex(0xA8) == "0xa8");
  CHECK(mgmt::type_hex(0x05) == "0x05");
  CHECK(mgmt::type_hex(0x00) == "0x00");
  CHECK(mgmt::type_hex(0x0a) == "0x0a");
  CHECK(mgmt::type_hex(0xAF) == "0xaf");
  CHECK(mgmt::type_hex(0xFF) == "0xff");
  CHECK(mgmt::type_hex(mgmt::to_byte(mgmt::MsgType::StopRequest)) == "0xa9");
}
