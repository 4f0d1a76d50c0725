#include "daemon/peer_codec.h"

#include <capnp/serialize.h>
#include <kj/exception.h>
#include <algorithm>
#include <cstring>
#include <exception>
#include <utility>

#include "rpc_schema/peer.capnp.h"

namespace synod::daemon {

const uint32_t PEER_PROTOCOL_VERSION = peer::PROTOCOL_VERSION;

namespace {

using namespace election;

// Every PeerMessage alternative has an Envelope union member, an encoder and a decoder below.
// Adding an alternative to election::PeerMessage breaks this until the codec covers it.
static_assert(std::variant_size_v<PeerMessage> == 16,
              "election::PeerMessage changed: extend peer.capnp and this codec");
static_assert(std::variant_size_v<PeerEnvelope> == 6);

template <typename... Names>
struct Overloaded : Names... {
  using Names::operator()...;
};
template <typename... Names>
Overloaded(Names...) -> Overloaded<Names...>;

constexpr size_t MAX_SEGMENTS = 512;

// ------------------------------------------------------------------------------------------------
// Encoding

void setBallot(records::Ballot::Builder out, const Ballot& ballot) {
  out.setRound(ballot.round);
  out.setMember(ballot.member);
}

void setCommands(capnp::List<capnp::Data>::Builder out, const std::vector<std::string>& commands) {
  for (size_t i = 0; i < commands.size(); ++i) {
    out.set(
        i, kj::arrayPtr(reinterpret_cast<const kj::byte*>(commands[i].data()), commands[i].size()));
  }
}

void setEntries(capnp::List<peer::LogEntry>::Builder out, const std::vector<LogEntry>& entries) {
  for (size_t i = 0; i < entries.size(); ++i) {
    auto entry = out[i];
    entry.setSlot(entries[i].slot);
    setBallot(entry.initBallot(), entries[i].ballot);
    setCommands(entry.initCommands(entries[i].value.commands.size()), entries[i].value.commands);
  }
}

size_t commandWords(const std::vector<std::string>& commands) {
  size_t words = 0;
  for (const auto& command : commands)
    words += 1 + (command.size() + 7) / 8;
  return words;
}

size_t reportWords(const MemberReport& report) {
  return 32 + (std::min(report.recoveryStage.size(), MAX_RECOVERY_STAGE_BYTES) + 8) / 8;
}

// A first segment large enough for the whole message, so a frame is one segment.
size_t estimateWords(const PeerEnvelope& message) {
  auto entriesWords = [](const std::vector<LogEntry>& entries) {
    size_t words = 0;
    for (const auto& entry : entries)
      words += 8 + commandWords(entry.value.commands);
    return words;
  };
  return 32 + std::visit(Overloaded{
                             [&](const PeerMessage& m) -> size_t {
                               if (auto* p = std::get_if<Promise>(&m))
                                 return entriesWords(p->accepted);
                               if (auto* a = std::get_if<Accept>(&m))
                                 return commandWords(a->value.commands);
                               if (auto* f = std::get_if<FetchReply>(&m))
                                 return entriesWords(f->entries);
                               return 0;
                             },
                             [](const Forward& f) { return commandWords(f.commands); },
                             [](const ForwardRefused& f) { return commandWords(f.commands); },
                             [](const SnapshotRequest&) -> size_t { return 0; },
                             [](const SnapshotChunk& c) -> size_t {
                               return (c.data.size() + c.unavailable.size()) / 8 + 16;
                             },
                             [](const MemberReport& r) { return reportWords(r); },
                         },
                         message);
}

void encodeCore(peer::Envelope::Builder out, const PeerMessage& message) {
  std::visit(
      Overloaded{
          [&](const PreVoteRequest& m) {
            auto b = out.initPreVoteRequest();
            b.setRound(m.round);
            b.setDecidedSlot(m.decidedSlot);
          },
          [&](const PreVoteReply& m) {
            auto b = out.initPreVoteReply();
            b.setRound(m.round);
            b.setGranted(m.granted);
            b.setDecidedSlot(m.decidedSlot);
          },
          [&](const Prepare& m) {
            auto b = out.initPrepare();
            setBallot(b.initBallot(), m.ballot);
            b.setFromSlot(m.fromSlot);
          },
          [&](const Promise& m) {
            auto b = out.initPromise();
            setBallot(b.initBallot(), m.ballot);
            b.setFromSlot(m.fromSlot);
            setEntries(b.initAccepted(m.accepted.size()), m.accepted);
            b.setLogStart(m.logStart);
            b.setDecidedSlot(m.decidedSlot);
          },
          [&](const Accept& m) {
            auto b = out.initAccept();
            setBallot(b.initBallot(), m.ballot);
            b.setSlot(m.slot);
            setCommands(b.initCommands(m.value.commands.size()), m.value.commands);
            b.setDecidedSlot(m.decidedSlot);
          },
          [&](const Accepted& m) {
            auto b = out.initAccepted();
            setBallot(b.initBallot(), m.ballot);
            b.setSlot(m.slot);
          },
          [&](const Rejected& m) { setBallot(out.initRejected().initPromised(), m.promised); },
          [&](const Heartbeat& m) {
            auto b = out.initHeartbeat();
            setBallot(b.initBallot(), m.ballot);
            b.setSequence(m.sequence);
            b.setDecidedSlot(m.decidedSlot);
          },
          [&](const HeartbeatAck& m) {
            auto b = out.initHeartbeatAck();
            setBallot(b.initBallot(), m.ballot);
            b.setSequence(m.sequence);
            b.setDecidedSlot(m.decidedSlot);
          },
          [&](const FetchRequest& m) { out.initFetchRequest().setFromSlot(m.fromSlot); },
          [&](const FetchReply& m) {
            auto b = out.initFetchReply();
            b.setFromSlot(m.fromSlot);
            setEntries(b.initEntries(m.entries.size()), m.entries);
            b.setLogStart(m.logStart);
            b.setDecidedSlot(m.decidedSlot);
          },
          [&](const ReadIndexRequest& m) { out.initReadIndexRequest().setRequestId(m.requestId); },
          [&](const ReadIndexReply& m) {
            auto b = out.initReadIndexReply();
            b.setRequestId(m.requestId);
            b.setOk(m.ok);
            b.setReadIndex(m.readIndex);
          },
          [&](const Handoff& m) {
            auto b = out.initHandoff();
            setBallot(b.initBallot(), m.ballot);
            b.setTarget(m.target);
          },
          [&](const RecoveryQuery& m) {
            auto b = out.initRecoveryQuery();
            b.setNonce(m.nonce);
            b.setFillThrough(m.fillThrough);
          },
          [&](const RecoveryReply& m) {
            auto b = out.initRecoveryReply();
            b.setNonce(m.nonce);
            b.setFresh(m.fresh);
            b.setRecovering(m.recovering);
            setBallot(b.initPromised(), m.promised);
            b.setDecidedSlot(m.decidedSlot);
            b.setLastLogSlot(m.lastLogSlot);
          },
      },
      message);
}

void encodeReport(peer::MemberReport::Builder out, const MemberReport& m) {
  if (m.role == "follower") {
    out.setRole(peer::MemberReport::Role::FOLLOWER);
  } else if (m.role == "candidate") {
    out.setRole(peer::MemberReport::Role::CANDIDATE);
  } else if (m.role == "leader") {
    out.setRole(peer::MemberReport::Role::LEADER);
  } else {
    out.setRole(peer::MemberReport::Role::UNKNOWN);
  }
  setBallot(out.initBallot(), m.ballot);
  if (m.leader) {
    out.getLeader().setMember(*m.leader);
  } else {
    out.getLeader().setNone();
  }
  out.setDecidedSlot(m.decidedSlot);
  out.setAppliedSlot(m.appliedSlot);
  out.setRevision(m.revision);
  out.setLeaseLeftMs(m.leaseLeftMs);
  out.setDbSizeBytes(m.dbSizeBytes);
  out.setStoreLimitBytes(m.storeLimitBytes);
  out.setCommitP50Us(m.commitP50Us);
  out.setCommitP99Us(m.commitP99Us);
  out.setIncarnation(m.incarnation);
  out.setUptimeMs(m.uptimeMs);
  out.setStateDigest(m.stateDigest);
  out.setRecovering(m.recovering);
  // Cut rather than send what every receiver refuses; never inside a UTF-8 sequence.
  size_t stageBytes = m.recoveryStage.size();
  if (stageBytes > MAX_RECOVERY_STAGE_BYTES) {
    stageBytes = MAX_RECOVERY_STAGE_BYTES;
    while (stageBytes > 0 &&
           (static_cast<unsigned char>(m.recoveryStage[stageBytes]) & 0xc0) == 0x80)
      --stageBytes;
  }
  // A Text::Reader must end in a NUL: copy the cut prefix rather than point into the string.
  const std::string stage = m.recoveryStage.substr(0, stageBytes);
  out.setRecoveryStage(capnp::Text::Reader(stage.c_str(), stage.size()));
  if (m.snapshotFrom) {
    out.getSnapshotFrom().setMember(*m.snapshotFrom);
  } else {
    out.getSnapshotFrom().setNone();
  }
  out.setSnapshotBytesReceived(m.snapshotBytesReceived);
  out.setSnapshotBytesTotal(m.snapshotBytesTotal);
}

// ------------------------------------------------------------------------------------------------
// Decoding

// Thrown inside a decoder only; the public entry points turn it (and any Cap'n Proto exception
// from malformed pointers or text) into a DecodeError.
struct Invalid {
  std::string message;
};

[[noreturn]] void fail(std::string message) {
  throw Invalid{std::move(message)};
}

std::string str(uint64_t value) {
  return std::to_string(value);
}

class Decoder {
 public:
  explicit Decoder(const DecodeLimits& limits) : limits(limits) {}

