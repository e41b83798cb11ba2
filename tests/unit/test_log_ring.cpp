// The per-stream log ring: capacity, since, last lines.
#include <catch2/catch.hpp>

#include "log_ring.hpp"

using mgmt::process::last_lines;
using mgmt::process::LogRing;

TEST_CASE("LogRing keeps chunks in order and filters by arrival time", "[process][log_ring]") {
  LogRing ring(1024);
  ring.append(100, "a\n");
  ring.append(200, "b\n");
  ring.append(300, "c\n");
  CHECK(ring.query(0, 0) == "a\nb\nc\n");
  CHECK(ring.query(200, 0) == "b\nc\n");  // since is inclusive
  CHECK(ring.query(201, 0) == "c\n");
  CHECK(ring.query(301, 0).empty());
  CHECK(ring.size() == 6);
}

TEST_CASE("LogRing drops the oldest chunks to stay within capacity", "[process][log_ring]") {
  LogRing ring(10);
  CHECK(ring.append(1, "12345") == 0);
  CHECK(ring.append(2, "6789") == 0);
  CHECK(ring.append(3, "ab") == 5);  // "12345" goes, as a whole chunk
  CHECK(ring.query(0, 0) == "6789ab");
  CHECK(ring.size() == 6);
  CHECK(ring.append(4, "") == 0);
  CHECK(ring.query(0, 0) == "6789ab");
}

TEST_CASE("LogRing keeps the tail of a chunk larger than its capacity", "[process][log_ring]") {
  LogRing ring(4);
  ring.append(1, "xy");
  CHECK(ring.append(2, "abcdefgh") == 2 + 4);
  CHECK(ring.query(0, 0) == "efgh");
  CHECK(ring.size() == 4);
  ring.append(3, "Z");
  CHECK(ring.query(0, 0) == "Z");  // the whole oldest chunk had to go
}

TEST_CASE("last_lines counts a trailing partial line as a line", "[process][log_ring]") {
  CHECK(last_lines("a\nb\nc\n", 1) == "c\n");
  CHECK(last_lines("a\nb\nc\n", 2) == "b\nc\n");
  CHECK(last_lines("a\nb\nc\n", 3) == "a\nb\nc\n");
  CHECK(last_lines("a\nb\nc\n", 10) == "a\nb\nc\n");
  CHECK(last_lines("a\nb\npartial", 1) == "partial");
  CHECK(last_lines("a\nb\npartial", 2) == "b\npartial");
  CHECK(last_lines("a\n\n", 1) == "\n");
  CHECK(last_lines("", 3).empty());
  CHECK(last_lines("no newline", 1) == "no newline");
}

TEST_CASE("LogRing applies since before last lines, across chunk borders", "[process][log_ring]") {
  LogRing ring(1024);
  ring.append(10, "old1\nold2\n");
  ring.append(20, "new1\nne");
  ring.append(30, "w2\nnew3");
  CHECK(ring.query(0, 2) == "new2\nnew3");
  CHECK(ring.query(20, 0) == "new1\nnew2\nnew3");
  CHECK(ring.query(20, 5) == "new1\nnew2\nnew3");
  CHECK(ring.query(30, 1) == "new3");
  CHECK(ring.query(30, 2) == "w2\nnew3");  // the filter cuts chunks, not lines
}
