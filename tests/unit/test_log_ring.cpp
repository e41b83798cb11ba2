// The per-stream log ring: capacity, since, last lines.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "log_file.hpp"
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

TEST_CASE("LogRing counts dropped bytes no client had read", "[process][log_ring]") {
  LogRing ring(10);
  ring.append(1, "12345");
  ring.append(2, "6789");
  CHECK(ring.unread_dropped() == 0);
  ring.append(3, "ab");  // "12345" goes, unread
  CHECK(ring.unread_dropped() == 5);
  ring.mark_read();      // a client sees "6789ab"
  ring.append(4, "cdef");  // fits
  CHECK(ring.unread_dropped() == 5);
  ring.append(5, "XYZ");  // "6789" goes, but it was read
  CHECK(ring.unread_dropped() == 5);
  ring.append(6, "0123");  // "ab" (read) and "cdef" (never read) go
  CHECK(ring.unread_dropped() == 9);
  CHECK(ring.query(0, 0) == "XYZ0123");
  // A chunk larger than the ring: the unread ring and the head of the chunk are lost.
  ring.append(7, "abcdefghijkl");
  CHECK(ring.unread_dropped() == 9 + 7 + 2);
  CHECK(ring.query(0, 0) == "cdefghijkl");
  ring.mark_read();
  ring.append(8, "zz");  // "cdefghijkl" goes as a whole, but it was read
  CHECK(ring.unread_dropped() == 18);
  // A chunk a follower receives whole: nothing unread is lost, not even its own head.
  ring.append(9, "0123456789abcdef", true);
  CHECK(ring.unread_dropped() == 18);
  CHECK(ring.query(0, 0) == "6789abcdef");
}

TEST_CASE("LogRing of one-byte chunks stays near its capacity in real memory",
          "[process][log_ring]") {
  constexpr std::size_t kCap = 1 << 20;
  constexpr int kWrites = 1'000'000;
  auto byte_of = [](long i) { return static_cast<char>('a' + i % 26); };
  // The stream's last `n` bytes.
  auto tail = [&](std::size_t n) {
    std::string out;
    for (long i = kWrites - static_cast<long>(n); i < kWrites; ++i) out += byte_of(i);
    return out;
  };
  SECTION("a microsecond apart: coalesced, the ring holds nearly its capacity") {
    LogRing ring(kCap);
    for (long i = 0; i < kWrites; ++i) {
      const char c = byte_of(i);
      ring.append(i * 1000, std::string_view(&c, 1));
    }
    CHECK(ring.memory() <= kCap + kCap / 8);
    CHECK(ring.size() + 8 * 1024 >= std::min<std::size_t>(kCap, kWrites));
    CHECK(ring.query(0, 0) == tail(ring.size()));
    // A since filter never leaves out what came at or after it.
    const std::string recent = ring.query(kWrites * 1000L - 5000, 0);
    CHECK(recent.size() >= 5);
    CHECK(recent == tail(recent.size()));
    CHECK(ring.query(0, 3).empty() == false);
  }
  SECTION("a millisecond apart each: the overhead budget bounds them") {
    LogRing ring(kCap);
    for (long i = 0; i < kWrites; ++i) {
      const char c = byte_of(i);
      ring.append(i * 1'000'000, std::string_view(&c, 1));
    }
    CHECK(ring.memory() <= kCap + kCap / 8);
    CHECK(ring.size() > 0);
    CHECK(ring.query(0, 0) == tail(ring.size()));
    CHECK(ring.query((kWrites - 3) * 1'000'000L, 0) == tail(3));  // exact: not coalesced
  }
  SECTION("shrinking the capacity keeps the overhead within the new budget") {
    LogRing ring(kCap);
    for (long i = 0; i < 100'000; ++i) {
      const char c = byte_of(i);
      ring.append(i * 1'000'000, std::string_view(&c, 1));
    }
    ring.set_capacity(64 * 1024);
    CHECK(ring.memory() <= 64 * 1024 + 64 * 1024 / 8);
  }
}

TEST_CASE("LogRing coalescing keeps lines and since exact where they can be",
          "[process][log_ring]") {
  LogRing ring(64 * 1024);
  // Enough chunks for coalescing, then a line written a byte at a time within a
  // millisecond, then one a millisecond later.
  for (int i = 0; i < 20; ++i) ring.append(i * 10'000'000L, "x\n");
  const std::int64_t t = 1'000'000'000;
  for (const char c : std::string("hello\n")) ring.append(t + 10, std::string_view(&c, 1));
  ring.append(t + 2'000'000, "world\n");
  CHECK(ring.query(0, 2) == "hello\nworld\n");
  CHECK(ring.query(t, 0) == "hello\nworld\n");
  CHECK(ring.query(t + 1'000'000, 0) == "world\n");
  CHECK(ring.size() == 20 * 2 + 12);
}

namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

TEST_CASE("LogFile rotates by size and keeps max_files", "[process][log_ring]") {
  char tmpl[] = "/tmp/mgmt-logfile-test-XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  const std::string path = dir + "/sub/web.stdout.log";
  namespace fs = std::filesystem;
  {
    mgmt::process::LogFile f(path, 10, 2);
    CHECK(f.write("12345").empty());  // creates the folder and the file
    CHECK(f.write("67890").empty());  // exactly max_size: no rotation yet
    CHECK(slurp(path) == "1234567890");
    CHECK(f.write("abc").empty());  // would pass max_size: rotate first
    CHECK(slurp(path) == "abc");
    CHECK(slurp(path + ".1") == "1234567890");
    CHECK(f.write("defghijklmnopq").empty());  // larger than max_size: whole, in a fresh file
    CHECK(slurp(path) == "defghijklmnopq");
    CHECK(slurp(path + ".1") == "abc");
    CHECK(slurp(path + ".2") == "1234567890");
    CHECK(f.write("r").empty());
    CHECK(slurp(path + ".2") == "abc");  // the oldest is dropped
    CHECK_FALSE(fs::exists(path + ".3"));
    f.close();
    CHECK(f.write("s").empty());  // reopened, appending
    CHECK(slurp(path) == "rs");
  }
  {
    mgmt::process::LogFile again(path, 10, 2);  // a new run continues the file
    CHECK(again.write("t").empty());
    CHECK(slurp(path) == "rst");
  }
  {
    mgmt::process::LogFile none(dir + "/none.log", 4, 0);  // no rotated files: truncate
    CHECK(none.write("1234").empty());
    CHECK(none.write("56").empty());
    CHECK(slurp(dir + "/none.log") == "56");
    CHECK_FALSE(fs::exists(dir + "/none.log.1"));
  }
  {
    mgmt::process::LogFile bad("/proc/no/such/dir/x.log", 4, 1);
    CHECK_THAT(bad.write("x"), Catch::StartsWith("create /proc/no/such/dir: "));
  }
  fs::remove_all(dir);
}
