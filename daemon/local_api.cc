#include "daemon/local_api.h"

#include <capnp/rpc-twoparty.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <kj/debug.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include "daemon/logging.h"
#include "daemon/service.h"

namespace synod::daemon {

namespace {

std::string errnoText(int error) {
  return std::strerror(error);
}

sockaddr_un unixAddress(const std::string& path) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.size() >= sizeof(address.sun_path)) {
    throw SocketError("socket path " + path + " is longer than " +
                      std::to_string(sizeof(address.sun_path) - 1) + " bytes");
  }
  std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
  return address;
}

// A socket file nobody accepts on is stale (its daemon crashed); one that accepts is live.
bool socketIsLive(const std::string& path) {
  sockaddr_un address = unixAddress(path);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw SocketError("socket(): " + errnoText(errno));
  int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  int error = errno;
  ::close(fd);
  if (rc == 0) return true;
  if (error == ECONNREFUSED) return false;
  throw SocketError("cannot tell whether " + path + " is in use: connect: " + errnoText(error));
}

gid_t lookupGroup(const std::string& group) {
  char* end = nullptr;
  unsigned long number = std::strtoul(group.c_str(), &end, 10);
  if (!group.empty() && end != nullptr && *end == '\0') return static_cast<gid_t>(number);
  struct group* entry = ::getgrnam(group.c_str());
  if (entry == nullptr) throw SocketError("socket_group: no group named \"" + group + "\"");
  return entry->gr_gid;
}

}  // namespace

int bindLocalSocket(const Config& config) {
  const std::string& path = config.socket;
  sockaddr_un address = unixAddress(path);

  std::filesystem::path parent = std::filesystem::path(path).parent_path();
  std::error_code ec;
  if (!parent.empty() && !std::filesystem::exists(parent, ec)) {
    if (::mkdir(parent.c_str(), 0755) != 0 && errno != EEXIST) {
      throw SocketError("cannot create the socket's directory " + parent.string() + ": " +
                        errnoText(errno));
    }
  }

  struct stat existing {};
  if (::lstat(path.c_str(), &existing) == 0) {
    if (!S_ISSOCK(existing.st_mode)) {
      throw SocketError(path + " exists and is not a socket; refusing to replace it");
    }
    if (socketIsLive(path)) {
      throw SocketError("another daemon is serving on " + path + "; refusing to take its socket");
    }
    logNotice("replacing stale socket ", path.c_str(), " left by a daemon that is gone");
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      throw SocketError("cannot remove stale socket " + path + ": " + errnoText(errno));
    }
  }

  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) throw SocketError("socket(): " + errnoText(errno));
  // Bind with a tight umask so the file is never more open than socket_mode, even briefly.
  mode_t oldMask = ::umask(0177);
  int rc = ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  int error = errno;
  ::umask(oldMask);
  if (rc != 0) {
    ::close(fd);
    throw SocketError("cannot bind " + path + ": " + errnoText(error));
  }
  try {
    if (!config.socketGroup.empty()) {
      if (::chown(path.c_str(), static_cast<uid_t>(-1), lookupGroup(config.socketGroup)) != 0) {
        throw SocketError("cannot give " + path + " to group " + config.socketGroup + ": " +
                          errnoText(errno));
      }
    }
    if (::chmod(path.c_str(), config.socketMode) != 0) {
      throw SocketError("cannot chmod " + path + ": " + errnoText(errno));
    }
    if (::listen(fd, SOMAXCONN) != 0) {
      throw SocketError("cannot listen on " + path + ": " + errnoText(errno));
    }
  } catch (...) {
    ::close(fd);
    ::unlink(path.c_str());
    throw;
  }
  return fd;
}

void unlinkOwnSocket(const std::string& path, ino_t boundInode) {
  struct stat now {};
  if (::lstat(path.c_str(), &now) == 0 && S_ISSOCK(now.st_mode) && now.st_ino == boundInode) {
    ::unlink(path.c_str());
  }
}

struct LocalApi::Connection {
  Connection(kj::Own<kj::AsyncIoStream> streamParam, capnp::Capability::Client bootstrap)
      : stream(kj::mv(streamParam)),
        network(*stream, capnp::rpc::twoparty::Side::SERVER),
        rpcSystem(capnp::makeRpcServer(network, kj::mv(bootstrap))) {}

  kj::Own<kj::AsyncIoStream> stream;
  capnp::TwoPartyVatNetwork network;
  capnp::RpcSystem<capnp::rpc::twoparty::VatId> rpcSystem;
};

LocalApi::LocalApi(Node& node, kj::LowLevelAsyncIoProvider& lowLevel, kj::Timer& timer,
                   int listenFd)
    : node_(node),
      timer_(timer),
      listener_(lowLevel.wrapListenSocketFd(listenFd, kj::LowLevelAsyncIoProvider::TAKE_OWNERSHIP)),
      tasks_(*this) {
  accepting_ = acceptLoop().eagerlyEvaluate([](kj::Exception&& exception) {
    logError("local API: accept loop ended: ", exception.getDescription());
  });
}

LocalApi::~LocalApi() {
  stopAccepting();
  closeAll();
}

kj::Promise<void> LocalApi::acceptLoop() {
  return listener_->accept().then(
      [this](kj::Own<kj::AsyncIoStream> stream) {
        serve(kj::mv(stream));
        return acceptLoop();
      },
      [this](kj::Exception&& exception) -> kj::Promise<void> {
        // Out of fds, or the like: say so and try again shortly rather than stop serving.
        logWarning("local API: accept failed: ", exception.getDescription());
        return timer_.afterDelay(100 * kj::MILLISECONDS).then([this]() { return acceptLoop(); });
      });
}

void LocalApi::serve(kj::Own<kj::AsyncIoStream> stream) {
  PeerCredentials caller = peerCredentials(*stream);
  capnp::Capability::Client bootstrap = newSynodBootstrap(node_, caller);
  connections_.push_back(kj::heap<Connection>(kj::mv(stream), kj::mv(bootstrap)));
  auto it = std::prev(connections_.end());
  tasks_.add(disconnectCanceler_.wrap((*it)->network.onDisconnect().then([this, it]() {
    // Destroy the connection outside the network's own callbacks.
    return kj::evalLater([this, it]() { connections_.erase(it); });
  })));
}

void LocalApi::stopAccepting() {
  accepting_ = nullptr;
  listener_ = nullptr;
}

void LocalApi::closeAll() {
  disconnectCanceler_.cancel("local API closed");
  connections_.clear();
}

void LocalApi::taskFailed(kj::Exception&& exception) {
  logWarning("local API: ", exception.getDescription());
}

}  // namespace synod::daemon
