@0xcd4ee6af3f9271a8;
# What synod stores in LMDB and replicates in its log. Every stored value is framed by storage/
# (format version + CRC32C + this flat message). Fields are only ever added.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("synod::records");

using Api = import "synod.capnp";

struct Ballot {
  round @0 :UInt64;
  member @1 :UInt32;
}

# Who sent a command: makes retries by the daemon exactly-once.
struct CommandId {
  member @0 :UInt32;       # index of the originating member in the sorted peer list
  incarnation @1 :UInt64;  # that member's incarnation (persisted, bumped at every start)
  sequence @2 :UInt64;     # increasing per incarnation, from 1
}

# One state machine command. A slot's value is a list of encoded Commands.
struct Command {
  id @0 :CommandId;
  union {
    put @1 :Api.PutOp;
    delete @2 :Api.DeleteOp;
    txn @3 :Api.Txn;
    # Leases, locks and elections (see LeaseGrant and below). Proposed by daemons, never by apps.
    leaseGrant @4 :LeaseGrant;
    leaseRenew @5 :LeaseRenew;
    leaseRevoke @6 :LeaseRevoke;
    leaseExpire @7 :LeaseExpire;
    leaseCheckpoint @8 :LeaseCheckpoint;
    lock @9 :LockAcquire;
    unlock @10 :LockRelease;
    proclaim @11 :LockProclaim;
    compact @12 :Compact;
  }
}

# The app a lease belongs to: the member it connected to and its SO_PEERCRED.
struct LeaseHolder {
  member @0 :UInt32;
  pid @1 :Int32;
  uid @2 :UInt32;
}

# Creates a lease. The proposer picks the id: (holder.member << 48) | counter, counter in
# 1 .. 2^48-1 and above every counter granted for that member before (Session.leaseCounter), so an
# id is never used twice. Refused when the counter is 0 or not above that, when the member bits
# differ from holder.member, or when ttlMs is 0. The TTL range of the config is checked by the proposer (validateRequest).
struct LeaseGrant {
  id @0 :UInt64;
  ttlMs @1 :UInt64;
  holder @2 :LeaseHolder;
  detached @3 :Bool;   # survives its connection; ends by TTL or revoke only
}

# One batched renewal stream entry per lease. Every renewal of a live lease bumps its epoch and
# resets its checkpoint to the full TTL; `epoch` is the epoch the renewer last saw: a renewal is
# never refused for being behind (refusing would end a lease its holder believes renewed), only
# when it names an epoch the lease never had. Entries of ended leases are skipped and reported.
struct LeaseRenew {
  renewals @0 :List(LeaseRenewal);
}

struct LeaseRenewal {
  id @0 :UInt64;
  epoch @1 :UInt64;
}

struct LeaseRevoke {
  id @0 :UInt64;
}

# The leader's expiry decision for the lease at renewal epoch `epoch`. Ends the lease only if its
# epoch is still `epoch`: a renewal decided before this entry wins and the expiry is ignored.
struct LeaseExpire {
  id @0 :UInt64;
  epoch @1 :UInt64;
}

# The leader's record of how long leases have left, so that a new leader counts from these rather
# than from full TTLs. An entry applies only at the epoch it was measured at (a renewal that
# landed in between reset the lease to its full TTL, which a stale remainder must not undo).
struct LeaseCheckpoint {
  checkpoints @0 :List(LeaseRemaining);
}

struct LeaseRemaining {
  id @0 :UInt64;
  epoch @1 :UInt64;
  remainingMs @2 :UInt64;  # <= the lease's TTL
}

# lock / tryLock / campaign. The lease takes the lock if it is free, else (wait) queues FIFO behind
# the holder, or (not wait) fails. An election is a lock whose holder has a value.
struct LockAcquire {
  name @0 :Data;     # 1 .. 511 bytes; locks have a namespace of their own, apart from keys
  lease @1 :UInt64;
  value @2 :Data;    # the election value; empty for a plain lock
  wait @3 :Bool;
}

# unlock / resign: the lease gives up the lock, or leaves its queue.
struct LockRelease {
  name @0 :Data;
  lease @1 :UInt64;
}

# proclaim: the holder replaces its election value; the fence stays.
struct LockProclaim {
  name @0 :Data;
  lease @1 :UInt64;
  value @2 :Data;
}

# leases table: big-endian id -> this. The keys attached to a lease are not listed: each key's
# KeyRecord.lease says it.
struct Lease {
  id @0 :UInt64;
  ttlMs @1 :UInt64;
  epoch @2 :UInt64;        # 1 at grant, +1 per renewal
  remainingMs @3 :UInt64;  # the last checkpoint at `epoch`; ttlMs after a grant or renewal
  holder @4 :LeaseHolder;
  detached @5 :Bool;
  grantRevision @6 :UInt64;  # the config map's revision when granted
}

