#include "logs_view.hpp"

#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <ctime>
#include <deque>
#include <optional>
#include <set>
#include <stdexcept>

#include <nlohmann/json.hpp>

namespace mgmtctl {

namespace {

using Clock = std::chrono::steady_clock;

// A stream whose first frame has not come yet holds the others back this long at most (a
// large snapshot takes a while).
constexpr auto kFirstFrameWait = std::chrono::seconds(3);

std::int64_t now_nanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Lines of several streams, written in capture order.
class Merger {
 public:
  Merger(const std::vector<LogSource>& sources, const LogsLook& look, std::ostream& out,
         std::ostream& err)
      : sources_(sources), look_(look), out_(out), err_(err), state_(sources.size()) {
    for (const auto& s : sources_) width_ = std::max(width_, s.id.size());
  }

  // `d` came for source i, captured at the times `tss` (pairs [offset, ts]) or `ts`; a
  // server that says neither gets the time it arrived.
  void add(std::size_t i, const std::string& d, const std::vector<std::int64_t>& tss,
           std::int64_t ts) {
    State& st = state_[i];
    st.started = true;
    if (d.empty()) return;
    const auto arrived = Clock::now();
    std::vector<std::pair<std::size_t, std::int64_t>> pieces;
    for (std::size_t k = 0; k + 1 < tss.size(); k += 2) {
      const auto at = static_cast<std::size_t>(std::clamp<std::int64_t>(
          tss[k], 0, static_cast<std::int64_t>(d.size())));
      if (!pieces.empty() && at < pieces.back().first) continue;  // offsets must rise
      pieces.emplace_back(pieces.empty() ? 0 : at, tss[k + 1]);
    }
    if (pieces.empty()) pieces.emplace_back(0, ts > 0 ? ts : now_nanos());
    for (std::size_t k = 0; k < pieces.size(); ++k) {
      const std::size_t end = k + 1 < pieces.size() ? pieces[k + 1].first : d.size();
      const std::int64_t t = pieces[k].second;
      std::size_t at = pieces[k].first;
      while (at < end) {
        const std::size_t nl = d.find('\n', at);
        if (nl == std::string::npos || nl >= end) {
          if (st.partial.empty()) st.partial_ts = t;
          st.partial.append(d, at, end - at);
          break;
        }
        const std::int64_t line_ts = st.partial.empty() ? t : st.partial_ts;
        st.partial.append(d, at, nl + 1 - at);
        st.queue.push_back({std::move(st.partial), line_ts, arrived});
        st.partial.clear();
        at = nl + 1;
      }
      // Undecorated output goes out as it comes, lines or not.
      if (raw() && !st.partial.empty()) {
        st.queue.push_back({std::move(st.partial), st.partial_ts, arrived});
        st.partial.clear();
      }
      st.mark = std::max(st.mark, t);
    }
  }

  // No more data for source i: a last line without its '\n' goes out.
  void close(std::size_t i) {
    State& st = state_[i];
    if (!st.open) return;
    st.open = false;
    st.started = true;
    if (!st.partial.empty()) {
      st.queue.push_back({std::move(st.partial), st.partial_ts, Clock::now()});
      st.partial.clear();
    }
  }

  // Writes every line that no other stream can precede any more (with `all`: everything).
  // Returns when waiting would let more go, or nullopt when nothing is held.
  std::optional<Clock::time_point> release(bool all) {
    std::optional<Clock::time_point> wake;
    bool wrote = false;
    while (true) {
      std::size_t k = state_.size();
      for (std::size_t i = 0; i < state_.size(); ++i) {
        if (state_[i].queue.empty()) continue;
        if (k == state_.size() || state_[i].queue.front().ts < state_[k].queue.front().ts) k = i;
      }
      if (k == state_.size()) break;
      const Line& head = state_[k].queue.front();
      bool safe = true;
      bool all_started = true;
      for (std::size_t j = 0; j < state_.size(); ++j) {
        const State& o = state_[j];
        all_started = all_started && o.started;
        if (j == k || !o.open || !o.queue.empty()) continue;
        if (!o.started || o.mark < head.ts) safe = false;
      }
      if (!safe && !all) {
        const auto deadline =
            head.arrived + (all_started ? std::chrono::duration_cast<Clock::duration>(
                                              std::chrono::milliseconds(kMergeWaitMs))
                                        : std::chrono::duration_cast<Clock::duration>(
                                              kFirstFrameWait));
        if (Clock::now() < deadline) {
          wake = deadline;
          break;
        }
      }
      write(k, head);
      state_[k].queue.pop_front();
      wrote = true;
    }
    if (wrote) {
      out_.flush();
      err_.flush();
    }
    return wake;
  }

