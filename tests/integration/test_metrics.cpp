// The metrics plugin in a real mgmtd: scraped over HTTP with curl, parsed as the Prometheus
// text format (0.0.4) and checked against what the server and its processes are doing;
// `mgmtctl metrics` prints the same families; non-loopback addresses are refused.
#include <catch2/catch.hpp>

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "harness.hpp"
#include "wait.hpp"

using namespace mgmt;
using namespace mgmt::test;

namespace {

// ---------------------------------------------------------------------------------------
// A strict reader of the text exposition format: every line is a HELP, a TYPE or a sample;
// every sample belongs to a family whose TYPE came first.

struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

struct Exposition {
  std::map<std::string, std::string> types;  // family → counter|gauge|histogram|...
  std::vector<Sample> samples;
  std::vector<std::string> errors;

  // The value of the one sample with this name and (at least) these labels; NaN if none.
  double value(const std::string& name, const std::map<std::string, std::string>& labels = {}) const {
    for (const auto& s : samples) {
      if (s.name != name) continue;
      bool match = true;
      for (const auto& [k, v] : labels) {
        const auto it = s.labels.find(k);
        match = match && it != s.labels.end() && it->second == v;
      }
      if (match) return s.value;
    }
    return std::nan("");
  }
  std::vector<Sample> all(const std::string& name) const {
    std::vector<Sample> out;
    for (const auto& s : samples) {
      if (s.name == name) out.push_back(s);
    }
    return out;
  }
};

bool name_char(char c, bool first) {
  return std::isalpha(static_cast<unsigned char>(c)) || c == '_' || c == ':' ||
         (!first && std::isdigit(static_cast<unsigned char>(c)));
}

std::string family_of(const std::string& name, const std::map<std::string, std::string>& types) {
  for (const char* suffix : {"_bucket", "_sum", "_count"}) {
    const std::string s(suffix);
    if (name.size() > s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0) {
      const std::string base = name.substr(0, name.size() - s.size());
      const auto it = types.find(base);
      if (it != types.end() && (it->second == "histogram" || it->second == "summary")) return base;
    }
  }
  return name;
}

Exposition parse_exposition(const std::string& text) {
  Exposition ex;
  if (text.empty() || text.back() != '\n') ex.errors.push_back("does not end with a newline");
  std::istringstream in(text);
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    auto fail = [&](const std::string& why) {
      ex.errors.push_back("line " + std::to_string(n) + ": " + why + ": " + line);
    };
    if (line.empty()) continue;
    if (line[0] == '#') {
      std::istringstream f(line);
      std::string hash, kind, name, rest;
      f >> hash >> kind >> name;
      if (kind == "TYPE") {
        f >> rest;
        static const std::set<std::string> kTypes = {"counter", "gauge", "histogram", "summary",
                                                     "untyped"};
        if (!kTypes.count(rest)) fail("unknown type");
        if (ex.types.count(name)) fail("second TYPE for the family");
        ex.types[name] = rest;
      } else if (kind != "HELP") {
        fail("a comment that is neither HELP nor TYPE");
      }
      continue;
    }
    Sample s;
    std::size_t i = 0;
    while (i < line.size() && name_char(line[i], i == 0)) s.name += line[i++];
    if (s.name.empty()) {
      fail("no metric name");
      continue;
    }
    if (i < line.size() && line[i] == '{') {
      ++i;
      while (i < line.size() && line[i] != '}') {
        std::string key;
        while (i < line.size() && name_char(line[i], key.empty())) key += line[i++];
        if (key.empty() || i + 1 >= line.size() || line[i] != '=' || line[i + 1] != '"') {
          fail("bad label");
          break;
        }
        i += 2;
        std::string val;
        while (i < line.size() && line[i] != '"') {
          if (line[i] == '\\' && i + 1 < line.size()) {
            const char e = line[++i];
            val += e == 'n' ? '\n' : e;
            if (e != 'n' && e != '\\' && e != '"') fail("bad escape");
          } else {
            val += line[i];
          }
          ++i;
        }
        if (i >= line.size()) {
          fail("unterminated label value");
          break;
        }
        ++i;  // closing quote
        if (s.labels.count(key)) fail("label twice");
        s.labels[key] = val;
        if (i < line.size() && line[i] == ',') ++i;
      }
      if (i >= line.size() || line[i] != '}') {
        fail("unterminated labels");
        continue;
      }
      ++i;
    }
    if (i >= line.size() || line[i] != ' ') {
      fail("no space before the value");
      continue;
    }
    const std::string value = line.substr(i + 1);
    if (value == "+Inf") {
      s.value = INFINITY;
    } else {
      char* end = nullptr;
      s.value = std::strtod(value.c_str(), &end);
      if (value.empty() || *end != '\0') fail("value is not a number");
    }
    const std::string fam = family_of(s.name, ex.types);
    if (!ex.types.count(fam)) fail("sample before its family's TYPE");
    ex.samples.push_back(std::move(s));
  }
  return ex;
}

