// The per-connection spilling queue: memory first, then a spill file replayed in order,
// then drops counted and reported by a notice where the gap is.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "../../framework/src/spill_queue.hpp"

namespace fs = std::filesystem;
using mgmt::SpillQueue;

namespace {

struct Dir {
  std::string path;
  Dir() {
    std::string tmpl = (fs::temp_directory_path() / "spillq-XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~Dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

std::string frame(int i, std::size_t size = 100) {
  std::string f = "#" + std::to_string(i) + ":";
  f.resize(size, 'x');
  return f;
}

int number(const std::string& f) {
  if (f.empty() || f[0] != '#') return -1;
  return std::stoi(f.substr(1));
}

std::vector<std::string> take_all(SpillQueue& q) {
  std::vector<std::string> out;
  while (q.take(out, 4096, 16) > 0) {
  }
  return out;
}

SpillQueue::Options opts(const Dir& d, std::size_t mem, std::uint64_t quota,
                         SpillQueue::Overflow o = SpillQueue::Overflow::notify) {
  SpillQueue::Options op;
  op.memory_limit = mem;
  op.spill_quota = quota;
  op.spill_path = d.path + "/sub/conn-1-1.spill";
  op.on_overflow = o;
  return op;
}

}  // namespace

TEST_CASE("SpillQueue keeps a backlog within its memory limit in memory", "[spill_queue]") {
  Dir d;
  SpillQueue q(opts(d, 1000, 10000));
  for (int i = 0; i < 10; ++i) CHECK(q.push(frame(i)) == SpillQueue::Added::memory);
  CHECK(q.memory_bytes() == 1000);
  CHECK_FALSE(fs::exists(d.path + "/sub/conn-1-1.spill"));
  const auto got = take_all(q);
  REQUIRE(got.size() == 10);
  for (int i = 0; i < 10; ++i) CHECK(number(got[i]) == i);
  CHECK(q.empty());
}

TEST_CASE("SpillQueue always takes one frame larger than the batch or memory limit",
          "[spill_queue]") {
  Dir d;
  SpillQueue q(opts(d, 100, 10000));
  CHECK(q.push(frame(0, 5000)) == SpillQueue::Added::memory);  // the queue was empty
  CHECK(q.push(frame(1, 5000)) == SpillQueue::Added::spilled);
  std::vector<std::string> out;
  CHECK(q.take(out, 10, 16) == 1);
  CHECK(q.take(out, 10, 16) == 1);
  REQUIRE(out.size() == 2);
  CHECK(out[1].size() == 5000);
  CHECK(number(out[1]) == 1);
}

TEST_CASE("SpillQueue spills past memory and replays the file in order", "[spill_queue]") {
  Dir d;
  SpillQueue q(opts(d, 1000, 1 << 20));
  int pushed = 0;
  for (; pushed < 10; ++pushed) CHECK(q.push(frame(pushed)) == SpillQueue::Added::memory);
  for (; pushed < 2000; ++pushed) CHECK(q.push(frame(pushed)) == SpillQueue::Added::spilled);
  CHECK(q.frames_spilled() == 1990);
  CHECK(fs::exists(d.path + "/sub/conn-1-1.spill"));
  // Interleave: take some, push more (they must queue behind the file, never jump ahead).
  std::vector<std::string> got;
  int next_take_round = 0;
  while (!q.empty()) {
    q.take(got, 2000, 7);
    if (++next_take_round % 3 == 0 && pushed < 3000) {
      for (int k = 0; k < 5; ++k, ++pushed) q.push(frame(pushed));
    }
  }
  REQUIRE(got.size() == static_cast<std::size_t>(pushed));
  for (int i = 0; i < pushed; ++i) REQUIRE(number(got[i]) == i);
  CHECK(q.frames_dropped() == 0);
  // Once drained the file is emptied and new frames go to memory again.
  CHECK(fs::file_size(d.path + "/sub/conn-1-1.spill") == 0);
  CHECK(q.push(frame(pushed)) == SpillQueue::Added::memory);
}

TEST_CASE("SpillQueue past its quota drops, counts, and queues the notice where the gap is",
          "[spill_queue]") {
  Dir d;
  SpillQueue q(opts(d, 1000, 10 * 104));  // memory: 10 frames; file: 10 records
  std::uint64_t notice_dropped = 0;
  std::int64_t notice_since = 0;
  q.set_notice([&](std::uint64_t dropped, std::int64_t since) {
    notice_dropped = dropped;
    notice_since = since;
    return std::string("NOTICE ") + std::to_string(dropped);
  });
  int i = 0;
  for (; i < 20; ++i) CHECK(q.push(frame(i)) != SpillQueue::Added::dropped);
  for (; i < 27; ++i) CHECK(q.push(frame(i), 3) == SpillQueue::Added::dropped);
  CHECK(q.dropping());
  CHECK(q.frames_dropped() == 7);
  CHECK(q.stalls() == 0);
  // The reader catches up: once the backlog is half drained the notice is queued.
  std::vector<std::string> got;
  while (q.stalls() == 0) REQUIRE(q.take(got, 100, 1) == 1);
  CHECK(notice_dropped == 21);  // 7 frames of 3 units each
  CHECK(notice_since > 0);
  // Frames pushed now come after the notice.
  for (; i < 30; ++i) q.push(frame(i));
  q.take(got, 1 << 20, 1000);
  std::vector<std::string> expected;
  for (int k = 0; k < 20; ++k) expected.push_back(frame(k));
  expected.push_back("NOTICE 21");
  for (int k = 27; k < 30; ++k) expected.push_back(frame(k));
  CHECK(got == expected);
}

TEST_CASE("SpillQueue keeps dropping until the backlog has drained to half", "[spill_queue]") {
  Dir d;
  SpillQueue q(opts(d, 1000, 1040));
  q.set_notice([](std::uint64_t dropped, std::int64_t) { return "N" + std::to_string(dropped); });
  int i = 0;
  for (; i < 20; ++i) q.push(frame(i));
  CHECK(q.push(frame(i++)) == SpillQueue::Added::dropped);
  std::vector<std::string> got;
  q.take(got, 100, 1);  // room for one more, but not drained enough: still dropping
  CHECK(q.push(frame(i++)) == SpillQueue::Added::dropped);
  CHECK(q.stalls() == 0);
  while (q.take(got, 1 << 20, 1000) > 0) {
  }
  CHECK(q.stalls() == 1);
  CHECK(got.back() == "N2");
}

TEST_CASE("SpillQueue with on_overflow disconnect queues the notice at once and no more",
          "[spill_queue]") {
  Dir d;
  SpillQueue q(opts(d, 500, 520, SpillQueue::Overflow::disconnect));
  q.set_notice([](std::uint64_t dropped, std::int64_t) { return "N" + std::to_string(dropped); });
  int i = 0;
  for (; i < 10; ++i) q.push(frame(i));
  CHECK(q.push(frame(i++)) == SpillQueue::Added::disconnect);
  CHECK(q.push(frame(i++)) == SpillQueue::Added::dropped);
  const auto got = take_all(q);
  REQUIRE(got.size() == 11);
  CHECK(got.back() == "N1");
  CHECK(q.stalls() == 1);
}

TEST_CASE("SpillQueue never drops kept frames, and removes its file", "[spill_queue]") {
  Dir d;
  const std::string path = d.path + "/sub/conn-1-1.spill";
  {
    SpillQueue q(opts(d, 100, 104));
    q.push(frame(0));
    q.push(frame(1));  // file
    CHECK(q.push(frame(2)) == SpillQueue::Added::dropped);
    CHECK(q.push(frame(3), 1, true) == SpillQueue::Added::spilled);
    CHECK(fs::exists(path));
    const auto got = take_all(q);
    REQUIRE(got.size() == 3);
    CHECK(number(got[2]) == 3);
    q.push(frame(4));
    q.push(frame(5));
    CHECK(fs::exists(path));
  }
  CHECK_FALSE(fs::exists(path));
  SpillQueue q(opts(d, 100, 1000));
  q.push(frame(0));
  q.push(frame(1));
  CHECK(fs::exists(path));
  q.close();
  CHECK_FALSE(fs::exists(path));
  CHECK(q.push(frame(2)) == SpillQueue::Added::closed);
}

TEST_CASE("SpillQueue with quota 0 keeps only memory", "[spill_queue]") {
  Dir d;
  SpillQueue q(opts(d, 300, 0));
  q.set_notice([](std::uint64_t dropped, std::int64_t) { return "N" + std::to_string(dropped); });
  for (int i = 0; i < 3; ++i) CHECK(q.push(frame(i)) == SpillQueue::Added::memory);
  CHECK(q.push(frame(3)) == SpillQueue::Added::dropped);
  CHECK_FALSE(fs::exists(d.path + "/sub/conn-1-1.spill"));
  const auto got = take_all(q);
  REQUIRE(got.size() == 4);
  CHECK(got[3] == "N1");
}

TEST_CASE("rfc3339_utc formats unix nanos", "[spill_queue]") {
  CHECK(mgmt::rfc3339_utc(0) == "1970-01-01T00:00:00.000Z");
  CHECK(mgmt::rfc3339_utc(1700000000123456789) == "2023-11-14T22:13:20.123Z");
}

// The writer's side: frames pushed in parts come out packed back to back in whole buffers,
// in order, memory first and then the spill file, exactly the frames that were accepted.
TEST_CASE("SpillQueue push_parts and take_buffers keep order across memory and file",
          "[spill_queue]") {
  Dir d;
  SpillQueue q(opts(d, 4000, 1 << 20));
  std::string expected;
  std::string got;
  std::vector<std::string> out;
  int i = 0;
  auto push = [&](std::size_t size) {
    const std::string f = frame(i++, size);
    const std::string_view parts[] = {std::string_view(f).substr(0, 2),
                                      std::string_view(f).substr(2)};
    const auto added = q.push_parts(parts);
    REQUIRE((added == SpillQueue::Added::memory || added == SpillQueue::Added::spilled));
    expected += f;
  };
  for (int k = 0; k < 30; ++k) push(100);           // 3000 bytes in memory...
  for (int k = 0; k < 30; ++k) push(100 + k * 10);  // ... then the file
  CHECK(q.frames_spilled() > 0);
  CHECK(q.memory_bytes() <= 4000);
  // One buffer of at most 1000 bytes at a time (or one whole frame), interleaved with pushes.
  while (!q.empty()) {
    const std::size_t n = q.take_buffers(out, 1000, 1);
    REQUIRE(n >= 1);
    REQUIRE(out.size() == 1);
    got += out[0];
    q.recycle(out);
    out.clear();
    if (i < 200) push(50 + i);
  }
  CHECK(got == expected);
  CHECK(q.memory_bytes() == 0);
  CHECK(q.frames_dropped() == 0);
  std::vector<std::string> spares;
  q.release_spares(spares);  // the caller frees them
}

TEST_CASE("SpillQueue take_buffers takes at least one frame and respects its limits",
          "[spill_queue]") {
  Dir d;
  SpillQueue q(opts(d, 1 << 20, 1 << 20));
  const std::string big = frame(0, 100000);
  CHECK(q.push(big) == SpillQueue::Added::memory);  // adopted as a buffer of its own
  for (int i = 1; i <= 10; ++i) q.push(frame(i, 100));
  std::vector<std::string> out;
  CHECK(q.take_buffers(out, 10, 64) == 1);  // over max_bytes, but one frame always goes
  REQUIRE(out.size() == 1);
  CHECK(out[0] == big);
  out.clear();
  CHECK(q.take_buffers(out, 1 << 20, 64) == 10);
  REQUIRE(out.size() == 1);  // the small frames share one buffer
  CHECK(out[0].size() == 1000);
  CHECK(number(out[0]) == 1);
  CHECK(q.empty());
  // take() still splits a shared buffer frame by frame.
  for (int i = 11; i < 14; ++i) q.push(frame(i, 100));
  std::vector<std::string> frames;
  CHECK(q.take(frames, 1 << 20, 64) == 3);
  REQUIRE(frames.size() == 3);
  for (int k = 0; k < 3; ++k) CHECK(frames[k] == frame(11 + k, 100));
}
