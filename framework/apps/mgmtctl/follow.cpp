#include "follow.hpp"

#include <poll.h>

#include <cerrno>
#include <stdexcept>

namespace mgmtctl {

int follow_both_streams(mgmt::Client& first, mgmt::Client& second, mgmt::LogsRequest req,
                        std::ostream& out, std::ostream& err,
                        const std::function<mgmt::Client*(std::uint8_t s)>& reopen) {
  mgmt::Client* conns[2] = {&first, &second};
  req.f = true;
  for (std::uint8_t s = 0; s < 2; ++s) {
    req.s = s;
    conns[s]->send(mgmt::to_byte(mgmt::MsgType::LogsRequest), mgmt::encode(req));
  }
  bool open[2] = {true, true};
  std::int64_t pos[2] = {-1, -1};  // where each stream resumes (see follow.hpp)
  bool reported = false;
  int rc = 0;
  while (open[0] || open[1]) {
    pollfd fds[2];
    nfds_t n = 0;
    int which[2] = {0, 0};
    for (int s = 0; s < 2; ++s) {
      if (!open[s]) continue;
      fds[n] = {conns[s]->fd(), POLLIN, 0};
      which[n++] = s;
    }
    if (::poll(fds, n, -1) < 0) {
      if (errno == EINTR) continue;
      throw std::runtime_error("poll failed while following logs");
    }
    for (nfds_t i = 0; i < n; ++i) {
      if ((fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      const int s = which[i];
      std::optional<mgmt::Frame> f;
      try {
        f = conns[s]->receive();  // one whole frame: the server writes frames whole
      } catch (const std::exception&) {
        if (pos[s] < 0) throw;
      }
      if (!f) {
        mgmt::Client* again = pos[s] >= 0 && reopen ? reopen(static_cast<std::uint8_t>(s)) : nullptr;
        if (again == nullptr) {
          open[s] = false;
          continue;
        }
        conns[s] = again;
        mgmt::LogsRequest resume = req;
        resume.s = static_cast<std::uint8_t>(s);
        resume.from = pos[s];
        again->send(mgmt::to_byte(mgmt::MsgType::LogsRequest), mgmt::encode(resume));
        continue;
      }
      if (f->header.type != mgmt::to_byte(mgmt::MsgType::LogsStream)) {
        mgmt::StatusResponse st;
        if (f->header.type == mgmt::to_byte(mgmt::MsgType::StatusResponse) &&
            mgmt::decode(f->payload, st).empty() && !st.err.empty()) {
          if (!reported) err << st.err << '\n';
          reported = true;
          rc = 1;
          open[s] = false;
          continue;
        }
        throw std::runtime_error("protocol error from " + first.path() + ": got message type " +
                                 mgmt::type_hex(f->header.type) + " while following logs");
      }
      mgmt::LogsStream m;
      if (auto e = mgmt::decode(f->payload, m); !e.empty()) {
        throw std::runtime_error("protocol error from " + first.path() +
                                 ": cannot decode 0xa5 payload: " + e);
      }
      if (!m.err.empty() || m.s > 1) {
        // An error (ours in `err`, a Go server's in `d`): the same for both streams.
        const std::string text = m.err.empty() ? m.d : m.err;
        if (!reported) {
          err << text;
          if (text.empty() || text.back() != '\n') err << '\n';
          err.flush();
        }
        reported = true;
        rc = 1;
        open[s] = false;
        continue;
      }
      std::ostream& sink = s == 0 ? out : err;
      sink.write(m.d.data(), static_cast<std::streamsize>(m.d.size()));
      sink.flush();
      if (m.pos >= 0) pos[s] = m.pos;
      if (m.eof) open[s] = false;
    }
  }
  return rc;
}

}  // namespace mgmtctl
