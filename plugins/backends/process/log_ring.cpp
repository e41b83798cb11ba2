#include "log_ring.hpp"

#include <algorithm>
#include <cstdint>

namespace mgmt::process {

namespace {

// Below this many chunks, every chunk keeps its own timestamp.
constexpr std::size_t kCoalesceFrom = 16;
// A chunk grows by coalescing only while it is smaller than this.
constexpr std::size_t kCoalesceMax = 4096;
constexpr std::int64_t kCoalesceWindowNs = 1'000'000;

}  // namespace

LogRing::LogRing(std::size_t capacity) : capacity_(std::max<std::size_t>(capacity, 1)) {}

std::size_t LogRing::overhead_of(const Chunk& c) noexcept {
  // The record in the deque (with its share of the deque's blocks and map), and the
  // string's heap block when it has one (rounded as malloc does, with its header).
  std::size_t n = sizeof(Chunk) + 16;
  const std::size_t cap = c.bytes.capacity();
  if (cap > 15) n += ((cap + 1 + 8 + 15) & ~std::size_t{15}) - c.bytes.size();
  return n;
}

std::size_t LogRing::overhead_budget() const noexcept {
  // A small ring still holds a few chunks of its own.
  return std::max(capacity_ / 8, kCoalesceFrom * (sizeof(Chunk) + 16));
}

void LogRing::drop_front(std::size_t n) noexcept {
  const std::uint64_t from = std::max(begin_, read_upto_);
  const std::uint64_t to = begin_ + n;
  if (to > from) unread_dropped_ += to - from;
  begin_ = to;
}

std::size_t LogRing::pop_front() noexcept {
  const Chunk& front = chunks_->front();
  const std::size_t n = front.bytes.size();
  drop_front(n);
  size_ -= n;
  overhead_ -= overhead_of(front);
  chunks_->pop_front();
  return n;
}

std::size_t LogRing::append(std::int64_t ts_ns, std::string_view bytes, bool delivered,
                            bool coalesce) {
  if (bytes.empty()) return 0;
  std::size_t dropped = 0;
  end_ += bytes.size();  // the stream grows by the whole chunk, stored or not
  if (delivered) read_upto_ = end_;
  if (bytes.size() >= capacity_) {
    dropped = size_ + (bytes.size() - capacity_);
    drop_front(dropped);
    if (chunks_) chunks_->clear();
    size_ = 0;
    overhead_ = 0;
    bytes = bytes.substr(bytes.size() - capacity_);
  }
  if (!chunks_) chunks_.emplace();
  if (chunks_->size() >= kCoalesceFrom) {
    Chunk& last = chunks_->back();
    const std::int64_t age = ts_ns - last.ts_ns;
    if (coalesce && age >= 0 && age < kCoalesceWindowNs && last.bytes.size() < kCoalesceMax &&
        bytes.size() < kCoalesceMax) {
      while (size_ + bytes.size() > capacity_ && chunks_->size() > 1) dropped += pop_front();
      if (size_ + bytes.size() <= capacity_) {
        overhead_ -= overhead_of(last);
        last.bytes.append(bytes);
        last.ts_ns = ts_ns;
        overhead_ += overhead_of(last);
        size_ += bytes.size();
        while (overhead_ > overhead_budget() && chunks_->size() > 1) dropped += pop_front();
        return dropped;
      }
    }
    // The last chunk is done growing: give back what its string reserved ahead.
    if (last.bytes.capacity() > last.bytes.size() + 64) {
      overhead_ -= overhead_of(last);
      last.bytes.shrink_to_fit();
      overhead_ += overhead_of(last);
    }
  }
  Chunk chunk{ts_ns, std::string(bytes)};
  const std::size_t cost = overhead_of(chunk);
  while (!chunks_->empty() &&
         (size_ + bytes.size() > capacity_ || overhead_ + cost > overhead_budget())) {
    dropped += pop_front();
  }
  chunks_->push_back(std::move(chunk));
  size_ += bytes.size();
  overhead_ += cost;
  return dropped;
}

std::size_t LogRing::set_capacity(std::size_t capacity) {
  capacity_ = std::max<std::size_t>(capacity, 1);
  std::size_t dropped = 0;
  while (size_ > capacity_) {  // size_ > 0: chunks_ exists
    Chunk& front = chunks_->front();
    const std::size_t excess = size_ - capacity_;
    if (front.bytes.size() > excess) {  // keep the tail of the oldest chunk
      overhead_ -= overhead_of(front);
      front.bytes.erase(0, excess);
      overhead_ += overhead_of(front);
      drop_front(excess);
      size_ -= excess;
      dropped += excess;
      break;
    }
    dropped += pop_front();
  }
  while (chunks_ && chunks_->size() > 1 && overhead_ > overhead_budget()) dropped += pop_front();
  return dropped;
}

std::string LogRing::query(std::int64_t since_ns, std::int64_t last_lines_n,
                           std::vector<std::int64_t>* times) const {
  // Filtered chunk by chunk rather than by a cut point: the wall clock may step back.
  std::string out;
  if (times) times->clear();
  if (!chunks_) return out;
  for (const Chunk& c : *chunks_) {
    if (c.ts_ns < since_ns) continue;
    if (times) {
      times->push_back(static_cast<std::int64_t>(out.size()));
      times->push_back(c.ts_ns);
    }
    out += c.bytes;
  }
  if (last_lines_n > 0) {
    const std::string_view tail = last_lines(out, last_lines_n);
    const auto cut = static_cast<std::int64_t>(out.size() - tail.size());
    out.erase(0, static_cast<std::size_t>(cut));
    if (times && cut > 0) {
      // Keep the pairs of the chunks that still have bytes; the first now starts at 0.
      std::vector<std::int64_t> kept;
      for (std::size_t i = 0; i < times->size(); i += 2) {
        const std::int64_t next = i + 2 < times->size() ? (*times)[i + 2] : INT64_MAX;
        if (next <= cut) continue;
        kept.push_back(std::max<std::int64_t>((*times)[i] - cut, 0));
        kept.push_back((*times)[i + 1]);
      }
      *times = std::move(kept);
    }
  }
  if (times && out.empty()) times->clear();
  return out;
}

std::vector<std::int64_t> LogRing::from_times(std::uint64_t from) const {
  // The same walk as from(): chunks hold the stream's bytes [begin_, end_) in order.
  std::vector<std::int64_t> times;
  if (!chunks_ || from >= end_) return times;
  std::uint64_t at = begin_;
  std::int64_t offset = 0;
  for (const Chunk& c : *chunks_) {
    const std::uint64_t next = at + c.bytes.size();
    if (next > from) {
      const std::size_t skip = from > at ? static_cast<std::size_t>(from - at) : 0;
      times.push_back(offset);
      times.push_back(c.ts_ns);
      offset += static_cast<std::int64_t>(c.bytes.size() - skip);
    }
    at = next;
  }
  return times;
}

std::string_view last_lines(std::string_view text, std::int64_t n) {
  if (n <= 0 || text.empty()) return text;
  // A final '\n' ends the last line rather than starting a new one.
  std::size_t end = text.size();
  if (text.back() == '\n') --end;
  std::int64_t seen = 0;
  while (end > 0) {
    const std::size_t nl = text.rfind('\n', end - 1);
    if (nl == std::string_view::npos) break;
    if (++seen == n) return text.substr(nl + 1);
    end = nl;
  }
  return text;
}

}  // namespace mgmt::process
