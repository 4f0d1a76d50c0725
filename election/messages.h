// Messages between members, as the core sees them: plain data. The daemon encodes them into
// rpc_schema/peer.capnp and checks the protocol version; the simulator passes them as they are.
//
// Every field is untrusted input from a peer: the core validates what it relies on and ignores a
// message that does not make sense (counted in Replica::ignoredMessages()), never crashes on one.
#pragma once

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "election/types.h"

namespace synod::election {

// Pre-vote: "would you support an election?" Changes no state at the receiver; lets a member that
// is merely cut off find out that the others still hear a leader, so it cannot depose one.
struct PreVoteRequest {
  uint64_t round = 0;    // the round the sender would campaign with
  Slot decidedSlot = 0;  // the sender's contiguous decided prefix
};

struct PreVoteReply {
  uint64_t round = 0;  // echoes the request
  bool granted = false;
  Slot decidedSlot = 0;  // the voter's; a candidate far behind catches up first
};

// Phase 1a: asks for a promise to ignore ballots below `ballot`, and for every vote the acceptor
// holds for slots >= fromSlot.
struct Prepare {
  Ballot ballot;
  Slot fromSlot = 1;
};

// Phase 1b. Sent only once the promise is durable.
struct Promise {
  Ballot ballot;
  Slot fromSlot = 1;
  // Every vote the acceptor holds with slot >= fromSlot, ascending.
  std::vector<LogEntry> accepted;
  // The acceptor holds votes only from logStart on; slots below were decided, applied and
  // discarded. A candidate with fromSlot < logStart cannot learn them here and must catch up.
  Slot logStart = 1;
  Slot decidedSlot = 0;
};

// Phase 2a: the leader of `ballot` proposes `value` for `slot`.
struct Accept {
  Ballot ballot;
  Slot slot = 0;
  Value value;
  Slot decidedSlot = 0;  // the leader's contiguous decided prefix, as in a heartbeat
};

// Phase 2b. Sent only once the vote is durable.
struct Accepted {
  Ballot ballot;
  Slot slot = 0;
};

// The receiver has promised a ballot above the one in the message it refuses (a Prepare, Accept or
// Heartbeat); the sender must stop using its ballot.
struct Rejected {
  Ballot promised;
};

// From the leader every heartbeat interval, and at once when a read needs leadership confirmed.
struct Heartbeat {
  Ballot ballot;
  uint64_t sequence = 0;  // increasing per leadership; acks name it
  Slot decidedSlot = 0;
};

// The acceptor counted the heartbeat's sender as leader at its local receive time: it refuses
// other proposers' Phase 1 for one lease from then.
struct HeartbeatAck {
  Ballot ballot;
  uint64_t sequence = 0;
  Slot decidedSlot = 0;
};

// Catch-up: asks any member for decided slots from fromSlot on.
struct FetchRequest {
  Slot fromSlot = 1;
};

// Decided slots, ascending and contiguous from the request's fromSlot (possibly none). If the
// sender no longer holds fromSlot (fromSlot < logStart), `entries` is empty: the requester is
// behind beyond the sender's log and needs a snapshot.
struct FetchReply {
  Slot fromSlot = 1;
  std::vector<LogEntry> entries;
  Slot logStart = 1;
  Slot decidedSlot = 0;  // the sender's contiguous decided prefix
};

// A follower's linearizable read asks the leader for a read index.
struct ReadIndexRequest {
  uint64_t requestId = 0;
};

// ok: the sender was leader after the request arrived, and every write acknowledged before then is
// in a slot <= readIndex.
struct ReadIndexReply {
  uint64_t requestId = 0;
  bool ok = false;
  Slot readIndex = 0;
};

// The leader of `ballot` stepped down and gave up its lease (it serves no lease read any more):
// an acceptor that granted it the lease under this same ballot may release that grant, and
// `target` may campaign at once instead of waiting for an election timeout.
struct Handoff {
  Ballot ballot;
  MemberIndex target = 0;
};

// A member that started with an empty data dir (or has not finished recovering since) asks what the
// others hold before it votes: it may have forgotten promises and votes (Replica, "Recovery").
struct RecoveryQuery {
  uint64_t nonce = 0;  // echoed, so stale replies from an earlier round are not counted
  // The slot the sender must see decided before it votes (0 while unknown): a leader proposes
  // no-ops up to it when no command fills those slots.
  Slot fillThrough = 0;
};

// What the sender holds as an acceptor and learner. `fresh`: it never promised or voted and knows
// no decided slot.
struct RecoveryReply {
  uint64_t nonce = 0;
  bool fresh = false;
  bool recovering = false;  // the sender itself is still recovering
  Ballot promised;
  Slot decidedSlot = 0;
  Slot lastLogSlot = 0;  // highest slot it holds a vote or decided value for; 0 if none
};

using PeerMessage =
    std::variant<PreVoteRequest, PreVoteReply, Prepare, Promise, Accept, Accepted, Rejected,
                 Heartbeat, HeartbeatAck, FetchRequest, FetchReply, ReadIndexRequest,
                 ReadIndexReply, Handoff, RecoveryQuery, RecoveryReply>;

// A short name for logs and traces ("Accept", "Promise", ...).
const char* messageName(const PeerMessage& message);

}  // namespace synod::election
