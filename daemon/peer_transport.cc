#include "daemon/peer_transport.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <kj/async-io.h>
#include <kj/debug.h>
#include <kj/io.h>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <random>
#include <set>
#include <utility>
#include <vector>

namespace synod::daemon {

using election::MemberIndex;

namespace {

constexpr uint NEW_FD_FLAGS = kj::LowLevelAsyncIoProvider::TAKE_OWNERSHIP |
                              kj::LowLevelAsyncIoProvider::ALREADY_CLOEXEC |
                              kj::LowLevelAsyncIoProvider::ALREADY_NONBLOCK;

// A Hello is a few dozen bytes; an unidentified connection never makes this member buffer more.
constexpr size_t MAX_HELLO_BYTES = size_t(64) << 10;
// Accepted connections still waiting for their Hello; more are closed at once.
constexpr size_t MAX_PENDING_HANDSHAKES = 64;
// Read buffer of a connection between large frames.
constexpr size_t READ_BUFFER_WORDS = 8192;  // 64 KiB
// One writev() carries at most this much of a peer's queue.
constexpr size_t WRITE_BATCH_BYTES = size_t(4) << 20;
constexpr size_t WRITE_BATCH_MESSAGES = 4096;
constexpr size_t MAX_LOG_KEYS = 1024;

// Dead-peer detection: an idle connection is probed after 2 s, then every 1 s, and dropped after
// 3 unanswered probes; unacknowledged data fails the connection after 10 s. A restarted host
// answers the first probe with a reset.
constexpr int KEEPALIVE_IDLE_S = 2;
constexpr int KEEPALIVE_INTERVAL_S = 1;
constexpr int KEEPALIVE_PROBES = 3;
constexpr unsigned USER_TIMEOUT_MS = 10000;

std::string describeAddress(const struct sockaddr* address, socklen_t length, bool withPort) {
  char text[INET6_ADDRSTRLEN] = {};
  switch (address->sa_family) {
    case AF_INET: {
      if (length < sizeof(sockaddr_in)) break;
      auto* in = reinterpret_cast<const sockaddr_in*>(address);
      inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text));
      return withPort ? std::string(text) + ":" + std::to_string(ntohs(in->sin_port)) : text;
    }
    case AF_INET6: {
      if (length < sizeof(sockaddr_in6)) break;
      auto* in6 = reinterpret_cast<const sockaddr_in6*>(address);
      inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof(text));
      return withPort ? "[" + std::string(text) + "]:" + std::to_string(ntohs(in6->sin6_port))
                      : text;
    }
    default:
      break;
  }
  return "(unknown address)";
}

std::string remoteOf(kj::AsyncIoStream& stream, bool withPort) {
  struct sockaddr_storage address = {};
  uint length = sizeof(address);
  KJ_IF_MAYBE (exception, kj::runCatchingExceptions([&] {
                 stream.getpeername(reinterpret_cast<struct sockaddr*>(&address), &length);
               })) {
    return "(unknown address)";
  }
  return describeAddress(reinterpret_cast<struct sockaddr*>(&address), length, withPort);
}

void setOption(kj::AsyncIoStream& stream, int level, int option, int value) {
  stream.setsockopt(level, option, &value, sizeof(value));
}

// TCP_NODELAY (a consensus message must not wait for Nagle) and dead-peer detection.
void tuneSocket(kj::AsyncIoStream& stream) {
  setOption(stream, IPPROTO_TCP, TCP_NODELAY, 1);
  setOption(stream, SOL_SOCKET, SO_KEEPALIVE, 1);
  setOption(stream, IPPROTO_TCP, TCP_KEEPIDLE, KEEPALIVE_IDLE_S);
  setOption(stream, IPPROTO_TCP, TCP_KEEPINTVL, KEEPALIVE_INTERVAL_S);
  setOption(stream, IPPROTO_TCP, TCP_KEEPCNT, KEEPALIVE_PROBES);
  setOption(stream, IPPROTO_TCP, TCP_USER_TIMEOUT, USER_TIMEOUT_MS);
}

