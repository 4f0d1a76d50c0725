// synod: the daemon. main() wires everything; nothing here decides anything about the protocol.
#include <signal.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>
#include <uv.h>

#include <kj/debug.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "daemon/config.h"
#include "daemon/local_api.h"
#include "daemon/logging.h"
#include "daemon/metrics_server.h"
#include "daemon/node.h"
#include "daemon/peer_transport.h"
#include "daemon/readiness.h"
#include "daemon/uv_loop.h"
#include "storage/lmdb_store.h"

namespace synod::daemon {
namespace {

constexpr const char* USAGE =
    "usage: synod --config FILE      run a member with this configuration\n"
    "       synod --dev              run a single-member group under ./var (member n1)\n"
    "       synod --check-config FILE  print the effective configuration; exit 0 if valid, 1 if "
    "not\n"
    "       synod --version | --help\n"
    "\n"
    "Signals: SIGTERM/SIGINT stop cleanly (a leader first hands leadership over; finish in-flight\n"
    "commits, close the store, remove the socket this daemon bound). SIGHUP re-reads the\n"
    "configuration file: a file that does not validate changes nothing; the limits\n"
    "lease_ttl_min_ms, lease_ttl_max_ms, lock_delay_ms, max_key_bytes, max_value_bytes and\n"
    "store_limit_bytes apply at once; other changed keys are logged as needing a restart.\n"
    "\n"
    "systemd: READY=1 is sent once this member can serve linearizable requests (a leader\n"
    "confirmed its leadership with a quorum and this member applied what it had decided);\n"
    "until then STATUS= says what it waits for. WATCHDOG=1 every WatchdogSec/2 from the loop.\n"
    "Logs go to the journal with fields (SYNOD_MEMBER, ...) when JOURNAL_STREAM names stderr,\n"
    "else to stderr with <N> priority prefixes.\n"
    "\n"
    "Exit status: 0 stopped cleanly, 1 configuration, store or socket error (logged), 2 usage.\n";

// Seeds the core's PRNG (election timeouts); any value is safe, a random one avoids ties.
uint64_t randomSeed() {
  uint64_t seed = 0;
  if (::getrandom(&seed, sizeof(seed), 0) != sizeof(seed)) seed = static_cast<uint64_t>(::getpid());
  return seed;
}

// Pause between readiness checks that failed at once (no quorum reachable).
constexpr uint32_t READINESS_RETRY_MS = 100;

// The Node's window on the other members: the peer transport.
class TransportOutbox final : public PeerOutbox {
 public:
  explicit TransportOutbox(PeerTransport& transport) : transport_(transport) {}

  void sendCore(MemberIndex to, election::PeerMessage message) override {
    transport_.send(to, PeerEnvelope(std::move(message)));
  }
  void sendForward(MemberIndex to, std::vector<std::string> commands) override {
    transport_.send(to, PeerEnvelope(Forward{std::move(commands)}));
  }
  void sendForwardRefused(MemberIndex to, std::vector<std::string> commands,
                          std::optional<MemberIndex> leaderHint) override {
    transport_.send(to, PeerEnvelope(ForwardRefused{std::move(commands), leaderHint}));
  }
  void sendSnapshotRequest(MemberIndex to, SnapshotRequest request) override {
    transport_.send(to, PeerEnvelope(request));
  }
  void sendSnapshotChunk(MemberIndex to, SnapshotChunk chunk) override {
    transport_.send(to, PeerEnvelope(std::move(chunk)));
  }
  void sendReport(MemberIndex to, const MemberReport& report) override {
    transport_.send(to, PeerEnvelope(report));
  }
  bool connected(MemberIndex peer) const override { return transport_.connected(peer); }

 private:
  PeerTransport& transport_;
};

// Everything that lives while the daemon serves, in construction order; destroyed in reverse.
class Daemon {
 public:
  explicit Daemon(Config config) : config_(std::move(config)) {}

  int run() {
    configureLogging(config_.node, stderrIsJournal());
    checkDataDir(config_);
    std::error_code ec;
    std::filesystem::create_directories(config_.dataDir, ec);
    if (ec) {
      throw storage::OpenError("cannot create data_dir " + config_.dataDir + ": " + ec.message());
    }
    storage::LmdbOptions options;
    options.dataDir = config_.dataDir;
    options.clusterId = config_.clusterId;
    options.memberName = config_.node;
    options.storeLimitBytes = config_.storeLimitBytes;
    // A data dir created now (perhaps a wiped one) starts above every incarnation an earlier
    // life of this member can have used (storage::LmdbOptions::firstIncarnation).
    options.firstIncarnation =
        static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                  std::chrono::system_clock::now().time_since_epoch())
                                  .count());
    store_ = storage::LmdbStore::open(options);

