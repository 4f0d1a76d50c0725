// The local API socket: binding it safely, accepting connections, and one Cap'n Proto RPC system
// per connection with its own bootstrap that knows the caller's SO_PEERCRED.
//
// (capnp::TwoPartyServer::listen shares one bootstrap among all connections and so cannot tell
// callers apart; connection-bound leases need that.)
#pragma once

#include <kj/async-io.h>
#include <kj/async.h>

#include <sys/types.h>

#include <list>
#include <stdexcept>
#include <string>

#include "daemon/config.h"
#include "daemon/node.h"

namespace synod::daemon {

// Why the socket could not be bound: the daemon prints it and exits 1.
class SocketError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Binds the Unix socket at `config.socket` with socket_mode and socket_group, and listens.
// A stale socket file (nobody accepts on it: a crashed daemon's) is replaced; a live daemon's
// socket is never stolen, nor is any file that is not a socket. Creates the parent directory
// (0755) if missing. Returns the listening fd (close-on-exec, non-blocking). Throws SocketError.
int bindLocalSocket(const Config& config);

// Removes the socket file at `path` if it is still the one this daemon bound (same inode).
void unlinkOwnSocket(const std::string& path, ino_t boundInode);

class LocalApi : private kj::TaskSet::ErrorHandler {
 public:
  // Takes ownership of `listenFd` (bound elsewhere: by bindLocalSocket or by systemd).
  LocalApi(Node& node, kj::LowLevelAsyncIoProvider& lowLevel, kj::Timer& timer, int listenFd);
  ~LocalApi();

  // Stops accepting; existing connections stay until closeAll().
  void stopAccepting();
  // Drops every connection (and so every capability apps held).
  void closeAll();
  size_t connectionCount() const { return connections_.size(); }

 private:
  struct Connection;
  kj::Promise<void> acceptLoop();
  void serve(kj::Own<kj::AsyncIoStream> stream);

  void taskFailed(kj::Exception&& exception) override;

  Node& node_;
  kj::Timer& timer_;
  kj::Own<kj::ConnectionReceiver> listener_;
  std::list<kj::Own<Connection>> connections_;
  kj::Promise<void> accepting_ = nullptr;  // the accept loop; dropping it stops accepting
  kj::Canceler disconnectCanceler_;        // watchers that erase connections_ entries
  kj::TaskSet tasks_;
};

}  // namespace synod::daemon
