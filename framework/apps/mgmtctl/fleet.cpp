#include "fleet.hpp"

#include <algorithm>
#include <ctime>
#include <functional>
#include <mutex>
#include <ostream>
#include <sstream>
#include <streambuf>
#include <thread>
#include <utility>

#include <nlohmann/json.hpp>

#include "commands.hpp"

namespace mgmtctl {

namespace {

using Json = nlohmann::ordered_json;

// An output stream's buffer that hands every complete line (without its newline) to a
// function: how a host's stream of events gets its prefix and reaches the shared output
// whole, never interleaved with another host's half line.
class LineBuf : public std::streambuf {
 public:
  explicit LineBuf(std::function<void(std::string_view)> sink) : sink_(std::move(sink)) {}
  ~LineBuf() override {
    if (!line_.empty()) sink_(line_);  // a last line without its newline
  }

 protected:
  int_type overflow(int_type ch) override {
    if (!traits_type::eq_int_type(ch, traits_type::eof())) put(traits_type::to_char_type(ch));
    return traits_type::not_eof(ch);
  }
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    for (std::streamsize i = 0; i < n; ++i) put(s[i]);
    return n;
  }

 private:
  void put(char c) {
    if (c == '\n') {
      sink_(line_);
      line_.clear();
    } else {
      line_ += c;
    }
  }
  std::function<void(std::string_view)> sink_;
  std::string line_;
};

std::string dump_pretty(const Json& j) {
  return j.dump(2, ' ', false, Json::error_handler_t::replace) + "\n";
}

// `obj` with "host" as its first key.
Json with_host(const std::string& host, const Json& obj) {
  Json j;
  j["host"] = host;
  for (const auto& [k, v] : obj.items()) {
    if (k != "host") j[k] = v;
  }
  return j;
}

struct HostRun {
  std::ostringstream out;
  std::ostringstream err;
  int rc = 0;
};

// The lines of `text`, each without its newline.
std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

int run_events(const std::vector<HostSpec>& hosts, const Options& o, std::ostream& out,
               std::ostream& err, TimeZone tz, std::size_t width) {
  std::mutex mu;  // one line at a time on the shared streams
  std::vector<int> rcs(hosts.size(), 0);
  std::vector<std::thread> threads;
  threads.reserve(hosts.size());
  for (std::size_t i = 0; i < hosts.size(); ++i) {
    threads.emplace_back([&, i] {
      const std::string& host = hosts[i].text;
      LineBuf out_buf([&](std::string_view line) {
        std::string text;
        if (o.json) {
          Json j = Json::parse(line, nullptr, /*allow_exceptions=*/false);
          text = j.is_object()
                     ? with_host(host, j).dump(-1, ' ', false, Json::error_handler_t::replace)
                     : std::string(line);
        } else {
          text = pad_right(host, width) + std::string(line);
        }
        const std::lock_guard lock(mu);
        out << text << '\n';
        out.flush();
      });
      LineBuf err_buf([&](std::string_view line) {
        const std::lock_guard lock(mu);
        err << fleet_error_line(host, line) << '\n';
        err.flush();
      });
      std::ostream host_out(&out_buf);
      std::ostream host_err(&err_buf);
      rcs[i] = run_on_host(hosts[i], o, host_out, host_err, tz);
    });
  }
  for (auto& t : threads) t.join();
  return std::any_of(rcs.begin(), rcs.end(), [](int rc) { return rc != 0; }) ? 1 : 0;
}

}  // namespace

std::string fleet_error_line(std::string_view host, std::string_view line) {
  constexpr std::string_view kPrefix = "mgmtctl: ";
  if (line.starts_with(kPrefix)) line.remove_prefix(kPrefix.size());
  return std::string(kPrefix) + std::string(host) + ": " + std::string(line);
}

int run_fleet(const std::vector<HostSpec>& hosts, const Options& o, std::ostream& out,
              std::ostream& err, TimeZone tz) {
  // The C library reads the time zone the first time a local time is asked for, and keeps
  // its name in memory it allocates then: done here, before the threads that format times,
  // rather than by the first of them while the others read it.
  ::tzset();
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  ::localtime_r(&now, &local);
  std::size_t width = 0;
  for (const auto& h : hosts) width = std::max(width, h.text.size());
  width += 2;  // the table's padding
  if (o.command == Command::events) return run_events(hosts, o, out, err, tz, width);

  // What each host runs: list asks for JSON whatever the user wants, as the merged table
  // is laid out from the entries of every host.
  Options each = o;
  if (o.command == Command::list) {
    each.json = true;
    each.ids_only = false;
    each.color = false;
  }
  std::vector<HostRun> runs(hosts.size());
  {
    std::vector<std::thread> threads;
    threads.reserve(hosts.size());
    for (std::size_t i = 0; i < hosts.size(); ++i) {
      threads.emplace_back(
          [&, i] { runs[i].rc = run_on_host(hosts[i], each, runs[i].out, runs[i].err, tz); });
    }
    for (auto& t : threads) t.join();
  }

  int rc = 0;
  std::string text;
  Json merged = Json::array();
  std::vector<HostEntry> table;
  for (std::size_t i = 0; i < hosts.size(); ++i) {
    const std::string& host = hosts[i].text;
    HostRun& run = runs[i];
    if (run.rc != 0) rc = 1;
    const std::string got = run.out.str();
    const bool json_out = o.json || o.command == Command::list;
    if (json_out && !got.empty()) {
      const Json j = Json::parse(got, nullptr, /*allow_exceptions=*/false);
      if (j.is_discarded()) {
        run.err << "mgmtctl: the answer is not JSON\n";
        rc = 1;
      } else if (o.command == Command::list && !o.json) {
        for (const auto& e : j) {
          HostEntry row{host, {}};
          row.entry.id = e.value("id", "");
          row.entry.name = e.value("name", "");
          row.entry.state = e.value("state", "");
          row.entry.pid = e.value("pid", std::int64_t{0});
          table.push_back(std::move(row));
        }
      } else if (j.is_array()) {
        for (const auto& e : j) merged.push_back(e.is_object() ? with_host(host, e) : e);
      } else {
        merged.push_back(j.is_object() ? with_host(host, j) : j);
      }
    } else if (!json_out) {
      if (o.command == Command::status) {
        if (!got.empty()) {
          if (!text.empty()) text += '\n';
          // format_status's value column: the width of its longest label and a space.
          text += pad_right("Host:", sizeof("Last error:")) + host + '\n' + got;
        }
      } else {
        for (const auto& line : lines_of(got)) text += pad_right(host, width) + line + '\n';
      }
    }
  }
  if (o.command == Command::list && !o.json) {
    if (o.ids_only) {
      for (const auto& r : table) text += r.host + ' ' + r.entry.id + '\n';
    } else {
      text = format_host_table(table, o.color);
    }
  } else if (o.json) {
    text = dump_pretty(merged);
  }
  out << text;
  out.flush();
  for (std::size_t i = 0; i < hosts.size(); ++i) {
    for (const auto& line : lines_of(runs[i].err.str())) {
      err << fleet_error_line(hosts[i].text, line) << '\n';
    }
  }
  err.flush();
  return rc;
}

}  // namespace mgmtctl
