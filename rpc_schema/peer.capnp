@0xbed48331844ae1d5;
# Messages between members, in Cap'n Proto's standard stream framing over TCP (daemon/
# peer_transport.h). On every connection each side first sends one Hello, then Envelopes.
#
# Compatibility: fields are only ever added. A change the other side could misread bumps
# protocolVersion; a member refuses a Hello or Envelope with a version it does not speak, never
# guesses. The election/messages.h structs are the meaning of each message; the daemon's codec
# (daemon/peer_codec.h) is the only translation between the two.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("synod::peer");

using Records = import "records.capnp";

const protocolVersion :UInt32 = 1;

# The handshake: the first frame each side sends on a connection. A connection is used only once
# both Hellos were accepted: same protocol version, cluster id and settings hash, and a sender
# that is a member of the configured group other than the receiver (name and index agree with
# the receiver's sorted peer list).
struct Hello {
  protocolVersion @0 :UInt32;
  clusterId @1 :Text;
  member @2 :Text;          # the sender's name in `peers`
  settingsHash @3 :UInt64;  # hash of what must agree: cluster id, sorted peers, timing
  memberIndex @4 :UInt32;   # the sender's position in the sorted peer list
}

# One acceptor vote, as in election::LogEntry. `commands` is the slot's value: encoded
# records.capnp Commands, opaque here; an empty list is a no-op.
struct LogEntry {
  slot @0 :UInt64;
  ballot @1 :Records.Ballot;
  commands @2 :List(Data);
}

struct PreVoteRequest {
  round @0 :UInt64;
  decidedSlot @1 :UInt64;
}

struct PreVoteReply {
  round @0 :UInt64;
  granted @1 :Bool;
  decidedSlot @2 :UInt64;
}

struct Prepare {
  ballot @0 :Records.Ballot;
  fromSlot @1 :UInt64;
}

struct Promise {
  ballot @0 :Records.Ballot;
  fromSlot @1 :UInt64;
  accepted @2 :List(LogEntry);  # ascending, every slot >= fromSlot
  logStart @3 :UInt64;
  decidedSlot @4 :UInt64;
}

struct Accept {
  ballot @0 :Records.Ballot;
  slot @1 :UInt64;
  commands @2 :List(Data);
  decidedSlot @3 :UInt64;
}

struct Accepted {
  ballot @0 :Records.Ballot;
  slot @1 :UInt64;
}

struct Rejected {
  promised @0 :Records.Ballot;
}

struct Heartbeat {
  ballot @0 :Records.Ballot;
  sequence @1 :UInt64;
  decidedSlot @2 :UInt64;
}

struct HeartbeatAck {
  ballot @0 :Records.Ballot;
  sequence @1 :UInt64;
  decidedSlot @2 :UInt64;
}

struct FetchRequest {
  fromSlot @0 :UInt64;
}

struct FetchReply {
  fromSlot @0 :UInt64;
  entries @1 :List(LogEntry);  # ascending and contiguous from fromSlot
  logStart @2 :UInt64;
  decidedSlot @3 :UInt64;
}

struct ReadIndexRequest {
  requestId @0 :UInt64;
}

struct ReadIndexReply {
  requestId @0 :UInt64;
  ok @1 :Bool;
  readIndex @2 :UInt64;
}

# The leader of `ballot` stepped down and gave up its lease; `target` may campaign at once.
struct Handoff {
  ballot @0 :Records.Ballot;
  target @1 :UInt32;  # index in the sorted peer list
}

# Daemon level: a follower hands commands from its local apps to the member it believes leads.
struct Forward {
  commands @0 :List(Data);  # encoded records.capnp Commands, at least one
}

# The receiver of a Forward does not lead: the commands come back untouched, with the member the
# receiver believes leads, if it knows one.
struct ForwardRefused {
  commands @0 :List(Data);
  leaderHint :union {
    none @1 :Void;
    member @2 :UInt32;  # index in the sorted peer list
  }
}

