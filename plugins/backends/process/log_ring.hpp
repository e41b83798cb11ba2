// The recent output of one stream of one process: timestamped chunks, bounded in bytes.
//
// Memory. Each chunk costs its bytes plus a fixed overhead (record, allocation), which for
// a child writing a byte at a time would dwarf the bytes. So once the ring holds many
// chunks, a small chunk that arrives within a millisecond of the last one is appended to
// it (taking the later timestamp: a `since` filter may then return up to a millisecond of
// older output, never less than asked for), and the chunks' overhead has a budget of its
// own, an eighth of the capacity: past it the oldest chunks go as if the bytes were full.
// memory() stays within about capacity() * 9 / 8.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mgmt::process {

// Not thread-safe; the backend guards it with its own lock.
class LogRing {
 public:
  explicit LogRing(std::size_t capacity);

  // Stores a chunk that arrived at `ts_ns` (unix nanos), dropping the oldest chunks to stay
  // within capacity; a chunk larger than the whole capacity keeps only its tail. Returns
  // how many bytes were dropped. `delivered`: a client gets this chunk as it is (a
  // follower), so it has seen everything up to and including it. `coalesce` false: the
  // chunk is not appended to the last one (the process wrote to its other stream in
  // between, and a merge of both streams by time must keep them apart).
  std::size_t append(std::int64_t ts_ns, std::string_view bytes, bool delivered = false,
                     bool coalesce = true);

  // The stored bytes of chunks that arrived at or after `since_ns` (0 = all), cut to the
  // last `last_lines` lines (0 = all; a trailing line without '\n' counts as a line).
  // `times`, when given, gets their capture times: flat pairs [offset in the result, ts].
  std::string query(std::int64_t since_ns, std::int64_t last_lines,
                    std::vector<std::int64_t>* times = nullptr) const;
  // The capture times of from(`from`), as query() gives them.
  std::vector<std::int64_t> from_times(std::uint64_t from) const;

  // Changes the capacity (at least 1 byte), keeping what still fits: a smaller ring drops
  // its oldest chunks (counted like any other drop); a larger one keeps everything.
  // Returns how many bytes were dropped.
  std::size_t set_capacity(std::size_t capacity);

  std::size_t size() const noexcept { return size_; }
  std::size_t capacity() const noexcept { return capacity_; }
  // The bytes held, with the chunks' overhead (an estimate of what the allocator hands out).
  std::size_t memory() const noexcept { return size_ + overhead_; }

  // A client has seen everything stored so far (a snapshot, or a follower that gets every
  // chunk as it is appended).
  void mark_read() noexcept { read_upto_ = end_; }
  // Bytes dropped, ever, that no client had seen (see mark_read()).
  std::uint64_t unread_dropped() const noexcept { return unread_dropped_; }

  // In-place upgrade (handoff.cpp): the chunks, with their times and the stream offsets, so
  // that the next program's ring holds the same output at the same positions.
  struct Saved {
    std::uint64_t begin = 0, end = 0, read_upto = 0, unread_dropped = 0;
    std::vector<std::pair<std::int64_t, std::string>> chunks;  // (ts_ns, bytes), oldest first
  };
  Saved save() const;
  // The stream position at the end of what is stored (bytes appended, ever).
  std::uint64_t end_offset() const noexcept { return end_; }
  // The stored bytes from stream position `from` on (from the oldest stored when `from` is
  // older than that; nothing when it is at or past the end).
  std::string from(std::uint64_t from) const;
  // Replaces the contents (the capacity stays; what does not fit is dropped, oldest first).
  void restore(Saved saved);

 private:
  struct Chunk {
    std::int64_t ts_ns;
    std::string bytes;
  };

  // Accounts for the oldest `n` bytes of the stream (from begin_) leaving the ring.
  void drop_front(std::size_t n) noexcept;
  // Removes the oldest chunk; returns its size.
  std::size_t pop_front() noexcept;
  // What a chunk costs beyond its bytes.
  static std::size_t overhead_of(const Chunk& c) noexcept;
  std::size_t overhead_budget() const noexcept;

  std::size_t capacity_;
  std::size_t size_ = 0;
  std::size_t overhead_ = 0;  // sum of overhead_of() over the chunks
  // Made on the first chunk: an empty std::deque already allocates about 600 bytes, and
  // most rings of a quiet process stay empty.
  std::optional<std::deque<Chunk>> chunks_;
  // Offsets in the stream of every byte ever appended: the ring holds [begin_, end_).
  std::uint64_t begin_ = 0;
  std::uint64_t end_ = 0;
  std::uint64_t read_upto_ = 0;
  std::uint64_t unread_dropped_ = 0;
};

// The last `n` lines of `text` (n > 0), counting a trailing partial line as a line.
std::string_view last_lines(std::string_view text, std::int64_t n);

}  // namespace mgmt::process
