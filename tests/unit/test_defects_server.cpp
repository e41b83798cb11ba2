// The spill queue against a spill file that cannot be written: it must not move the
// spilling into memory.
#include <catch2/catch.hpp>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "../../framework/src/spill_queue.hpp"

namespace fs = std::filesystem;
using mgmt::SpillQueue;

namespace {

struct TempDir {
  std::string path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "spillq-err-XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

std::string numbered(int i, std::size_t size) {
  std::string f = "#" + std::to_string(i) + ":";
  f.resize(size, 'x');
  return f;
}

struct Outcome {
  unsigned long long max_heap = 0;       // the most the queue held in memory
  unsigned long long dropped = 0;        // frames it dropped
  unsigned long long pushed = 0;
  unsigned long long replayed = 0;       // frames taken back, in order
  int in_order = 0;                      // 1 when they were
  int notice = 0;                        // 1 when the stall notice came after them
  int file_error = 0;                    // 1 when the queue reported the write error
};

}  // namespace

TEST_CASE("SpillQueue whose spill file cannot be written drops past memory instead of "
          "buffering in RAM",
          "[spill_queue][defects]") {
  TempDir d;
  // The child runs with a file size limit (and SIGXFSZ ignored): its spill file's writes
  // fail with EFBIG past 256 KiB, as a full disk fails them with ENOSPC.
  int out[2];
  REQUIRE(::pipe(out) == 0);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(out[0]);
    std::signal(SIGXFSZ, SIG_IGN);
    rlimit rl{256 * 1024, 256 * 1024};
    ::setrlimit(RLIMIT_FSIZE, &rl);
    Outcome o;
    {
      SpillQueue::Options op;
      op.memory_limit = 64 * 1024;
      op.spill_quota = 64u << 20;
      op.spill_path = d.path + "/conn-1-1.spill";
      SpillQueue q(op);
      q.set_notice([](std::uint64_t dropped, std::int64_t) {
        return "NOTICE " + std::to_string(dropped);
      });
      constexpr std::size_t kFrame = 1000;
      // 16 MiB pushed while nothing is taken: far past the memory limit and the file's 256 KiB.
      for (int i = 0; i < 16 * 1024; ++i) {
        const std::string f = numbered(i, kFrame);
        const std::string_view part(f);
        q.push_parts(std::span<const std::string_view>(&part, 1));
        ++o.pushed;
        o.max_heap = std::max<unsigned long long>(o.max_heap, q.heap_bytes());
      }
      o.dropped = q.frames_dropped();
      o.file_error = q.file_error().empty() ? 0 : 1;
      // The reader catches up: what was kept comes back in order, then the notice.
      std::vector<std::string> got;
      while (q.take(got, 1 << 20, 1000) > 0) {
        o.max_heap = std::max<unsigned long long>(o.max_heap, q.heap_bytes());
      }
      o.in_order = 1;
      std::size_t k = 0;
      for (; k < got.size() && got[k][0] == '#'; ++k) {
        if (got[k] != numbered(static_cast<int>(k), kFrame)) o.in_order = 0;
      }
      o.replayed = k;
      o.notice = k + 1 == got.size() && got[k] == "NOTICE " + std::to_string(o.dropped) ? 1 : 0;
    }
    char buf[256];
    const int n = std::snprintf(buf, sizeof buf, "%llu %llu %llu %llu %d %d %d", o.max_heap,
                                o.dropped, o.pushed, o.replayed, o.in_order, o.notice,
                                o.file_error);
    (void)!::write(out[1], buf, static_cast<std::size_t>(n));
    ::_exit(0);
  }
  ::close(out[1]);
  std::string report;
  char buf[256];
  ssize_t n;
  while ((n = ::read(out[0], buf, sizeof buf)) > 0) report.append(buf, static_cast<std::size_t>(n));
  ::close(out[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  REQUIRE(WIFEXITED(status));
  Outcome o;
  REQUIRE(std::sscanf(report.c_str(), "%llu %llu %llu %llu %d %d %d", &o.max_heap, &o.dropped,
                      &o.pushed, &o.replayed, &o.in_order, &o.notice, &o.file_error) == 7);
  INFO("child: " << report);
  CHECK(o.file_error == 1);
  // Memory stays near its limit (plus the write buffer and a read chunk), not the quota.
  CHECK(o.max_heap < (1u << 20));
  CHECK(o.dropped > 0);
  CHECK(o.replayed + o.dropped == o.pushed);
  CHECK(o.in_order == 1);
  CHECK(o.notice == 1);
}
