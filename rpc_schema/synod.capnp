@0x80843e15ef94bd71;
# The local API: what applications on a host use to talk to their own synod daemon over the Unix
# socket. One bootstrap capability per connection; everything else hangs off it, so a dropped
# connection drops every capability the app held.
#
# Conventions:
# - Every request carries `timeoutMs`, the caller's deadline relative to when the daemon receives
#   it (0 = the daemon's default, 5000 ms). Past it the daemon answers TIMEOUT (or NO_QUORUM when it
#   knows no quorum is reachable); for writes the outcome is then unknown.
# - Every reply carries a `Status` and a `Header`. Expected outcomes (not found, compare failed, bad
#   argument, no space) are statuses, never RPC exceptions.
# - Keys and values are bytes. Key order is byte order.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("synod::rpc");

struct Status {
  code @0 :Code;
  message @1 :Text;  # human text naming what was wrong; empty when ok

  enum Code {
    ok @0;
    notFound @1;
    compareFailed @2;
    noQuorum @3;         # for writes: outcome unknown
    timeout @4;          # for writes: outcome unknown
    invalidArgument @5;
    noSpace @6;
    unavailable @7;
    internal @8;
  }
}

struct Header {
  revision @0 :UInt64;  # the config map's revision this reply reflects
  member @1 :Text;      # name of the member that served the request
  ballotRound @2 :UInt64;
  ballotMember @3 :UInt32;
}

struct KeyValue {
  key @0 :Data;
  value @1 :Data;
  createRevision @2 :UInt64;
  modRevision @3 :UInt64;
  version @4 :UInt64;   # number of puts since the key was (re)created; 0 = absent
  lease @5 :UInt64;     # 0 = none
}

struct PutOp {
  key @0 :Data;
  value @1 :Data;
  lease @2 :UInt64;     # 0 = none
}

struct DeleteOp {
  key @0 :Data;
  # Empty: delete `key` only. Otherwise delete every key k with key <= k < rangeEnd; the single
  # byte 0x00 means every key >= key (so key = "" and rangeEnd = "\0" deletes everything).
  rangeEnd @1 :Data;
}

struct Compare {
  key @0 :Data;
  op @1 :Op;
  target :union {
    value @2 :Data;
    version @3 :UInt64;         # version 0 = the key is absent
    createRevision @4 :UInt64;
    modRevision @5 :UInt64;
    # `key` names a lock (not a key): compares the fence of its current holder, 0 when it has
    # none. `equal` with a fence holds exactly while that grant is current.
    fence @6 :UInt64;
  }

  enum Op {
    equal @0;
    notEqual @1;
    less @2;
    greater @3;
  }
}

struct TxnOp {
  union {
    put @0 :PutOp;
    delete @1 :DeleteOp;
  }
}

# All compares are evaluated against the same state; if all hold the `success` ops run, otherwise
# the `failure` ops, all atomically at one new revision (no new revision if the chosen branch is
# empty or changes nothing).
struct Txn {
  compares @0 :List(Compare);
  success @1 :List(TxnOp);
  failure @2 :List(TxnOp);
}

interface Synod {
  kv @0 () -> (kv :Kv);
  admin @1 () -> (admin :Admin);
  leases @2 () -> (leases :Leases);
  locks @3 () -> (locks :Locks);
  watches @4 () -> (watches :Watches);
}

interface Kv {
  # Linearizable unless `serializable`: then the local member answers at once from its replica.
  get @0 (key :Data, timeoutMs :UInt32, serializable :Bool)
      -> (status :Status, header :Header, kv :KeyValue);

  put @1 (op :PutOp, timeoutMs :UInt32) -> (status :Status, header :Header);

  delete @2 (op :DeleteOp, timeoutMs :UInt32) -> (status :Status, header :Header, deleted :UInt64);

  # Keys starting with `prefix`, in byte order, after `startAfter` (exclusive; empty = from the
  # start), at most `limit` of them (0 = the daemon's maximum, 10000). `more` says whether keys
  # remain; continue with startAfter = the last key returned.
  list @3 (prefix :Data, limit :UInt32, startAfter :Data, timeoutMs :UInt32, serializable :Bool)
      -> (status :Status, header :Header, kvs :List(KeyValue), more :Bool);

  txn @4 (txn :Txn, timeoutMs :UInt32) -> (status :Status, header :Header, succeeded :Bool);
}

