// libsynod's RAII objects for leases, locks and elections, on an AsyncClient's KJ loop.
//
// A `Lease` keeps itself alive while the loop runs (an app using the blocking Client lets it run
// during its calls and with Client::runFor). It keeps a conservative local deadline: the send
// time of a keepAlive on the loop's monotonic clock plus the remainingMs of its reply, the
// latest over all replies. The daemon counts remainingMs from the send time of its last
// committed renewal, so the lease cannot have ended at the daemon before this deadline; acting
// only before it is safe.
//
// Events, in order: GRANTED once; JEOPARDY when less than `jeopardyMs` is left or the daemon did
// not answer a keepAlive; SAFE when a keepAlive pushed the deadline past `jeopardyMs` again;
// EXPIRED (final) when the local deadline passed, the daemon said the lease ended, or it was
// revoked. A `Lock` or `Election` is held through a Lease, exposes its fence and is gone when
// its lease is: an app checks `held()` and the lease's deadline before each act and passes the
// fence to what it guards.
//
// Lifetimes: these objects refer to the AsyncClient (and a Lock / Election to its Lease), which
// must outlive them. Listeners run on the loop and must not destroy the object they listen to.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "clients/synod_client.h"

namespace synod::clients {

enum class LeaseEvent { GRANTED, JEOPARDY, SAFE, EXPIRED };

/// "granted", "jeopardy", "safe", "expired".
const char* leaseEventName(LeaseEvent event);

struct LeaseSettings {
  uint64_t ttlMs = 10000;
  LeaseOptions options;              // detached, lockDelayMs
  uint32_t keepAliveIntervalMs = 0;  // 0: ttlMs / 6
  uint32_t jeopardyMs = 0;           // in jeopardy below this much left; 0: ttlMs / 3
  uint32_t timeoutMs = 0;            // of grant, attach and revoke; 0: the client's default
};

class Lease {
 public:
  using Listener = std::function<void(LeaseEvent)>;

  /// Grants a lease and keeps it alive. `listener` (may be empty) hears GRANTED before the
  /// promise resolves, then every later event.
  static kj::Promise<Result<kj::Own<Lease>>> grant(AsyncClient& client, LeaseSettings settings,
                                                   Listener listener = {});
  /// Takes over an existing lease held through this member (a detached one, or one whose
  /// connection is gone and not yet revoked) and keeps it alive. settings.ttlMs is ignored.
  static kj::Promise<Result<kj::Own<Lease>>> attach(AsyncClient& client, uint64_t id,
                                                    LeaseSettings settings, Listener listener = {});

  /// Revokes the lease (in the background; a connection-bound one also ends with the
  /// connection) unless it expired or was released.
  ~Lease() noexcept(false);
  KJ_DISALLOW_COPY(Lease);

  uint64_t id() const { return info.id; }
  uint64_t ttlMs() const { return info.ttlMs; }
  uint64_t fence() const { return info.fence; }  // the revision at which it was granted
  /// The last event: GRANTED and SAFE mean fine.
  LeaseEvent state() const { return current; }
  bool expired() const { return current == LeaseEvent::EXPIRED; }
  /// The conservative local deadline, on client().timer(): the lease cannot have ended before it.
  kj::TimePoint deadline() const { return localDeadline; }
  /// Milliseconds to the deadline now (0 when past), by the loop's clock.
  uint64_t remainingMs() const;
  /// Why it expired or went into jeopardy last; empty otherwise.
  const std::string& reason() const { return lastReason; }
  uint64_t keepAlivesSent() const { return sent; }
  uint64_t keepAlivesAnswered() const { return answered; }
  AsyncClient& client() const { return asyncClient; }

  /// Ends it now and waits for the daemon's answer; the state becomes EXPIRED either way.
  kj::Promise<Result<Empty>> revoke();
  /// Stops keeping it alive and forgets it without revoking: a detached lease lives on until its
  /// TTL; a connection-bound one ends at the daemon as its capability is dropped.
  void release();

  /// For the implementation: use grant or attach.
  Lease(AsyncClient& client, LeaseSettings settings, Listener listener, LeaseInfo info,
        rpc::Lease::Client cap, kj::TimePoint sentAt);

 private:
  struct NoErrors : public kj::TaskSet::ErrorHandler {
    void taskFailed(kj::Exception&&) override {}
  };