  MemberIndex member(uint32_t index, const char* what) {
    KJ_IF_MAYBE (count, toMaybe(limits.memberCount)) {
      if (index >= *count) {
        fail(std::string(what) + ": member index " + str(index) +
             " is not below the member count " + str(*count));
      }
    }
    return index;
  }

  Ballot ballot(records::Ballot::Reader in, const char* what) {
    return Ballot{in.getRound(), member(in.getMember(), what)};
  }

  Slot slot(uint64_t value, const char* what) {
    if (value == 0) fail(std::string(what) + ": slot 0 (slots start at 1)");
    return value;
  }

  template <typename List>
  void checkSize(List list, const char* what) {
    if (list.size() > MAX_PEER_LIST_ELEMENTS) {
      fail(std::string(what) + ": " + str(list.size()) + " elements, more than " +
           str(MAX_PEER_LIST_ELEMENTS));
    }
  }

  std::vector<std::string> commands(capnp::List<capnp::Data>::Reader in, const char* what) {
    checkSize(in, what);
    std::vector<std::string> out;
    out.reserve(in.size());
    for (auto command : in)
      out.emplace_back(reinterpret_cast<const char*>(command.begin()), command.size());
    return out;
  }

  // Ascending slots, each >= fromSlot; `contiguous`: exactly fromSlot, fromSlot + 1, ...
  std::vector<LogEntry> entries(capnp::List<peer::LogEntry>::Reader in, Slot fromSlot,
                                bool contiguous, const char* what) {
    checkSize(in, what);
    std::vector<LogEntry> out;
    out.reserve(in.size());
    Slot next = fromSlot;
    for (auto entry : in) {
      Slot s = slot(entry.getSlot(), what);
      if (contiguous ? s != next : s < next) {
        fail(std::string(what) + ": entry for slot " + str(s) + " where " +
             (contiguous ? "slot " : "a slot >= ") + str(next) + " was due");
      }
      next = s + 1;
      out.push_back(
          LogEntry{s, ballot(entry.getBallot(), what), Value{commands(entry.getCommands(), what)}});
    }
    return out;
  }