struct MemberStatus {
  name @0 :Text;
  address @1 :Text;
  role @2 :Text;        # leader / follower / candidate / learner / unknown
  reachable @3 :Bool;
  lagSlots @4 :UInt64;
  # From the member's own latest report (the answering member's are current); all zero / empty
  # when `reported` is false.
  reported @5 :Bool;       # a report from this member was received since the answering one started
  reportAgeMs @6 :UInt64;  # since the report was received; 0 for the answering member
  stale @7 :Bool;          # not reachable, no report, or the report is older than 3 report intervals
  ballotRound @8 :UInt64;
  ballotMember @9 :UInt32;
  leader @10 :Text;        # the leader that member knows; empty when unknown
  decidedSlot @11 :UInt64;
  appliedSlot @12 :UInt64;
  revision @13 :UInt64;
  leaseLeftMs @14 :UInt64; # leader lease left, at the leader; 0 elsewhere
  dbSizeBytes @15 :UInt64;
  storeLimitBytes @16 :UInt64;
  commitP50Us @17 :UInt64; # group commit (fsync) latency over its recent commits, microseconds
  commitP99Us @18 :UInt64;
  incarnation @19 :UInt64;
  uptimeMs @20 :UInt64;
  stateDigest @21 :UInt64; # equal on members with equal applied state (same revision)
  # Catch-up progress, from the same report.
  recovering @22 :Bool;    # empty data dir: not voting until it has caught up
  recoveryStage @23 :Text; # what the recovery waits for; empty unless recovering
  snapshotFrom @24 :Text;  # the member a snapshot is being received from; empty when none
  snapshotBytesReceived @25 :UInt64;
  snapshotBytesTotal @26 :UInt64;
  # The highest decidedSlot of any report the answering member holds (its own included) minus
  # this member's appliedSlot, at least 0.
  slotsBehind @27 :UInt64;
}

struct StatusInfo {
  member @0 :Text;
  role @1 :Text;
  ballotRound @2 :UInt64;
  ballotMember @3 :UInt32;
  leader @4 :Text;      # empty when unknown
  decidedSlot @5 :UInt64;
  appliedSlot @6 :UInt64;
  revision @7 :UInt64;
  members @8 :List(MemberStatus);
  clusterId @9 :Text;
  incarnation @10 :UInt64;
  dbSizeBytes @11 :UInt64;
  storeLimitBytes @12 :UInt64;
  version @13 :Text;
  uptimeMs @14 :UInt64;
  # The caller as the daemon sees it (SO_PEERCRED of this connection).
  callerPid @15 :Int32;
  callerUid @16 :UInt32;
  callerGid @17 :UInt32;
  leaseLeftMs @18 :UInt64;  # leader lease left; 0 unless this member leads
  commitP50Us @19 :UInt64;  # group commit (fsync) latency over the recent commits, microseconds
  commitP99Us @20 :UInt64;
  stateDigest @21 :UInt64;  # the config map's digest with the revision mixed in
}

interface Admin {
  status @0 (timeoutMs :UInt32) -> (status :Status, header :Header, info :StatusInfo);

  # Hands leadership from this member, which must lead, to `target` (a member name; empty = the
  # most up-to-date reachable follower) and answers once another member is known to lead (ok,
  # `leader` names it) or with timeout after timeoutMs (0 = the default). unavailable when this
  # member does not lead (`leader` names the leader it knows, if any) or cannot reach the target;
  # invalidArgument for an unknown name.
  transferLeader @1 (target :Text, timeoutMs :UInt32)
      -> (status :Status, header :Header, leader :Text);

  # Whether this member can serve. `live`: its loop answered (always true in a reply). `ready`:
  # a linearizable read barrier succeeded just now, the same condition as the sd_notify READY=1
  # it sends at start-up. `reason` says what it waits for when not ready. Answers at once when
  # fewer than a majority of members are reachable, else within timeoutMs (0 = the default).
  # status is ok whether or not the member is ready.
  health @2 (timeoutMs :UInt32)
      -> (status :Status, header :Header, live :Bool, ready :Bool, reason :Text);
}

# ---------------------------------------------------------------------------------------------
# Leases, locks and elections (ARCHITECTURE.md "Leases, locks, elections").
#
# Time: `remainingMs` is always conservative and counted on this host from the moment the daemon
# sent the last renewal that the group committed (never from its arrival), shortened by the drift
# bound. A client counts it from when it *sent* its request, so its own deadline is earlier still.

struct LeaseOptions {
  # Survives the connection (and the Lease capability): ends only by TTL or revoke, and can be
  # re-attached by id from a new connection. Otherwise the lease is bound to this connection: when
  # the connection closes or the Lease capability is dropped, the daemon revokes it at once, after
  # `lockDelayMs`.
  detached @0 :Bool;
  # Delay between the disconnect of a connection-bound lease and its revoke, so that a crashed
  # holder's in-flight writes land before its locks pass on. -1 = the config's lock_delay_ms.
  lockDelayMs @1 :Int32 = -1;
}

