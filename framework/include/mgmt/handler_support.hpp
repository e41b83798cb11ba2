// Small helpers shared by handler plugins.
#pragma once

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

}  // namespace mgmt