  MemberReport report(peer::MemberReport::Reader in) {
    MemberReport out;
    switch (in.getRole()) {
      case peer::MemberReport::Role::FOLLOWER:
        out.role = "follower";
        break;
      case peer::MemberReport::Role::CANDIDATE:
        out.role = "candidate";
        break;
      case peer::MemberReport::Role::LEADER:
        out.role = "leader";
        break;
      default:  // unknown, or a role added later: informational, so shown rather than refused
        out.role = "unknown";
    }
    out.ballot = ballot(in.getBallot(), "MemberReport");
    auto leader = in.getLeader();
    switch (leader.which()) {
      case peer::MemberReport::Leader::NONE:
        break;
      case peer::MemberReport::Leader::MEMBER:
        out.leader = member(leader.getMember(), "MemberReport leader");
        break;
      default:
        fail("MemberReport: unknown leader kind " + str(leader.which()));
    }
    out.decidedSlot = in.getDecidedSlot();
    out.appliedSlot = in.getAppliedSlot();
    out.revision = in.getRevision();
    out.leaseLeftMs = in.getLeaseLeftMs();
    out.dbSizeBytes = in.getDbSizeBytes();
    out.storeLimitBytes = in.getStoreLimitBytes();
    out.commitP50Us = in.getCommitP50Us();
    out.commitP99Us = in.getCommitP99Us();
    out.incarnation = in.getIncarnation();
    out.uptimeMs = in.getUptimeMs();
    out.stateDigest = in.getStateDigest();
    out.recovering = in.getRecovering();
    auto stage = in.getRecoveryStage();
    if (stage.size() > MAX_RECOVERY_STAGE_BYTES) {
      fail("MemberReport: recoveryStage of " + str(stage.size()) + " bytes, more than " +
           str(MAX_RECOVERY_STAGE_BYTES));
    }
    out.recoveryStage.assign(stage.cStr(), stage.size());
    auto snapshotFrom = in.getSnapshotFrom();
    switch (snapshotFrom.which()) {
      case peer::MemberReport::SnapshotFrom::NONE:
        break;
      case peer::MemberReport::SnapshotFrom::MEMBER:
        out.snapshotFrom = member(snapshotFrom.getMember(), "MemberReport snapshotFrom");
        break;
      default:
        fail("MemberReport: unknown snapshotFrom kind " + str(snapshotFrom.which()));
    }
    out.snapshotBytesReceived = in.getSnapshotBytesReceived();
    out.snapshotBytesTotal = in.getSnapshotBytesTotal();
    return out;
  }