// A non-blocking listening socket on `address`, or a KJ exception naming it.
int bindListen(const PeerAddress& address) {
  struct addrinfo hints = {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  struct addrinfo* found = nullptr;
  std::string port = std::to_string(address.port);
  int status = getaddrinfo(address.host.empty() ? nullptr : address.host.c_str(), port.c_str(),
                           &hints, &found);
  if (status != 0) {
    kj::throwFatalException(
        KJ_EXCEPTION(FAILED, kj::str("cannot listen for peers on ", address.toString().c_str(),
                                     ": ", gai_strerror(status))));
  }
  KJ_DEFER(freeaddrinfo(found));
  int lastError = 0;
  for (auto* candidate = found; candidate != nullptr; candidate = candidate->ai_next) {
    int fd = ::socket(candidate->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      lastError = errno;
      continue;
    }
    kj::AutoCloseFd owned(fd);
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(fd, candidate->ai_addr, candidate->ai_addrlen) == 0 && ::listen(fd, 128) == 0) {
      return owned.release();
    }
    lastError = errno;
  }
  kj::throwFatalException(
      KJ_EXCEPTION(FAILED, kj::str("cannot listen for peers on ", address.toString().c_str(), ": ",
                                   strerror(lastError))));
}

double toMs(kj::Duration duration) {
  return double(duration / kj::NANOSECONDS) / 1e6;
}

}  // namespace

// ------------------------------------------------------------------------------------------------

RateLimitedLog::RateLimitedLog(kj::Duration interval, Sink sink)
    : interval(interval), sink(std::move(sink)) {}

bool RateLimitedLog::log(const std::string& key, kj::TimePoint now, Priority priority,
                         std::string_view line, const LogFields& fields) {
  auto it = entries.find(key);
  if (it != entries.end() && now - it->second.lastWritten < interval) {
    ++it->second.suppressed;
    return false;
  }
  if (it == entries.end()) {
    if (entries.size() >= MAX_LOG_KEYS) entries.clear();
    it = entries.emplace(key, Entry{now, 0}).first;
  }
  std::string text(line);
  if (it->second.suppressed > 0) {
    text += " (" + std::to_string(it->second.suppressed) + " similar lines suppressed)";
  }
  it->second = Entry{now, 0};
  sink(priority, text, fields);
  return true;
}

// ------------------------------------------------------------------------------------------------

struct PeerTransport::Impl final : private kj::TaskSet::ErrorHandler {
  struct Connection;

  struct Peer {
    MemberIndex index = 0;
    std::string name;
    PeerAddress address;
    // Frames not yet handed to a connection, oldest first.
    std::deque<kj::Array<capnp::word>> queue;
    // The queue plus the batch being written: what the bounds count.
    size_t pendingMessages = 0;
    size_t pendingBytes = 0;
    Connection* active = nullptr;  // the handshaken connection in use
    bool dialing = false;          // a dial is waiting for its delay, connecting or handshaking
    kj::Duration nextBackoff = 0 * kj::SECONDS;
    bool everConnected = false;
    PeerStats counters;
  };

  Impl(UvKjLoop& loop, const Config& config, Handler handler, Options options);
  ~Impl() noexcept(false);

  UvKjLoop& loop;
  const Config& config;
  const Handler handler;
  const Options options;
  const MemberIndex self;
  const uint64_t settingsHash;
  kj::Array<Peer> peers;  // by member index; this member's entry is unused
  kj::Array<capnp::word> helloFrame;
  RateLimitedLog problems;      // refusals, bad frames, full queues: one line per peer per 10 s
  RateLimitedLog connectivity;  // connected / disconnected / cannot connect
  std::mt19937_64 random;
  bool closed = false;
  uint64_t unidentified = 0;
  size_t pendingHandshakes = 0;  // accepted connections without a Hello yet
  std::set<Connection*> connections;
  uint16_t port = 0;
  kj::Own<kj::ConnectionReceiver> listener;
  kj::Own<kj::PromiseFulfiller<void>> closeFulfiller;
  kj::ForkedPromise<void> closing;
  kj::TaskSet tasks;  // last: destroyed first, and with it every connection

  kj::Promise<void> whenClosed() { return closing.addBranch(); }
  kj::TimePoint now() { return loop.timer().now(); }
  kj::Duration jittered(kj::Duration delay);

  kj::Promise<void> acceptLoop();
  void adopt(kj::Own<kj::AsyncIoStream> stream, Peer* dialTarget);
  void maybeDial(Peer& peer, bool immediately = false);
  void dial(Peer& peer);
  // Empty when `hello` on `connection` is acceptable, else why not.
  std::string checkHello(const Connection& connection, const Hello& hello) const;
  void activate(Connection& connection, Peer& peer);
  void send(MemberIndex to, PeerEnvelope&& message);
  void close();

 private:
  void taskFailed(kj::Exception&& exception) override;
  static kj::ForkedPromise<void> makeClosing(kj::Own<kj::PromiseFulfiller<void>>& fulfiller);
};

