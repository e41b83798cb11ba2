// Log times: the ring's per-chunk times, the LogsStream `ts`/`tss` extensions, mgmtctl's
// RFC 3339 stamps.
#include <catch2/catch.hpp>

#include "log_ring.hpp"
#include "logs_view.hpp"
#include "mgmt/messages.hpp"

using mgmt::process::LogRing;

TEST_CASE("LogRing gives the capture times of what a query returns", "[log_ring][logs_time]") {
  LogRing ring(1 << 16);
  ring.append(100, "a1\na2\n");
  ring.append(200, "b1\n");
  ring.append(300, "c1\nc2\n");
  std::vector<std::int64_t> times;
  CHECK(ring.query(0, 0, &times) == "a1\na2\nb1\nc1\nc2\n");
  CHECK(times == std::vector<std::int64_t>{0, 100, 6, 200, 9, 300});
  CHECK(ring.query(200, 0, &times) == "b1\nc1\nc2\n");
  CHECK(times == std::vector<std::int64_t>{0, 200, 3, 300});
  // The last lines cut into the first chunk kept: it starts at 0.
  CHECK(ring.query(0, 4, &times) == "a2\nb1\nc1\nc2\n");
  CHECK(times == std::vector<std::int64_t>{0, 100, 3, 200, 6, 300});
  CHECK(ring.query(0, 1, &times) == "c2\n");
  CHECK(times == std::vector<std::int64_t>{0, 300});
  CHECK(ring.query(400, 0, &times).empty());
  CHECK(times.empty());
  // from(): the same pairs, from a stream position on.
  CHECK(ring.from(4) == "2\nb1\nc1\nc2\n");
  CHECK(ring.from_times(4) == std::vector<std::int64_t>{0, 100, 2, 200, 5, 300});
}

TEST_CASE("LogRing keeps a chunk apart when the other stream wrote in between",
          "[log_ring][logs_time]") {
  LogRing ring(1 << 16);
  // Past the coalescing threshold, each chunk 10 ms after the last.
  for (std::int64_t i = 0; i < 20; ++i) ring.append(i * 10'000'000, "x\n");
  const std::int64_t t = 1'000'000'000;
  std::vector<std::int64_t> times;
  ring.append(t, "y\n");
  ring.append(t + 1, "z\n");  // within the window: appended to the last chunk
  ring.query(t, 0, &times);
  CHECK(times == std::vector<std::int64_t>{0, t + 1});
  ring.append(t + 2, "w\n", false, false);  // the other stream wrote in between
  CHECK(ring.query(t, 0, &times) == "y\nz\nw\n");
  CHECK(times == std::vector<std::int64_t>{0, t + 1, 4, t + 2});
}

TEST_CASE("LogsStream ts and tss extensions round-trip and are absent by default",
          "[messages][logs_time]") {
  mgmt::LogsStream plain{"web", 0, "hi\n", false, {}};
  const std::string plain_bytes = mgmt::encode(plain);
  CHECK(plain_bytes.find("tss") == std::string::npos);
  CHECK(plain_bytes.find("\xa2ts") == std::string::npos);

  mgmt::LogsStream m{"web", 1, "a\nb\n", false, {}, 42, 1'764'000'000'123'456'789};
  m.tss = {0, 1'764'000'000'000'000'000, 2, 1'764'000'000'500'000'000};
  mgmt::LogsStream back;
  REQUIRE(mgmt::decode(mgmt::encode(m), back).empty());
  CHECK(back.ts == m.ts);
  CHECK(back.tss == m.tss);
  CHECK(back.pos == 42);
  CHECK(back.d == m.d);
}

TEST_CASE("mgmtctl stamps lines in RFC 3339, UTC, microseconds", "[mgmtctl][logs_time]") {
  CHECK(mgmtctl::rfc3339_micros(0) == "1970-01-01T00:00:00.000000Z");
  CHECK(mgmtctl::rfc3339_micros(1'764'000'000'123'456'789) == "2025-11-24T16:00:00.123456Z");
}