# A member recovering from an empty data dir asks what the receiver holds (election/messages.h).
struct RecoveryQuery {
  nonce @0 :UInt64;        # not 0; echoed in the reply
  fillThrough @1 :UInt64;  # 0 = unknown yet
}

struct RecoveryReply {
  nonce @0 :UInt64;
  fresh @1 :Bool;
  recovering @2 :Bool;
  promised @3 :Records.Ballot;
  decidedSlot @4 :UInt64;
  lastLogSlot @5 :UInt64;
}

# Daemon level: a member behind the sender's log asks for chunk `index` of a snapshot.
# `requestId` names one transfer; index 0 starts it (the source pins a snapshot of its state).
struct SnapshotRequest {
  requestId @0 :UInt64;
  index @1 :UInt32;
}

# One chunk (an encoded records.capnp SnapshotChunk) of the snapshot `requestId` asked for, or
# `unavailable` with a reason (no such transfer, source too busy); the requester starts over later.
struct SnapshotChunk {
  requestId @0 :UInt64;
  index @1 :UInt32;
  count @2 :UInt32;
  slot @3 :UInt64;
  totalBytes @4 :UInt64;  # of all chunks
  data @5 :Data;
  unavailable @6 :Text;   # empty when data is set
}

# Daemon level, informational only (nothing in the protocol depends on it): a member's view of
# itself, sent to every connected peer about once a second and at once when its role or the
# leader it knows changes, so that any member can show operators the state of every member.
# All values are as of sending.
struct MemberReport {
  role @0 :Role;
  ballot @1 :Records.Ballot;
  leader :union {
    none @2 :Void;
    member @3 :UInt32;  # index in the sorted peer list
  }
  decidedSlot @4 :UInt64;
  appliedSlot @5 :UInt64;
  revision @6 :UInt64;
  leaseLeftMs @7 :UInt64;     # the leader lease still held; 0 unless leading
  dbSizeBytes @8 :UInt64;
  storeLimitBytes @9 :UInt64;
  commitP50Us @10 :UInt64;    # over the member's recent group commits; 0 when none yet
  commitP99Us @11 :UInt64;
  incarnation @12 :UInt64;
  uptimeMs @13 :UInt64;
  stateDigest @14 :UInt64;    # election::StateMachine::stateDigest()
  # Catch-up progress. A report from a member without these fields reads as not catching up.
  recovering @15 :Bool;       # empty data dir: not voting until it has caught up
  recoveryStage @16 :Text;    # human text while recovering; at most 256 bytes
  snapshotFrom :union {       # the member a snapshot is being received from
    none @17 :Void;
    member @18 :UInt32;       # index in the sorted peer list
  }
  snapshotBytesReceived @19 :UInt64;  # 0 unless a snapshot is in progress
  snapshotBytesTotal @20 :UInt64;

  # An unknown value (from a newer member) is shown as "unknown", never refused.
  enum Role {
    unknown @0;
    follower @1;
    candidate @2;
    leader @3;
  }
}

# Every frame after the Hello.
struct Envelope {
  version @0 :UInt32;  # protocolVersion of the sender
  union {
    preVoteRequest @1 :PreVoteRequest;
    preVoteReply @2 :PreVoteReply;
    prepare @3 :Prepare;
    promise @4 :Promise;
    accept @5 :Accept;
    accepted @6 :Accepted;
    rejected @7 :Rejected;
    heartbeat @8 :Heartbeat;
    heartbeatAck @9 :HeartbeatAck;
    fetchRequest @10 :FetchRequest;
    fetchReply @11 :FetchReply;
    readIndexRequest @12 :ReadIndexRequest;
    readIndexReply @13 :ReadIndexReply;
    forward @14 :Forward;
    forwardRefused @15 :ForwardRefused;
    handoff @16 :Handoff;
    recoveryQuery @17 :RecoveryQuery;
    recoveryReply @18 :RecoveryReply;
    snapshotRequest @19 :SnapshotRequest;
    snapshotChunk @20 :SnapshotChunk;
    memberReport @21 :MemberReport;
  }
}