// One TCP connection, from accept or dial until it is closed. Owned by a task in Impl::tasks,
// which destroys it once run() has ended and ended() has run.
struct PeerTransport::Impl::Connection {
  Connection(Impl& impl, kj::Own<kj::AsyncIoStream> stream, Peer* dialTarget, std::string remote);
  ~Connection() noexcept(false);
  KJ_DISALLOW_COPY(Connection);

  Impl& impl;
  kj::Own<kj::AsyncIoStream> stream;
  Peer* const dialTarget;    // the peer this member dialed; null when accepted
  const std::string remote;  // for log lines
  Peer* peer = nullptr;      // set once a Hello identified the other side
  bool dialPending;          // this is dialTarget's dial attempt and it has not resolved yet
  kj::TimePoint activatedAt = kj::origin<kj::TimePoint>();

  kj::PromiseFulfillerPair<void> stopSignal = kj::newPromiseAndFulfiller<void>();
  bool stopping = false;
  bool quiet = false;  // the reason was logged already, or there is nothing to report
  std::string stopReason;

  // Received bytes: unconsumed frames start at word `readBegin`; bytes up to `readEnd` are filled.
  kj::Array<capnp::word> buffer = kj::heapArray<capnp::word>(READ_BUFFER_WORDS);
  size_t readBegin = 0;
  size_t readEnd = 0;

  kj::Maybe<kj::Own<kj::PromiseFulfiller<void>>> wakeWriter;
  std::vector<kj::Array<capnp::word>> inFlight;  // the batch being written, from peer->queue
  size_t inFlightBytes = 0;
  kj::Array<kj::ArrayPtr<const kj::byte>> pieces;

  bool active() const { return peer != nullptr && peer->active == this; }
  MemberIndex initiator() const { return dialTarget != nullptr ? impl.self : peer->index; }
  std::string describe() const;

  // Ends run() in a later turn (never synchronously: this may be called from inside it).
  void stop(std::string reason, bool alreadyReported);
  void wake();

  kj::Promise<void> run();
  void ended(kj::Maybe<kj::Exception&> failure);

 private:
  kj::ArrayPtr<const capnp::word> received() const {
    return buffer.slice(readBegin, readEnd / sizeof(capnp::word));
  }
  // Reads what arrives; `wantWords`: words needed from the first unconsumed one.
  kj::Promise<void> readMore(size_t wantWords);
  kj::Promise<void> readHello();
  void refuse(const std::string& reason, kj::Maybe<const Hello&> hello);
  kj::Promise<void> readLoop();
  bool deliver(kj::ArrayPtr<const capnp::word> frame);
  void badFrame(const std::string& reason);
  kj::Promise<void> writeLoop();
};

// ------------------------------------------------------------------------------------------------

PeerTransport::Impl::Impl(UvKjLoop& loop, const Config& config, Handler handler, Options options)
    : loop(loop),
      config(config),
      handler(std::move(handler)),
      options(std::move(options)),
      self(static_cast<MemberIndex>(config.nodeIndex())),
      settingsHash(daemon::settingsHash(config)),
      problems(10 * kj::SECONDS, this->options.logSink),
      connectivity(10 * kj::SECONDS, this->options.logSink),
      random(std::random_device{}()),
      closing(makeClosing(closeFulfiller)),
      tasks(*this) {
  KJ_REQUIRE(this->options.backoffMin > 0 * kj::SECONDS &&
                 this->options.backoffMin <= this->options.backoffMax,
             "bad reconnect backoff");
  KJ_REQUIRE(this->options.maxMessageBytes >= 1024, "maxMessageBytes below 1 KiB");
  auto names = config.peerNames();
  peers = kj::heapArray<Peer>(names.size());
  for (size_t i = 0; i < names.size(); ++i) {
    peers[i].index = static_cast<MemberIndex>(i);
    peers[i].name = names[i];
    peers[i].address = config.peers.at(names[i]);
    peers[i].nextBackoff = this->options.backoffMin;
  }
  helloFrame =
      encodeHello(Hello{PEER_PROTOCOL_VERSION, config.clusterId, config.node, self, settingsHash});

  int fd = this->options.listenFd >= 0 ? this->options.listenFd : bindListen(config.listen);
  listener = loop.lowLevel().wrapListenSocketFd(
      fd, this->options.listenFd >= 0 ? uint(kj::LowLevelAsyncIoProvider::TAKE_OWNERSHIP)
                                      : NEW_FD_FLAGS);
  port = static_cast<uint16_t>(listener->getPort());
  tasks.add(acceptLoop().exclusiveJoin(whenClosed()).then([this] { listener = nullptr; }));
  for (auto& peer : peers) {
    if (peer.index != self) maybeDial(peer, true);
  }
}