    KJ_ASSERT(uv_loop_init(&loop_) == 0);
    loopInitialized_ = true;
    kj_ = std::make_unique<UvKjLoop>(&loop_);
    if (config_.peers.size() > 1) {
      transport_ = std::make_unique<PeerTransport>(
          *kj_, config_,
          [this](MemberIndex from, PeerEnvelope&& message) { deliver(from, std::move(message)); });
      outbox_ = std::make_unique<TransportOutbox>(*transport_);
    }
    // Group commits run on libuv's thread pool: the loop keeps receiving while the disk syncs.
    commits_ = std::make_unique<UvCommitRunner>(&loop_);
    node_ = std::make_unique<Node>(config_, *store_, kj_->timer(), outbox_.get(), randomSeed(),
                                   commits_.get());

    int listenFd = takeListenSocket();
    api_ = std::make_unique<LocalApi>(*node_, kj_->lowLevel(), kj_->timer(), listenFd);
    startMetrics();

    startSignals();
    startWatchdog();
    logNotice("member ", config_.node.c_str(), " of cluster ", config_.clusterId.c_str(),
              " serving on ", config_.socket.c_str(), " (data in ", config_.dataDir.c_str(), ")");
    watchReadiness();

    uv_run(&loop_, UV_RUN_DEFAULT);
    return exitCode_;
  }

  ~Daemon() {
    readiness_.reset();
    metrics_.reset();
    api_.reset();
    node_.reset();  // finishes a commit still in flight
    commits_.reset();
    outbox_.reset();
    transport_.reset();
    kj_.reset();
    if (loopInitialized_) {
      uv_run(&loop_, UV_RUN_DEFAULT);  // let close callbacks run
      uv_loop_close(&loop_);
    }
    store_.reset();
    if (boundSocket_) unlinkOwnSocket(config_.socket, boundInode_);
  }

 private:
  void deliver(MemberIndex from, PeerEnvelope&& message) {
    if (!node_) return;  // not serving yet, or stopping
    std::visit(
        [&](auto&& body) {
          using Body = std::decay_t<decltype(body)>;
          if constexpr (std::is_same_v<Body, election::PeerMessage>) {
            node_->onPeerMessage(from, body);
          } else if constexpr (std::is_same_v<Body, Forward>) {
            node_->onForward(from, std::move(body.commands));
          } else if constexpr (std::is_same_v<Body, SnapshotRequest>) {
            node_->onSnapshotRequest(from, body);
          } else if constexpr (std::is_same_v<Body, SnapshotChunk>) {
            node_->onSnapshotChunk(from, std::move(body));
          } else if constexpr (std::is_same_v<Body, MemberReport>) {
            node_->onMemberReport(from, std::move(body));
          } else {
            node_->onForwardRefused(std::move(body.commands), body.leaderHint);
          }
        },
        std::move(message));
  }

  // The listening socket: handed over by systemd socket activation, else bound here.
  int takeListenSocket() {
    int handed = sd_listen_fds(1);
    if (handed == 1) {
      logInfo("using the local API socket handed over by systemd");
      return SD_LISTEN_FDS_START;
    }
    if (handed > 1) {
      throw SocketError("systemd handed over " + std::to_string(handed) +
                        " sockets; synod expects exactly one (the local API)");
    }
    int fd = bindLocalSocket(config_);
    struct stat bound {};
    if (::stat(config_.socket.c_str(), &bound) == 0) {
      boundSocket_ = true;
      boundInode_ = bound.st_ino;
    }
    return fd;
  }

  // The Prometheus endpoint, when metrics_listen is set. An address that cannot be bound stops
  // the start like the local socket does (SocketError, exit 1).
  void startMetrics() {
    if (!config_.metricsListen) return;
    metrics_ = std::make_unique<MetricsServer>(*kj_, *config_.metricsListen, [this]() {
      return renderMemberMetrics(collectMemberMetrics(*node_, transport_.get()));
    });
    PeerAddress bound{config_.metricsListen->host, metrics_->port()};
    logNotice("metrics on http://", bound.toString().c_str(), "/metrics");
  }

