// mgmt::release_code_pages: read-only file pages leave the process and come back on use;
// pages the process wrote stay as they are, read-only or not.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/wait.h>
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

// An unlinked file of kPages known pages in the working directory (the build tree), written
// back so that its pages are clean. -1 on failure.
int file_of_known_bytes() {
  char path[] = "./mgmt-memory-test.XXXXXX";
  const int fd = ::mkstemp(path);
  if (fd < 0) return -1;
  ::unlink(path);
  std::string page(kPage, '\0');
  for (std::size_t i = 0; i < kPages; ++i) {
    for (std::size_t j = 0; j < kPage; ++j) page[j] = static_cast<char>((i * 7 + j) & 0xff);
    if (::write(fd, page.data(), page.size()) != static_cast<ssize_t>(page.size())) {
      ::close(fd);
      return -1;
    }
  }
  if (::fsync(fd) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

}  // namespace

TEST_CASE("release_code_pages gives back read-only file pages and keeps written ones", "[memory]") {
  const int fd = file_of_known_bytes();
  REQUIRE(fd >= 0);
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
  REQUIRE(r.error.empty());
  CHECK(r.mappings > 0);
  CHECK(r.rss_before > 0);
  CHECK(r.rss_after < r.rss_before);
  CHECK(resident_kib(ro) < 64);             // the 1 MiB left the process
  CHECK(resident_kib(relro) == relro_kib);  // skipped: nothing of it left
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

TEST_CASE("release_code_pages lets go of pages that another process maps too", "[memory]") {
  const int fd = file_of_known_bytes();
  REQUIRE(fd >= 0);
  auto* ro =
      static_cast<unsigned char*>(::mmap(nullptr, kPage * kPages, PROT_READ, MAP_PRIVATE, fd, 0));
  REQUIRE(ro != MAP_FAILED);
  ::close(fd);
  const unsigned long sum = checksum(ro, kPage * kPages);

  // A child maps the same pages (it inherits the mapping and touches every page), so the
  // kernel will not page them out for us; it waits until the pipe closes.
  int ready[2];
  int done[2];
  REQUIRE(::pipe(ready) == 0);
  REQUIRE(::pipe(done) == 0);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    ::close(ready[0]);
    ::close(done[1]);
    const char ok = checksum(ro, kPage * kPages) == sum ? 'y' : 'n';
    (void)!::write(ready[1], &ok, 1);
    char c;
    (void)!::read(done[0], &c, 1);
    _exit(resident_kib(ro) >= 1000 ? 0 : 1);  // the child kept its pages
  }
  ::close(ready[1]);
  ::close(done[0]);
  char ok = 0;
  REQUIRE(::read(ready[0], &ok, 1) == 1);
  CHECK(ok == 'y');
  REQUIRE(resident_kib(ro) >= 1000);

  const mgmt::CodePageRelease r = mgmt::release_code_pages();
  CHECK(r.error.empty());
  CHECK(resident_kib(ro) < 64);  // out of this process, though still in memory for the child

  ::close(done[1]);
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(checksum(ro, kPage * kPages) == sum);  // mapped back, the same bytes
  ::close(ready[0]);
  ::munmap(ro, kPage * kPages);
}