struct LeaseHolderInfo {
  member @0 :Text;  # the member the holder's connection is (or was) to
  pid @1 :Int32;    # SO_PEERCRED of the granting connection
  uid @2 :UInt32;
}

struct LeaseInfo {
  id @0 :UInt64;
  ttlMs @1 :UInt64;
  # How long the lease is certainly still alive, from when the daemon answered: counted from the
  # send time of its last committed renewal when it is held through this member, otherwise the
  # group's recorded remainder (an upper estimate elsewhere; see `local`).
  remainingMs @2 :UInt64;
  fence @3 :UInt64;       # the revision at which it was granted
  holder @4 :LeaseHolderInfo;
  detached @5 :Bool;
  local @6 :Bool;         # held through this member (its renewals come from here)
  attached @7 :Bool;      # a connection to this member holds a Lease capability for it
  epoch @8 :UInt64;       # renewals so far + 1
  keys @9 :UInt64;        # keys attached to it
  locks @10 :List(Data);  # names of the locks it holds or waits for
}

# An app's handle on one lease. Dropping it (or closing the connection) revokes a connection-bound
# lease; a detached one lives on.
interface Lease {
  # Says the app is alive. Absorbed by this member, which renews its leases in one batched
  # command; answers at once with how long the lease is safe (see LeaseInfo.remainingMs).
  # notFound when the lease has ended.
  keepAlive @0 () -> (status :Status, header :Header, remainingMs :UInt64, ttlMs :UInt64);
  revoke @1 (timeoutMs :UInt32) -> (status :Status, header :Header);
  info @2 (timeoutMs :UInt32) -> (status :Status, header :Header, info :LeaseInfo);
}

interface Leases {
  # ttlMs must be within lease_ttl_min_ms .. lease_ttl_max_ms (invalidArgument otherwise; never
  # clamped). Answers once the grant is applied here.
  grant @0 (ttlMs :UInt64, options :LeaseOptions, timeoutMs :UInt32)
      -> (status :Status, header :Header, lease :Lease, info :LeaseInfo);
  # A Lease capability for an existing lease held through this member (a detached one, or one
  # whose connection is gone and not yet revoked). notFound when it has ended; invalidArgument
  # when it is held through another member.
  attach @1 (id :UInt64, timeoutMs :UInt32)
      -> (status :Status, header :Header, lease :Lease, info :LeaseInfo);
  # Every lease of the group, ascending id.
  list @2 (timeoutMs :UInt32, serializable :Bool)
      -> (status :Status, header :Header, leases :List(LeaseInfo));
  info @3 (id :UInt64, timeoutMs :UInt32, serializable :Bool)
      -> (status :Status, header :Header, info :LeaseInfo);
  # Ends any lease at once: its keys are deleted and its locks pass on. notFound when none.
  revoke @4 (id :UInt64, timeoutMs :UInt32) -> (status :Status, header :Header);
}

struct LockHolder {
  lease @0 :UInt64;
  value @1 :Data;   # the election value; empty for a plain lock
  fence @2 :UInt64; # the revision of the grant
  holder @3 :LeaseHolderInfo;
}

# Told every change of one lock's holder, in order, from the holder at the time of observe on.
interface LockObserver {
  # hasHolder false: the lock is free (`holder` unset) at `revision`.
  changed @0 (hasHolder :Bool, holder :LockHolder, revision :UInt64) -> ();
}

# Dropping it stops the observation.
interface Observation {
  cancel @0 () -> ();
}

interface Locks {
  # Takes lock `name` for `lease`. `wait` false (tryLock): compareFailed at once when it is held
  # by another lease. `wait` true: queues FIFO and answers once granted. Either way, `fence` is
  # the grant's fence. A wait fails at once (notFound) when the lease ends, and with timeout after
  # timeoutMs (0 = no deadline), leaving the queue. A lease that already holds the lock gets its
  # current fence.
  lock @0 (name :Data, lease :UInt64, wait :Bool, timeoutMs :UInt32)
      -> (status :Status, header :Header, fence :UInt64);
  # An election: lock with a value, FIFO among the candidates.
  campaign @1 (name :Data, value :Data, lease :UInt64, timeoutMs :UInt32)
      -> (status :Status, header :Header, fence :UInt64);
  # unlock / resign: the lease gives up the lock or leaves its queue. notFound when it has neither.
  unlock @2 (name :Data, lease :UInt64, timeoutMs :UInt32) -> (status :Status, header :Header);
  # The holder replaces its value; the fence stays. notFound when `lease` does not hold it.
  proclaim @3 (name :Data, lease :UInt64, value :Data, timeoutMs :UInt32)
      -> (status :Status, header :Header);
  # The current holder; notFound when the lock is free.
  leader @4 (name :Data, timeoutMs :UInt32, serializable :Bool)
      -> (status :Status, header :Header, holder :LockHolder);
  # Whether `fence` is the current holder's fence.
  checkFence @5 (name :Data, fence :UInt64, timeoutMs :UInt32, serializable :Bool)
      -> (status :Status, header :Header, current :Bool, holder :LockHolder, hasHolder :Bool);
  # Calls `observer` with the current holder (or none) at once, then on every change in order,
  # served by this member's replica. Ends when the Observation or the connection is dropped.
  observe @6 (name :Data, observer :LockObserver)
      -> (status :Status, header :Header, observation :Observation);
}

