#include "daemon/metrics_server.h"

#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <kj/compat/http.h>
#include <kj/debug.h>
#include <kj/io.h>

#include <cerrno>
#include <cstring>

#include "daemon/local_api.h"
#include "daemon/logging.h"

namespace synod::daemon {

namespace {

// A non-blocking listening TCP socket on `address`, or SocketError naming it.
int bindMetrics(const PeerAddress& address) {
  const std::string what =
      "cannot listen for metrics on " + address.toString() + " (metrics_listen)";
  struct addrinfo hints = {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  struct addrinfo* found = nullptr;
  std::string port = std::to_string(address.port);
  int status = getaddrinfo(address.host.empty() ? nullptr : address.host.c_str(), port.c_str(),
                           &hints, &found);
  if (status != 0) throw SocketError(what + ": " + gai_strerror(status));
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
    if (::bind(fd, candidate->ai_addr, candidate->ai_addrlen) == 0 && ::listen(fd, 16) == 0) {
      return owned.release();
    }
    lastError = errno;
  }
  throw SocketError(what + ": " + strerror(lastError));
}

constexpr const char* CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

}  // namespace

// --- what a member exports ----------------------------------------------------------------------

MemberMetrics collectMemberMetrics(const Node& node, const PeerTransport* transport) {
  MemberMetrics m;
  m.status = node.status();
  m.catchUp = node.catchUpStatus();
  m.counters = node.counters();
  m.leading = node.isLeader();
  m.storeLimitBytes = node.config().storeLimitBytes;
  m.pendingWrites = node.pendingWrites();
  m.pendingReads = node.pendingReads();
  m.leases = node.state().leases().leaseCount();
  m.localLeases = node.appLeases().localLeases();
  m.locks = node.state().leases().lockCount();
  m.leaseCounters = node.appLeases().counters();
  m.peerStats.resize(m.status.members.size());
  if (transport != nullptr) {
    for (MemberIndex i = 0; i < m.peerStats.size(); ++i) {
      if (i != node.self()) m.peerStats[i] = transport->stats(i);
    }
  }
  return m;
}

std::string renderMemberMetrics(const MemberMetrics& m) {
  MetricsText out;
  const std::string& member = m.status.member;
  const MetricLabels self{{"member", member}};
  for (const char* role : {"leader", "follower", "candidate"}) {
    out.gauge("synod_role", "1 for the role this member has now, 0 for the others",
              {{"member", member}, {"role", role}}, m.status.role == role ? 1 : 0);
  }
  out.gauge("synod_ballot_round", "Round of the highest ballot this member knows", self,
            double(m.status.ballot.round));
  out.gauge("synod_ballot_member",
            "Member index (position in the sorted peer list) of the highest ballot this member "
            "knows",
            self, double(m.status.ballot.member));
  out.gauge("synod_leader_known", "1 if this member knows a leader", self,
            m.status.leader.empty() ? 0 : 1);
  out.gauge("synod_decided_slot", "Highest slot this member knows decided", self,
            double(m.status.decidedSlot));
  out.gauge("synod_applied_slot", "Highest slot applied to this member's state", self,
            double(m.status.appliedSlot));
  out.gauge("synod_revision", "Config map revision of this member's applied state", self,
            double(m.status.revision));
  out.gauge("synod_incarnation", "This start's incarnation (persisted, bumped at every start)",
            self, double(m.status.incarnation));
  out.gauge("synod_uptime_seconds", "Seconds since this daemon started", self,
            double(m.status.uptimeMs) / 1000);

  for (size_t i = 0; i < m.status.members.size(); ++i) {
    const MemberInfo& peer = m.status.members[i];
    if (peer.name == member) continue;
    const MetricLabels labels{{"member", member}, {"peer", peer.name}};
    out.gauge("synod_peer_reachable", "1 if this member has a connection to the peer", labels,
              peer.reachable ? 1 : 0);
    if (m.leading) {
      out.gauge("synod_peer_lag_slots",
                "Slots the peer is behind this member's decided slot (exported by the leader "
                "only)",
                labels, double(peer.lagSlots));
    }
    if (peer.report) {
      out.gauge("synod_peer_report_age_seconds",
                "Seconds since the peer's latest report arrived (absent until one arrived)", labels,
                double(peer.reportAgeMs) / 1000);
    }
    if (i < m.peerStats.size() && m.peerStats[i]) {
      const auto& stats = *m.peerStats[i];
      out.counter("synod_peer_messages_sent_total", "Messages written to the peer's connection",
                  labels, double(stats.sent));
      out.counter("synod_peer_messages_dropped_total",
                  "Messages to the peer dropped before leaving (queue bound, too large, closing)",
                  labels, double(stats.dropped));
      out.counter("synod_peer_dial_failures_total", "Dials to the peer that did not connect",
                  labels, double(stats.dialFailures));
    }
  }

  out.histogram("synod_group_commit_duration_seconds",
                "From taking a batch of votes and applied changes to the end of its store commit",
                self, m.counters.groupCommitSeconds);
  out.histogram("synod_fsync_duration_seconds",
                "Store commit of one group commit: LMDB's write transaction, ending with its "
                "fsyncs",
                self, m.counters.fsyncSeconds);
  out.counter("synod_commits_total", "Group commits written to the store", self,
              double(m.counters.commits));
  out.histogram("synod_slot_commands", "Commands in each slot this member applied (0: a no-op)",
                self, m.counters.slotCommands);
  out.gauge("synod_store_used_bytes", "Bytes of the store's pages in use", self,
            double(m.status.dbSizeBytes));
  out.gauge("synod_store_limit_bytes",
            "store_limit_bytes: the leader refuses new writes before the store reaches it", self,
            double(m.storeLimitBytes));
  out.gauge("synod_pending_writes", "Writes taken by this member and not yet answered", self,
            double(m.pendingWrites));
  out.gauge("synod_pending_reads", "Linearizable reads waiting for their read barrier", self,
            double(m.pendingReads));
  out.counter("synod_snapshots_installed_total", "Snapshots this member installed to catch up",
              self, double(m.catchUp.snapshotsInstalled));
  out.counter("synod_snapshots_served_total", "Snapshot transfers this member served to peers",
              self, double(m.catchUp.snapshotsServed));
  out.gauge("synod_leases", "App leases in the applied state", self, double(m.leases));
  out.gauge("synod_leases_local", "App leases held through this member", self,
            double(m.localLeases));
  out.gauge("synod_locks", "Locks and elections with a holder or waiters", self, double(m.locks));
  out.counter("synod_lease_renew_batches_total",
              "Batched lease renewals this member proposed that were applied", self,
              double(m.leaseCounters.renewBatches));
  out.counter("synod_lease_renewals_total", "Lease renewals in those batches", self,
              double(m.leaseCounters.renewals));
  out.counter("synod_lease_expiries_total", "Leases ended by expiry, as applied on this member",
              self, double(m.leaseCounters.expiries));
  out.counter("synod_lease_checkpoints_total",
              "Lease checkpoint commands this member proposed as leader", self,
              double(m.leaseCounters.checkpoints));
  out.gauge("synod_recovering",
            "1 while this member recovers from an empty data dir and does not vote yet", self,
            m.catchUp.recovering ? 1 : 0);
  return out.render();
}

// --- the endpoint -------------------------------------------------------------------------------

struct MetricsServer::Impl final : public kj::HttpService,
                                   public kj::HttpServerErrorHandler,
                                   private kj::TaskSet::ErrorHandler {
  Impl(UvKjLoop& loop, int fd, std::function<std::string()> render)
      : render(std::move(render)),
        timer(loop.timer()),
        listener(
            loop.lowLevel().wrapListenSocketFd(fd, kj::LowLevelAsyncIoProvider::TAKE_OWNERSHIP)),
        server(loop.timer(), headerTable, *this, settings(*this)),
        tasks(*this) {
    accepting = acceptLoop().eagerlyEvaluate(nullptr);
  }

  static kj::HttpServerSettings settings(kj::HttpServerErrorHandler& errorHandler) {
    kj::HttpServerSettings s;
    s.errorHandler = errorHandler;
    s.headerTimeout = REQUEST_TIMEOUT_MS * kj::MILLISECONDS;
    s.pipelineTimeout = REQUEST_TIMEOUT_MS * kj::MILLISECONDS;
    return s;
  }

  kj::Promise<void> acceptLoop() {
    return listener->accept().then(
        [this](kj::Own<kj::AsyncIoStream> stream) {
          // Over the bound the connection is dropped here, which closes it.
          if (connections < MAX_CONNECTIONS) {
            ++connections;
            tasks.add(
                server.listenHttp(kj::mv(stream)).attach(kj::defer([this]() { --connections; })));
          }
          return acceptLoop();
        },
        [this](kj::Exception&& e) {
          // EMFILE and the like: try again shortly rather than stop serving.
          acceptLog.log("accept", timer.now(), Priority::WARNING,
                        kj::str("metrics endpoint: accept failed: ", e.getDescription()).cStr());
          return timer.afterDelay(100 * kj::MILLISECONDS).then([this]() { return acceptLoop(); });
        });
  }

  kj::Promise<void> request(kj::HttpMethod method, kj::StringPtr url, const kj::HttpHeaders&,
                            kj::AsyncInputStream&, Response& response) override {
    kj::StringPtr path = url;
    kj::String withoutQuery;
    KJ_IF_MAYBE (query, url.findFirst('?')) {
      withoutQuery = kj::heapString(url.slice(0, *query));
      path = withoutQuery;
    }
    kj::HttpHeaders headers(headerTable);
    headers.set(kj::HttpHeaderId::CONTENT_TYPE, "text/plain; charset=utf-8");
    if (path != "/metrics") {
      return reply(response, 404, "Not Found", headers,
                   "not found: this endpoint serves /metrics\n");
    }
    if (method != kj::HttpMethod::GET && method != kj::HttpMethod::HEAD) {
      headers.add("Allow", "GET, HEAD");
      return reply(response, 405, "Method Not Allowed", headers, "/metrics answers GET only\n");
    }
    headers.set(kj::HttpHeaderId::CONTENT_TYPE, CONTENT_TYPE);
    return reply(response, 200, "OK", headers, render());
  }

  static kj::Promise<void> reply(Response& response, unsigned status, kj::StringPtr statusText,
                                 const kj::HttpHeaders& headers, std::string body) {
    auto owned = kj::heap<std::string>(std::move(body));
    auto stream = response.send(status, statusText, headers, uint64_t(owned->size()));
    auto written = stream->write(owned->data(), owned->size());
    return written.attach(kj::mv(stream), kj::mv(owned));
  }

  // Every request that does not parse (kj-http suggests 501 for an unknown method) is a bad
  // request; the connection closes after the answer.
  kj::Promise<void> handleClientProtocolError(kj::HttpHeaders::ProtocolError error,
                                              Response& response) override {
    kj::HttpHeaders headers(headerTable);
    headers.set(kj::HttpHeaderId::CONTENT_TYPE, "text/plain; charset=utf-8");
    return reply(response, 400, "Bad Request", headers,
                 std::string("bad request: ") + error.description.cStr() + "\n");
  }

  // Errors kj-http raises outside a request's handler (request headers over its 128 KiB bound,
  // a connection reset) close the connection without an answer and without a log line: they
  // concern nobody but that client. An exception from render() would be a bug: 500.
  kj::Promise<void> handleApplicationError(kj::Exception exception,
                                           kj::Maybe<Response&> response) override {
    KJ_IF_MAYBE (r, response) {
      if (exception.getType() != kj::Exception::Type::DISCONNECTED) {
        logError("metrics endpoint: ", exception.getDescription());
        kj::HttpHeaders headers(headerTable);
        headers.set(kj::HttpHeaderId::CONTENT_TYPE, "text/plain; charset=utf-8");
        return reply(*r, 500, "Internal Server Error", headers, "internal error\n");
      }
    }
    return kj::READY_NOW;
  }

  // A connection that failed (reset, timed out) concerns nobody but its client.
  void taskFailed(kj::Exception&&) override {}

  std::function<std::string()> render;
  kj::Timer& timer;
  kj::HttpHeaderTable headerTable;
  kj::Own<kj::ConnectionReceiver> listener;
  kj::HttpServer server;
  RateLimitedLog acceptLog;
  size_t connections = 0;
  kj::TaskSet tasks;                      // one per connection; destroyed before the server
  kj::Promise<void> accepting = nullptr;  // destroyed first: stops accepting
};

MetricsServer::MetricsServer(UvKjLoop& loop, const PeerAddress& address,
                             std::function<std::string()> render)
    : impl(kj::heap<Impl>(loop, bindMetrics(address), std::move(render))),
      port_(static_cast<uint16_t>(impl->listener->getPort())) {}

MetricsServer::~MetricsServer() noexcept(false) {}

uint16_t MetricsServer::port() const {
  return port_;
}

void MetricsServer::close() {
  impl = nullptr;
}

}  // namespace synod::daemon
