// The client side: closed-loop load (C connections, one request in flight on each),
// reply capture for the floor, and a holder of idle connections.
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <thread>

#include "bench.hpp"
#include "mgmt/messages.hpp"

namespace mgmt::bench {

namespace {

enum Phase : int { warmup = 0, measure = 1, stop = 2 };

struct Worker {
  std::vector<std::uint32_t> lat_ns;  // one entry per measured request
  std::uint64_t errors = 0;
  std::size_t reply_bytes = 0;
  std::string failure;
};

void run_worker(const std::string& socket, const std::string& request, std::uint8_t want_type,
                const std::atomic<int>& phase, std::atomic<int>& ready, Worker& w) {
  try {
    const int fd = connect_unix(socket);
    std::string frame = request;
    std::string buf;
    FrameHeader h;
    std::uint64_t seq = 1;
    w.lat_ns.reserve(1u << 20);
    ready.fetch_add(1);
    for (;;) {
      const int ph = phase.load(std::memory_order_relaxed);
      if (ph == stop) break;
      patch_seq(frame.data(), seq);
      const std::int64_t t0 = now_ns();
      write_all(fd, frame.data(), frame.size());
      if (!read_frame(fd, buf, h)) throw std::runtime_error("server closed the connection");
      const std::int64_t t1 = now_ns();
      if (h.type != want_type || h.seq != seq) ++w.errors;
      w.reply_bytes = kHeaderSize + h.length;
      if (ph == measure) {
        w.lat_ns.push_back(static_cast<std::uint32_t>(std::min<std::int64_t>(t1 - t0, UINT32_MAX)));
      }
      ++seq;
    }
    ::close(fd);
  } catch (const std::exception& e) {
    w.failure = e.what();
    ready.fetch_add(1);
  }
}

double pct(const std::vector<std::uint32_t>& sorted, double p) {
  if (sorted.empty()) return 0;
  const auto i = static_cast<std::size_t>(p * static_cast<double>(sorted.size() - 1) + 0.5);
  return sorted[std::min(i, sorted.size() - 1)] / 1000.0;
}

// The id of one process (the middle one), for status.
std::string pick_id(const std::string& socket) {
  const int fd = connect_unix(socket);
  std::string frame = request_frame("list", "");
  patch_seq(frame.data(), 1);
  write_all(fd, frame.data(), frame.size());
  std::string buf;
  FrameHeader h;
  const bool ok = read_frame(fd, buf, h);
  ::close(fd);
  ListResponse resp;
  if (!ok || h.type != to_byte(MsgType::ListResponse) ||
      !decode(std::string_view(buf).substr(kHeaderSize, h.length), resp).empty() ||
      resp.entries.empty()) {
    throw std::runtime_error("cannot find a process id with a list request; pass --id");
  }
  return resp.entries[resp.entries.size() / 2].id;
}

}  // namespace

LoadStats run_load(const std::string& socket, std::string_view op, const std::string& id,
                   long clients, double duration, double warm) {
  const std::string request = request_frame(op, id);
  std::atomic<int> phase{warmup};
  std::atomic<int> ready{0};
  std::vector<Worker> workers(static_cast<std::size_t>(clients));
  std::vector<std::thread> threads;
  for (auto& w : workers) {
    threads.emplace_back(run_worker, std::cref(socket), std::cref(request), reply_type(op),
                         std::cref(phase), std::ref(ready), std::ref(w));
  }
  while (ready.load() < clients) sleep_ns(1'000'000);
  sleep_ns(static_cast<std::int64_t>(warm * 1e9));
  phase.store(measure);
  const std::int64_t t0 = now_ns();
  sleep_ns(static_cast<std::int64_t>(duration * 1e9));
  phase.store(stop);
  const std::int64_t t1 = now_ns();
  for (auto& t : threads) t.join();

  std::vector<std::uint32_t> all;
  LoadStats st;
  for (auto& w : workers) {
    if (!w.failure.empty()) throw std::runtime_error("a client failed: " + w.failure);
    all.insert(all.end(), w.lat_ns.begin(), w.lat_ns.end());
    st.errors += w.errors;
    st.reply_bytes = std::max(st.reply_bytes, w.reply_bytes);
  }
  std::sort(all.begin(), all.end());
  st.requests = all.size();
  st.seconds = static_cast<double>(t1 - t0) / 1e9;
  st.p50_us = pct(all, 0.50);
  st.p99_us = pct(all, 0.99);
  st.max_us = all.empty() ? 0.0 : all.back() / 1000.0;
  return st;
}

int cmd_load(const Args& a) {
  std::string socket, op = "list", id, label;
  long clients = 1;
  double duration = 3, warm = 0.5;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i] == "--socket") socket = take_value(a, i);
    else if (a[i] == "--op") op = take_value(a, i);
    else if (a[i] == "--id") id = take_value(a, i);
    else if (a[i] == "--clients" || a[i] == "-c") clients = parse_long(take_value(a, i), "--clients");
    else if (a[i] == "--duration") duration = parse_double(take_value(a, i), "--duration");
    else if (a[i] == "--warmup") warm = parse_double(take_value(a, i), "--warmup");
    else if (a[i] == "--label") label = take_value(a, i);
    else throw UsageError("load: unknown option " + a[i]);
  }
  if (socket.empty()) throw UsageError("load: --socket is required");
  if (clients < 1 || clients > 256) throw UsageError("load: --clients must be 1..256");
  if (op == "status" && id.empty()) id = pick_id(socket);
  request_frame(op, id);  // an unknown op is a usage error before any connection

  LoadStats st;
  try {
    st = run_load(socket, op, id, clients, duration, warm);
  } catch (const std::runtime_error& e) {
    std::cerr << "mgmt-bench load: " << e.what() << "\n";
    return 1;
  }
  std::printf(
      "%sop=%s clients=%ld requests=%zu seconds=%.2f rps=%.0f p50_us=%.1f p99_us=%.1f "
      "max_us=%.1f reply_bytes=%zu errors=%llu\n",
      label.empty() ? "" : (label + " ").c_str(), op.c_str(), clients, st.requests, st.seconds,
      static_cast<double>(st.requests) / st.seconds, st.p50_us, st.p99_us, st.max_us,
      st.reply_bytes, static_cast<unsigned long long>(st.errors));
  return st.errors == 0 ? 0 : 1;
}

