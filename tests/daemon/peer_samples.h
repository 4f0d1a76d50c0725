// Sample peer messages with non-trivial field values, one or more per PeerEnvelope alternative,
// and field-by-field comparison (election/messages.h's structs have no operator==).
#pragma once

#include <string>
#include <variant>
#include <vector>

#include "daemon/peer_codec.h"
#include "election/messages.h"

namespace synod::daemon::testing {

namespace e = election;

inline bool same(const e::PreVoteRequest& a, const e::PreVoteRequest& b) {
  return a.round == b.round && a.decidedSlot == b.decidedSlot;
}
inline bool same(const e::PreVoteReply& a, const e::PreVoteReply& b) {
  return a.round == b.round && a.granted == b.granted && a.decidedSlot == b.decidedSlot;
}
inline bool same(const e::Prepare& a, const e::Prepare& b) {
  return a.ballot == b.ballot && a.fromSlot == b.fromSlot;
}
inline bool same(const e::Promise& a, const e::Promise& b) {
  return a.ballot == b.ballot && a.fromSlot == b.fromSlot && a.accepted == b.accepted &&
         a.logStart == b.logStart && a.decidedSlot == b.decidedSlot;
}
inline bool same(const e::Accept& a, const e::Accept& b) {
  return a.ballot == b.ballot && a.slot == b.slot && a.value == b.value &&
         a.decidedSlot == b.decidedSlot;
}
inline bool same(const e::Accepted& a, const e::Accepted& b) {
  return a.ballot == b.ballot && a.slot == b.slot;
}
inline bool same(const e::Rejected& a, const e::Rejected& b) {
  return a.promised == b.promised;
}
inline bool same(const e::Heartbeat& a, const e::Heartbeat& b) {
  return a.ballot == b.ballot && a.sequence == b.sequence && a.decidedSlot == b.decidedSlot;
}
inline bool same(const e::HeartbeatAck& a, const e::HeartbeatAck& b) {
  return a.ballot == b.ballot && a.sequence == b.sequence && a.decidedSlot == b.decidedSlot;
}
inline bool same(const e::FetchRequest& a, const e::FetchRequest& b) {
  return a.fromSlot == b.fromSlot;
}
inline bool same(const e::FetchReply& a, const e::FetchReply& b) {
  return a.fromSlot == b.fromSlot && a.entries == b.entries && a.logStart == b.logStart &&
         a.decidedSlot == b.decidedSlot;
}
inline bool same(const e::ReadIndexRequest& a, const e::ReadIndexRequest& b) {
  return a.requestId == b.requestId;
}
inline bool same(const e::ReadIndexReply& a, const e::ReadIndexReply& b) {
  return a.requestId == b.requestId && a.ok == b.ok && a.readIndex == b.readIndex;
}
inline bool same(const e::Handoff& a, const e::Handoff& b) {
  return a.ballot == b.ballot && a.target == b.target;
}
inline bool same(const e::RecoveryQuery& a, const e::RecoveryQuery& b) {
  return a.nonce == b.nonce && a.fillThrough == b.fillThrough;
}
inline bool same(const e::RecoveryReply& a, const e::RecoveryReply& b) {
  return a.nonce == b.nonce && a.fresh == b.fresh && a.recovering == b.recovering &&
         a.promised == b.promised && a.decidedSlot == b.decidedSlot &&
         a.lastLogSlot == b.lastLogSlot;
}
inline bool same(const SnapshotRequest& a, const SnapshotRequest& b) {
  return a.requestId == b.requestId && a.index == b.index;
}
inline bool same(const SnapshotChunk& a, const SnapshotChunk& b) {
  return a.requestId == b.requestId && a.index == b.index && a.count == b.count &&
         a.slot == b.slot && a.totalBytes == b.totalBytes && a.data == b.data &&
         a.unavailable == b.unavailable;
}
inline bool same(const Forward& a, const Forward& b) {
  return a.commands == b.commands;
}
inline bool same(const ForwardRefused& a, const ForwardRefused& b) {
  return a.commands == b.commands && a.leaderHint == b.leaderHint;
}
inline bool same(const MemberReport& a, const MemberReport& b) {
  return a == b;
}

template <typename... Types>
bool sameVariant(const std::variant<Types...>& a, const std::variant<Types...>& b) {
  if (a.index() != b.index()) return false;
  return std::visit(
      [&](const auto& left) {
        using T = std::decay_t<decltype(left)>;
        if constexpr (std::is_same_v<T, e::PeerMessage>) {
          return sameVariant(left, std::get<T>(b));
        } else {
          return same(left, std::get<T>(b));
        }
      },
      a);
}

inline bool same(const PeerEnvelope& a, const PeerEnvelope& b) {
  return sameVariant(a, b);
}

// Which alternative, flattened: first the PeerMessage alternatives, then the daemon-level ones
// (Forward, ForwardRefused, SnapshotRequest, SnapshotChunk, MemberReport).
inline size_t kindOf(const PeerEnvelope& message) {
  if (auto* core = std::get_if<e::PeerMessage>(&message)) return core->index();
  return std::variant_size_v<e::PeerMessage> + message.index() - 1;
}
constexpr size_t ENVELOPE_KINDS =
    std::variant_size_v<e::PeerMessage> + std::variant_size_v<PeerEnvelope> - 1;

inline std::string binary(size_t size, char seed) {
  std::string out(size, '\0');
  for (size_t i = 0; i < size; ++i)
    out[i] = static_cast<char>(seed + i * 31);
  return out;
}

// Every alternative at least once; member indexes below 3. Values include empty, binary
// (NUL bytes, high bytes) and multi-command batches, 64-bit extremes and zero ballots.
inline std::vector<PeerEnvelope> sampleEnvelopes() {
  const e::Ballot ballot{0xfedcba9876543210ull, 2};
  const e::Value batch{{binary(1, 'a'), std::string("\0\xff\x80 x", 5), binary(1000, 7), ""}};
  std::vector<PeerEnvelope> out;
  auto core = [&](e::PeerMessage m) { out.emplace_back(std::move(m)); };
  core(e::PreVoteRequest{UINT64_MAX, 12345});
  core(e::PreVoteReply{7, true, 99});
  core(e::PreVoteReply{8, false, 0});
  core(e::Prepare{ballot, 17});
  core(e::Promise{ballot, 5, {}, 1, 4});
  core(e::Promise{ballot,
                  5,
                  {e::LogEntry{5, e::Ballot{3, 1}, batch}, e::LogEntry{9, e::Ballot{4, 0}, {}}},
                  2,
                  8});
  core(e::Accept{ballot, 42, batch, 41});
  core(e::Accept{e::Ballot{1, 0}, 1, e::Value{}, 0});
  core(e::Accepted{ballot, 42});
  core(e::Rejected{e::Ballot{77, 1}});
  core(e::Rejected{e::Ballot{}});
  core(e::Heartbeat{ballot, 1ull << 40, 41});
  core(e::HeartbeatAck{ballot, (1ull << 40) + 1, 40});
  core(e::FetchRequest{1000});
  core(e::FetchReply{10,
                     {e::LogEntry{10, ballot, batch}, e::LogEntry{11, e::Ballot{1, 1}, {}},
                      e::LogEntry{12, ballot, e::Value{{binary(70000, 3)}}}},
                     3,
                     12});
  core(e::FetchReply{2, {}, 5, 100});
  core(e::ReadIndexRequest{0xabcdef});
  core(e::ReadIndexReply{0xabcdef, true, 555});
  core(e::ReadIndexReply{1, false, 0});
  core(e::Handoff{e::Ballot{7, 2}, 1});
  core(e::RecoveryQuery{0x1234567890ull, 0});
  core(e::RecoveryQuery{3, 99});
  core(e::RecoveryReply{0x1234567890ull, true, true, e::Ballot{}, 0, 0});
  core(e::RecoveryReply{5, false, false, e::Ballot{9, 2}, 1000, 1004});
  out.emplace_back(SnapshotRequest{0xfeedull, 0});
  out.emplace_back(SnapshotRequest{1, 77});
  out.emplace_back(SnapshotChunk{0xfeedull, 2, 5, 12345, 5000000, binary(100000, 7), ""});
  out.emplace_back(SnapshotChunk{9, 0, 0, 0, 0, "", "busy"});
  out.emplace_back(Forward{{binary(10, 'q'), binary(3000, 1)}});
  out.emplace_back(ForwardRefused{{binary(10, 'q')}, std::nullopt});
  out.emplace_back(ForwardRefused{{binary(5, 'z'), ""}, e::MemberIndex{2}});
  out.emplace_back(MemberReport{"leader", ballot, e::MemberIndex{2}, 41, 40, 1234, 1999, UINT64_MAX,
                                1ull << 33, 850, 12000, 7, 86400000, 0x8000000000000001ull, false,
                                "", std::nullopt, 0, 0});
  out.emplace_back(MemberReport{"candidate", e::Ballot{}, std::nullopt, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                0, 0, false, "", std::nullopt, 0, 0});
  out.emplace_back(MemberReport{"follower", e::Ballot{3, 0}, e::MemberIndex{0}, 5, 5, 9, 0, 4096,
                                1 << 20, 1, 2, 3, 4, 5, false, "", std::nullopt, 0, 0});
  // Catching up: recovering with the longest stage text a report may carry, and a snapshot.
  out.emplace_back(MemberReport{"follower", e::Ballot{3, 0}, e::MemberIndex{0}, 90, 12, 11, 0, 4096,
                                1 << 20, 1, 2, 3, 4, 5, true, std::string(256, 's'),
                                e::MemberIndex{2}, 3250586, UINT64_MAX});
  out.emplace_back(MemberReport{"unknown", e::Ballot{}, std::nullopt, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                0, false, "", e::MemberIndex{1}, 0, 10485760});
  return out;
}

}  // namespace synod::daemon::testing
