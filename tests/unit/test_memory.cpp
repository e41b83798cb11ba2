// mgmt::release_code_pages: read-only file pages leave the process and come back on use;
// pages the process wrote to stay as they are.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "mgmt/server/memory.hpp"

namespace {

constexpr std::size_t kPage = 4096;
constexpr std::size_t kPages = 256;  // 1 MiB

// Rss of the mapping that starts at `addr`, in KiB, from /proc/self/smaps (-1: not found).
long resident_kib(const void* addr) {
  char head[32];
  std::snprintf(head, sizeof head, "%lx-", reinterpret_cast<unsigned long>(addr));
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool in = false;
  while (std::getline(smaps, line)) {
    if (line.rfind(head, 0) == 0) {
      in = true;
    } else if (in && line.rfind("Rss:", 0) == 0) {
      return std::stol(line.substr(4));
    }
  }
  return -1;
}

unsigned long checksum(const unsigned char* p, std::size_t n) {
  unsigned long sum = 0;
  for (std::size_t i = 0; i < n; i += 64) sum = sum * 31 + p[i];
  return sum;
}

}  // namespace

TEST_CASE("release_code_pages gives back read-only file pages and keeps written ones", "[memory]") {
  // A file of known bytes on the build tree's disk (not /tmp, which may be tmpfs: its pages
  // are memory, not a file's cache), written back so that its pages are clean.
  char path[] = "./mgmt-memory-test.XXXXXX";
  const int fd = ::mkstemp(path);
  REQUIRE(fd >= 0);
  ::unlink(path);
  std::string page(kPage, '\0');
  for (std::size_t i = 0; i < kPages; ++i) {
    for (std::size_t j = 0; j < kPage; ++j) page[j] = static_cast<char>((i * 7 + j) & 0xff);
    REQUIRE(::write(fd, page.data(), page.size()) == static_cast<ssize_t>(page.size()));
  }
  REQUIRE(::fsync(fd) == 0);

  auto* ro =
      static_cast<unsigned char*>(::mmap(nullptr, kPage * kPages, PROT_READ, MAP_PRIVATE, fd, 0));
  REQUIRE(ro != MAP_FAILED);
  auto* rw =
      static_cast<char*>(::mmap(nullptr, kPage * 4, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0));
  REQUIRE(rw != MAP_FAILED);
  ::close(fd);
  const unsigned long sum = checksum(ro, kPage * kPages);  // faults every page in
  std::memcpy(rw, "written by the process", 22);           // a private copy of page 0
  REQUIRE(resident_kib(ro) >= 1000);

  const mgmt::CodePageRelease r = mgmt::release_code_pages();
  if (r.error.find("Linux 5.4") != std::string::npos) {
    WARN("this kernel has no MADV_PAGEOUT: " << r.error);
  } else {
    REQUIRE(r.error.empty());
    CHECK(r.mappings > 0);
    CHECK(r.rss_before > 0);
    CHECK(resident_kib(ro) < 256);  // most of the 1 MiB left the process
  }
  // Nothing is lost either way: the file's bytes come back, the written copy stays.
  CHECK(checksum(ro, kPage * kPages) == sum);
  CHECK(std::memcmp(rw, "written by the process", 22) == 0);
  CHECK(static_cast<unsigned char>(rw[kPage]) == static_cast<unsigned char>((1 * 7 + 0) & 0xff));
  ::munmap(ro, kPage * kPages);
  ::munmap(rw, kPage * 4);
}
