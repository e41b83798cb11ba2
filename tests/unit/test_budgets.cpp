// Server-wide budgets shared by every connection's SpillQueue: memory for queued frames
// (limits.max_queue_total) and disk for spill files (streams.spill_quota_total).
#include <catch2/catch.hpp>

#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "../../framework/src/spill_queue.hpp"

namespace fs = std::filesystem;
using mgmt::Budget;
using mgmt::SpillQueue;

namespace {

struct Dir {
  std::string path;
  Dir() {
    std::string tmpl = (fs::temp_directory_path() / "budget-XXXXXX").string();
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

SpillQueue::Options opts(const Dir& d, int id, std::size_t mem, std::uint64_t quota,
                         Budget* memory, Budget* disk) {
  SpillQueue::Options op;
  op.memory_limit = mem;
  op.spill_quota = quota;
  op.spill_path = d.path + "/conn-1-" + std::to_string(id) + ".spill";
  op.memory_total = memory;
  op.disk_total = disk;
  return op;
}

std::vector<std::string> take_all(SpillQueue& q) {
  std::vector<std::string> out;
  while (q.take(out, 4096, 16) > 0) {
  }
  return out;
}

}  // namespace

TEST_CASE("past the shared memory budget stream frames spill, answers stay in memory",
          "[budgets]") {
  Dir d;
  Budget memory;
  memory.limit = 16 * 1024;
  SpillQueue a(opts(d, 1, 1u << 20, 1u << 20, &memory, nullptr));
  SpillQueue b(opts(d, 2, 1u << 20, 1u << 20, &memory, nullptr));
  // a's first buffer (4 KiB, and 512 bytes of frame lengths) holds four frames; the next
  // one would need a 64 KiB buffer, past the budget: it spills although a is far within
  // its own memory limit.
  for (int i = 0; i < 4; ++i) CHECK(a.push(frame(i, 1000)) == SpillQueue::Added::memory);
  CHECK(memory.used == 4096 + 512);
  CHECK(a.push(frame(4, 1000)) == SpillQueue::Added::spilled);
  // b has room for a small buffer, then spills as well.
  for (int i = 0; i < 4; ++i) CHECK(b.push(frame(i, 1000)) == SpillQueue::Added::memory);
  CHECK(b.push(frame(4, 1000)) == SpillQueue::Added::spilled);
  CHECK(memory.used == a.memory_charged() + b.memory_charged());
  CHECK(memory.used <= 16 * 1024);
  // An answer (kept) is never turned away by the budget.
  SpillQueue c(opts(d, 3, 1u << 20, 1u << 20, &memory, nullptr));
  CHECK(c.push(frame(0, 1000), 1, true) == SpillQueue::Added::memory);

  // Everything comes out in order, and every byte charged is given back.
  const auto got = take_all(a);
  REQUIRE(got.size() == 5);
  for (int i = 0; i < 5; ++i) CHECK(got[i] == frame(i, 1000));
  a.close();
  b.close();
  c.close();
  CHECK(memory.used == 0);
}

TEST_CASE("the shared disk budget bounds all spill files, drops end with one notice",
          "[budgets]") {
  Dir d;
  Budget memory, disk;
  memory.limit = 4096;  // full from the first frame on: everything else must spill
  disk.limit = 3000;
  auto notice = [](std::uint64_t dropped, std::int64_t) {
    return "dropped " + std::to_string(dropped);
  };
  // Memory limits of one frame: the rest goes to the spill files.
  SpillQueue a(opts(d, 1, 100, 1u << 20, &memory, &disk));
  SpillQueue b(opts(d, 2, 100, 1u << 20, &memory, &disk));
  a.set_notice(notice);
  b.set_notice(notice);
  CHECK(a.push(frame(0)) == SpillQueue::Added::memory);
  CHECK(memory.over());
  int spilled = 0;
  for (int i = 1; i <= 100; ++i) {
    const auto added = a.push(frame(i));
    if (added == SpillQueue::Added::spilled) ++spilled;
    CHECK(disk.used <= 3000);
  }
  CHECK(spilled == 3000 / 104);  // records of 4 + 100 bytes
  CHECK(a.frames_dropped() == static_cast<std::uint64_t>(100 - spilled));

  // b has nothing of its own queued, yet the disk is full: it drops, and does not queue a
  // notice after every frame it drops.
  for (int i = 0; i < 100; ++i) CHECK(b.push(frame(i)) == SpillQueue::Added::dropped);
  CHECK(b.stalls() == 0);
  CHECK(b.empty());

  // a's reader catches up: its file goes, the disk budget is free, a gets its notice in
  // place of what it lost, and b its own, before its next frame.
  const auto got = take_all(a);
  REQUIRE(got.size() == static_cast<std::size_t>(2 + spilled));
  CHECK(got.back() == "dropped " + std::to_string(100 - spilled));
  CHECK(a.stalls() == 1);
  CHECK(disk.used == 0);
  CHECK(b.push(frame(100)) == SpillQueue::Added::spilled);
  CHECK(b.stalls() == 1);
  const auto got_b = take_all(b);
  REQUIRE(got_b.size() == 2);
  CHECK(got_b[0] == "dropped 100");
  CHECK(got_b[1] == frame(100));
  CHECK(a.push(frame(101)) != SpillQueue::Added::dropped);
  a.close();
  b.close();
  CHECK(disk.used == 0);
  CHECK(memory.used == 0);
}

TEST_CASE("past the memory budget a spilled backlog is replayed a chunk at a time",
          "[budgets]") {
  Dir d;
  Budget memory;
  memory.limit = 8u << 20;
  SpillQueue q(opts(d, 1, 64 * 1024, 64u << 20, &memory, nullptr));
  for (int i = 0; i < 3000; ++i) q.push(frame(i, 1000));  // ~3 MB, nearly all spilled
  CHECK(q.frames_spilled() > 2900);
  auto batch = [&] {
    std::vector<std::string> out;
    q.take_buffers(out, 1u << 20, 64);
    std::size_t n = 0;
    for (const auto& b : out) n += b.size();
    return n;
  };
  CHECK(batch() > 0);  // what was in memory
  // Within the budget the writer takes batches of up to 1 MiB from the file...
  CHECK(batch() > 512 * 1024);
  // ... past it, a read chunk: the batch is memory the file did not hold.
  memory.used += 8u << 20;  // other connections
  const std::size_t small = batch();
  CHECK(small > 0);
  CHECK(small <= 64 * 1024);
  memory.used -= 8u << 20;
  q.close();
  CHECK(memory.used == 0);
}
