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

// Gives back the resident pages of this process's read-only file mappings -- the code and
// constant data of the program, libmgmt, the plugins and the libraries.
//
// Once start-up is over, most of those pages hold code that has run for the last time:
// YAML parsing, configuration checks, plugin loading, relocation. First madvise(
// MADV_PAGEOUT) (Linux 5.4) has the kernel free the pages that only this process maps, of
// files the process owns or may write (running as root, or as the owner of mgmtd's files).
// Then madvise(MADV_DONTNEED) unmaps the rest from this process: pages other processes map
// too (the C library's), or of files the kernel would page out only for their owner. Those
// stay in the page cache, clean and unmapped, where the kernel reclaims them first when
// memory runs short. Mappings holding pages the process wrote (a library's relocated data,
// made read-only afterwards) are skipped. A page the server needs again is mapped back on
// its next use, with the file's bytes (a minor fault, or a read if it was paged out), so
// nothing is lost; what a request needs costs a few page faults once.
//
// Never throws, takes about a millisecond. Call it from the thread that loads and unloads
// libraries (mgmtd's I/O thread, which loads the plugins): a mapping replaced between the
// reading of /proc/self/smaps and the madvise would lose its pages. `error` says why
// nothing happened (/proc not mounted, every mapping refused); the process carries on.
CodePageRelease release_code_pages() noexcept;

}  // namespace mgmt