struct HttpReply {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
};

HttpReply curl(const std::vector<std::string>& args) {
  std::vector<std::string> argv{"/usr/bin/curl", "-sS", "-i", "--max-time", "10"};
  argv.insert(argv.end(), args.begin(), args.end());
  const auto r = run(argv);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  HttpReply out;
  const auto split = r.out.find("\r\n\r\n");
  REQUIRE(split != std::string::npos);
  out.body = r.out.substr(split + 4);
  std::istringstream head(r.out.substr(0, split));
  std::string line;
  std::getline(head, line);  // HTTP/1.1 200 OK
  out.status = std::atoi(line.substr(line.find(' ') + 1).c_str());
  while (std::getline(head, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string name = line.substr(0, colon);
    for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    out.headers[name] = line.substr(line.find_first_not_of(' ', colon + 1));
  }
  return out;
}

std::string state_of(const Mgmtd& d, const std::string& id) {
  RawConn c(d.socket());
  c.send(to_byte(MsgType::StatusRequest), encode(StatusRequest{id}));
  const auto f = c.read();
  REQUIRE(f);
  return as_status(*f).entry.state;
}

// The address the plugin listens on, from its own answer (port 0 picks a free one).
std::string metrics_address(const Mgmtd& d) {
  std::string addr;
  wait_until([&] {
    const auto r = d.ctl({"call", "0xAE"});
    if (r.exit_code != 0) return false;
    addr = nlohmann::json::parse(r.out).value("listen", "");
    return !addr.empty();
  });
  return addr;
}

const std::string kConfig =
    "backend:\n"
    "  plugin: process\n"
    "  config:\n"
    "    processes:\n" +
    ticker_processes("ticker") +
    "      - id: crashy\n"
    "        name: 'Crashy \"the\" \\ one'\n"
    "        command: /bin/sh\n"
    "        args: [-c, 'exit 3']\n"
    "        restart_backoff: 1h\n"
    "commands:\n"
    "  0xAC: info\n"
    "  0xAE: {plugin: metrics, right: read, config: {listen: \"127.0.0.1:0\"}}\n";

}  // namespace