  PeerEnvelope envelope(peer::Envelope::Reader in) {
    if (in.getVersion() != PEER_PROTOCOL_VERSION) {
      fail("unsupported protocol version " + str(in.getVersion()) + " (this member speaks " +
           str(PEER_PROTOCOL_VERSION) + ")");
    }
    switch (in.which()) {
      case peer::Envelope::PRE_VOTE_REQUEST: {
        auto m = in.getPreVoteRequest();
        return PeerMessage(PreVoteRequest{m.getRound(), m.getDecidedSlot()});
      }
      case peer::Envelope::PRE_VOTE_REPLY: {
        auto m = in.getPreVoteReply();
        return PeerMessage(PreVoteReply{m.getRound(), m.getGranted(), m.getDecidedSlot()});
      }
      case peer::Envelope::PREPARE: {
        auto m = in.getPrepare();
        return PeerMessage(
            Prepare{ballot(m.getBallot(), "Prepare"), slot(m.getFromSlot(), "Prepare")});
      }
      case peer::Envelope::PROMISE: {
        auto m = in.getPromise();
        Promise out;
        out.ballot = ballot(m.getBallot(), "Promise");
        out.fromSlot = slot(m.getFromSlot(), "Promise");
        out.accepted = entries(m.getAccepted(), out.fromSlot, false, "Promise");
        out.logStart = slot(m.getLogStart(), "Promise logStart");
        out.decidedSlot = m.getDecidedSlot();
        return PeerMessage(std::move(out));
      }
      case peer::Envelope::ACCEPT: {
        auto m = in.getAccept();
        Accept out;
        out.ballot = ballot(m.getBallot(), "Accept");
        out.slot = slot(m.getSlot(), "Accept");
        out.value.commands = commands(m.getCommands(), "Accept");
        out.decidedSlot = m.getDecidedSlot();
        return PeerMessage(std::move(out));
      }
      case peer::Envelope::ACCEPTED: {
        auto m = in.getAccepted();
        return PeerMessage(
            Accepted{ballot(m.getBallot(), "Accepted"), slot(m.getSlot(), "Accepted")});
      }
      case peer::Envelope::REJECTED:
        return PeerMessage(Rejected{ballot(in.getRejected().getPromised(), "Rejected")});
      case peer::Envelope::HEARTBEAT: {
        auto m = in.getHeartbeat();
        return PeerMessage(
            Heartbeat{ballot(m.getBallot(), "Heartbeat"), m.getSequence(), m.getDecidedSlot()});
      }
      case peer::Envelope::HEARTBEAT_ACK: {
        auto m = in.getHeartbeatAck();
        return PeerMessage(HeartbeatAck{ballot(m.getBallot(), "HeartbeatAck"), m.getSequence(),
                                        m.getDecidedSlot()});
      }
      case peer::Envelope::FETCH_REQUEST:
        return PeerMessage(FetchRequest{slot(in.getFetchRequest().getFromSlot(), "FetchRequest")});
      case peer::Envelope::FETCH_REPLY: {
        auto m = in.getFetchReply();
        FetchReply out;
        out.fromSlot = slot(m.getFromSlot(), "FetchReply");
        out.entries = entries(m.getEntries(), out.fromSlot, true, "FetchReply");
        out.logStart = slot(m.getLogStart(), "FetchReply logStart");
        out.decidedSlot = m.getDecidedSlot();
        return PeerMessage(std::move(out));
      }
      case peer::Envelope::READ_INDEX_REQUEST:
        return PeerMessage(ReadIndexRequest{in.getReadIndexRequest().getRequestId()});
      case peer::Envelope::READ_INDEX_REPLY: {
        auto m = in.getReadIndexReply();
        return PeerMessage(ReadIndexReply{m.getRequestId(), m.getOk(), m.getReadIndex()});
      }
      case peer::Envelope::HANDOFF: {
        auto m = in.getHandoff();
        return PeerMessage(
            Handoff{ballot(m.getBallot(), "Handoff"), member(m.getTarget(), "Handoff target")});
      }
      case peer::Envelope::RECOVERY_QUERY: {
        auto m = in.getRecoveryQuery();
        if (m.getNonce() == 0) fail("RecoveryQuery: nonce 0");
        return PeerMessage(RecoveryQuery{m.getNonce(), m.getFillThrough()});
      }
      case peer::Envelope::RECOVERY_REPLY: {
        auto m = in.getRecoveryReply();
        RecoveryReply out;
        out.nonce = m.getNonce();
        out.fresh = m.getFresh();
        out.recovering = m.getRecovering();
        out.promised = ballot(m.getPromised(), "RecoveryReply");
        out.decidedSlot = m.getDecidedSlot();
        out.lastLogSlot = m.getLastLogSlot();
        return PeerMessage(out);
      }
      case peer::Envelope::SNAPSHOT_REQUEST: {
        auto m = in.getSnapshotRequest();
        if (m.getRequestId() == 0) fail("SnapshotRequest: request id 0");
        return SnapshotRequest{m.getRequestId(), m.getIndex()};
      }
      case peer::Envelope::SNAPSHOT_CHUNK: {
        auto m = in.getSnapshotChunk();
        SnapshotChunk out;
        out.requestId = m.getRequestId();
        out.index = m.getIndex();
        out.count = m.getCount();
        out.slot = m.getSlot();
        out.totalBytes = m.getTotalBytes();
        auto data = m.getData();
        out.data.assign(reinterpret_cast<const char*>(data.begin()), data.size());
        auto why = m.getUnavailable();
        out.unavailable.assign(why.cStr(), why.size());
        if (out.requestId == 0) fail("SnapshotChunk: request id 0");
        if (out.unavailable.empty() && (out.count == 0 || out.index >= out.count)) {
          fail("SnapshotChunk: chunk " + str(out.index) + " of " + str(out.count));
        }
        if (out.unavailable.empty() && out.slot == 0) fail("SnapshotChunk: slot 0");
        return out;
      }
      case peer::Envelope::FORWARD: {
        Forward out{commands(in.getForward().getCommands(), "Forward")};
        if (out.commands.empty()) fail("Forward: no commands");
        return out;
      }
      case peer::Envelope::FORWARD_REFUSED: {
        auto m = in.getForwardRefused();
        ForwardRefused out;
        out.commands = commands(m.getCommands(), "ForwardRefused");
        auto hint = m.getLeaderHint();
        switch (hint.which()) {
          case peer::ForwardRefused::LeaderHint::NONE:
            break;
          case peer::ForwardRefused::LeaderHint::MEMBER:
            out.leaderHint = member(hint.getMember(), "ForwardRefused leaderHint");
            break;
          default:
            fail("ForwardRefused: unknown leaderHint kind " + str(hint.which()));
        }
        return out;
      }
      case peer::Envelope::MEMBER_REPORT:
        return report(in.getMemberReport());
    }
    fail("unknown message type " + str(in.which()) + " in a version " + str(in.getVersion()) +
         " envelope");
  }