PeerTransport::Impl::~Impl() noexcept(false) {
  closed = true;
}

kj::ForkedPromise<void> PeerTransport::Impl::makeClosing(
    kj::Own<kj::PromiseFulfiller<void>>& fulfiller) {
  auto paf = kj::newPromiseAndFulfiller<void>();
  fulfiller = kj::mv(paf.fulfiller);
  return paf.promise.fork();
}

void PeerTransport::Impl::taskFailed(kj::Exception&& exception) {
  // Every task handles its own failures; one reaching here is a bug worth a loud line.
  KJ_LOG(ERROR, "peer transport task failed", exception);
}

kj::Duration PeerTransport::Impl::jittered(kj::Duration delay) {
  uint64_t ns = static_cast<uint64_t>(delay / kj::NANOSECONDS);
  return std::uniform_int_distribution<uint64_t>(ns / 2, ns)(random) * kj::NANOSECONDS;
}

kj::Promise<void> PeerTransport::Impl::acceptLoop() {
  return listener->accept().then(
      [this](kj::Own<kj::AsyncIoStream> stream) {
        adopt(kj::mv(stream), nullptr);
        return acceptLoop();
      },
      [this](kj::Exception&& exception) {
        problems.log("accept", now(), Priority::ERR,
                     kj::str("accepting peer connections on port ", port,
                             " failed; retrying in 1 s: ", exception.getDescription())
                         .cStr());
        return loop.timer().afterDelay(1 * kj::SECONDS).then([this] { return acceptLoop(); });
      });
}

void PeerTransport::Impl::adopt(kj::Own<kj::AsyncIoStream> stream, Peer* dialTarget) {
  if (closed) return;
  std::string remote =
      dialTarget != nullptr ? dialTarget->address.toString() : remoteOf(*stream, true);
  if (dialTarget == nullptr && pendingHandshakes >= MAX_PENDING_HANDSHAKES) {
    ++unidentified;
    problems.log("handshake-limit", now(), Priority::WARNING,
                 "refused peer connection from " + remote + ": " +
                     std::to_string(MAX_PENDING_HANDSHAKES) + " connections await their Hello");
    return;
  }
  KJ_IF_MAYBE (exception, kj::runCatchingExceptions([&] { tuneSocket(*stream); })) {
    // Not fatal: the connection works, it only detects a vanished peer later.
    problems.log(
        "sockopt", now(), Priority::WARNING,
        kj::str("cannot set TCP options on a peer connection: ", exception->getDescription())
            .cStr());
  }
  auto connection = kj::heap<Connection>(*this, kj::mv(stream), dialTarget, std::move(remote));
  Connection& ref = *connection;
  tasks.add(ref.run()
                .then([&ref] { ref.ended(nullptr); },
                      [&ref](kj::Exception&& exception) { ref.ended(exception); })
                .attach(kj::mv(connection)));
}

void PeerTransport::Impl::maybeDial(Peer& peer, bool immediately) {
  if (closed || peer.active != nullptr || peer.dialing) return;
  peer.dialing = true;
  kj::Duration delay = 0 * kj::SECONDS;
  if (!immediately) {
    delay = jittered(peer.nextBackoff);
    peer.nextBackoff = std::min(peer.nextBackoff * 2, options.backoffMax);
  }
  tasks.add(loop.timer().afterDelay(delay).exclusiveJoin(whenClosed()).then([this, &peer] {
    dial(peer);
  }));
}

void PeerTransport::Impl::dial(Peer& peer) {
  if (closed || peer.active != nullptr) {
    peer.dialing = false;
    return;
  }
  auto connect = loop.provider()
                     .getNetwork()
                     .parseAddress(peer.address.toString())
                     .then([](kj::Own<kj::NetworkAddress> address) {
                       return address->connect().attach(kj::mv(address));
                     });
  auto timeout = loop.timer().afterDelay(options.handshakeTimeout).then([this]() {
    kj::throwFatalException(KJ_EXCEPTION(
        DISCONNECTED, kj::str("no connection within ", toMs(options.handshakeTimeout), " ms")));
    return kj::Own<kj::AsyncIoStream>();
  });
  tasks.add(connect.exclusiveJoin(kj::mv(timeout))
                .then(
                    [this, &peer](kj::Own<kj::AsyncIoStream> stream) {
                      if (closed) return;
                      adopt(kj::mv(stream), &peer);
                    },
                    [this, &peer](kj::Exception&& exception) {
                      peer.dialing = false;
                      ++peer.counters.dialFailures;
                      connectivity.log(
                          peer.name, now(), Priority::INFO,
                          kj::str("cannot connect to peer ", peer.name.c_str(), " at ",
                                  peer.address.toString().c_str(), ": ", exception.getDescription())
                              .cStr(),
                          LogFields{"", peer.name});
                      maybeDial(peer);
                    })
                .exclusiveJoin(whenClosed()));
}