TEST_CASE("metrics: a curl scrape parses as Prometheus text and reflects the server",
          "[metrics]") {
  Mgmtd d(kConfig);
  REQUIRE(wait_until([&] { return state_of(d, "ticker") == "running"; }));
  REQUIRE(wait_until([&] { return state_of(d, "crashy") == "restarting"; }));
  for (int i = 0; i < 3; ++i) REQUIRE(d.ctl({"list"}).exit_code == 0);

  const std::string addr = metrics_address(d);
  INFO(d.log());
  REQUIRE(addr.rfind("127.0.0.1:", 0) == 0);
  CHECK_THAT(d.log(), Catch::Contains("serving metrics on http://" + addr + "/metrics"));

  auto reply = curl({"http://" + addr + "/metrics"});
  CHECK(reply.status == 200);
  CHECK(reply.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8");
  const auto ex = parse_exposition(reply.body);
  INFO(reply.body);
  CHECK(ex.errors.empty());
  for (const auto& e : ex.errors) UNSCOPED_INFO(e);

  // Processes.
  CHECK(ex.value("mgmtd_processes") == 2);
  CHECK(ex.value("mgmtd_process_state", {{"id", "ticker"}, {"state", "running"}}) == 1);
  double ticker_states = 0;
  for (const auto& s : ex.all("mgmtd_process_state")) {
    if (s.labels.at("id") == "ticker") ticker_states += s.value;
  }
  CHECK(ticker_states == 1);  // exactly one state is set
  CHECK(ex.value("mgmtd_process_state", {{"id", "crashy"}, {"state", "restarting"}}) == 1);
  CHECK(ex.value("mgmtd_process_up", {{"id", "ticker"}}) == 1);
  CHECK(ex.value("mgmtd_process_up", {{"id", "crashy"}}) == 0);
  CHECK(ex.value("mgmtd_process_restarts_total", {{"id", "crashy"}}) >= 1);
  CHECK(ex.value("mgmtd_process_restarts_total", {{"id", "ticker"}}) == 0);
  CHECK(ex.value("mgmtd_process_resident_memory_bytes", {{"id", "ticker"}}) > 0);
  CHECK(ex.value("mgmtd_process_uptime_seconds", {{"id", "ticker"}}) >= 0);
  CHECK(ex.value("mgmtd_process_uptime_seconds", {{"id", "crashy"}}) == 0);
  CHECK(ex.value("mgmtd_process_start_time_seconds", {{"id", "ticker"}}) > 1.7e9);
  // A label value with quotes and a backslash survives the escaping.
  CHECK(ex.value("mgmtd_process_info", {{"id", "crashy"}, {"name", "Crashy \"the\" \\ one"}}) == 1);
  CHECK(ex.types.at("mgmtd_process_restarts_total") == "counter");
  CHECK(ex.types.at("mgmtd_process_resident_memory_bytes") == "gauge");

  // The server.
  CHECK(ex.value("mgmtd_build_info", {{"version", MGMT_PROJECT_VERSION}}) == 1);
  CHECK(ex.value("mgmtd_uptime_seconds") >= 0);
  CHECK(ex.value("mgmtd_connections_open") >= 1);  // the scrape's own request
  CHECK(ex.value("mgmtd_connections_accepted_total") >= 5);
  CHECK(ex.value("mgmtd_stream_slow_readers_dropped_total") == 0);
  CHECK(ex.value("mgmtd_stream_frames_spilled_total") == 0);
  CHECK(ex.value("mgmtd_stream_frames_dropped_total") == 0);
  CHECK(ex.types.at("mgmtd_stream_frames_dropped_total") == "counter");
  CHECK(ex.value("mgmtd_connections_refused_total") == 0);
  CHECK(ex.value("mgmtd_requests_total", {{"type", "0xa0"}, {"handler", "list"}, {"request", "list"}}) >= 3);
  CHECK(ex.value("mgmtd_requests_total", {{"type", "0xa2"}}) >= 2);
  CHECK(ex.value("mgmtd_requests_total", {{"type", "0xae"}, {"handler", "metrics"}}) >= 1);
  CHECK(ex.value("mgmtd_requests_total", {{"type", "0xac"}, {"handler", "info"}}) == 0);
  CHECK(ex.types.at("mgmtd_requests_total") == "counter");

  // The latency histogram: cumulative buckets ending in +Inf == _count.
  REQUIRE(ex.types.at("mgmtd_request_duration_seconds") == "histogram");
  const auto buckets = ex.all("mgmtd_request_duration_seconds_bucket");
  REQUIRE(buckets.size() == 15);
  double prev_le = 0, prev = 0;
  for (const auto& b : buckets) {
    const double le = b.labels.at("le") == "+Inf" ? INFINITY : std::stod(b.labels.at("le"));
    CHECK(le > prev_le);
    CHECK(b.value >= prev);
    prev_le = le;
    prev = b.value;
  }
  CHECK(buckets.front().labels.at("le") == "0.00005");
  CHECK(buckets.back().labels.at("le") == "+Inf");
  const double count = ex.value("mgmtd_request_duration_seconds_count");
  CHECK(count >= 5);
  CHECK(buckets.back().value == count);
  CHECK(ex.value("mgmtd_request_duration_seconds_sum") > 0);

  // Scrapes are counted; a second one sees more requests.
  const auto again = parse_exposition(curl({"http://" + addr + "/metrics"}).body);
  CHECK(again.value("mgmtd_metrics_scrapes_total") > ex.value("mgmtd_metrics_scrapes_total"));
  CHECK(again.value("mgmtd_request_duration_seconds_count") > count);

  // Elsewhere: 404; another method: 405; HEAD: headers only.
  CHECK(curl({"http://" + addr + "/"}).status == 404);
  CHECK(curl({"http://" + addr + "/metricsx"}).status == 404);
  auto post = curl({"-X", "POST", "http://" + addr + "/metrics"});
  CHECK(post.status == 405);
  CHECK(post.headers["allow"] == "GET, HEAD");
  auto head = curl({"-I", "http://" + addr + "/metrics"});
  CHECK(head.status == 200);
  CHECK(head.body.empty());
  CHECK(std::stoul(head.headers["content-length"]) > 1000);
}

TEST_CASE("metrics: mgmtctl metrics prints the exposition", "[metrics]") {
  Mgmtd d(kConfig);
  REQUIRE(wait_until([&] { return state_of(d, "ticker") == "running"; }));
  const auto r = d.ctl({"metrics"});
  INFO(r.err);
  CHECK(r.exit_code == 0);
  const auto ex = parse_exposition(r.out);
  CHECK(ex.errors.empty());
  CHECK(ex.value("mgmtd_process_up", {{"id", "ticker"}}) == 1);
  CHECK(ex.value("mgmtd_requests_total", {{"type", "0xae"}}) == 1);  // this very request

  // On a type nothing serves: the server's answer, exit 1.
  const auto other = d.ctl({"metrics", "--type", "0xAF"});
  CHECK(other.exit_code == 1);
  CHECK_THAT(other.err, Catch::Contains("unknown request type 0xaf"));
}

TEST_CASE("metrics: only loopback addresses unless allow_remote", "[metrics]") {
  TempDir dir;
  auto check = [&](const std::string& metrics_config) {
    dir.write("mgmt.yaml",
              "server: {socket: " + dir.file("s.sock") + ", write_hint: false}\n"
              "backend: {plugin: process}\n"
              "commands:\n"
              "  0xAE: {plugin: metrics, config: " + metrics_config + "}\n");
    return run({MGMTD_BIN, "--check", "-c", dir.file("mgmt.yaml")});
  };
  auto r = check("{listen: \"0.0.0.0:9464\"}");
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.err, Catch::Contains("not a loopback address") && Catch::Contains("allow_remote"));
  r = check("{listen: \"[::]:9464\"}");
  CHECK(r.exit_code == 2);
  r = check("{listen: \"0.0.0.0:0\", allow_remote: true}");
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.out, Catch::Contains("0xae: metrics 1.0.0"));
  CHECK_THAT(r.err, !Catch::Contains("metrics on"));  // --check never opens the port
  r = check("{listen: \"[::1]:0\"}");
  CHECK(r.exit_code == 0);
  r = check("{listen: \"localhost:0\"}");
  CHECK(r.exit_code == 0);
  r = check("{listen: off}");
  CHECK(r.exit_code == 0);
  r = check("{listen: \"nowhere:1\"}");
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.err, Catch::Contains("is not an IP address"));
  r = check("{listen: \"127.0.0.1:99999\"}");
  CHECK(r.exit_code == 2);
  r = check("{listen: \"127.0.0.1:0\", port: 1}");
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.err, Catch::Contains("unknown config key \"port\""));
}