 private:
  struct Line {
    std::string text;  // a line with its '\n' (raw output: any piece of one)
    std::int64_t ts;
    Clock::time_point arrived;
  };
  struct State {
    std::deque<Line> queue;
    std::string partial;  // a line whose '\n' has not come yet
    std::int64_t partial_ts = 0;
    std::int64_t mark = LLONG_MIN;  // the latest capture time seen
    bool started = false;           // its first frame came
    bool open = true;
  };

  bool raw() const { return !look_.timestamps && !look_.json && !look_.prefix; }

  void write(std::size_t i, const Line& line) {
    const LogSource& src = sources_[i];
    std::string_view text = line.text;
    if (look_.json) {
      if (!text.empty() && text.back() == '\n') text.remove_suffix(1);
      nlohmann::ordered_json j;
      j["ts"] = line.ts;
      j["id"] = src.id;
      j["stream"] = src.s == 0 ? "stdout" : "stderr";
      j["line"] = std::string(text);
      out_ << j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) << '\n';
      return;
    }
    std::string o;
    if (look_.prefix) {
      o += src.id;
      o.append(width_ - src.id.size() + 1, ' ');
      o += "| ";
    }
    if (look_.timestamps) {
      o += rfc3339_micros(line.ts);
      o += ' ';
    }
    o += text;
    if (!raw() && (o.empty() || o.back() != '\n')) o += '\n';
    std::ostream& sink = src.s == 0 ? out_ : err_;
    // Both may go to one terminal or file: what the other holds goes out first.
    if (last_ != nullptr && last_ != &sink) last_->flush();
    last_ = &sink;
    sink.write(o.data(), static_cast<std::streamsize>(o.size()));
  }

  const std::vector<LogSource>& sources_;
  LogsLook look_;
  std::ostream& out_;
  std::ostream& err_;
  std::vector<State> state_;
  std::size_t width_ = 0;
  std::ostream* last_ = nullptr;  // where the last line went
};

[[noreturn]] void protocol_error(const mgmt::Client& c, const std::string& what) {
  throw std::runtime_error("protocol error from " + c.path() + ": " + what);
}

// The error a frame carries ("" when it is log data); throws on anything else. Fills `m`.
std::string read_frame(const mgmt::Client& c, const mgmt::Frame& f, mgmt::LogsStream& m) {
  if (f.header.type == mgmt::to_byte(mgmt::MsgType::LogsStream)) {
    if (auto e = mgmt::decode(f.payload, m); !e.empty()) {
      protocol_error(c, "cannot decode 0xa5 payload: " + e);
    }
    if (!m.err.empty()) return m.err;
    // A Go server's refusal of the stream: its data is the readable error.
    if (m.s > 1) return m.d.empty() ? std::string("invalid stream") : m.d;
    return {};
  }
  mgmt::StatusResponse st;
  if (f.header.type == mgmt::to_byte(mgmt::MsgType::StatusResponse) &&
      mgmt::decode(f.payload, st).empty() && !st.err.empty()) {
    return st.err;
  }
  protocol_error(c, "got message type " + mgmt::type_hex(f.header.type) +
                        " where 0xa5 was expected");
}

}  // namespace

std::string rfc3339_micros(std::int64_t unix_nanos) {
  std::int64_t secs = unix_nanos / 1'000'000'000;
  std::int64_t frac = unix_nanos % 1'000'000'000;
  if (frac < 0) {
    frac += 1'000'000'000;
    --secs;
  }
  const auto t = static_cast<std::time_t>(secs);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[64];
  const std::size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  char micros[16];
  std::snprintf(micros, sizeof micros, ".%06lldZ", static_cast<long long>(frac / 1000));
  return std::string(buf, n) + micros;
}