std::string PeerTransport::Impl::checkHello(const Connection& connection,
                                            const Hello& hello) const {
  if (hello.clusterId != config.clusterId) {
    return "cluster id '" + hello.clusterId + "' differs from this member's '" + config.clusterId +
           "'";
  }
  if (hello.memberIndex == self) {
    return "it claims to be this member (" + hello.member + ", index " +
           std::to_string(hello.memberIndex) + ")";
  }
  const Peer& named = peers[hello.memberIndex];  // decodeHello checked the index
  if (named.name != hello.member) {
    return "it claims to be '" + hello.member + "' at index " + std::to_string(hello.memberIndex) +
           ", which is '" + named.name + "' here: the peer lists differ";
  }
  if (hello.settingsHash != settingsHash) {
    return "settings hash differs: cluster_id, peers (names and addresses), heartbeat_ms, "
           "election_timeout_ms, leader_lease_ms and max_clock_drift must be the same on every "
           "member";
  }
  if (connection.dialTarget != nullptr && connection.dialTarget != &named) {
    return "dialed " + connection.dialTarget->name + " but " + hello.member + " answered";
  }
  return {};
}

// Makes `connection` (just identified as `peer`) the one in use, unless the one already in use
// wins the tie-break described in peer_transport.h; the loser is stopped.
void PeerTransport::Impl::activate(Connection& connection, Peer& peer) {
  Connection* current = peer.active;
  if (current != nullptr) {
    bool sameInitiator = connection.initiator() == current->initiator();
    if (!sameInitiator && connection.initiator() > current->initiator()) {
      connection.stop("a connection initiated by member " + std::to_string(current->initiator()) +
                          " is already in use",
                      true);
      return;
    }
    peer.active = nullptr;
    current->stop(
        "replaced by a connection initiated by member " + std::to_string(connection.initiator()),
        true);
    if (sameInitiator) ++peer.counters.reconnects;
  } else if (peer.everConnected) {
    ++peer.counters.reconnects;
  }
  peer.active = &connection;
  peer.everConnected = true;
  connection.activatedAt = now();
  if (connection.dialPending) {
    connection.dialPending = false;
    peer.dialing = false;
  }
  if (current == nullptr) {
    connectivity.log(peer.name, now(), Priority::INFO,
                     "connected to peer " + peer.name + " (" + connection.describe() + ")",
                     LogFields{"", peer.name});
  }
  connection.wake();
}

void PeerTransport::Impl::send(MemberIndex to, PeerEnvelope&& message) {
  KJ_REQUIRE(to < peers.size() && to != self, "send() to an index that is not another member", to,
             self, peers.size());
  Peer& peer = peers[to];
  while (peer.active == nullptr && !peer.queue.empty() &&
         peer.queue.size() >= options.maxQueueMessagesDisconnected) {
    --peer.pendingMessages;
    peer.pendingBytes -= peer.queue.front().asBytes().size();
    peer.queue.pop_front();
    ++peer.counters.dropped;
  }
  if (closed || peer.pendingMessages >= options.maxQueueMessages) {
    ++peer.counters.dropped;
    if (!closed) {
      problems.log(peer.name + " queue", now(), Priority::WARNING,
                   "send queue to peer " + peer.name + " is full (" +
                       std::to_string(peer.pendingMessages) + " messages); dropping messages");
    }
    return;
  }
  auto frame = encodeEnvelope(message);
  size_t bytes = frame.asBytes().size();
  if (bytes > options.maxMessageBytes) {
    ++peer.counters.dropped;
    problems.log(peer.name + " size", now(), Priority::ERR,
                 "dropped a message of " + std::to_string(bytes) + " bytes to peer " + peer.name +
                     ": over the limit of " + std::to_string(options.maxMessageBytes) + " bytes");
    return;
  }
  if (peer.pendingBytes > 0 && peer.pendingBytes + bytes > options.maxQueueBytes) {
    ++peer.counters.dropped;
    problems.log(peer.name + " queue", now(), Priority::WARNING,
                 "send queue to peer " + peer.name + " is full (" +
                     std::to_string(peer.pendingBytes) + " bytes); dropping messages");
    return;
  }
  peer.queue.push_back(kj::mv(frame));
  ++peer.pendingMessages;
  peer.pendingBytes += bytes;
  if (peer.active != nullptr) peer.active->wake();
}

