// Small helpers shared by handler plugins.
#pragma once

#include <cstdint>
#include <cstdio>
#include <ctime>
#include <string>

#include "mgmt/handler.hpp"
#include "mgmt/messages.hpp"
#include "mgmt/wire.hpp"

namespace mgmt {

// Answers with the protocol's error reply (a StatusResponse with `err`).
inline void reply_error(Exchange& ex, std::string_view err) {
  ex.reply(to_byte(MsgType::StatusResponse), error_reply(err));
}

// Decodes the request payload into `req`; on failure answers with an error that says what
// was wrong and returns false. The connection stays usable either way.
template <class Request>
bool decode_request(Exchange& ex, Request& req) {
  const std::string err = decode(ex.payload(), req);
  if (err.empty()) return true;
  reply_error(ex, "cannot decode the " + type_hex(ex.type()) + " request: " + err);
  return false;
}

// `ns` (unix nanoseconds) as RFC 3339 UTC with milliseconds, "2026-11-25T17:41:09.156Z":
// how stall notices name the time of their first loss.
inline std::string rfc3339(std::int64_t ns) {
  const std::time_t secs = static_cast<std::time_t>(ns / 1000000000);
  std::tm tm{};
  ::gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>((ns % 1000000000) / 1000000));
  return buf;
}

}  // namespace mgmt