int cmd_capture(const Args& a) {
  std::string socket, op = "list", id, out;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i] == "--socket") socket = take_value(a, i);
    else if (a[i] == "--op") op = take_value(a, i);
    else if (a[i] == "--id") id = take_value(a, i);
    else if (a[i] == "--out") out = take_value(a, i);
    else throw UsageError("capture: unknown option " + a[i]);
  }
  if (socket.empty() || out.empty()) throw UsageError("capture: --socket and --out are required");
  if (op == "status" && id.empty()) id = pick_id(socket);
  std::string frame = request_frame(op, id);
  patch_seq(frame.data(), 1);
  const int fd = connect_unix(socket);
  write_all(fd, frame.data(), frame.size());
  std::string buf;
  FrameHeader h;
  if (!read_frame(fd, buf, h)) throw std::runtime_error("server closed without answering");
  ::close(fd);
  if (h.type != reply_type(op)) {
    throw std::runtime_error("unexpected reply type " + type_hex(h.type) + " to " + op);
  }
  buf.resize(kHeaderSize + h.length);
  write_file(out, buf);
  std::printf("captured %s reply: %zu bytes -> %s\n", op.c_str(), buf.size(), out.c_str());
  return 0;
}

int cmd_hold(const Args& a) {
  std::string socket;
  long n = 1000;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i] == "--socket") socket = take_value(a, i);
    else if (a[i] == "--connections" || a[i] == "-n") n = parse_long(take_value(a, i), "--connections");
    else throw UsageError("hold: unknown option " + a[i]);
  }
  if (socket.empty() || n < 1) throw UsageError("hold: --socket and --connections N>0 are required");
  std::vector<int> fds;
  fds.reserve(static_cast<std::size_t>(n));
  for (long i = 0; i < n; ++i) fds.push_back(connect_unix(socket));
  // Connections are accepted in order: once the last one is answered, every one of them
  // has a session on the server. It makes one list request; the rest never send a byte.
  std::string frame = request_frame("list", "");
  patch_seq(frame.data(), 1);
  write_all(fds.back(), frame.data(), frame.size());
  std::string buf;
  FrameHeader h;
  if (!read_frame(fds.back(), buf, h)) throw std::runtime_error("server closed a held connection");
  std::printf("holding %ld connections\n", n);
  std::fflush(stdout);
  // Until SIGTERM/SIGINT, whose default action ends the process (the kernel closes them).
  for (;;) ::pause();
}

int cmd_unread(const Args& a) {
  std::string socket, op = "list", id;
  long n = 100;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i] == "--socket") socket = take_value(a, i);
    else if (a[i] == "--connections" || a[i] == "-n") n = parse_long(take_value(a, i), "--connections");
    else if (a[i] == "--op") op = take_value(a, i);
    else if (a[i] == "--id") id = take_value(a, i);
    else throw UsageError("unread: unknown option " + a[i]);
  }
  if (socket.empty() || n < 1) throw UsageError("unread: --socket and --connections N>0 are required");
  std::string frame = request_frame(op, id);
  // Requests written back to back; the server's answers are never read.
  std::string burst;
  for (int i = 0; i < 256; ++i) burst += frame;
  std::vector<int> fds;
  std::vector<std::size_t> sent;
  for (long i = 0; i < n; ++i) {
    const int fd = connect_unix(socket);
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
    fds.push_back(fd);
    sent.push_back(0);
  }
  // Round after round until no connection takes a byte for a while: by then the server has
  // stopped reading each of them (its backlog of answers is full) and the sockets are full.
  std::uint64_t requests = 0;
  std::int64_t quiet_since = now_ns();
  while (now_ns() - quiet_since < 300'000'000) {
    bool progress = false;
    for (std::size_t i = 0; i < fds.size(); ++i) {
      if (fds[i] < 0) continue;
      const std::size_t off = sent[i] % burst.size();
      const ssize_t w = ::send(fds[i], burst.data() + off, burst.size() - off, MSG_NOSIGNAL);
      if (w > 0) {
        sent[i] += static_cast<std::size_t>(w);
        progress = true;
      } else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        ::close(fds[i]);  // closed by the server
        fds[i] = -1;
      }
    }
    if (progress) quiet_since = now_ns();
    else sleep_ns(5'000'000);
  }
  long open = 0;
  for (std::size_t i = 0; i < fds.size(); ++i) {
    requests += sent[i] / frame.size();
    open += fds[i] >= 0;
  }
  std::printf("holding %ld connections, %llu requests sent, no answer read\n", open,
              static_cast<unsigned long long>(requests));
  std::fflush(stdout);
  for (;;) ::pause();
}

}  // namespace mgmt::bench
