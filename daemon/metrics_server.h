// The Prometheus endpoint (metrics_listen): `GET /metrics` over HTTP/1.1 (kj-http) on the
// daemon's one loop, and what a member exports there. The README's "Metrics" section lists every
// metric.
//
// The endpoint answers GET (and HEAD) /metrics with text/plain; version=0.0.4, 405 for another
// method on /metrics, 404 for any other path, 400 for a request that does not parse; request
// headers over kj-http's bound (128 KiB) close the connection unanswered. Request bodies are never
// read. At most MAX_CONNECTIONS connections are served at once; further ones are closed at accept.
// A connection that does not send a complete request within REQUEST_TIMEOUT_MS is closed. Bad
// requests are not logged: they concern nobody but their client.
#pragma once

#include <kj/async-io.h>
#include <kj/memory.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "daemon/app_leases.h"
#include "daemon/config.h"
#include "daemon/metrics.h"
#include "daemon/node.h"
#include "daemon/peer_transport.h"
#include "daemon/uv_loop.h"

namespace synod::daemon {

// One scrape's worth of a member's state, taken on the loop thread.
struct MemberMetrics {
  NodeStatus status;
  CatchUpStatus catchUp;
  NodeCounters counters;
  bool leading = false;
  uint64_t storeLimitBytes = 0;
  uint64_t pendingWrites = 0;
  uint64_t pendingReads = 0;
  // App leases and locks in the applied state; leases held through this member.
  uint64_t leases = 0;
  uint64_t localLeases = 0;
  uint64_t locks = 0;
  LeaseCounters leaseCounters;
  // By member index (status.members' order); nullopt for this member and without a transport.
  std::vector<std::optional<PeerTransport::PeerStats>> peerStats;
};

MemberMetrics collectMemberMetrics(const Node& node, const PeerTransport* transport);
std::string renderMemberMetrics(const MemberMetrics& metrics);

class MetricsServer {
 public:
  // Binds `address` now, throwing SocketError naming it if it cannot, and serves on `loop`.
  // `render` runs on the loop thread for every scrape and returns the exposition text; it must
  // stay callable until close() or destruction. `loop` must outlive this object.
  MetricsServer(UvKjLoop& loop, const PeerAddress& address, std::function<std::string()> render);
  ~MetricsServer() noexcept(false);
  KJ_DISALLOW_COPY(MetricsServer);

  // The bound port (the configured one, or the one the kernel chose for port 0).
  uint16_t port() const;
  // Stops accepting and drops every connection. Idempotent.
  void close();

  static constexpr size_t MAX_CONNECTIONS = 16;
  static constexpr uint64_t REQUEST_TIMEOUT_MS = 5000;

 private:
  struct Impl;
  kj::Own<Impl> impl;
  uint16_t port_ = 0;
};

}  // namespace synod::daemon
