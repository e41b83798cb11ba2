#include "spill_queue.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>

namespace mgmt {

namespace {

constexpr std::size_t kRecordHeader = 4;
constexpr std::size_t kWriteBuffer = 64 * 1024;  // appended records buffered before a write
constexpr std::size_t kReadChunk = 64 * 1024;    // bytes read back from the file at a time
constexpr std::uint64_t kPunchEvery = 1u << 20;  // release consumed file space this often
// Memory buffers that frames share: a small one to start with (a queue that keeps up holds
// a few frames at a time), full-size ones while a backlog builds.
constexpr std::size_t kSmallBlock = 4 * 1024;
constexpr std::size_t kBlock = 64 * 1024;
constexpr std::size_t kAdopt = 16 * 1024;      // a frame string this large is kept as it is
constexpr std::size_t kSpares = 4;             // emptied buffers kept for reuse while busy...
constexpr std::size_t kSpareMax = 256 * 1024;  // ... when not larger than this

// Heap bytes a string holds (none while its text fits in the string itself).
std::size_t heap_capacity(const std::string& s) {
  return s.capacity() > std::string().capacity() ? s.capacity() : 0;
}

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

std::string rfc3339_utc(std::int64_t unix_ns) {
  const std::time_t secs = static_cast<std::time_t>(unix_ns / 1000000000);
  const int ms = static_cast<int>((unix_ns % 1000000000) / 1000000);
  std::tm tm{};
  ::gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
  return buf;
}

SpillQueue::SpillQueue(Options o) : opts_(std::move(o)) {}

SpillQueue::~SpillQueue() { close(); }

void SpillQueue::close() {
  closed_ = true;
  mem_.clear();
  lens_.clear();
  mem_bytes_ = 0;
  spares_.clear();
  wbuf_.clear();
  wbuf_.shrink_to_fit();
  rbuf_.clear();
  rbuf_.shrink_to_fit();
  rbuf_pos_ = 0;
  write_off_ = read_off_ = consumed_ = punched_ = 0;
  mem_cap_ = 0;
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
    ::unlink(opts_.spill_path.c_str());
  }
  sync_budgets();  // gives everything back
}

void SpillQueue::sync_budgets() {
  if (opts_.memory_total != nullptr) {
    // The frames' lengths by the 512 bytes the deque allocates at a time: the shared
    // counter moves when a buffer comes or goes, not on every frame.
    std::uint64_t held = ((lens_.size() * sizeof(std::uint32_t) + 511) & ~std::uint64_t{511}) +
                         mem_cap_ + heap_capacity(wbuf_) + heap_capacity(rbuf_);
    for (const std::string& b : spares_) held += heap_capacity(b);
    if (held != mem_charged_) opts_.memory_total->recharge(mem_charged_, held);
  }
  if (opts_.disk_total != nullptr) {
    const std::uint64_t held = file_held();
    if (held != disk_charged_) opts_.disk_total->recharge(disk_charged_, held);
  }
}

bool SpillQueue::open_file() {
  if (fd_ >= 0) return true;
  if (!file_error_.empty()) return false;
  if (opts_.spill_path.empty()) {
    file_error_ = "no spill directory";
    return false;
  }
  std::error_code ec;
  const auto dir = std::filesystem::path(opts_.spill_path).parent_path();
  if (!dir.empty() && !std::filesystem::exists(dir, ec)) {
    std::filesystem::create_directories(dir, ec);
    ::chmod(dir.c_str(), 0700);
  }
  fd_ = ::open(opts_.spill_path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd_ < 0) {
    file_error_ = "cannot create " + opts_.spill_path + ": " + std::strerror(errno);
    return false;
  }
  return true;
}

bool SpillQueue::flush_wbuf() {
  std::size_t done = 0;
  while (done < wbuf_.size()) {
    const ssize_t n = ::pwrite(fd_, wbuf_.data() + done, wbuf_.size() - done,
                               static_cast<off_t>(write_off_ + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      file_error_ = "cannot write " + opts_.spill_path + ": " + std::strerror(errno);
      // What was written stays readable; the rest of the buffer is kept in memory below.
      write_off_ += done;
      wbuf_.erase(0, done);
      return false;
    }
    done += static_cast<std::size_t>(n);
  }
  write_off_ += done;
  wbuf_.clear();
  return true;
}

bool SpillQueue::append_file(const Frame& frame, bool keep) {
  short_of_disk_ = false;
  if (!open_file()) return false;
  // After a write error the file takes nothing more: what failed to go out stays in wbuf_
  // (at most a write buffer) and is replayed from there, and new frames are refused, as
  // past the quota, rather than piling up in wbuf_ up to the quota. Kept frames (answers,
  // notices) still queue behind the backlog, in memory.
  if (!file_error_.empty() && !keep) return false;
  // Within the server-wide disk budget, taken before the record is added (atomically, as
  // other connections' frames are spilled from other threads); kept frames go past it.
  if (!keep && opts_.disk_total != nullptr) {
    if (!opts_.disk_total->try_take(kRecordHeader + frame.size)) {
      short_of_disk_ = true;
      return false;
    }
    disk_charged_ += kRecordHeader + frame.size;
  }
  const auto len = static_cast<std::uint32_t>(frame.size);
  char hdr[kRecordHeader];
  std::memcpy(hdr, &len, sizeof hdr);
  wbuf_.append(hdr, sizeof hdr);
  for (const std::string_view part : frame.parts) wbuf_.append(part);
  if ((wbuf_.size() >= kWriteBuffer || tight()) && file_error_.empty()) {
    flush_wbuf();
    // Past the memory budget each record goes straight to the file, no buffer kept.
    if (tight() && wbuf_.empty()) wbuf_.shrink_to_fit();
  }
  return true;
}

bool SpillQueue::fill(std::size_t n) {
  while (rbuf_.size() - rbuf_pos_ < n) {
    if (rbuf_pos_ > 0 && rbuf_pos_ >= rbuf_.size() / 2) {
      rbuf_.erase(0, rbuf_pos_);
      rbuf_pos_ = 0;
    }
    if (read_off_ < write_off_) {
      // Past the memory budget, only what the record needs: no read-ahead held.
      const std::size_t want = std::max<std::size_t>(
          tight() ? 0 : kReadChunk, n - (rbuf_.size() - rbuf_pos_));
      const std::size_t avail = static_cast<std::size_t>(write_off_ - read_off_);
      const std::size_t len = std::min(want, avail);
      const std::size_t old = rbuf_.size();
      rbuf_.resize(old + len);
      const ssize_t got = ::pread(fd_, rbuf_.data() + old, len, static_cast<off_t>(read_off_));
      if (got <= 0) {
        rbuf_.resize(old);
        if (got < 0 && errno == EINTR) continue;
        file_error_ = "cannot read " + opts_.spill_path;
        return false;
      }
      rbuf_.resize(old + static_cast<std::size_t>(got));
      read_off_ += static_cast<std::uint64_t>(got);
    } else if (!wbuf_.empty()) {
      // Still buffered: take it straight from memory (the file keeps a hole there).
      rbuf_.append(wbuf_);
      write_off_ += wbuf_.size();
      read_off_ = write_off_;
      wbuf_.clear();
    } else {
      return false;
    }
  }
  return true;
}

void SpillQueue::after_consume() {
  if (file_backlog() == 0) {
    reset_file();
    return;
  }
  if (rbuf_pos_ == rbuf_.size() && tight()) {
    rbuf_.clear();
    rbuf_.shrink_to_fit();
    rbuf_pos_ = 0;
  }
  const std::uint64_t end = std::min(consumed_, read_off_) & ~std::uint64_t{4095};
  if (fd_ >= 0 && end > punched_ + kPunchEvery) {
    // Give the consumed part back to the file system: the quota bounds what is unread.
    ::fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(punched_),
                static_cast<off_t>(end - punched_));
    punched_ = end;
  }
}

void SpillQueue::reset_file() {
  if (fd_ >= 0 && write_off_ > 0) {
    if (::ftruncate(fd_, 0) != 0) { /* the next writes overwrite it anyway */ }
  }
  write_off_ = read_off_ = consumed_ = punched_ = 0;
  rbuf_.clear();
  rbuf_pos_ = 0;
  if (rbuf_.capacity() > 2 * kReadChunk || tight()) rbuf_.shrink_to_fit();
  if (wbuf_.empty() && tight()) wbuf_.shrink_to_fit();
}

std::string SpillQueue::new_buffer(std::size_t need, std::size_t want) {
  // The largest kept one, if large enough.
  const auto it = std::max_element(
      spares_.begin(), spares_.end(),
      [](const std::string& a, const std::string& b) { return a.capacity() < b.capacity(); });
  if (it != spares_.end() && it->capacity() >= need) {
    std::string buf = std::move(*it);
    spares_.erase(it);
    return buf;
  }
  std::string buf;
  buf.reserve(std::max(need, want));
  return buf;
}

bool SpillQueue::spare(std::string& buf) {
  if (closed_ || spares_.size() >= kSpares || buf.capacity() < kSmallBlock ||
      buf.capacity() > kSpareMax) {
    return false;
  }
  buf.clear();
  spares_.push_back(std::move(buf));
  return true;
}

void SpillQueue::release_spares(std::vector<std::string>& out) {
  for (auto& b : spares_) out.push_back(std::move(b));
  spares_.clear();
  sync_budgets();
}

void SpillQueue::recycle(std::vector<std::string>& bufs) {
  for (auto& b : bufs) spare(b);
  sync_budgets();
}

std::size_t SpillQueue::memory_needed(const Frame& frame) const {
  if (frame.owned != nullptr && frame.size >= kAdopt) return frame.owned->capacity();
  if (!mem_.empty() && mem_.back().data.capacity() - mem_.back().data.size() >= frame.size) {
    return 0;
  }
  return std::max(frame.size, mem_.empty() ? kSmallBlock : kBlock);
}

void SpillQueue::to_memory(const Frame& frame) {
  mem_bytes_ += frame.size;
  lens_.push_back(static_cast<std::uint32_t>(frame.size));
  if (frame.owned != nullptr && frame.size >= kAdopt) {
    const std::size_t cap = frame.owned->capacity();
    mem_.push_back(Block{std::move(*frame.owned), 0, 1, cap});
    mem_cap_ += cap;
    return;
  }
  if (mem_.empty() || mem_.back().data.capacity() - mem_.back().data.size() < frame.size) {
    std::string buf = new_buffer(frame.size, mem_.empty() ? kSmallBlock : kBlock);
    const std::size_t cap = buf.capacity();
    mem_.push_back(Block{std::move(buf), 0, 0, cap});
    mem_cap_ += cap;
  }
  Block& b = mem_.back();
  for (const std::string_view part : frame.parts) b.data.append(part);
  ++b.frames;
}

SpillQueue::Added SpillQueue::place(const Frame& frame, bool keep) {
  const std::uint64_t backlog = file_backlog();
  // Past the server-wide memory budget a stream frame that needs a new buffer goes to the
  // file as past this queue's own limit; answers (kept) are bounded by the session pausing
  // its reads.
  if (backlog == 0 && (lens_.empty() || mem_bytes_ + frame.size <= opts_.memory_limit) &&
      (keep || memory_room(memory_needed(frame)))) {
    to_memory(frame);
    return Added::memory;
  }
  if (keep || backlog + kRecordHeader + frame.size <= opts_.spill_quota) {
    if (append_file(frame, keep)) {
      ++frames_spilled_;
      return Added::spilled;
    }
    if (keep && backlog == 0) {
      to_memory(frame);
      return Added::memory;
    }
  }
  return Added::dropped;
}

void SpillQueue::queue_notice() {
  ++stalls_;
  const std::uint64_t dropped = dropped_units_;
  const std::int64_t since = first_drop_ns_;
  dropping_ = false;
  dropped_units_ = 0;
  first_drop_ns_ = 0;
  if (notice_) {
    std::string n = notice_(dropped, since);
    const std::string_view v(n);
    place(Frame{{&v, 1}, n.size(), &n}, true);
  }
}

void SpillQueue::maybe_notify() {
  if (!dropping_ || disconnecting_) return;
  // Drained enough: half of the part that new frames would go to is free again (while the
  // file holds a backlog every new frame goes behind it, to the file).
  // A file that failed takes no new frames: only memory has room then, once it is all that
  // is left.
  // The server-wide budgets count too: a queue that dropped because all connections together
  // filled them waits until the one its frames would go to is half free again (else, with
  // nothing of its own queued, it would queue a notice after every dropped frame).
  const std::uint64_t file = file_backlog();
  const bool disk_ok = file_error_.empty() &&
                       (opts_.disk_total == nullptr || opts_.disk_total->half_free());
  const bool memory_ok = opts_.memory_total == nullptr || opts_.memory_total->half_free();
  const bool room =
      file > 0 ? disk_ok && file <= opts_.spill_quota / 2
               : mem_bytes_ <= opts_.memory_limit / 2 &&
                     (memory_ok || (disk_ok && opts_.spill_quota > 0 && !opts_.spill_path.empty()));
  if (room) queue_notice();
}

SpillQueue::Added SpillQueue::push(std::string frame, std::uint64_t units, bool keep) {
  const std::string_view v(frame);
  return push_frame(Frame{{&v, 1}, frame.size(), &frame}, units, keep);
}

SpillQueue::Added SpillQueue::push_parts(std::span<const std::string_view> parts,
                                         std::uint64_t units, bool keep) {
  std::size_t size = 0;
  for (const std::string_view p : parts) size += p.size();
  return push_frame(Frame{parts, size, nullptr}, units, keep);
}

SpillQueue::Added SpillQueue::push_frame(Frame frame, std::uint64_t units, bool keep) {
  if (closed_) return Added::closed;
  const Added added = add_frame(frame, units, keep);
  sync_budgets();
  return added;
}

SpillQueue::Added SpillQueue::add_frame(const Frame& frame, std::uint64_t units, bool keep) {
  maybe_notify();
  if (!keep && (dropping_ || disconnecting_)) {
    ++frames_dropped_;
    if (!disconnecting_) dropped_units_ += units;
    return Added::dropped;
  }
  const Added where = place(frame, keep);
  if (where != Added::dropped) return where;
  ++frames_dropped_;
  dropped_units_ += units;
  if (!dropping_) {
    dropping_ = true;
    first_drop_ns_ = now_ns();
  }
  if (opts_.on_overflow == Overflow::disconnect) {
    disconnecting_ = true;
    queue_notice();
    return Added::disconnect;
  }
  return Added::dropped;
}

std::size_t SpillQueue::take(std::vector<std::string>& out, std::size_t max_bytes,
                             std::size_t max_frames) {
  std::size_t n = 0;
  std::size_t bytes = 0;
  while (n < max_frames) {
    if (!lens_.empty()) {
      Block& b = mem_.front();
      const std::size_t len = lens_.front();
      if (n > 0 && bytes + len > max_bytes) break;
      if (b.pos == 0 && b.frames == 1) {
        out.push_back(std::move(b.data));
      } else {
        out.emplace_back(b.data, b.pos, len);
      }
      b.pos += len;
      lens_.pop_front();
      bytes += len;
      mem_bytes_ -= len;
      ++n;
      if (--b.frames == 0) {
        mem_cap_ -= b.cap;
        spare(b.data);
        mem_.pop_front();
      }
      continue;
    }
    if (file_backlog() == 0 || !fill(kRecordHeader)) break;
    std::uint32_t len = 0;
    std::memcpy(&len, rbuf_.data() + rbuf_pos_, sizeof len);
    if (n > 0 && bytes + len > max_bytes) break;
    if (!fill(kRecordHeader + len)) break;
    out.emplace_back(rbuf_.data() + rbuf_pos_ + kRecordHeader, len);
    rbuf_pos_ += kRecordHeader + len;
    consumed_ += kRecordHeader + len;
    bytes += len;
    ++n;
  }
  drop_unreadable();
  after_consume();
  maybe_notify();
  sync_budgets();
  return n;
}

std::size_t SpillQueue::take_buffers(std::vector<std::string>& out, std::size_t max_bytes,
                                     std::size_t max_buffers) {
  std::size_t n = 0;
  std::size_t bytes = 0;
  std::size_t bufs = 0;
  // Memory first, whole buffers at a time.
  while (bufs < max_buffers && !mem_.empty()) {
    Block& b = mem_.front();
    const std::size_t size = b.data.size() - b.pos;
    if (bufs > 0 && bytes + size > max_bytes) break;
    if (b.pos > 0) b.data.erase(0, b.pos);  // only after take() took part of it
    out.push_back(std::move(b.data));
    bytes += size;
    mem_bytes_ -= size;
    n += b.frames;
    lens_.erase(lens_.begin(), lens_.begin() + static_cast<std::ptrdiff_t>(b.frames));
    mem_cap_ -= b.cap;
    mem_.pop_front();
    ++bufs;
  }
  // Then the spill file, its records unwrapped into one buffer: new memory, so past the
  // server-wide budget no more than a read chunk of it at a time.
  if (mem_.empty() && !memory_room(max_bytes)) max_bytes = std::min(max_bytes, kReadChunk);
  if (mem_.empty() && bufs < max_buffers && (bufs == 0 || bytes < max_bytes) &&
      file_backlog() > 0) {
    std::string buf;
    std::size_t from_file = 0;
    while (file_backlog() > 0 && fill(kRecordHeader)) {
      std::uint32_t len = 0;
      std::memcpy(&len, rbuf_.data() + rbuf_pos_, sizeof len);
      if ((bufs > 0 || from_file > 0) && bytes + len > max_bytes) break;
      if (!fill(kRecordHeader + len)) break;
      if (from_file == 0) {
        buf = new_buffer(len, static_cast<std::size_t>(std::min<std::uint64_t>(
                                  max_bytes - std::min(bytes, max_bytes), file_backlog())));
      }
      buf.append(rbuf_.data() + rbuf_pos_ + kRecordHeader, len);
      rbuf_pos_ += kRecordHeader + len;
      consumed_ += kRecordHeader + len;
      bytes += len;
      ++from_file;
    }
    if (from_file > 0) {
      out.push_back(std::move(buf));
      n += from_file;
    }
  }
  drop_unreadable();
  after_consume();
  maybe_notify();
  sync_budgets();
  return n;
}

void SpillQueue::drop_unreadable() {
  if (!file_error_.empty() && mem_.empty() && fd_ >= 0 && file_backlog() > 0 &&
      !fill(kRecordHeader)) {
    // An unreadable spill file cannot be replayed: count what it held as dropped.
    reset_file();
  }
}

}  // namespace mgmt
