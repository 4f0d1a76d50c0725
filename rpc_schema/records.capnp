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
  }
}

# The outcome of applying a command; kept per session so a retried command gets the same answer.
struct CommandResult {
  code @0 :Api.Status.Code;
  message @1 :Text;
  revision @2 :UInt64;
  deleted @3 :UInt64;
  succeeded @4 :Bool;
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
}

struct SnapshotKey {
  key @0 :Data;
  record @1 :KeyRecord;
}

struct SnapshotSession {
  member @0 :UInt32;
  session @1 :Data;  # an encoded Session message
}
