// A connection's outgoing frames: a bounded in-memory queue that spills to a file on disk
// when the reader falls behind, replays the file in order as the reader catches up, and
// past a disk quota drops frames, counts them and, once the backlog has drained, queues a
// notice frame saying what was lost.
//
// No Asio and no locking here: Session owns one per connection and guards it with a mutex
// (frames are pushed from backend threads and taken by the I/O thread).
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace mgmt {

// Bytes that all of a server's queues share (limits.max_queue_total for memory,
// streams.spill_quota_total for spill files): each queue adds what it holds and takes it
// back when it lets go, from whichever thread it runs on. A per-connection limit alone
// bounds nothing server-wide: 500 connections each within theirs is 500 times as much.
struct Budget {
  std::atomic<std::uint64_t> limit{0};  // 0 = none
  std::atomic<std::uint64_t> used{0};

  // True when `n` more bytes stay within the limit.
  bool has_room(std::uint64_t n) const {
    const std::uint64_t l = limit.load(std::memory_order_relaxed);
    return l == 0 || used.load(std::memory_order_relaxed) + n <= l;
  }
  bool over() const { return !has_room(0); }
  // At most half used: where a queue that had to drop frames for want of room starts
  // taking them again (so that it does not flap between dropping and a notice per frame).
  bool half_free() const {
    const std::uint64_t l = limit.load(std::memory_order_relaxed);
    return l == 0 || used.load(std::memory_order_relaxed) <= l / 2;
  }
  // Takes `n` bytes if they fit; false (and nothing taken) if not.
  bool try_take(std::uint64_t n) {
    const std::uint64_t l = limit.load(std::memory_order_relaxed);
    std::uint64_t u = used.load(std::memory_order_relaxed);
    do {
      if (l != 0 && u + n > l) return false;
    } while (!used.compare_exchange_weak(u, u + n, std::memory_order_relaxed));
    return true;
  }
  // Moves what a holder has charged from `charged` to `now`.
  void recharge(std::uint64_t& charged, std::uint64_t now) {
    if (now > charged) {
      used.fetch_add(now - charged, std::memory_order_relaxed);
    } else if (now < charged) {
      used.fetch_sub(charged - now, std::memory_order_relaxed);
    }
    charged = now;
  }
};

class SpillQueue {
 public:
  // What to do once frames had to be dropped.
  enum class Overflow { notify, disconnect };

  struct Options {
    std::size_t memory_limit = 8u << 20;   // bytes of frames kept in memory
    std::uint64_t spill_quota = 64u << 20; // bytes of unread frames in the spill file
    std::string spill_path;                // created on first use, removed on destruction
    Overflow on_overflow = Overflow::notify;
    // Shared with the server's other queues (null = none). Past the memory budget frames
    // go to the spill file, as past memory_limit; past the disk budget they are dropped,
    // as past spill_quota. Kept frames (answers, notices) go past both.
    Budget* memory_total = nullptr;
    Budget* disk_total = nullptr;
  };

  // Builds the notice frame: `dropped` counts the units of the dropped frames (see push),
  // `since_ns` is the unix-nanos time of the first of them.
  using NoticeBuilder = std::function<std::string(std::uint64_t dropped, std::int64_t since_ns)>;

  enum class Added {
    memory,      // queued in memory
    spilled,     // appended to the spill file
    dropped,     // over the quota: dropped and counted
    disconnect,  // first drop with Overflow::disconnect: the notice is queued, nothing more
                 // will be; the owner should close once the queue is flushed
    closed,      // the queue is closed (the connection is gone)
  };

  explicit SpillQueue(Options o);
  ~SpillQueue();  // removes the spill file
  SpillQueue(const SpillQueue&) = delete;
  SpillQueue& operator=(const SpillQueue&) = delete;

  void set_notice(NoticeBuilder b) { notice_ = std::move(b); }

  // Adds one frame. `units` is what a drop counts (1 per event, bytes of log data...).
  // `keep` frames (replies, notices) are never dropped: they go past the quota if needed.
  Added push(std::string frame, std::uint64_t units = 1, bool keep = false);
  // The same for a frame made of `parts` laid end to end (a header, a payload...): they are
  // copied straight into the queue's buffers, so a frame costs no allocation of its own.
  Added push_parts(std::span<const std::string_view> parts, std::uint64_t units = 1,
                   bool keep = false);

  // Moves the oldest frames, in order, into `out` (appended): at least one frame when any is
  // queued, then more while their total stays within `max_bytes` and `max_frames`.
  // Returns the number of frames taken.
  std::size_t take(std::vector<std::string>& out, std::size_t max_bytes, std::size_t max_frames);

  // The writer's take: the same frames in the same order, but appended to `out` as whole
  // buffers, each holding one or more consecutive frames (ready for a gathered write): at
  // least one frame when any is queued, then more while the total stays within `max_bytes`
  // and the buffers within `max_buffers`. Returns the number of frames taken.
  std::size_t take_buffers(std::vector<std::string>& out, std::size_t max_bytes,
                           std::size_t max_buffers);
  // Gives buffers back (written ones, from take_buffers) for reuse: a few are moved out of
  // `bufs` and kept until release_spares() (when the queue has gone idle), which hands them
  // back in `out`. What stays in `bufs` or `out` is the caller's to free (outside its lock).
  void recycle(std::vector<std::string>& bufs);
  void release_spares(std::vector<std::string>& out);

  bool empty() const { return lens_.empty() && file_backlog() == 0; }
  std::size_t memory_bytes() const { return mem_bytes_; }
  std::uint64_t file_backlog() const { return write_off_ + wbuf_.size() - consumed_; }
  std::uint64_t backlog_bytes() const { return mem_bytes_ + file_backlog(); }
  // Bytes of frames held in memory: queued there, or on their way to or from the file.
  std::size_t heap_bytes() const { return mem_bytes_ + wbuf_.size() + rbuf_.size(); }
  // What the queue has charged to Options::memory_total: the capacity of every buffer it
  // holds (frames, the file's write and read buffers, spare buffers), in whole 4 KiB
  // pages; and to Options::disk_total: the bytes of its spill file not yet given back.
  std::uint64_t memory_charged() const { return mem_charged_; }
  std::uint64_t disk_charged() const { return disk_charged_; }

  // Drops everything and removes the file; later pushes answer `closed`.
  void close();
  bool closed() const { return closed_; }

  // Counters since construction.
  std::uint64_t frames_spilled() const { return frames_spilled_; }
  std::uint64_t frames_dropped() const { return frames_dropped_; }
  std::uint64_t stalls() const { return stalls_; }  // notices queued
  bool dropping() const { return dropping_; }
  // The last error of the spill file ("" when none): spilling is then off, frames past the
  // memory limit are dropped as past the quota.
  const std::string& file_error() const { return file_error_; }
  const std::string& spill_path() const { return opts_.spill_path; }
  // The last frame the file refused was refused for want of room in Options::disk_total.
  bool short_of_disk() const { return short_of_disk_; }

 private:
  // A frame being added: its parts, and the string holding it when the caller gave one
  // (then a large frame is adopted as a buffer of its own rather than copied).
  struct Frame {
    std::span<const std::string_view> parts;
    std::size_t size;
    std::string* owned;
  };
  // In memory, frames are packed back to back into buffers: the writer takes a buffer
  // whole, and the producer then starts a new one.
  struct Block {
    std::string data;
    std::size_t pos = 0;     // bytes taken frame by frame (take()) from the front
    std::size_t frames = 0;  // frames in data[pos, end)
    std::size_t cap = 0;     // data's capacity when queued (appends stay within it)
  };

  Added push_frame(Frame f, std::uint64_t units, bool keep);
  Added add_frame(const Frame& f, std::uint64_t units, bool keep);
  bool open_file();
  bool append_file(const Frame& frame, bool keep);
  bool flush_wbuf();
  // Makes at least `n` unparsed bytes available in rbuf_; false when the file has fewer.
  bool fill(std::size_t n);
  void after_consume();
  void drop_unreadable();
  void reset_file();
  void maybe_notify();
  void queue_notice();
  Added place(const Frame& frame, bool keep);
  void to_memory(const Frame& frame);
  // A buffer for at least `need` bytes: a kept one, else a new one of max(need, want).
  std::string new_buffer(std::size_t need, std::size_t want);
  // Keeps `buf` (moving it) for reuse when it is worth it.
  bool spare(std::string& buf);
  // Charges the budgets with what the queue holds now (after every public change).
  void sync_budgets();
  // The spill file's bytes not given back to the file system yet (written or buffered).
  std::uint64_t file_held() const { return write_off_ + wbuf_.size() - punched_; }
  // A new buffer's bytes if `frame` would need one in memory (0 when it fits the last).
  std::size_t memory_needed(const Frame& frame) const;
  // Past the memory budget: the file's buffers are kept as small as they can be.
  bool tight() const { return opts_.memory_total != nullptr && opts_.memory_total->over(); }
  bool memory_room(std::size_t n) const {
    return n == 0 || opts_.memory_total == nullptr || opts_.memory_total->has_room(n);
  }

  Options opts_;
  NoticeBuilder notice_;
  std::deque<Block> mem_;
  std::deque<std::uint32_t> lens_;  // sizes of the frames in memory, oldest first
  std::size_t mem_bytes_ = 0;
  std::size_t mem_cap_ = 0;  // capacity of the blocks in mem_
  std::vector<std::string> spares_;  // emptied buffers kept for reuse
  std::uint64_t mem_charged_ = 0;   // to opts_.memory_total
  std::uint64_t disk_charged_ = 0;  // to opts_.disk_total

  int fd_ = -1;
  // The spill stream is records [u32 length][frame]; offsets count its bytes. The bytes
  // [0, write_off_) are in the file (or were taken straight from wbuf_), then wbuf_ follows.
  std::uint64_t write_off_ = 0;
  std::uint64_t read_off_ = 0;   // bytes moved from the file (or wbuf_) into rbuf_
  std::uint64_t consumed_ = 0;   // bytes parsed out of rbuf_
  std::uint64_t punched_ = 0;    // the file's start up to here has been released
  std::string wbuf_;             // appended records not yet written to the file
  std::string rbuf_;             // bytes read, rbuf_[rbuf_pos_, end) not yet parsed
  std::size_t rbuf_pos_ = 0;

  bool closed_ = false;
  bool dropping_ = false;
  bool disconnecting_ = false;
  std::uint64_t dropped_units_ = 0;
  std::int64_t first_drop_ns_ = 0;
  std::string file_error_;
  bool short_of_disk_ = false;

  std::uint64_t frames_spilled_ = 0;
  std::uint64_t frames_dropped_ = 0;
  std::uint64_t stalls_ = 0;
};

// RFC 3339 UTC time with milliseconds, "2024-05-01T12:00:00.123Z", for notices.
std::string rfc3339_utc(std::int64_t unix_ns);

}  // namespace mgmt