  static kj::Promise<Result<kj::Own<Lease>>> start(AsyncClient& client, LeaseSettings settings,
                                                   Listener listener,
                                                   kj::Promise<Result<LeaseGrant>> granting,
                                                   kj::TimePoint sentAt);
  kj::Promise<void> keepAliveLoop(kj::TimePoint next);
  kj::Promise<void> watchLoop();
  void onKeepAlive(kj::TimePoint sentAt, const Result<KeepAliveReply>& reply);
  void enterJeopardy(std::string reason);
  void expire(std::string reason, bool revokeAtDaemon);
  void emit(LeaseEvent event);

  AsyncClient& asyncClient;
  LeaseSettings settings;
  Listener listener;
  LeaseInfo info;
  kj::Maybe<rpc::Lease::Client> cap;  // null once expired or released
  kj::TimePoint localDeadline;
  kj::Duration interval;
  kj::Duration jeopardy;
  LeaseEvent current = LeaseEvent::GRANTED;
  std::string lastReason;
  uint64_t sent = 0;
  uint64_t answered = 0;
  bool finished = false;  // expired or released: no more keepAlives or events
  NoErrors noErrors;
  kj::TaskSet tasks{noErrors};  // last: cancelled first
};

/// A lock (or, as Election, leadership) held through a Lease. Not held any more once its lease
/// expired, it was unlocked, or an observed change shows another holder.
class Lock {
 public:
  /// Takes lock `name` for `lease`. `wait` false: COMPARE_FAILED at once when it is held by
  /// another lease. `wait` true: queues FIFO; TIMEOUT after timeoutMs (0: waits without a
  /// deadline), NOT_FOUND when the lease ends meanwhile. `lease` must outlive the Lock.
  static kj::Promise<Result<kj::Own<Lock>>> acquire(Lease& lease, std::string name,
                                                    bool wait = true, uint32_t timeoutMs = 0);
  /// Unlocks in the background unless unlocked, released, or the lease expired.
  virtual ~Lock() noexcept(false);
  KJ_DISALLOW_COPY(Lock);

  const std::string& name() const { return lockName; }
  uint64_t fence() const { return grantFence; }
  Lease& lease() const { return heldThrough; }
  /// Held as far as this process knows: not unlocked, the lease not expired, no other holder
  /// observed. Also check lease().deadline() before acting.
  bool held() const;
  /// Why it is not held any more; empty while held.
  std::string lostReason() const;
  /// Called once when held() turns false for another reason than unlock()/release().
  void onLost(std::function<void(const std::string& reason)> listener);

  /// Gives it up and waits for the daemon's answer.
  kj::Promise<Result<Empty>> unlock();
  /// Forgets it without unlocking (it passes on when the lease ends).
  void release();

  /// For the implementation: use acquire or Election::campaign.
  Lock(Lease& lease, std::string name, uint64_t fence);

 protected:
  /// Starts observing the holder, so that another holder is noticed at once. Resolves once the
  /// observation runs (or could not start: then held() relies on the lease alone).
  kj::Promise<void> watchHolder();
  void observed(const LockChange& change);
  void lose(std::string reason);

  Lease& heldThrough;
  std::string lockName;
  uint64_t grantFence;
  bool given = false;  // unlocked or released
  std::string lost;
  std::function<void(const std::string&)> lostListener;
  Observation observation;  // of the holder, from the grant on
};

/// Leadership of election `name`, held through a Lease.
class Election : public Lock {
 public:
  /// Waits FIFO among the candidates until elected (TIMEOUT after timeoutMs; 0: no deadline).
  /// `lease` must outlive the Election.
  static kj::Promise<Result<kj::Own<Election>>> campaign(Lease& lease, std::string name,
                                                         std::string value, uint32_t timeoutMs = 0);
  ~Election() noexcept(false) override = default;

  const std::string& value() const { return leaderValue; }
  /// Replaces the value shown by leader(); the fence stays.
  kj::Promise<Result<Empty>> proclaim(std::string value);
  /// Gives up leadership (or the place in the queue).
  kj::Promise<Result<Empty>> resign() { return unlock(); }

  Election(Lease& lease, std::string name, std::string value, uint64_t fence);

 private:
  std::string leaderValue;
};

}  // namespace synod::clients