# One holder or waiter of a lock.
struct LockOwner {
  lease @0 :UInt64;
  value @1 :Data;
  fence @2 :UInt64;  # the revision at which it was granted the lock; 0 while it waits
}

# locks table: name -> this. A lock with neither holder nor waiters is not stored.
struct Lock {
  name @0 :Data;
  hasHolder @1 :Bool;
  holder @2 :LockOwner;
  waiters @3 :List(LockOwner);  # FIFO
}

# The outcome of applying a command; kept per session so a retried command gets the same answer.
struct CommandResult {
  code @0 :Api.Status.Code;
  message @1 :Text;
  revision @2 :UInt64;
  deleted @3 :UInt64;
  succeeded @4 :Bool;
  fence @5 :UInt64;
}

# log table: big-endian slot -> accepted ballot and value.
struct LogRecord {
  ballot @0 :Ballot;
  commands @1 :List(Data);
}

# kv table: key -> this.
struct KeyRecord {
  value @0 :Data;
  createRevision @1 :UInt64;
  modRevision @2 :UInt64;
  version @3 :UInt64;
  lease @4 :UInt64;
}

# meta table, key "identity".
struct Identity {
  clusterId @0 :Text;
  member @1 :Text;
  schemaVersion @2 :UInt32;
}

# meta table, key "promise": the acceptor's promised ballot.
struct Promise {
  ballot @0 :Ballot;
}

# meta table, key "applied": the state machine has applied every slot <= slot; the config map is
# at revision.
struct Applied {
  slot @0 :UInt64;
  revision @1 :UInt64;
}

# meta table, key "incarnation".
struct Incarnation {
  value @0 :UInt64;
}

# sessions table: big-endian member index -> this. Which of one member's commands were applied, so
# that a command decided twice (a daemon's retry) is applied once. Part of the replicated state:
# every member decides "duplicate or not" identically. (Results of recent commands are kept in
# memory only; they shape replies, not state.)
struct Session {
  incarnations @0 :List(IncarnationSession);  # the most recent few, ascending
  # The highest lease id counter granted for this member (see LeaseGrant): a grant must exceed it,
  # so no lease id is ever used twice and a late expiry can never end a newer lease.
  leaseCounter @1 :UInt64;
}

struct IncarnationSession {
  incarnation @0 :UInt64;
  floor @1 :UInt64;                # every sequence < floor was applied (or has expired)
  appliedAbove @2 :List(UInt64);   # sequences > floor applied out of order, ascending
}

# One chunk of a snapshot of the replicated state at an applied slot, as a member catching up
# receives it from a peer. The chunks of one snapshot carry the same slot, revision and count; their
# keys are in ascending byte order across chunks; sessions come in the last chunk. Each chunk is a
# message of its own, so none exceeds the peer message limit.
struct SnapshotChunk {
  slot @0 :UInt64;       # every slot <= this is applied in the snapshot
  revision @1 :UInt64;   # the config map's revision at slot
  index @2 :UInt32;      # 0-based
  count @3 :UInt32;      # chunks in the snapshot, >= 1
  keyCount @4 :UInt64;   # keys in the whole snapshot
  keys @5 :List(SnapshotKey);
  sessions @6 :List(SnapshotSession);
  # Every lease (ascending id across chunks), then every lock (ascending name), each an encoded
  # Lease / Lock message; they follow the last key, in as many chunks as their size needs.
  leases @7 :List(Data);
  locks @8 :List(Data);
}

struct SnapshotKey {
  key @0 :Data;
  record @1 :KeyRecord;
}

struct SnapshotSession {
  member @0 :UInt32;
  session @1 :Data;  # an encoded Session message
}

# Forgets the history of every revision below `revision` on every member (watches and reads at
# those revisions then answer "compacted"). Refused when `revision` is 0 or above the current
# revision + 1; a revision already compacted changes nothing. Creates no revision.
struct Compact {
  revision @0 :UInt64;
}

# One change of one key, as the history keeps it.
struct HistoryChange {
  key @0 :Data;
  deleted @1 :Bool;       # otherwise `record` is the key as written
  record @2 :KeyRecord;
  hasPrev @3 :Bool;       # the key existed before the change; `prev` is how it was
  prev @4 :KeyRecord;
}

# history table: big-endian revision -> this. Every change of one revision, in the order the
# command made them. Only revisions that changed keys have an entry.
struct HistoryRevision {
  revision @0 :UInt64;
  changes @1 :List(HistoryChange);
}

# meta table, key "history": every change with a revision >= start is in the history table.
struct HistoryStart {
  start @0 :UInt64;
}
