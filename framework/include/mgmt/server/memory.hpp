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
};

// Asks the kernel to reclaim the resident pages of every read-only file mapping of this
// process -- the code and constant data of the program, libmgmt, the plugins and the
// libraries -- with madvise(MADV_PAGEOUT) (Linux 5.4 or later).
//
// Once start-up is over, most of those pages belong to code that has run for the last time:
// YAML parsing, configuration checks, plugin loading, relocation. The kernel frees the ones
// that only this process maps; it leaves alone those another process maps too (the C
// library's, for one) and anything the process has written to. A page the server still
// needs comes back on its next use, from the page cache or from the file. Nothing is lost:
// the pages are clean copies of files on disk.
//
// Thread-safe; takes about a millisecond. `error` says why nothing happened (an older
// kernel, /proc not mounted); the process carries on as before either way.
CodePageRelease release_code_pages();

}  // namespace mgmt
