#include "log_ring.hpp"

#include <algorithm>

namespace mgmt::process {

LogRing::LogRing(std::size_t capacity) : capacity_(std::max<std::size_t>(capacity, 1)) {}

void LogRing::drop_front(std::size_t n) noexcept {
  const std::uint64_t from = std::max(begin_, read_upto_);
  const std::uint64_t to = begin_ + n;
  if (to > from) unread_dropped_ += to - from;
  begin_ = to;
}

std::size_t LogRing::append(std::int64_t ts_ns, std::string_view bytes, bool delivered) {
  if (bytes.empty()) return 0;
  std::size_t dropped = 0;
  end_ += bytes.size();  // the stream grows by the whole chunk, stored or not
  if (delivered) read_upto_ = end_;
  if (bytes.size() >= capacity_) {
    dropped = size_ + (bytes.size() - capacity_);
    drop_front(dropped);
    if (chunks_) chunks_->clear();
    size_ = 0;
    bytes = bytes.substr(bytes.size() - capacity_);
  }
  if (!chunks_) chunks_.emplace();
  while (size_ + bytes.size() > capacity_) {
    const std::size_t n = chunks_->front().bytes.size();
    dropped += n;
    drop_front(n);
    size_ -= n;
    chunks_->pop_front();
  }
  chunks_->push_back(Chunk{ts_ns, std::string(bytes)});
  size_ += bytes.size();
  return dropped;
}

std::size_t LogRing::set_capacity(std::size_t capacity) {
  capacity_ = std::max<std::size_t>(capacity, 1);
  std::size_t dropped = 0;
  while (size_ > capacity_) {  // size_ > 0: chunks_ exists
    Chunk& front = chunks_->front();
    const std::size_t excess = size_ - capacity_;
    if (front.bytes.size() > excess) {  // keep the tail of the oldest chunk
      front.bytes.erase(0, excess);
      drop_front(excess);
      size_ -= excess;
      dropped += excess;
      break;
    }
    const std::size_t n = front.bytes.size();
    drop_front(n);
    size_ -= n;
    dropped += n;
    chunks_->pop_front();
  }
  return dropped;
}

std::string LogRing::query(std::int64_t since_ns, std::int64_t last_lines_n) const {
  // Filtered chunk by chunk rather than by a cut point: the wall clock may step back.
  std::string out;
  if (!chunks_) return out;
  for (const Chunk& c : *chunks_) {
    if (c.ts_ns >= since_ns) out += c.bytes;
  }
  if (last_lines_n > 0) {
    const std::string_view tail = last_lines(out, last_lines_n);
    out.erase(0, out.size() - tail.size());
  }
  return out;
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