# ---------------------------------------------------------------------------------------------
# Watches and history (ARCHITECTURE.md "Storage": the history table). Served by each member from
# its own replica: no leader is involved, so watchers spread over the hosts.
#
# Every member keeps the changes of its last history_revisions revisions (and at most a bounded
# number of bytes); `compact` forgets older ones on every member. Revisions below the oldest kept
# one are "compacted": a watch from there gets a snapshot instead, a read at one is refused.

struct WatchEvent {
  kind @0 :Kind;
  # put: the key as written (modRevision = the event's revision). delete: `key`, and modRevision =
  # the revision of the delete; the other fields are 0.
  kv @1 :KeyValue;
  # The key before this event, when the watch asked for it (prevKv) and the key existed.
  hasPrevKv @2 :Bool;
  prevKv @3 :KeyValue;

  enum Kind {
    put @0;
    delete @1;
  }
}

struct WatchSnapshotPage {
  kvs @0 :List(KeyValue);  # ascending key order, continuing the previous page
  last @1 :Bool;           # the snapshot is complete: events from `revision` + 1 follow
}

# What a watcher is told, in order, one call at a time.
struct WatchMessage {
  # events, progress, the last snapshot page: every change of the watched range with a revision
  # <= `revision` has now been delivered (resume from `revision` + 1). compacted and the other
  # snapshot pages: the snapshot's revision. cancelled: the last revision through which
  # everything was delivered (resume from `revision` + 1).
  revision @0 :UInt64;
  union {
    # The changes of one or more whole revisions, ascending; all changes of one revision (one
    # transaction, one lease's end) are always in the same message.
    events @1 :List(WatchEvent);
    # Nothing changed in the range since the last message, through `revision`.
    progress @2 :Void;
    # The revision asked for is no longer kept (the value is the oldest revision kept): the
    # range's state at `revision` follows in snapshot pages, then events from `revision` + 1.
    compacted @3 :UInt64;
    snapshot @4 :WatchSnapshotPage;
    # The watch ended and nothing follows; the text says why (too slow a watcher: its buffer
    # filled; compacted while its snapshot was delivered; the member stops).
    cancelled @5 :Text;
  }
}

# Implemented by the app. The daemon sends the next message only after the previous call returned
# (one outstanding call per watcher); an exception from it ends the watch.
interface Watcher {
  deliver @0 (message :WatchMessage) -> ();
}

# Dropping it (or the connection) ends the watch.
interface Watch {
  cancel @0 () -> ();
}

interface Watches {
  # Watches `key` (prefix false) or every key starting with `key` (prefix true; an empty prefix
  # watches everything) from `fromRevision` (0 = from the next change on). Changes since then
  # that are still kept are delivered first. `oldestRevision` is the oldest revision kept;
  # `startRevision` the first revision whose events will come (after a snapshot when compacted).
  # unavailable when this member serves too many watches.
  watch @0 (key :Data, prefix :Bool, fromRevision :UInt64, prevKv :Bool, watcher :Watcher)
      -> (status :Status, header :Header, watch :Watch, oldestRevision :UInt64,
          startRevision :UInt64, compacted :Bool);
  # Forgets the history below `revision` on every member (a replicated command). invalidArgument
  # when revision is 0 or ahead of the current revision + 1.
  compact @1 (revision :UInt64, timeoutMs :UInt32)
      -> (status :Status, header :Header, oldestRevision :UInt64);
  # Reads at a past revision, from this member's history: the same answer on every member.
  # `revision` 0 = the current one (a serializable read). notFound (get) when the key did not exist
  # then; invalidArgument when the revision is compacted (below oldestRevision - 1) or ahead of the
  # group's current revision. header.revision is the revision read at.
  get @2 (key :Data, revision :UInt64, timeoutMs :UInt32)
      -> (status :Status, header :Header, kv :KeyValue, oldestRevision :UInt64);
  list @3 (prefix :Data, revision :UInt64, limit :UInt32, startAfter :Data, timeoutMs :UInt32)
      -> (status :Status, header :Header, kvs :List(KeyValue), more :Bool,
          oldestRevision :UInt64);
}