  Hello hello(peer::Hello::Reader in) {
    Hello out;
    out.protocolVersion = in.getProtocolVersion();
    // A Hello of another version may mean its other fields differently: refuse before reading.
    if (out.protocolVersion != PEER_PROTOCOL_VERSION) {
      fail("unsupported protocol version " + str(out.protocolVersion) + " (this member speaks " +
           str(PEER_PROTOCOL_VERSION) + ")");
    }
    auto clusterId = in.getClusterId();
    auto name = in.getMember();
    if (clusterId.size() > 255) fail("Hello: cluster id of " + str(clusterId.size()) + " bytes");
    if (name.size() == 0 || name.size() > 255) {
      fail("Hello: member name of " + str(name.size()) + " bytes");
    }
    out.clusterId.assign(clusterId.cStr(), clusterId.size());
    out.member.assign(name.cStr(), name.size());
    out.memberIndex = member(in.getMemberIndex(), "Hello");
    out.settingsHash = in.getSettingsHash();
    return out;
  }

 private:
  const DecodeLimits& limits;

  static kj::Maybe<uint32_t> toMaybe(std::optional<uint32_t> value) {
    if (value) return *value;
    return nullptr;
  }
};

// Runs `decode`, turning every failure into a DecodeError.
template <typename T, typename Func>
Decoded<T> guarded(Func&& decode) {
  std::string error;
  try {
    return decode();
  } catch (const Invalid& invalid) {
    error = invalid.message;
  } catch (const kj::Exception& exception) {
    error = std::string("malformed message: ") + exception.getDescription().cStr();
  } catch (const std::exception& exception) {
    error = std::string("malformed message: ") + exception.what();
  } catch (...) {
    error = "malformed message";
  }
  return DecodeError{std::move(error)};
}

// A whole frame as aligned words, copied when `frame` is not aligned.
template <typename T, typename Func>
Decoded<T> decodeFrame(kj::ArrayPtr<const kj::byte> frame, const DecodeLimits& limits,
                       Func&& decodeRoot) {
  if (frame.size() % sizeof(capnp::word) != 0) {
    return DecodeError{"frame of " + str(frame.size()) + " bytes is not whole 8-byte words"};
  }
  kj::Array<capnp::word> copy;
  kj::ArrayPtr<const capnp::word> words;
  if (reinterpret_cast<uintptr_t>(frame.begin()) % alignof(capnp::word) == 0) {
    words = kj::arrayPtr(reinterpret_cast<const capnp::word*>(frame.begin()),
                         frame.size() / sizeof(capnp::word));
  } else {
    copy = kj::heapArray<capnp::word>(frame.size() / sizeof(capnp::word));
    memcpy(copy.begin(), frame.begin(), frame.size());
    words = copy;
  }
  FrameProbe probe = probeFrame(words, limits.maxMessageBytes);
  switch (probe.kind) {
    case FrameProbe::Kind::INVALID:
      return DecodeError{probe.error};
    case FrameProbe::Kind::NEED_MORE:
      return DecodeError{"truncated frame: " + str(frame.size()) + " bytes, at least " +
                         str(probe.words * sizeof(capnp::word)) + " needed"};
    case FrameProbe::Kind::COMPLETE:
      break;
  }
  if (probe.words != words.size()) {
    return DecodeError{str((words.size() - probe.words) * sizeof(capnp::word)) +
                       " bytes after the end of the frame"};
  }
  return guarded<T>([&]() -> Decoded<T> {
    capnp::FlatArrayMessageReader reader(words, readerOptionsFor(words.size()));
    return decodeRoot(reader);
  });
}

}  // namespace

// --------------------------------------------------------------------------------------------------

kj::Array<capnp::word> encodeEnvelope(const PeerEnvelope& message) {
  capnp::MallocMessageBuilder builder(estimateWords(message));
  auto out = builder.initRoot<peer::Envelope>();
  out.setVersion(PEER_PROTOCOL_VERSION);
  std::visit(Overloaded{
                 [&](const PeerMessage& m) { encodeCore(out, m); },
                 [&](const Forward& m) {
                   setCommands(out.initForward().initCommands(m.commands.size()), m.commands);
                 },
                 [&](const SnapshotRequest& m) {
                   auto b = out.initSnapshotRequest();
                   b.setRequestId(m.requestId);
                   b.setIndex(m.index);
                 },
                 [&](const SnapshotChunk& m) {
                   auto b = out.initSnapshotChunk();
                   b.setRequestId(m.requestId);
                   b.setIndex(m.index);
                   b.setCount(m.count);
                   b.setSlot(m.slot);
                   b.setTotalBytes(m.totalBytes);
                   b.setData(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(m.data.data()),
                                                 m.data.size()));
                   b.setUnavailable(m.unavailable);
                 },
                 [&](const ForwardRefused& m) {
                   auto b = out.initForwardRefused();
                   setCommands(b.initCommands(m.commands.size()), m.commands);
                   if (m.leaderHint) {
                     b.getLeaderHint().setMember(*m.leaderHint);
                   } else {
                     b.getLeaderHint().setNone();
                   }
                 },
                 [&](const MemberReport& m) { encodeReport(out.initMemberReport(), m); },
             },
             message);
  return capnp::messageToFlatArray(builder);
}

