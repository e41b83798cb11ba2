// The one place Boost.Asio is included from (it is expensive to compile).
#pragma once

#include <utility>  // Boost 1.74's Asio needs std::exchange declared first under C++20.

#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>

namespace mgmt {
namespace asio = boost::asio;
}
