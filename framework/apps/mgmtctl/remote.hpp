// Where mgmtctl's requests go: a local socket, or a remote one reached the way
// `docker -H ssh://` does it, by running `ssh HOST mgmtctl dial-stdio` and speaking the
// protocol over ssh's stdin and stdout. The ssh program, its options and keys are the
// user's own; mgmtctl only builds the command line and explains its failures.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "mgmt/client.hpp"

namespace mgmtctl {

// One --host value, parsed.
struct HostSpec {
  enum class Kind { local, ssh };
  Kind kind = Kind::local;
  std::string text;  // as the user wrote it: the HOST column and the JSON "host" key
  // ssh:
  std::string user;              // "" = ssh's own default (its config, then the local user)
  std::string host;              // a name or an address; IPv6 without its brackets
  std::optional<unsigned> port;  // unset = ssh's own default
  // ssh: the remote socket ("" = the remote mgmtctl discovers it); local: the socket.
  std::string path;
  // The host as messages name it: [user@]host[:port] for ssh ("[::1]:2222" bracketed),
  // the socket path for a local socket.
  std::string where() const;
};

// ssh://[user@]host[:port][/path/to/manager.sock] or unix:///path/to/manager.sock.
// nullopt with `error` set (one line: what is wrong and the accepted forms) otherwise.
std::optional<HostSpec> parse_host(const std::string& text, std::string& error);

// A hosts file: one host per line; blank lines and everything after a '#' ignored,
// surrounding blanks trimmed. Returns the host texts in order (not yet parsed).
std::vector<std::string> parse_hosts_file(const std::string& content);

// Splits on runs of blanks as a shell splits an unquoted word list (no quotes, no
// escapes): how MGMT_SSH_COMMAND is read.
std::vector<std::string> split_words(const std::string& s);

// `s` as one word for the remote shell: unchanged when it is made of characters no shell
// treats specially, else in single quotes.
std::string shell_quote(const std::string& s);

// What runs ssh: the program and its options (MGMT_SSH_COMMAND, default "ssh") and the
// remote mgmtctl (MGMT_REMOTE_MGMTCTL, default "mgmtctl", put on the remote command line
// as it is, so "sudo -n mgmtctl" works too).
struct SshSettings {
  std::vector<std::string> command{"ssh"};
  std::string remote_mgmtctl = "mgmtctl";
  // From the environment; unset or empty variables keep the defaults.
  static SshSettings from_env();
};

// The argv of the ssh process for `h`:
//   <command...> [-p PORT] [user@]host -- <remote mgmtctl> dial-stdio [--socket PATH]
std::vector<std::string> ssh_argv(const HostSpec& h, const SshSettings& s);

// One open connection to a server, local or through ssh. For ssh it owns the ssh process
// and always reaps it.
class Connection {
 public:
  // Connects; throws std::runtime_error (saying which step failed) when it cannot.
  static Connection open(const HostSpec& h, const SshSettings& s = SshSettings::from_env());
  Connection(Connection&& o) noexcept;
  Connection& operator=(Connection&&) = delete;
  Connection(const Connection&) = delete;
  ~Connection();

  mgmt::Client& client() { return *client_; }
  bool is_ssh() const noexcept { return pid_ > 0; }

  // Once a request failed or a stream ended: when the ssh side has closed, waits for ssh
  // to exit and explains a failure of the transport, "" when there was none (ssh still
  // running, or it exited 0, or a local socket). The explanations:
  //   255: "ssh to HOST failed: <ssh's last stderr line>"
  //   127: "mgmtctl not found on HOST (...)"
  //   1:   "no mgmtd on HOST: <dial-stdio's reason>"
  std::string transport_error();
  // Ends the ssh process now (SIGKILL) and reaps it.
  void kill();

 private:
  Connection() = default;
  void reap(int timeout_ms);
  std::string explain(int status) const;

  std::optional<mgmt::Client> client_;
  pid_t pid_ = -1;
  int stderr_fd_ = -1;  // a memfd holding ssh's stderr
  std::string where_;
  std::optional<int> status_;  // ssh's wait status once reaped
};

// `mgmtctl dial-stdio`: connects to `socket`, then copies stdin to the socket and the
// socket to stdout until the server closes. stdin's end half-closes the socket (the
// server's remaining answers still go out). Returns the exit code: 0 when the server
// closed, 1 when the connection failed (the reason on `err`).
int dial_stdio(const std::string& socket, std::ostream& err);

}  // namespace mgmtctl
