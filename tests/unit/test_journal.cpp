// log_journal: the native protocol's encoding, the cutting of output into lines, and the
// sending end against a journal socket of the test's own.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "journal.hpp"
#include "journal_socket.hpp"
#include "process_fixture.hpp"

using mgmt::process::encode_journal_entry;
using mgmt::process::journal_lines;
using mgmt::process::JournalEntry;
using mgmt::process::JournalSink;
using mgmt::process::kJournalLineMax;
using mgmt::test::JournalSocket;
using mgmt::test::parse_journal_entry;
using mgmt::test::TempDir;

namespace {

std::vector<std::string> cut(std::string& partial, const std::vector<std::string>& chunks) {
  std::vector<std::string> lines;
  for (const auto& c : chunks) {
    journal_lines(partial, c, [&](std::string_view l) { lines.emplace_back(l); });
  }
  return lines;
}

}  // namespace

TEST_CASE("journal: an entry is encoded with the native protocol's fields", "[journal]") {
  JournalEntry e;
  e.message = "GET / 200";
  e.priority = 3;
  e.identifier = "web";
  e.stream = "stderr";
  e.pid = 4242;
  const std::string d = encode_journal_entry(e);
  CHECK(d ==
        "MESSAGE=GET / 200\nPRIORITY=3\nSYSLOG_IDENTIFIER=web\nSYSLOG_PID=4242\n"
        "MGMT_PROCESS=web\nMGMT_STREAM=stderr\n");
  // A value with a newline takes the binary form: name, size (64-bit LE), bytes.
  e.message = "two\nlines";
  e.pid = 0;
  const std::string b = encode_journal_entry(e);
  CHECK(b.rfind(std::string("MESSAGE\n") + std::string("\x09\0\0\0\0\0\0\0", 8) + "two\nlines\n",
                0) == 0);
  CHECK(b.find("SYSLOG_PID") == std::string::npos);  // no pid: not sent
  const auto f = parse_journal_entry(b);
  REQUIRE(f);
  CHECK(f->at("MESSAGE") == "two\nlines");
  CHECK(f->at("PRIORITY") == "3");
}

TEST_CASE("journal: output is cut into lines across chunks, long lines into pieces",
          "[journal]") {
  std::string partial;
  CHECK(cut(partial, {"one\ntw", "o\n", "\nthr"}) == std::vector<std::string>{"one", "two", ""});
  CHECK(partial == "thr");
  CHECK(cut(partial, {"ee\n"}) == std::vector<std::string>{"three"});
  CHECK(partial.empty());

  // A line of 2.5 × the maximum: two full pieces, then the rest once its newline comes.
  const std::string long_line(kJournalLineMax * 5 / 2, 'x');
  auto pieces = cut(partial, {long_line.substr(0, 1000), long_line.substr(1000)});
  REQUIRE(pieces.size() == 2);
  CHECK(pieces[0].size() == kJournalLineMax);
  CHECK(pieces[1].size() == kJournalLineMax);
  CHECK(partial.size() == long_line.size() - 2 * kJournalLineMax);
  pieces = cut(partial, {"\nnext\n"});
  REQUIRE(pieces.size() == 2);
  CHECK(pieces[0].size() == long_line.size() - 2 * kJournalLineMax);
  CHECK(pieces[1] == "next");
  // Exactly the maximum without a newline: sent as it is reached.
  CHECK(cut(partial, {std::string(kJournalLineMax, 'y')}).size() == 1);
  CHECK(partial.empty());
}

TEST_CASE("journal: the sink sends to the socket, says why it cannot, never blocks",
          "[journal]") {
  TempDir dir;
  const std::string path = dir.file("socket");
  JournalSink sink(path);
  JournalEntry e;
  e.message = "hello";
  e.identifier = "app";
  e.stream = "stdout";
  e.pid = 7;
  std::string why;
  // No journal yet: a failure naming the socket.
  CHECK(sink.send(e, why) == JournalSink::Result::failed);
  CHECK_THAT(why, Catch::StartsWith(path + ": ") && Catch::Contains("No such file"));

  JournalSocket journal(path);
  REQUIRE(sink.send(e, why) == JournalSink::Result::sent);
  auto got = journal.next();
  REQUIRE(got);
  CHECK(got->at("MESSAGE") == "hello");
  CHECK(got->at("PRIORITY") == "6");
  CHECK(got->at("SYSLOG_IDENTIFIER") == "app");
  CHECK(got->at("SYSLOG_PID") == "7");
  CHECK(got->at("MGMT_PROCESS") == "app");
  CHECK(got->at("MGMT_STREAM") == "stdout");

  // A journal that does not read: the sink reports it full instead of blocking, and what
  // was sent before arrives whole and in order.
  std::size_t sent = 0;
  bool full = false;
  for (int i = 0; i < 200000 && !full; ++i) {
    const std::string m = "line " + std::to_string(i);
    e.message = m;
    const auto r = sink.send(e, why);
    REQUIRE(r != JournalSink::Result::failed);
    full = r == JournalSink::Result::full;
    sent += r == JournalSink::Result::sent ? 1 : 0;
  }
  CHECK(full);
  REQUIRE(sent > 0);
  for (std::size_t i = 0; i < sent; ++i) {
    auto m = journal.next(std::chrono::seconds(5));
    REQUIRE(m);
    REQUIRE(m->at("MESSAGE") == "line " + std::to_string(i));
  }
}
