// The recent output of one stream of one process: timestamped chunks, bounded in bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>

namespace mgmt::process {

// Not thread-safe; the backend guards it with its own lock.
class LogRing {
 public:
  explicit LogRing(std::size_t capacity);

  // Stores a chunk that arrived at `ts_ns` (unix nanos), dropping the oldest chunks to stay
  // within capacity; a chunk larger than the whole capacity keeps only its tail. Returns
  // how many bytes were dropped.
  std::size_t append(std::int64_t ts_ns, std::string_view bytes);

  // The stored bytes of chunks that arrived at or after `since_ns` (0 = all), cut to the
  // last `last_lines` lines (0 = all; a trailing line without '\n' counts as a line).
  std::string query(std::int64_t since_ns, std::int64_t last_lines) const;

  std::size_t size() const noexcept { return size_; }
  std::size_t capacity() const noexcept { return capacity_; }

 private:
  struct Chunk {
    std::int64_t ts_ns;
    std::string bytes;
  };

  std::size_t capacity_;
  std::size_t size_ = 0;
  std::deque<Chunk> chunks_;
};

// The last `n` lines of `text` (n > 0), counting a trailing partial line as a line.
std::string_view last_lines(std::string_view text, std::int64_t n);

}  // namespace mgmt::process