kj::Array<capnp::word> encodeHello(const Hello& hello) {
  capnp::MallocMessageBuilder builder(64);
  auto out = builder.initRoot<peer::Hello>();
  out.setProtocolVersion(hello.protocolVersion);
  out.setClusterId(hello.clusterId);
  out.setMember(hello.member);
  out.setMemberIndex(hello.memberIndex);
  out.setSettingsHash(hello.settingsHash);
  return capnp::messageToFlatArray(builder);
}

Decoded<PeerEnvelope> decodeEnvelope(kj::ArrayPtr<const kj::byte> frame,
                                     const DecodeLimits& limits) {
  return decodeFrame<PeerEnvelope>(
      frame, limits, [&](capnp::MessageReader& reader) { return decodeEnvelope(reader, limits); });
}

Decoded<Hello> decodeHello(kj::ArrayPtr<const kj::byte> frame, const DecodeLimits& limits) {
  return decodeFrame<Hello>(
      frame, limits, [&](capnp::MessageReader& reader) { return decodeHello(reader, limits); });
}

Decoded<PeerEnvelope> decodeEnvelope(capnp::MessageReader& reader, const DecodeLimits& limits) {
  return guarded<PeerEnvelope>(
      [&] { return Decoder(limits).envelope(reader.getRoot<peer::Envelope>()); });
}

