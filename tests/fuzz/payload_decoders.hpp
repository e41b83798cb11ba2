// Shared by the fuzz targets: decode a payload as every message and check round trips.
#pragma once

#include <cstdlib>
#include <string>
#include <string_view>

#include "mgmt/commands.hpp"
#include "mgmt/messages.hpp"

namespace mgmt::fuzz {

template <class T>
void round_trip(std::string_view payload) {
  T first;
  if (!decode(payload, first).empty()) return;
  const std::string once = encode(first);
  T second;
  if (!decode(once, second).empty()) std::abort();  // we cannot read our own output
  if (encode(second) != once) std::abort();         // encoding is not stable
}

template <class T>
void decode_only(std::string_view payload) {
  T m;
  (void)decode(payload, m);
}

inline void decode_all(std::string_view payload) {
  decode_only<ListRequest>(payload);
  round_trip<ListResponse>(payload);
  round_trip<StatusRequest>(payload);
  round_trip<StatusResponse>(payload);
  round_trip<IdRequest>(payload);
  round_trip<LogsRequest>(payload);
  round_trip<LogsStream>(payload);
  round_trip<EventsSubscribe>(payload);
  round_trip<EventsStream>(payload);
  // The stock extra commands.
  round_trip<SignalRequest>(payload);
  round_trip<InfoRequest>(payload);
  round_trip<InfoResponse>(payload);
  round_trip<UpgradeResponse>(payload);
  round_trip<ReloadRequest>(payload);
  round_trip<ReloadResponse>(payload);
}

}  // namespace mgmt::fuzz