  // READY=1 only once a linearizable read succeeds here (daemon/readiness.h); until then STATUS=
  // says what the member waits for. Apps may connect and call before: their calls wait or fail
  // at their deadline.
  void watchReadiness() {
    sd_notify(0, "STATUS=starting: checking for a quorum");
    const uint32_t checkMs = std::max<uint32_t>(2 * config_.electionTimeoutMs, 1000);
    readiness_ = std::make_unique<ReadinessWatch>(
        *node_, kj_->timer(), checkMs, READINESS_RETRY_MS,
        [this](const std::string& reason) {
          logNotice("not ready: ", reason.c_str());
          sd_notifyf(0, "STATUS=%s", reason.c_str());
        },
        [this]() {
          logNotice("ready: serving linearizable requests");
          sd_notifyf(0, "READY=1\nSTATUS=serving as %s (group of %zu)", config_.node.c_str(),
                     config_.peers.size());
        });
  }

  void startSignals() {
    for (int signum : {SIGTERM, SIGINT, SIGHUP}) {
      auto& handle = signals_.emplace_back(std::make_unique<uv_signal_t>());
      uv_signal_init(&loop_, handle.get());
      handle->data = this;
      uv_signal_start(
          handle.get(),
          [](uv_signal_t* h, int which) { static_cast<Daemon*>(h->data)->onSignal(which); },
          signum);
    }
  }

  void startWatchdog() {
    uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0) return;
    watchdog_ = std::make_unique<uv_timer_t>();
    uv_timer_init(&loop_, watchdog_.get());
    // Sent from the loop itself: a stuck loop stops the pings and systemd restarts the daemon.
    uint64_t periodMs = std::max<uint64_t>(usec / 2000, 1);
    uv_timer_start(
        watchdog_.get(), [](uv_timer_t*) { sd_notify(0, "WATCHDOG=1"); }, periodMs, periodMs);
  }

  void onSignal(int signum) {
    if (signum == SIGHUP) {
      reload();
      return;
    }
    if (stopping_) return;
    stopping_ = true;
    logNotice("received ", strsignal(signum), ": stopping");
    sd_notify(0, "STOPPING=1\nSTATUS=stopping");
    // A leader first hands leadership to an up-to-date follower, so the group does not wait an
    // election timeout for it; it keeps voting and serving until another member leads, or until
    // two election timeouts passed (the Handoff was lost: the group elects the ordinary way).
    if (config_.peerNames().size() > 1 && node_->transferLeadership(std::nullopt)) {
      handoffDeadline_ = bootTimeNow() +
                         2 * static_cast<Nanos>(config_.electionTimeoutMs) * election::NANOS_PER_MS;
      auto timer = std::make_unique<uv_timer_t>();
      uv_timer_init(&loop_, timer.get());
      timer->data = this;
      uv_timer_start(
          timer.get(), [](uv_timer_t* h) { static_cast<Daemon*>(h->data)->pollHandoff(); }, 5, 5);
      handoffTimer_ = std::move(timer);
      return;
    }
    stopNow();
  }

  // SIGHUP: re-reads the file this daemon started from. A file that does not validate changes
  // nothing. Live keys (config.h, isLiveKey) are applied and logged one by one; changed keys that
  // need a restart are logged and left as they run.
  void reload() {
    if (config_.sourcePath.empty() || config_.sourcePath == "<dev>") {
      logNotice("SIGHUP: the --dev configuration has no file to re-read");
      return;
    }
    reloadFrom(config_.sourcePath);
  }

  void reloadFrom(const std::string& path) {
    Config loaded;
    try {
      loaded = loadConfigFile(path);
      withLiveKeys(config_, loaded);
    } catch (const ConfigError& e) {
      logError("SIGHUP: ", e.what(), "; nothing changed");
      return;
    }
    auto changes = diffConfigs(config_, loaded);
    if (changes.empty()) {
      logNotice("SIGHUP: ", path.c_str(), " re-read; nothing changed");
      return;
    }
    for (const ConfigChange& change : changes) {
      if (change.live) {
        logNotice(change.key.c_str(), ": ", change.before.c_str(), " -> ", change.after.c_str(),
                  " (applied)");
      } else if (change.key == "peers") {
        logWarning("peers changed: needs a restart (running with ", change.before.c_str(), ")");
      } else {
        logWarning(change.key.c_str(), ": ", change.before.c_str(), " -> ", change.after.c_str(),
                   " (needs a restart)");
      }
    }
    applyLiveKeys(config_, loaded);
    node_->limitsChanged();
    node_->whenStoreIdle([this] { store_->setStoreLimitBytes(config_.storeLimitBytes); });
  }

  void pollHandoff() {
    auto leader = node_->knownLeader();
    const bool handedOver = leader && *leader != node_->self();
    if (!handedOver && bootTimeNow() < handoffDeadline_) return;
    if (handedOver) {
      logNotice("leadership handed over to ", config_.peerNames()[*leader].c_str());
    } else {
      logNotice("no other leader known after the hand-off; stopping anyway");
    }
    uv_timer_stop(handoffTimer_.get());
    stopNow();
  }

  void stopNow() {
    readiness_.reset();  // its timers would keep the loop running
    api_->stopAccepting();
    node_->drain();
    // Give the replies of the writes just answered a moment to leave, then close everything.
    auto timer = std::make_unique<uv_timer_t>();
    uv_timer_init(&loop_, timer.get());
    timer->data = this;
    uv_timer_start(
        timer.get(), [](uv_timer_t* h) { static_cast<Daemon*>(h->data)->finishStop(); }, 50, 0);
    stopTimer_ = std::move(timer);
  }

  void finishStop() {
    api_->closeAll();
    if (metrics_) metrics_->close();
    if (transport_) transport_->close();
    for (auto& handle : signals_) {
      uv_close(reinterpret_cast<uv_handle_t*>(handle.get()), nullptr);
    }
    if (watchdog_) uv_close(reinterpret_cast<uv_handle_t*>(watchdog_.get()), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(stopTimer_.get()), nullptr);
    if (handoffTimer_) uv_close(reinterpret_cast<uv_handle_t*>(handoffTimer_.get()), nullptr);
    logNotice("stopped cleanly");
  }

  Config config_;
  std::unique_ptr<storage::LmdbStore> store_;
  uv_loop_t loop_{};
  bool loopInitialized_ = false;
  std::unique_ptr<UvKjLoop> kj_;
  std::unique_ptr<PeerTransport> transport_;
  std::unique_ptr<TransportOutbox> outbox_;
  std::unique_ptr<UvCommitRunner> commits_;
  std::unique_ptr<Node> node_;
  std::unique_ptr<LocalApi> api_;
  std::unique_ptr<MetricsServer> metrics_;
  std::unique_ptr<ReadinessWatch> readiness_;
  std::vector<std::unique_ptr<uv_signal_t>> signals_;
  std::unique_ptr<uv_timer_t> watchdog_;
  std::unique_ptr<uv_timer_t> stopTimer_;
  std::unique_ptr<uv_timer_t> handoffTimer_;
  Nanos handoffDeadline_ = 0;
  bool boundSocket_ = false;
  ino_t boundInode_ = 0;
  bool stopping_ = false;
  int exitCode_ = 0;
};