void PeerTransport::Impl::close() {
  if (closed) return;
  closed = true;
  for (Connection* connection : connections)
    connection->stop("shutting down", true);
  for (auto& peer : peers) {
    for (auto& frame : peer.queue) {
      --peer.pendingMessages;
      peer.pendingBytes -= frame.asBytes().size();
    }
    peer.counters.dropped += peer.queue.size();
    peer.queue.clear();
  }
  closeFulfiller->fulfill();
}

// ------------------------------------------------------------------------------------------------

PeerTransport::Impl::Connection::Connection(Impl& impl, kj::Own<kj::AsyncIoStream> stream,
                                            Peer* dialTarget, std::string remote)
    : impl(impl),
      stream(kj::mv(stream)),
      dialTarget(dialTarget),
      remote(std::move(remote)),
      dialPending(dialTarget != nullptr) {
  impl.connections.insert(this);
  if (dialTarget == nullptr) ++impl.pendingHandshakes;
}

PeerTransport::Impl::Connection::~Connection() noexcept(false) {
  impl.connections.erase(this);
  if (dialTarget == nullptr && peer == nullptr) --impl.pendingHandshakes;
  if (peer != nullptr) {
    if (peer->active == this) peer->active = nullptr;
    peer->counters.lost += inFlight.size();
    peer->pendingMessages -= inFlight.size();
    peer->pendingBytes -= inFlightBytes;
  }
  if (dialPending) dialTarget->dialing = false;
}

std::string PeerTransport::Impl::Connection::describe() const {
  return (dialTarget != nullptr ? "dialed " : "accepted from ") + remote;
}

void PeerTransport::Impl::Connection::stop(std::string reason, bool alreadyReported) {
  if (stopping) return;
  stopping = true;
  quiet = alreadyReported;
  stopReason = std::move(reason);
  stopSignal.fulfiller->fulfill();
}

void PeerTransport::Impl::Connection::wake() {
  KJ_IF_MAYBE (fulfiller, wakeWriter) {
    auto owned = kj::mv(*fulfiller);
    wakeWriter = nullptr;
    owned->fulfill();
  }
}

kj::Promise<void> PeerTransport::Impl::Connection::run() {
  auto hello = impl.helloFrame.asBytes();
  auto handshake = stream->write(hello.begin(), hello.size()).then([this] { return readHello(); });
  auto deadline =
      impl.loop.timer()
          .afterDelay(impl.options.handshakeTimeout)
          .then([this]() -> kj::Promise<void> {
            stop(kj::str("no Hello within ", toMs(impl.options.handshakeTimeout), " ms").cStr(),
                 false);
            return kj::NEVER_DONE;
          });
  return handshake.exclusiveJoin(kj::mv(deadline))
      .then([this] { return readLoop().exclusiveJoin(writeLoop()); })
      .exclusiveJoin(kj::mv(stopSignal.promise));
}

void PeerTransport::Impl::Connection::ended(kj::Maybe<kj::Exception&> failure) {
  std::string reason = stopReason;
  KJ_IF_MAYBE (exception, failure) {
    reason = exception->getDescription().cStr();
  } else if (!stopping) {
    reason = "closed by the peer";
  }
  bool wasActive = active();
  if (wasActive) {
    peer->active = nullptr;
    if (!quiet && !impl.closed) {
      impl.connectivity.log(peer->name, impl.now(), Priority::NOTICE,
                            "lost connection to peer " + peer->name + " (" + describe() +
                                "): " + reason + "; reconnecting",
                            LogFields{"", peer->name});
    }
    if (impl.now() - activatedAt >= impl.options.backoffMax) {
      peer->nextBackoff = impl.options.backoffMin;
    }
  } else if (peer == nullptr && !quiet && !impl.closed) {
    // Failed before any Hello arrived (reset, timeout, EOF).
    if (dialTarget != nullptr) {
      ++dialTarget->counters.handshakeFailures;
      impl.connectivity.log(
          dialTarget->name, impl.now(), Priority::INFO,
          "handshake with peer " + dialTarget->name + " at " + remote + " failed: " + reason,
          LogFields{"", dialTarget->name});
    } else {
      ++impl.unidentified;
      impl.problems.log("from " + remote.substr(0, remote.rfind(':')), impl.now(),
                        Priority::WARNING,
                        "peer connection from " + remote + " closed before its Hello: " + reason);
    }
  }
  if (dialPending) {
    dialPending = false;
    dialTarget->dialing = false;
    impl.maybeDial(*dialTarget);
  }
  if (wasActive) impl.maybeDial(*peer);
}

