// TCP links between the members of the group, on the daemon's one libuv/KJ loop.
//
// Wire: Cap'n Proto standard stream framing (segment table + segments, as capnp::writeMessage
// writes and capnp::readMessage reads), one frame per message, encoded by daemon/peer_codec.h.
// Frames are read into one buffer per connection, many per read() when they are small, and the
// segment table is checked against the size limit before the frame is buffered. Queued frames to
// one peer leave in one writev() per batch.
//
// Handshake: on every connection each side first sends a Hello (protocol version, cluster id,
// member name and index, settings hash) and then waits for the other's. A Hello that does not
// match this member's configuration (settingsHash(config) covers cluster id, peers and timing),
// that names this member itself, or that does not come from the member dialed, closes the
// connection with one log line per peer per 10 s. Nothing is sent or delivered on a connection
// before both Hellos were accepted.
//
// One connection per pair, both members dial: a member dials a peer whenever it has no
// connection to it. When a second connection to the same peer completes its handshake, both
// members keep the same one:
//   - initiated by different members (both dialed at once): the one the lower member index
//     initiated;
//   - initiated by the same member (it dialed again, so it had lost the old one): the newer.
// The loser is closed without delivering anything. Messages the peer wrote to the loser before
// it learnt of the winner are lost; a message is never delivered after a later one.
// TCP keepalive and TCP_USER_TIMEOUT make a connection whose peer host vanished fail within
// seconds, so a stale winner cannot hold off a restarted peer for long.
//
// Reconnect: after a failed dial or a lost connection, dial again after a delay that starts at
// backoffMin and doubles up to backoffMax, each draw uniform in [delay/2, delay] (jitter), reset
// once a connection has stayed up for backoffMax.
//
// Delivery is at most once, in order per peer, with gaps: messages queued for a peer wait for a
// connection (also across reconnects); at the queue's bound (messages or bytes) send() drops the
// new message and counts it; messages being written when a connection fails are lost (counted).
// While a peer has no connection its queue keeps only the newest maxQueueMessagesDisconnected
// messages (older ones are dropped and counted, quietly: a peer that is down is expected to miss
// messages), so a peer back after a long absence gets recent heartbeats and Accepts, not a
// backlog it has no use for, and catches up by fetching or by snapshot.
// The consensus protocol retransmits everything it needs (heartbeats, fetches, re-sent Accepts),
// so a dropped message costs time, never safety.
//
// A frame that fails to decode or is over the size limit closes that connection (logged,
// rate-limited, counted); its message is never delivered. The peer then reconnects.

#pragma once

#include <sys/types.h>

#include <kj/memory.h>
#include <kj/time.h>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>

#include "daemon/config.h"
#include "daemon/logging.h"
#include "daemon/peer_codec.h"
#include "daemon/uv_loop.h"
#include "election/types.h"

namespace synod::daemon {

// Writes a log line unless one with the same key was written less than `interval` ago. The next
// line written for a key says how many were held back in between.
class RateLimitedLog {
 public:
  using Sink = std::function<void(Priority, std::string_view, const LogFields&)>;

  explicit RateLimitedLog(kj::Duration interval = 10 * kj::SECONDS, Sink sink = logLineWith);

  // Returns whether the line was written. Remembers at most 1024 keys; when full it forgets them
  // all, so a flood of new keys (e.g. remote addresses) can log once more each, never grow it.
  bool log(const std::string& key, kj::TimePoint now, Priority priority, std::string_view line,
           const LogFields& fields = {});

 private:
  struct Entry {
    kj::TimePoint lastWritten;
    uint64_t suppressed = 0;
  };
  kj::Duration interval;
  Sink sink;
  std::map<std::string, Entry> entries;
};

struct PeerTransportOptions {
  // Bound on one frame, both ways: send() drops a larger message, a larger incoming frame closes
  // the connection. A Hello is bounded by 64 KiB whatever this says.
  size_t maxMessageBytes = DEFAULT_MAX_PEER_MESSAGE_BYTES;
  // Per-peer send queue bound, counting messages waiting and being written.
  size_t maxQueueMessages = 16384;
  size_t maxQueueBytes = size_t(64) << 20;
  size_t maxQueueMessagesDisconnected = 1024;
  // Reconnect delay (see the file comment).
  kj::Duration backoffMin = 50 * kj::MILLISECONDS;
  kj::Duration backoffMax = 2 * kj::SECONDS;
  // From starting a dial or accepting a connection until both Hellos were accepted.
  kj::Duration handshakeTimeout = 5 * kj::SECONDS;
  // A listening TCP socket to take over instead of binding config.listen (tests bind port 0).
  // -1: bind config.listen.
  int listenFd = -1;
  // Where log lines go (through the per-peer rate limit).
  RateLimitedLog::Sink logSink = logLineWith;
};

class PeerTransport {
 public:
  using Handler = std::function<void(election::MemberIndex from, PeerEnvelope&& message)>;
  using Options = PeerTransportOptions;

  // Binds config.listen (or takes options.listenFd) at once, throwing a KJ exception naming the
  // address if it cannot; then accepts and dials asynchronously on `loop`.
  //
  // `onMessage` runs on the loop thread for every message from a peer, in the order the peer
  // sent them. It may call send(), connected(), stats() and close(); it must not destroy the
  // transport, and must not throw (an exception escaping it is a bug and aborts the process).
  //
  // `loop` and `config` must outlive the transport. config must be validated (config.node is a
  // key of config.peers).
  PeerTransport(UvKjLoop& loop, const Config& config, Handler onMessage, Options options = {});
  // Closes every socket at once. Not from inside onMessage.
  ~PeerTransport() noexcept(false);
  KJ_DISALLOW_COPY(PeerTransport);

  // Queues `message` for `to` and returns at once; it leaves after everything queued for `to`
  // before it. Dropped and counted when the queue is at its bound, the encoded message is over
  // maxMessageBytes, or the transport is closed. `to` must be another member's index.
  void send(election::MemberIndex to, PeerEnvelope message);

  // Whether a handshaken connection to `peer` is up. False for this member itself.
  bool connected(election::MemberIndex peer) const;

  struct PeerStats {
    bool connected = false;
    uint64_t sent = 0;               // written to the socket
    uint64_t received = 0;           // delivered to onMessage
    uint64_t dropped = 0;            // refused by send() (queue bound, too large, closed),
                                     // or still queued at close()
    uint64_t lost = 0;               // being written when a connection failed: may have arrived
    uint64_t decodeErrors = 0;       // bad or oversized frames from the peer (connection closed)
    uint64_t handshakeFailures = 0;  // refused Hellos naming this peer or from a dial to it
    uint64_t dialFailures = 0;       // dials that did not connect (peer down, no route, timeout)
    uint64_t reconnects = 0;         // connections established after the first
    size_t queuedMessages = 0;       // waiting or being written
    size_t queuedBytes = 0;
  };
  // `peer` must be below the member count; this member's own entry is all zero.
  PeerStats stats(election::MemberIndex peer) const;

  // Accepted connections closed before their Hello identified a member: garbage, other
  // protocols, refused versions, unknown members.
  uint64_t unidentifiedFailures() const;

  // The TCP port peers connect to.
  uint16_t listenPort() const;

  // Stops everything: no message is delivered after it returns and send() only counts drops.
  // Sockets close within the next loop iterations (destroying the transport closes them at
  // once). Idempotent.
  void close();

 private:
  struct Impl;
  kj::Own<Impl> impl;
};

}  // namespace synod::daemon
