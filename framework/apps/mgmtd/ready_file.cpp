#include "ready_file.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <utility>

namespace mgmt::daemon {

ReadyFile::ReadyFile(std::optional<std::string> path) : path_(std::move(path)) {
  if (path_) ::unlink(path_->c_str());
}

ReadyFile::~ReadyFile() {
  if (path_ && written_) ::unlink(path_->c_str());
}

void ReadyFile::mark(const std::string& socket) {
  if (!path_) return;
  const std::string tmp = *path_ + ".tmp." + std::to_string(::getpid());
  const std::string text = "pid=" + std::to_string(::getpid()) + "\nsocket=" + socket + "\n";
  auto fail = [&](const char* what) {
    const int e = errno;
    ::unlink(tmp.c_str());
    throw std::runtime_error("--ready-file " + *path_ + ": cannot " + what + ": " +
                             std::strerror(e));
  };
  std::FILE* f = std::fopen(tmp.c_str(), "we");
  if (f == nullptr) fail("create it");
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  if (std::fclose(f) != 0 || !ok) fail("write it");
  if (std::rename(tmp.c_str(), path_->c_str()) != 0) fail("rename it into place");
  written_ = true;
}

}  // namespace mgmt::daemon