kj::Promise<void> PeerTransport::Impl::Connection::readMore(size_t wantWords) {
  // Compact: unconsumed bytes move to the front (frames always start at word boundaries).
  if (readBegin > 0) {
    size_t beginByte = readBegin * sizeof(capnp::word);
    memmove(buffer.begin(), buffer.asBytes().begin() + beginByte, readEnd - beginByte);
    readEnd -= beginByte;
    readBegin = 0;
  }
  size_t capacity = std::max(wantWords, READ_BUFFER_WORDS);
  // Grow for a large frame; shrink back once it is gone.
  if (buffer.size() < wantWords ||
      (buffer.size() > 4 * READ_BUFFER_WORDS &&
       readEnd <= READ_BUFFER_WORDS * sizeof(capnp::word) && wantWords <= READ_BUFFER_WORDS)) {
    auto bigger = kj::heapArray<capnp::word>(capacity);
    memcpy(bigger.begin(), buffer.begin(), readEnd);
    buffer = kj::mv(bigger);
  }
  auto bytes = buffer.asBytes();
  return stream->tryRead(bytes.begin() + readEnd, 1, bytes.size() - readEnd)
      .then([this](size_t count) -> kj::Promise<void> {
        if (count == 0) {
          stop(readEnd > readBegin * sizeof(capnp::word) ? "closed by the peer inside a frame"
                                                         : "closed by the peer",
               false);
          return kj::NEVER_DONE;
        }
        readEnd += count;
        return kj::READY_NOW;
      });
}

kj::Promise<void> PeerTransport::Impl::Connection::readHello() {
  FrameProbe probe = probeFrame(received(), MAX_HELLO_BYTES);
  switch (probe.kind) {
    case FrameProbe::Kind::INVALID:
      refuse("not a synod peer Hello: " + probe.error, nullptr);
      return kj::NEVER_DONE;
    case FrameProbe::Kind::NEED_MORE:
      return readMore(probe.words).then([this] { return readHello(); });
    case FrameProbe::Kind::COMPLETE:
      break;
  }
  auto frame = received().slice(0, probe.words);
  readBegin += probe.words;
  DecodeLimits limits;
  limits.memberCount = static_cast<uint32_t>(impl.peers.size());
  limits.maxMessageBytes = MAX_HELLO_BYTES;
  auto decoded = decodeHello(frame.asBytes(), limits);
  if (auto* error = std::get_if<DecodeError>(&decoded)) {
    refuse("bad Hello: " + error->message, nullptr);
    return kj::NEVER_DONE;
  }
  const Hello& hello = std::get<Hello>(decoded);
  std::string why = impl.checkHello(*this, hello);
  if (!why.empty()) {
    refuse(why, hello);
    return kj::NEVER_DONE;
  }
  if (dialTarget == nullptr) --impl.pendingHandshakes;
  peer = &impl.peers[hello.memberIndex];
  impl.activate(*this, *peer);
  return kj::READY_NOW;
}

// Logs (one line per peer per 10 s), counts and stops a connection whose Hello is not acceptable.
void PeerTransport::Impl::Connection::refuse(const std::string& reason,
                                             kj::Maybe<const Hello&> hello) {
  // Attributed to a member only when the Hello names one consistently, or this member dialed it.
  Peer* blamed = dialTarget;
  KJ_IF_MAYBE (h, hello) {
    if (blamed == nullptr && h->memberIndex != impl.self &&
        impl.peers[h->memberIndex].name == h->member) {
      blamed = &impl.peers[h->memberIndex];
    }
  }
  std::string line = dialTarget != nullptr
                         ? "refused connection to peer " + dialTarget->name + " at " + remote
                         : "refused peer connection from " + remote;
  KJ_IF_MAYBE (h, hello) {
    if (dialTarget == nullptr || dialTarget->name != h->member) {
      line += " (says it is " + h->member + ")";
    }
  }
  line += ": " + reason;
  if (blamed != nullptr) {
    ++blamed->counters.handshakeFailures;
    impl.problems.log(blamed->name, impl.now(), Priority::WARNING, line,
                      LogFields{"", blamed->name});
  } else {
    ++impl.unidentified;
    impl.problems.log("from " + remote.substr(0, remote.rfind(':')), impl.now(), Priority::WARNING,
                      line);
  }
  stop(reason, true);
}

