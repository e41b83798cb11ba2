// mgmt::release_code_pages: read-only file pages leave the process and come back on use;
// pages the process wrote stay as they are, read-only or not.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

#include "mgmt/server/memory.hpp"

namespace {

constexpr std::size_t kPage = 4096;
constexpr std::size_t kPages = 256;  // 1 MiB
constexpr long kTmpfsMagic = 0x01021994;

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
  // A file of known bytes in the working directory (the build tree, a disk: /tmp may be
  // tmpfs, whose pages are memory rather than a file's cache), written back so that its
  // pages are clean.
  char path[] = "./mgmt-memory-test.XXXXXX";
  const int fd = ::mkstemp(path);
  REQUIRE(fd >= 0);
  ::unlink(path);
  struct statfs fs {};
  REQUIRE(::fstatfs(fd, &fs) == 0);
  if (static_cast<long>(fs.f_type) == kTmpfsMagic) {
    ::close(fd);
    WARN("the working directory is on tmpfs: its pages cannot be paged out; not tested");
    return;
  }
  std::string page(kPage, '\0');
  for (std::size_t i = 0; i < kPages; ++i) {
    for (std::size_t j = 0; j < kPage; ++j) page[j] = static_cast<char>((i * 7 + j) & 0xff);
    REQUIRE(::write(fd, page.data(), page.size()) == static_cast<ssize_t>(page.size()));
  }
  REQUIRE(::fsync(fd) == 0);

  // Read-only, as code is.
  auto* ro =
      static_cast<unsigned char*>(::mmap(nullptr, kPage * kPages, PROT_READ, MAP_PRIVATE, fd, 0));
  REQUIRE(ro != MAP_FAILED);
  // Written, then made read-only, as a library's relocated data is: its pages are the
  // process's own copies now.
  const std::size_t relro_len = kPage * 8;
  auto* relro =
      static_cast<char*>(::mmap(nullptr, relro_len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0));
  REQUIRE(relro != MAP_FAILED);
  // Written and still writable.
  auto* rw =
      static_cast<char*>(::mmap(nullptr, kPage * 4, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0));
  REQUIRE(rw != MAP_FAILED);
  ::close(fd);

  const unsigned long sum = checksum(ro, kPage * kPages);  // faults every page in
  for (std::size_t i = 0; i < relro_len; i += kPage) std::memcpy(relro + i, "relocated", 9);
  REQUIRE(::mprotect(relro, relro_len, PROT_READ) == 0);
  std::memcpy(rw, "written by the process", 22);  // a private copy of page 0
  REQUIRE(resident_kib(ro) >= 1000);
  const long relro_kib = resident_kib(relro);
  REQUIRE(relro_kib >= 32);

  const mgmt::CodePageRelease r = mgmt::release_code_pages();
  if (r.error_code == EINVAL || r.error_code == ENOSYS || r.error_code == EPERM) {
    WARN("madvise(MADV_PAGEOUT) is not available here: " << r.error);
  } else {
    REQUIRE(r.error.empty());
    CHECK(r.mappings > 0);
    CHECK(r.rss_before > 0);
    CHECK(resident_kib(ro) < 256);            // most of the 1 MiB left the process
    CHECK(resident_kib(relro) == relro_kib);  // skipped: nothing of it left
  }
  // Nothing is lost either way: the file's bytes come back, the written copies stay.
  CHECK(checksum(ro, kPage * kPages) == sum);
  for (std::size_t i = 0; i < relro_len; i += kPage) {
    CHECK(std::memcmp(relro + i, "relocated", 9) == 0);
  }
  CHECK(std::memcmp(rw, "written by the process", 22) == 0);
  CHECK(static_cast<unsigned char>(rw[kPage]) == static_cast<unsigned char>(7));  // page 1
  ::munmap(ro, kPage * kPages);
  ::munmap(relro, relro_len);
  ::munmap(rw, kPage * 4);
}