std::string print_log_snapshots(mgmt::Client& c, mgmt::LogsRequest req,
                                const std::vector<LogSource>& sources, const LogsLook& look,
                                std::ostream& out, std::ostream& err) {
  std::vector<mgmt::LogsStream> got(sources.size());
  req.f = false;
  for (std::size_t i = 0; i < sources.size(); ++i) {
    req.id = sources[i].id;
    req.s = sources[i].s;
    const auto f = c.call(mgmt::to_byte(mgmt::MsgType::LogsRequest), mgmt::encode(req));
    if (auto e = read_frame(c, f, got[i]); !e.empty()) return e;
    // Without times from the server, the order of the requests stands.
    if (got[i].tss.empty() && got[i].ts <= 0) got[i].ts = now_nanos();
  }
  Merger merger(sources, look, out, err);
  for (std::size_t i = 0; i < sources.size(); ++i) {
    merger.add(i, got[i].d, got[i].tss, got[i].ts);
    merger.close(i);
  }
  merger.release(true);
  return {};
}

int follow_log_sources(const std::vector<LogSource>& sources, mgmt::LogsRequest req,
                       const LogsLook& look,
                       const std::function<mgmt::Client*(std::size_t i, bool again)>& connect,
                       std::ostream& out, std::ostream& err) {
  const std::size_t n = sources.size();
  std::vector<mgmt::Client*> conns(n, nullptr);
  std::vector<bool> open(n, true);
  std::vector<std::int64_t> pos(n, -1);  // where each stream resumes (see logs_view.hpp)
  req.f = true;
  auto request = [&](std::size_t i, std::int64_t from) {
    mgmt::LogsRequest r = req;
    r.id = sources[i].id;
    r.s = sources[i].s;
    r.from = from;
    conns[i]->send(mgmt::to_byte(mgmt::MsgType::LogsRequest), mgmt::encode(r));
  };
  for (std::size_t i = 0; i < n; ++i) {
    conns[i] = connect(i, false);
    request(i, -1);
  }
  Merger merger(sources, look, out, err);
  std::set<std::string> reported;
  int rc = 0;
  auto end = [&](std::size_t i) {
    open[i] = false;
    merger.close(i);
  };
  while (std::find(open.begin(), open.end(), true) != open.end()) {
    int timeout = -1;
    if (auto wake = merger.release(false)) {
      const auto ms = std::chrono::ceil<std::chrono::milliseconds>(*wake - Clock::now()).count();
      timeout = static_cast<int>(std::clamp<long long>(ms, 0, 60'000));
    }
    std::vector<pollfd> fds;
    std::vector<std::size_t> which;
    for (std::size_t i = 0; i < n; ++i) {
      if (!open[i]) continue;
      fds.push_back({conns[i]->fd(), POLLIN, 0});
      which.push_back(i);
    }
    if (::poll(fds.data(), fds.size(), timeout) < 0) {
      if (errno == EINTR) continue;
      throw std::runtime_error("poll failed while following logs");
    }
    for (std::size_t k = 0; k < fds.size(); ++k) {
      if ((fds[k].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      const std::size_t i = which[k];
      std::optional<mgmt::Frame> f;
      try {
        f = conns[i]->receive();  // one whole frame: the server writes frames whole
      } catch (const std::exception&) {
        if (pos[i] < 0) throw;
      }
      if (!f) {
        mgmt::Client* again = pos[i] >= 0 ? connect(i, true) : nullptr;
        if (again == nullptr) {
          end(i);
          continue;
        }
        conns[i] = again;
        request(i, pos[i]);
        continue;
      }
      mgmt::LogsStream m;
      if (auto e = read_frame(*conns[i], *f, m); !e.empty()) {
        // The same error may come for both streams of a process: said once.
        if (reported.insert(e).second) {
          err << e;
          if (e.back() != '\n') err << '\n';
          err.flush();
        }
        rc = 1;
        end(i);
        continue;
      }
      merger.add(i, m.d, m.tss, m.ts);
      if (m.pos >= 0) pos[i] = m.pos;
      if (m.eof) end(i);
    }
  }
  merger.release(true);
  return rc;
}

}  // namespace mgmtctl