Decoded<Hello> decodeHello(capnp::MessageReader& reader, const DecodeLimits& limits) {
  return guarded<Hello>([&] { return Decoder(limits).hello(reader.getRoot<peer::Hello>()); });
}

FrameProbe probeFrame(kj::ArrayPtr<const capnp::word> received, size_t maxMessageBytes) {
  if (received.size() == 0) return {FrameProbe::Kind::NEED_MORE, 1, {}};
  auto table = reinterpret_cast<const uint32_t*>(received.begin());
  // The table is little-endian on the wire, as is every host synod runs on.
  static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__);
  uint64_t segments = uint64_t(table[0]) + 1;
  if (segments > MAX_SEGMENTS) {
    return {FrameProbe::Kind::INVALID, 0,
            "frame declares " + str(segments) + " segments (at most " + str(MAX_SEGMENTS) + ")"};
  }
  uint64_t tableWords = segments / 2 + 1;
  if (received.size() < tableWords) return {FrameProbe::Kind::NEED_MORE, tableWords, {}};
  uint64_t total = tableWords;
  for (uint64_t i = 0; i < segments; ++i)
    total += table[i + 1];
  uint64_t maxWords = maxMessageBytes / sizeof(capnp::word);
  if (total > maxWords) {
    return {FrameProbe::Kind::INVALID, 0,
            "message of " + str(total * sizeof(capnp::word)) + " bytes is over the limit of " +
                str(maxMessageBytes) + " bytes"};
  }
  if (received.size() < total) return {FrameProbe::Kind::NEED_MORE, total, {}};
  return {FrameProbe::Kind::COMPLETE, total, {}};
}

capnp::ReaderOptions readerOptionsFor(size_t frameWords) {
  capnp::ReaderOptions options;
  options.traversalLimitInWords = 2 * frameWords + 64;
  return options;
}

}  // namespace synod::daemon
