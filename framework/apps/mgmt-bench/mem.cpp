// mgmt-bench mem: the memory figures of a process that say what it costs.
//
// VmRSS counts every resident page mapped, including clean file pages (code, libraries)
// that the kernel can drop at any time and that other processes share. What a server
// really adds to a machine is its private memory: RssAnon (heap, stacks, written pages)
// and Private_Dirty; PSS divides each shared page among the processes mapping it.
#include <fstream>
#include <initializer_list>
#include <iostream>
#include <map>
#include <stdexcept>
#include <string>

#include "bench.hpp"

namespace mgmt::bench {

namespace {

// "Key:   123 kB" lines of a /proc file, in KiB, for the keys asked for.
std::map<std::string, std::uint64_t> read_kib(const std::string& path,
                                              std::initializer_list<const char*> keys) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::map<std::string, std::uint64_t> out;
  std::string line;
  while (std::getline(in, line)) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    const std::string key = line.substr(0, colon);
    for (const char* k : keys) {
      if (key == k) out[key] = std::stoull(line.substr(colon + 1));
    }
  }
  return out;
}

}  // namespace

MemoryFigures memory_of(long pid) {
  const std::string proc = "/proc/" + std::to_string(pid);
  const auto status = read_kib(proc + "/status", {"VmRSS", "VmHWM", "RssAnon"});
  const auto rollup = read_kib(proc + "/smaps_rollup", {"Pss", "Private_Dirty"});
  auto get = [](const auto& m, const char* k) {
    const auto it = m.find(k);
    return it == m.end() ? std::uint64_t{0} : it->second;
  };
  return {get(status, "VmRSS"), get(status, "VmHWM"), get(status, "RssAnon"), get(rollup, "Pss"),
          get(rollup, "Private_Dirty")};
}

int cmd_mem(const Args& a) {
  long pid = -1;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i] == "--pid") {
      pid = parse_long(take_value(a, i), "--pid");
    } else {
      throw UsageError("mem: unknown option " + a[i]);
    }
  }
  if (pid <= 0) throw UsageError("mem: --pid is required");
  const MemoryFigures m = memory_of(pid);
  std::cout << "vmrss_kib=" << m.vmrss_kib << " vmhwm_kib=" << m.vmhwm_kib
            << " rss_anon_kib=" << m.rss_anon_kib << " pss_kib=" << m.pss_kib
            << " private_dirty_kib=" << m.private_dirty_kib << "\n";
  return 0;
}

}  // namespace mgmt::bench
