// Giving start-up's code pages back to the kernel.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace mgmt {

struct CodePageRelease {
  std::size_t mappings = 0;      // read-only file mappings advised
  std::uint64_t rss_before = 0;  // bytes resident before (VmRSS)
  std::uint64_t rss_after = 0;   // and after
  std::string error;             // why nothing was released ("" when it worked)
  int error_code = 0;            // the errno behind `error`, when there is one
};

// Asks the kernel to reclaim the resident pages of this process's read-only file mappings
// -- the code and constant data of the program, libmgmt, the plugins and the libraries --
// with madvise(MADV_PAGEOUT) (Linux 5.4 or later).
//
// Once start-up is over, most of those pages hold code that has run for the last time:
// YAML parsing, configuration checks, plugin loading, relocation. The kernel frees the pages
// that only this process maps, and only of files the process owns or may write (running as
// root, or as the owner of mgmtd's files); it leaves pages that other processes map too,
// such as the C library's. Mappings holding pages the process wrote (a library's relocated
// data, made read-only afterwards) are skipped: those pages are in use and would go to
// swap. A page the server needs again is read back on its next use, from the page cache
// or from the file, so nothing is lost; what a request needs costs a few page faults once.
//
// Thread-safe, never throws, takes about a millisecond. `error` says why nothing happened
// (a kernel without MADV_PAGEOUT, /proc not mounted); the process carries on either way.
CodePageRelease release_code_pages() noexcept;

}  // namespace mgmt