int checkConfig(const std::string& path) {
  try {
    Config config = loadConfigFile(path);
    checkDataDir(config);
    std::fputs(renderConfig(config).c_str(), stdout);
    return 0;
  } catch (const ConfigError& e) {
    std::fprintf(stderr, "synod: %s\n", e.what());
    return 1;
  }
}

int serve(std::optional<std::string> configPath) {
  ::signal(SIGPIPE, SIG_IGN);  // a client that vanished is an error return, not a signal
  try {
    Config config = configPath ? loadConfigFile(*configPath) : devConfig("var");
    Daemon daemon(std::move(config));
    return daemon.run();
  } catch (const ConfigError& e) {
    std::fprintf(stderr, "synod: %s\n", e.what());
    return 1;
  } catch (const storage::OpenError& e) {
    logError("cannot open the store: ", e.what());
    return 1;
  } catch (const storage::CorruptionError& e) {
    logError("store is corrupt: ", e.what(),
             "; this member cannot serve: wipe its data_dir and let it catch up from its peers");
    return 1;
  } catch (const SocketError& e) {
    logError(e.what());
    return 1;
  } catch (const kj::Exception& e) {
    logError("fatal: ", e.getDescription());
    return 1;
  } catch (const std::exception& e) {
    logError("fatal: ", e.what());
    return 1;
  }
}

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.size() == 1 && (args[0] == "--help" || args[0] == "-h")) {
    std::fputs(USAGE, stdout);
    return 0;
  }
  if (args.size() == 1 && args[0] == "--version") {
    std::printf("synod %s\n", SYNOD_VERSION);
    return 0;
  }
  if (args.size() == 1 && args[0] == "--dev") return serve(std::nullopt);
  if (args.size() == 2 && args[0] == "--config") return serve(args[1]);
  if (args.size() == 2 && args[0] == "--check-config") return checkConfig(args[1]);
  std::fputs(USAGE, stderr);
  return 2;
}

}  // namespace
}  // namespace synod::daemon

int main(int argc, char** argv) {
  return synod::daemon::main(argc, argv);
}