TEST_CASE("metrics: an address in use is retried until it is free", "[metrics]") {
  // A port held by someone else when mgmtd starts, freed later: the plugin binds it then.
  TempDir dir;
  Background hold({"/usr/bin/python3", "-c",
                   "import socket,sys,os,time\n"
                   "s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen()\n"
                   "print(s.getsockname()[1], flush=True)\n"
                   "while not os.path.exists(sys.argv[1]): time.sleep(0.01)\n",
                   dir.file("release")});
  std::string port;
  REQUIRE(wait_until([&] {
    port = hold.out();
    return !port.empty() && port.back() == '\n';
  }));
  port.pop_back();
  Mgmtd d("backend: {plugin: process}\n"
          "commands:\n"
          "  0xAE: {plugin: metrics, config: {listen: \"127.0.0.1:" + port + "\"}}\n");
  REQUIRE(wait_until([&] { return d.log().find("cannot serve metrics on 127.0.0.1:" + port) != std::string::npos; }));
  dir.write("release", "");
  CHECK(hold.wait().exit_code == 0);
  CHECK(wait_until([&] { return d.log().find("serving metrics on http://127.0.0.1:" + port) != std::string::npos; }));
  CHECK(curl({"http://127.0.0.1:" + port + "/metrics"}).status == 200);
}

TEST_CASE("metrics: a reload that replaces the exporter stops the old one", "[metrics][reload]") {
  const std::string head = "backend: {plugin: process}\ncommands:\n  0xAD: reload\n";
  Mgmtd d(head + "  0xAE: {plugin: metrics, config: {listen: \"127.0.0.1:0\"}}\n");
  const std::string addr = metrics_address(d);
  REQUIRE(addr.rfind("127.0.0.1:", 0) == 0);
  const std::string port = addr.substr(addr.find(':') + 1);
  REQUIRE(curl({"http://" + addr + "/metrics"}).status == 200);
  const auto threads = [&] {
    std::istringstream status(read_file("/proc/" + std::to_string(d.pid()) + "/status"));
    for (std::string line; std::getline(status, line);) {
      if (line.rfind("Threads:", 0) == 0) return std::stoi(line.substr(8));
    }
    return -1;
  };
  const int baseline = threads();
  const auto answers = [&] {
    return run({"/usr/bin/curl", "-sS", "--max-time", "5", "http://" + addr + "/metrics"})
               .exit_code == 0;
  };
  const auto reconfigure = [&](const std::string& listen) {
    d.dir().write("mgmt.yaml", "server:\n  socket: " + d.socket() + "\n  write_hint: false\n" +
                                   head + "  0xAE: {plugin: metrics, config: {listen: " + listen +
                                   "}}\n");
    const auto r = d.ctl({"reload"});
    INFO(r.out << r.err);
    REQUIRE(r.exit_code == 0);
  };
  for (int cycle = 0; cycle < 3; ++cycle) {
    // Switched off: the replaced exporter is destroyed, so nothing answers on its port.
    reconfigure("off");
    INFO(d.log());
    CHECK(wait_until([&] { return !answers(); }));
    // Back on the same port: the new exporter binds it (the old one let it go).
    reconfigure("\"127.0.0.1:" + port + "\"");
    CHECK(wait_until([&] { return answers(); }));
  }
  // No exporter thread of a replaced plugin lingers.
  CHECK(wait_until([&] { return threads() == baseline; }));
}
