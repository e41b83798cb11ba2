// Fuzz target: mgmt.yaml text. Every input must either load or raise ConfigError (a
// message for the user); any other exception or a crash is a bug.
#include <cstddef>
#include <cstdint>
#include <string>

#include "mgmt/server/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    (void)mgmt::parse_config(text, "fuzz.yaml", "/nonexistent/plugins");
  } catch (const mgmt::ConfigError&) {
  }
  return 0;
}