kj::Promise<void> PeerTransport::Impl::Connection::readLoop() {
  for (;;) {
    FrameProbe probe = probeFrame(received(), impl.options.maxMessageBytes);
    switch (probe.kind) {
      case FrameProbe::Kind::INVALID:
        badFrame(probe.error);
        return kj::NEVER_DONE;
      case FrameProbe::Kind::NEED_MORE:
        return readMore(probe.words).then([this] { return readLoop(); });
      case FrameProbe::Kind::COMPLETE:
        break;
    }
    auto frame = received().slice(0, probe.words);
    readBegin += probe.words;
    if (!deliver(frame)) return kj::NEVER_DONE;
  }
}

// Decodes and hands one frame to the handler. False when reading must stop.
bool PeerTransport::Impl::Connection::deliver(kj::ArrayPtr<const capnp::word> frame) {
  // A connection that lost the tie-break, or any after close(), delivers nothing more.
  if (impl.closed || stopping || !active()) return false;
  DecodeLimits limits;
  limits.memberCount = static_cast<uint32_t>(impl.peers.size());
  limits.maxMessageBytes = impl.options.maxMessageBytes;
  auto decoded = decodeEnvelope(frame.asBytes(), limits);
  if (auto* error = std::get_if<DecodeError>(&decoded)) {
    badFrame(error->message);
    return false;
  }
  ++peer->counters.received;
  MemberIndex from = peer->index;
  // An exception from the handler is a bug in the daemon: noexcept turns it into terminate().
  [&]() noexcept { impl.handler(from, std::get<PeerEnvelope>(kj::mv(decoded))); }();
  return !impl.closed && !stopping && active();
}

void PeerTransport::Impl::Connection::badFrame(const std::string& reason) {
  ++peer->counters.decodeErrors;
  impl.problems.log(peer->name, impl.now(), Priority::WARNING,
                    "dropped connection with peer " + peer->name + " (" + describe() +
                        "): bad message: " + reason,
                    LogFields{"", peer->name});
  stop("bad message: " + reason, true);
}

kj::Promise<void> PeerTransport::Impl::Connection::writeLoop() {
  if (stopping || !active() || peer->queue.empty()) {
    auto paf = kj::newPromiseAndFulfiller<void>();
    wakeWriter = kj::mv(paf.fulfiller);
    return paf.promise.then([this] { return writeLoop(); });
  }
  auto& queue = peer->queue;
  while (
      !queue.empty() && inFlight.size() < WRITE_BATCH_MESSAGES &&
      (inFlight.empty() || inFlightBytes + queue.front().asBytes().size() <= WRITE_BATCH_BYTES)) {
    inFlightBytes += queue.front().asBytes().size();
    inFlight.push_back(kj::mv(queue.front()));
    queue.pop_front();
  }
  pieces = KJ_MAP(frame, inFlight) {
    return frame.asBytes().asConst();
  };
  return stream->write(pieces).then([this] {
    peer->counters.sent += inFlight.size();
    peer->pendingMessages -= inFlight.size();
    peer->pendingBytes -= inFlightBytes;
    inFlight.clear();
    inFlightBytes = 0;
    return writeLoop();
  });
}

// ------------------------------------------------------------------------------------------------

PeerTransport::PeerTransport(UvKjLoop& loop, const Config& config, Handler onMessage,
                             Options options)
    : impl(kj::heap<Impl>(loop, config, std::move(onMessage), std::move(options))) {}

PeerTransport::~PeerTransport() noexcept(false) {}

void PeerTransport::send(MemberIndex to, PeerEnvelope message) {
  impl->send(to, kj::mv(message));
}

bool PeerTransport::connected(MemberIndex peer) const {
  return !impl->closed && peer < impl->peers.size() && impl->peers[peer].active != nullptr;
}

PeerTransport::PeerStats PeerTransport::stats(MemberIndex peer) const {
  KJ_REQUIRE(peer < impl->peers.size(), "stats() of an index that is not a member", peer);
  const auto& entry = impl->peers[peer];
  PeerStats result = entry.counters;
  result.connected = connected(peer);
  result.queuedMessages = entry.pendingMessages;
  result.queuedBytes = entry.pendingBytes;
  return result;
}

uint64_t PeerTransport::unidentifiedFailures() const {
  return impl->unidentified;
}

uint16_t PeerTransport::listenPort() const {
  return impl->port;
}

void PeerTransport::close() {
  impl->close();
}

}  // namespace synod::daemon
