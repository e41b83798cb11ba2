// Live counters of the socket server, for monitoring plugins (the metrics exporter).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>

namespace mgmt {

// Upper bounds (microseconds) of the request latency histogram's buckets; a last, implicit
// bucket holds everything slower. Latency runs from a request's last byte read to its
// answer being queued for writing.
inline constexpr std::array<std::uint64_t, 14> kLatencyBoundsUs = {
    50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 1000000, 5000000};

// A consistent-enough copy of the counters (each field is read atomically on its own).
struct StatsSnapshot {
  std::uint64_t connections_open = 0;
  std::uint64_t connections_total = 0;    // accepted since start
  std::uint64_t connections_refused = 0;  // over limits.max_connections
  std::uint64_t slow_readers_dropped = 0; // stream readers over limits.max_queue
  std::uint64_t timeouts = 0;             // idle and frame timeouts
  std::uint64_t denied = 0;               // requests refused by access rules
  std::uint64_t bad_frames = 0;           // headers that closed a connection
  std::uint64_t frames_spilled = 0;       // stream frames written to a spill file
  std::uint64_t frames_dropped = 0;       // stream frames dropped past streams.spill_quota
  std::uint64_t stalls = 0;               // stall notices queued to stream readers
  std::array<std::uint64_t, 256> requests{};  // by message type
  std::array<std::uint64_t, kLatencyBoundsUs.size() + 1> latency_buckets{};  // not cumulative
  std::uint64_t latency_count = 0;
  std::uint64_t latency_sum_us = 0;
};

// Written by the server's I/O thread, read from any thread.
class ServerStats {
 public:
  void connection_opened() noexcept { inc(open_); inc(total_); }
  void connection_closed() noexcept { open_.fetch_sub(1, std::memory_order_relaxed); }
  void connection_refused() noexcept { inc(refused_); }
  void slow_reader_dropped() noexcept { inc(slow_); }
  void timeout() noexcept { inc(timeouts_); }
  void denied() noexcept { inc(denied_); }
  void bad_frame() noexcept { inc(bad_frames_); }
  // These three may be called from any thread (stream frames are queued by backend threads).
  void frames_spilled(std::uint64_t n = 1) noexcept { spilled_.fetch_add(n, std::memory_order_relaxed); }
  void frames_dropped(std::uint64_t n = 1) noexcept { dropped_.fetch_add(n, std::memory_order_relaxed); }
  void stall() noexcept { inc(stalls_); }
  void request(std::uint8_t type) noexcept { inc(requests_[type]); }
  void answered(std::uint64_t micros) noexcept {
    std::size_t i = 0;
    while (i < kLatencyBoundsUs.size() && micros > kLatencyBoundsUs[i]) ++i;
    inc(buckets_[i]);
    inc(count_);
    sum_us_.fetch_add(micros, std::memory_order_relaxed);
  }

  // In-place upgrade: the next program continues the counts of the one it replaces (every
  // connection was closed for the exec, so none is open).
  void restore(const StatsSnapshot& s) noexcept {
    total_.store(s.connections_total, std::memory_order_relaxed);
    refused_.store(s.connections_refused, std::memory_order_relaxed);
    slow_.store(s.slow_readers_dropped, std::memory_order_relaxed);
    timeouts_.store(s.timeouts, std::memory_order_relaxed);
    denied_.store(s.denied, std::memory_order_relaxed);
    bad_frames_.store(s.bad_frames, std::memory_order_relaxed);
    spilled_.store(s.frames_spilled, std::memory_order_relaxed);
    dropped_.store(s.frames_dropped, std::memory_order_relaxed);
    stalls_.store(s.stalls, std::memory_order_relaxed);
    for (std::size_t i = 0; i < requests_.size(); ++i) {
      requests_[i].store(s.requests[i], std::memory_order_relaxed);
    }
    for (std::size_t i = 0; i < buckets_.size(); ++i) {
      buckets_[i].store(s.latency_buckets[i], std::memory_order_relaxed);
    }
    count_.store(s.latency_count, std::memory_order_relaxed);
    sum_us_.store(s.latency_sum_us, std::memory_order_relaxed);
  }

  StatsSnapshot snapshot() const noexcept {
    StatsSnapshot s;
    s.connections_open = open_.load(std::memory_order_relaxed);
    s.connections_total = total_.load(std::memory_order_relaxed);
    s.connections_refused = refused_.load(std::memory_order_relaxed);
    s.slow_readers_dropped = slow_.load(std::memory_order_relaxed);
    s.timeouts = timeouts_.load(std::memory_order_relaxed);
    s.denied = denied_.load(std::memory_order_relaxed);
    s.bad_frames = bad_frames_.load(std::memory_order_relaxed);
    s.frames_spilled = spilled_.load(std::memory_order_relaxed);
    s.frames_dropped = dropped_.load(std::memory_order_relaxed);
    s.stalls = stalls_.load(std::memory_order_relaxed);
    for (std::size_t i = 0; i < requests_.size(); ++i) {
      s.requests[i] = requests_[i].load(std::memory_order_relaxed);
    }
    for (std::size_t i = 0; i < buckets_.size(); ++i) {
      s.latency_buckets[i] = buckets_[i].load(std::memory_order_relaxed);
    }
    s.latency_count = count_.load(std::memory_order_relaxed);
    s.latency_sum_us = sum_us_.load(std::memory_order_relaxed);
    return s;
  }

 private:
  static void inc(std::atomic<std::uint64_t>& c) noexcept { c.fetch_add(1, std::memory_order_relaxed); }

  std::atomic<std::uint64_t> open_{0}, total_{0}, refused_{0}, slow_{0}, timeouts_{0}, denied_{0},
      bad_frames_{0};
  std::array<std::atomic<std::uint64_t>, 256> requests_{};
  std::array<std::atomic<std::uint64_t>, kLatencyBoundsUs.size() + 1> buckets_{};
  std::atomic<std::uint64_t> count_{0}, sum_us_{0};
  std::atomic<std::uint64_t> spilled_{0}, dropped_{0}, stalls_{0};
};

}  // namespace mgmt
