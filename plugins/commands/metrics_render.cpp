#include "metrics_render.hpp"

#include <array>
#include <cstdio>
#include <map>

#include "mgmt/wire.hpp"

namespace mgmt::metrics {

namespace {

constexpr std::array<std::string_view, 8> kStates = {
    state::pending, state::starting, state::running,    state::stopping,
    state::stopped, state::crashed,  state::restarting, state::failed};

// Names of the protocol's own request types (the handler plugin may be named otherwise).
std::string_view protocol_name(std::uint8_t type) {
  switch (type) {
    case 0xA0: return "list";
    case 0xA2: return "status";
    case 0xA4: return "logs";
    case 0xA6: return "events";
    case 0xA8: return "start";
    case 0xA9: return "stop";
    default: return {};
  }
}

class Writer {
 public:
  void family(std::string_view name, std::string_view type, std::string_view help) {
    out_ += "# HELP ";
    out_ += name;
    out_ += ' ';
    out_ += help;
    out_ += "\n# TYPE ";
    out_ += name;
    out_ += ' ';
    out_ += type;
    out_ += '\n';
  }
  // labels: already rendered `k="v",k2="v2"` (without braces), or empty.
  void sample(std::string_view name, std::string_view labels, std::string_view value) {
    out_ += name;
    if (!labels.empty()) {
      out_ += '{';
      out_ += labels;
      out_ += '}';
    }
    out_ += ' ';
    out_ += value;
    out_ += '\n';
  }
  void sample(std::string_view name, std::string_view labels, std::uint64_t value) {
    sample(name, labels, std::to_string(value));
  }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

std::string label(std::string_view key, std::string_view value) {
  return std::string(key) + "=\"" + escape_label(value) + "\"";
}

// Nanoseconds (since the epoch or a duration) as seconds with millisecond precision.
std::string nanos_as_seconds(std::int64_t ns) {
  if (ns < 0) ns = 0;
  char buf[48];
  std::snprintf(buf, sizeof buf, "%lld.%03lld", static_cast<long long>(ns / 1'000'000'000),
                static_cast<long long>(ns / 1'000'000 % 1000));
  return buf;
}

bool is_up(std::string_view state) {
  return state == state::running || state == state::stopping;
}

void server_families(Writer& w, const Input& in) {
  const ServerInfo* s = in.server;
  if (s != nullptr) {
    w.family("mgmtd_build_info", "gauge", "mgmtd's version and the plugin ABI it loads (always 1).");
    w.sample("mgmtd_build_info",
             label("version", s->version) + "," + label("abi", std::to_string(s->abi)), 1);
    w.family("mgmtd_start_time_seconds", "gauge", "When mgmtd started, in seconds since the epoch.");
    w.sample("mgmtd_start_time_seconds", "", nanos_as_seconds(s->started_at));
    w.family("mgmtd_uptime_seconds", "gauge", "Seconds since mgmtd started.");
    w.sample("mgmtd_uptime_seconds", "",
             nanos_as_seconds(s->started_at > 0 ? in.now_ns - s->started_at : 0));
  }
  w.family("mgmtd_metrics_scrapes_total", "counter",
           "Expositions rendered by the metrics plugin (HTTP and mgmtctl metrics).");
  w.sample("mgmtd_metrics_scrapes_total", "", in.scrapes);

  const StatsSnapshot* st = in.stats;
  if (st == nullptr) return;
  w.family("mgmtd_connections_open", "gauge", "Client connections open now.");
  w.sample("mgmtd_connections_open", "", st->connections_open);
  w.family("mgmtd_connections_accepted_total", "counter", "Client connections accepted.");
  w.sample("mgmtd_connections_accepted_total", "", st->connections_total);
  w.family("mgmtd_connections_refused_total", "counter",
           "Connections closed at once: limits.max_connections were open, the user held "
           "limits.max_connections_per_uid, or only limits.reserved_connections were left "
           "(for the server's owner and root).");
  w.sample("mgmtd_connections_refused_total", "", st->connections_refused);
  w.family("mgmtd_stream_slow_readers_dropped_total", "counter",
           "Stream readers (logs -f, events) disconnected for falling more than limits.max_queue behind.");
  w.sample("mgmtd_stream_slow_readers_dropped_total", "", st->slow_readers_dropped);
  w.family("mgmtd_stream_frames_spilled_total", "counter",
           "Stream frames written to a spill file because their reader was behind.");
  w.sample("mgmtd_stream_frames_spilled_total", "", st->frames_spilled);
  w.family("mgmtd_stream_frames_dropped_total", "counter",
           "Stream frames dropped because a reader's spill file was over streams.spill_quota.");
  w.sample("mgmtd_stream_frames_dropped_total", "", st->frames_dropped);
  w.family("mgmtd_stream_stalls_total", "counter",
           "Stall notices queued to stream readers that fell behind.");
  w.sample("mgmtd_stream_stalls_total", "", st->stalls);
  w.family("mgmtd_timeouts_total", "counter", "Connections closed by the idle or frame timeout.");
  w.sample("mgmtd_timeouts_total", "", st->timeouts);
  w.family("mgmtd_requests_denied_total", "counter", "Requests refused by the access rules.");
  w.sample("mgmtd_requests_denied_total", "", st->denied);
  w.family("mgmtd_bad_frames_total", "counter",
           "Frame headers that could not be parsed (the connection was closed).");
  w.sample("mgmtd_bad_frames_total", "", st->bad_frames);

  // Requests by type: every type a plugin serves (0 included), and any other type that
  // was asked for (the unknown-type answers).
  std::map<std::uint8_t, std::string> handler;
  if (s != nullptr) {
    for (const auto& p : s->plugins) {
      if (p.kind != PluginKind::backend) handler[p.type] = p.name;
    }
  }
  for (std::size_t t = 0; t < st->requests.size(); ++t) {
    if (st->requests[t] != 0) handler.try_emplace(static_cast<std::uint8_t>(t), "");
  }
  w.family("mgmtd_requests_total", "counter",
           "Requests received, by message type; handler is the plugin serving it (empty: none).");
  for (const auto& [type, name] : handler) {
    std::string labels = label("type", type_hex(type)) + "," + label("handler", name);
    if (const auto pn = protocol_name(type); !pn.empty()) labels += "," + label("request", pn);
    w.sample("mgmtd_requests_total", labels, st->requests[type]);
  }

  w.family("mgmtd_request_duration_seconds", "histogram",
           "From a request's last byte read to its answer queued for writing.");
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i < kLatencyBoundsUs.size(); ++i) {
    cumulative += st->latency_buckets[i];
    w.sample("mgmtd_request_duration_seconds_bucket",
             label("le", micros_as_seconds(kLatencyBoundsUs[i])), cumulative);
  }
  cumulative += st->latency_buckets[kLatencyBoundsUs.size()];
  w.sample("mgmtd_request_duration_seconds_bucket", "le=\"+Inf\"", cumulative);
  w.sample("mgmtd_request_duration_seconds_sum", "", micros_as_seconds(st->latency_sum_us));
  w.sample("mgmtd_request_duration_seconds_count", "", st->latency_count);
}

void process_families(Writer& w, const Input& in) {
  if (in.processes == nullptr) return;
  const auto& procs = *in.processes;
  w.family("mgmtd_processes", "gauge", "Processes the backend supervises.");
  w.sample("mgmtd_processes", "", procs.size());

  w.family("mgmtd_process_info", "gauge", "One per process: its id and display name.");
  for (const auto& e : procs) {
    w.sample("mgmtd_process_info", label("id", e.id) + "," + label("name", e.name), 1);
  }
  w.family("mgmtd_process_state", "gauge",
           "1 for the state the process is in, 0 for the others (one series per state).");
  for (const auto& e : procs) {
    bool known = false;
    for (const auto st : kStates) {
      known = known || st == e.state;
      w.sample("mgmtd_process_state", label("id", e.id) + "," + label("state", st),
               st == e.state ? 1 : 0);
    }
    if (!known) {  // a backend of its own with states of its own
      w.sample("mgmtd_process_state", label("id", e.id) + "," + label("state", e.state), 1);
    }
  }
  w.family("mgmtd_process_up", "gauge", "1 when the process is running (or stopping), else 0.");
  for (const auto& e : procs) w.sample("mgmtd_process_up", label("id", e.id), is_up(e.state) ? 1 : 0);
  w.family("mgmtd_process_restarts_total", "counter", "Automatic restarts of the process.");
  for (const auto& e : procs) w.sample("mgmtd_process_restarts_total", label("id", e.id), e.restarts);
  w.family("mgmtd_process_resident_memory_bytes", "gauge",
           "Resident memory of the process's whole process group (0 when not running).");
  for (const auto& e : procs) {
    w.sample("mgmtd_process_resident_memory_bytes", label("id", e.id), e.rss);
  }
  w.family("mgmtd_process_start_time_seconds", "gauge",
           "When the process was last started, in seconds since the epoch (0: never).");
  for (const auto& e : procs) {
    w.sample("mgmtd_process_start_time_seconds", label("id", e.id), nanos_as_seconds(e.started_at));
  }
  w.family("mgmtd_process_uptime_seconds", "gauge",
           "Seconds since the process was started, while it is up; 0 otherwise.");
  for (const auto& e : procs) {
    const bool up = is_up(e.state) && e.started_at > 0;
    w.sample("mgmtd_process_uptime_seconds", label("id", e.id),
             nanos_as_seconds(up ? in.now_ns - e.started_at : 0));
  }
}

}  // namespace

std::string escape_label(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (const char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string micros_as_seconds(std::uint64_t us) {
  std::string out = std::to_string(us / 1'000'000);
  std::uint64_t frac = us % 1'000'000;
  if (frac == 0) return out;
  char buf[8];
  std::snprintf(buf, sizeof buf, "%06llu", static_cast<unsigned long long>(frac));
  std::string f(buf);
  while (!f.empty() && f.back() == '0') f.pop_back();
  return out + "." + f;
}

std::string render(const Input& in) {
  Writer w;
  server_families(w, in);
  process_families(w, in);
  return w.take();
}

}  // namespace mgmt::metrics
