// The peer message codec: round trips of every message, and refusal (never a crash) of garbage,
// truncated frames, unknown versions and out-of-range fields.

#include "daemon/peer_codec.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <doctest/doctest.h>
#include <kj/io.h>
#include <cstring>
#include <random>
#include <set>
#include <string>

#include "peer_samples.h"
#include "rpc_schema/peer.capnp.h"

namespace synod::daemon {
namespace {

using namespace testing;

// A new election::PeerMessage alternative must get a codec (peer_codec.cc does not compile
// without one), a sample in peer_samples.h and this count raised.
static_assert(std::variant_size_v<election::PeerMessage> == 16,
              "new peer message: add it to peer.capnp, peer_codec.cc and peer_samples.h");

DecodeLimits threeMembers() {
  DecodeLimits limits;
  limits.memberCount = 3;
  return limits;
}

std::string errorOf(const Decoded<PeerEnvelope>& decoded) {
  auto* error = std::get_if<DecodeError>(&decoded);
  return error != nullptr ? error->message : std::string();
}

std::string errorOf(const Decoded<Hello>& decoded) {
  auto* error = std::get_if<DecodeError>(&decoded);
  return error != nullptr ? error->message : std::string();
}

kj::Array<capnp::word> encodeRaw(capnp::MessageBuilder& builder) {
  return capnp::messageToFlatArray(builder);
}

Decoded<PeerEnvelope> decodeWords(const kj::Array<capnp::word>& words,
                                  const DecodeLimits& limits = threeMembers()) {
  return decodeEnvelope(words.asBytes(), limits);
}

TEST_CASE("every sample message survives a round trip unchanged") {
  auto samples = sampleEnvelopes();
  for (const auto& sample : samples) {
    auto frame = encodeEnvelope(sample);
    auto decoded = decodeWords(frame);
    INFO("kind ", kindOf(sample), ": ", errorOf(decoded));
    REQUIRE(std::holds_alternative<PeerEnvelope>(decoded));
    CHECK(same(std::get<PeerEnvelope>(decoded), sample));
    // Deterministic: the same message always gives the same bytes.
    CHECK(encodeEnvelope(std::get<PeerEnvelope>(decoded)).asBytes() == frame.asBytes());
  }
}

TEST_CASE("the samples cover every message kind, so a new one cannot go untested") {
  std::set<size_t> kinds;
  for (const auto& sample : sampleEnvelopes())
    kinds.insert(kindOf(sample));
  CHECK(kinds.size() == ENVELOPE_KINDS);
  CHECK(*kinds.rbegin() == ENVELOPE_KINDS - 1);
}

TEST_CASE("comparison helpers see a difference in any field") {
  // The round-trip test is only as good as `same`.
  election::Accept a{election::Ballot{1, 2}, 3, election::Value{{"x"}}, 4};
  auto b = a;
  CHECK(same(a, b));
  b.decidedSlot = 5;
  CHECK_FALSE(same(a, b));
  b = a;
  b.value.commands[0] = "y";
  CHECK_FALSE(same(a, b));
  ForwardRefused r{{"c"}, std::nullopt};
  auto s = r;
  s.leaderHint = 0;
  CHECK_FALSE(same(PeerEnvelope(r), PeerEnvelope(s)));
  CHECK_FALSE(same(PeerEnvelope(Forward{{"c"}}), PeerEnvelope(r)));
}

TEST_CASE("frames are Cap'n Proto's standard stream framing") {
  for (const auto& sample : sampleEnvelopes()) {
    auto frame = encodeEnvelope(sample);
    kj::ArrayInputStream input(frame.asBytes());
    capnp::InputStreamMessageReader reader(input);
    auto decoded = decodeEnvelope(reader, threeMembers());
    REQUIRE(std::holds_alternative<PeerEnvelope>(decoded));
    CHECK(same(std::get<PeerEnvelope>(decoded), sample));
    CHECK(input.tryGetReadBuffer().size() == 0);  // consumed exactly one frame
  }
}

TEST_CASE("a frame decodes from an unaligned buffer") {
  auto frame = encodeEnvelope(sampleEnvelopes()[6]);
  auto bytes = frame.asBytes();
  std::string shifted(bytes.size() + 1, '\0');
  memcpy(shifted.data() + 1, bytes.begin(), bytes.size());
  auto decoded = decodeEnvelope(
      kj::arrayPtr(reinterpret_cast<const kj::byte*>(shifted.data()) + 1, bytes.size()),
      threeMembers());
  REQUIRE(std::holds_alternative<PeerEnvelope>(decoded));
  CHECK(same(std::get<PeerEnvelope>(decoded), sampleEnvelopes()[6]));
}

TEST_CASE("Hello round trip, and its checks") {
  Hello hello{PEER_PROTOCOL_VERSION, "prod-eu", "n2", 1, 0x0123456789abcdefull};
  auto decoded = decodeHello(encodeHello(hello).asBytes(), threeMembers());
  REQUIRE(std::holds_alternative<Hello>(decoded));
  const Hello& back = std::get<Hello>(decoded);
  CHECK(back.protocolVersion == hello.protocolVersion);
  CHECK(back.clusterId == hello.clusterId);
  CHECK(back.member == hello.member);
  CHECK(back.memberIndex == hello.memberIndex);
  CHECK(back.settingsHash == hello.settingsHash);

  Hello other = hello;
  other.protocolVersion = PEER_PROTOCOL_VERSION + 1;
  CHECK(errorOf(decodeHello(encodeHello(other).asBytes(), threeMembers()))
            .find("unsupported protocol version 2") != std::string::npos);
  other = hello;
  other.memberIndex = 3;
  CHECK(errorOf(decodeHello(encodeHello(other).asBytes(), threeMembers())).find("member index 3") !=
        std::string::npos);
  CHECK(std::holds_alternative<Hello>(decodeHello(encodeHello(other).asBytes())));
  other = hello;
  other.member = "";
  CHECK(std::holds_alternative<DecodeError>(decodeHello(encodeHello(other).asBytes())));
  // A Hello is not an Envelope and the other way round: the version field sits where an
  // envelope's version does, but other fields mean different things.
  CHECK(std::holds_alternative<DecodeError>(decodeHello(
      encodeEnvelope(PeerEnvelope(election::PeerMessage(election::FetchRequest{1}))).asBytes())));
}

TEST_CASE("an envelope of another protocol version is refused, never guessed") {
  for (uint32_t version : {0u, PEER_PROTOCOL_VERSION + 1, 0xffffffffu}) {
    capnp::MallocMessageBuilder builder;
    auto envelope = builder.initRoot<peer::Envelope>();
    envelope.setVersion(version);
    envelope.initHeartbeat().setSequence(5);
    auto error = errorOf(decodeWords(encodeRaw(builder)));
    INFO(error);
    CHECK(error.find("unsupported protocol version " + std::to_string(version)) !=
          std::string::npos);
  }
}

TEST_CASE("an unknown message type is refused") {
  auto frame = encodeEnvelope(PeerEnvelope(election::PeerMessage(election::ReadIndexRequest{9})));
  // Single segment: word 0 the segment table, word 1 the root pointer (offset 0), then the
  // Envelope's data section: version at byte 0, the union discriminant at byte 4.
  auto bytes = frame.asBytes();
  REQUIRE(bytes.size() > 24);
  uint16_t which = 0;
  memcpy(&which, bytes.begin() + 20, 2);
  REQUIRE(which == peer::Envelope::READ_INDEX_REQUEST);
  which = 99;
  memcpy(bytes.begin() + 20, &which, 2);
  auto error = errorOf(decodeWords(frame));
  INFO(error);
  CHECK(error.find("unknown message type 99") != std::string::npos);
}

TEST_CASE("MemberReport: an unknown role is shown as unknown") {
  MemberReport report{"leader", election::Ballot{4, 1}, 1, 9, 8, 7, 6, 5, 4, 3, 2, 1, 1, 99, false,
                      "",       std::nullopt,           0, 0};
  capnp::MallocMessageBuilder builder;
  auto root = builder.initRoot<peer::Envelope>();
  root.setVersion(PEER_PROTOCOL_VERSION);
  auto frame = encodeEnvelope(report);
  {
    kj::ArrayInputStream input(frame.asBytes());
    capnp::InputStreamMessageReader reader(input);
    builder.setRoot(reader.getRoot<peer::Envelope>());
  }
  builder.getRoot<peer::Envelope>().getMemberReport().setRole(
      static_cast<peer::MemberReport::Role>(42));
  auto decoded = decodeWords(encodeRaw(builder));
  REQUIRE(std::holds_alternative<PeerEnvelope>(decoded));
  auto back = std::get<MemberReport>(std::get<PeerEnvelope>(decoded));
  CHECK(back.role == "unknown");
  back.role = report.role;
  CHECK(back == report);
  // A role name this build cannot send goes out as unknown.
  report.role = "learner";
  decoded = decodeWords(encodeEnvelope(report));
  REQUIRE(std::holds_alternative<PeerEnvelope>(decoded));
  CHECK(std::get<MemberReport>(std::get<PeerEnvelope>(decoded)).role == "unknown");
}

// A frame whose MemberReport says `stage`, which encodeEnvelope would cut to the bound.
kj::Array<capnp::word> reportWithStage(const std::string& stage) {
  MemberReport report;
  report.role = "follower";
  report.recovering = true;
  auto frame = encodeEnvelope(report);
  capnp::MallocMessageBuilder builder;
  {
    kj::ArrayInputStream input(frame.asBytes());
    capnp::InputStreamMessageReader reader(input);
    builder.setRoot(reader.getRoot<peer::Envelope>());
  }
  builder.getRoot<peer::Envelope>().getMemberReport().setRecoveryStage(stage);
  return encodeRaw(builder);
}

TEST_CASE("MemberReport: a recoveryStage over 256 bytes is refused; the encoder cuts it") {
  auto decoded = decodeWords(reportWithStage(std::string(256, 'a')));
  REQUIRE(std::holds_alternative<PeerEnvelope>(decoded));
  CHECK(std::get<MemberReport>(std::get<PeerEnvelope>(decoded)).recoveryStage.size() == 256);
  auto error = errorOf(decodeWords(reportWithStage(std::string(257, 'a'))));
  CHECK(error == "MemberReport: recoveryStage of 257 bytes, more than 256");

  MemberReport report;
  report.role = "follower";
  report.recovering = true;
  // 255 ASCII bytes, then a 2-byte character across the bound: cut before the character.
  report.recoveryStage = std::string(255, 'b') + "\xc3\xa9" + "tail";
  decoded = decodeWords(encodeEnvelope(report));
  REQUIRE(std::holds_alternative<PeerEnvelope>(decoded));
  CHECK(std::get<MemberReport>(std::get<PeerEnvelope>(decoded)).recoveryStage ==
        std::string(255, 'b'));
  report.recoveryStage = std::string(300, 'c');
  decoded = decodeWords(encodeEnvelope(report));
  REQUIRE(std::holds_alternative<PeerEnvelope>(decoded));
  CHECK(std::get<MemberReport>(std::get<PeerEnvelope>(decoded)).recoveryStage ==
        std::string(256, 'c'));
}

TEST_CASE("MemberReport from a member that does not send catch-up fields: not catching up") {
  capnp::MallocMessageBuilder builder;
  auto root = builder.initRoot<peer::Envelope>();
  root.setVersion(PEER_PROTOCOL_VERSION);
  auto report = root.initMemberReport();
  report.setRole(peer::MemberReport::Role::FOLLOWER);
  report.initBallot();
  report.setDecidedSlot(7);
  auto decoded = decodeWords(encodeRaw(builder));
  REQUIRE(std::holds_alternative<PeerEnvelope>(decoded));
  const auto& back = std::get<MemberReport>(std::get<PeerEnvelope>(decoded));
  CHECK(back.decidedSlot == 7);
  CHECK_FALSE(back.recovering);
  CHECK(back.recoveryStage.empty());
  CHECK_FALSE(back.snapshotFrom);
  CHECK(back.snapshotBytesReceived == 0);
  CHECK(back.snapshotBytesTotal == 0);
}

TEST_CASE("member indexes are checked against the member count") {
  using namespace election;
  std::vector<PeerEnvelope> bad = {
      PeerMessage(Prepare{Ballot{1, 3}, 1}),
      PeerMessage(Promise{Ballot{1, 0}, 1, {LogEntry{1, Ballot{1, 7}, {}}}, 1, 0}),
      PeerMessage(Accept{Ballot{1, 5}, 1, {}, 0}),
      PeerMessage(Accepted{Ballot{1, 3}, 1}),
      PeerMessage(Rejected{Ballot{1, 0xffffffff}}),
      PeerMessage(Heartbeat{Ballot{1, 3}, 1, 0}),
      PeerMessage(HeartbeatAck{Ballot{1, 4}, 1, 0}),
      PeerMessage(FetchReply{1, {LogEntry{1, Ballot{1, 9}, {}}}, 1, 1}),
      ForwardRefused{{"x"}, MemberIndex{3}},
      PeerMessage(Handoff{Ballot{1, 3}, 0}),
      PeerMessage(Handoff{Ballot{1, 0}, 3}),
      MemberReport{"leader", Ballot{1, 3}, std::nullopt, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, false, "",
                   std::nullopt, 0, 0},
      MemberReport{"follower", Ballot{1, 0}, MemberIndex{3}, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, false,
                   "", std::nullopt, 0, 0},
      MemberReport{"follower", Ballot{1, 0}, std::nullopt, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, true,
                   "x", MemberIndex{3}, 1, 2},
  };
  for (const auto& message : bad) {
    auto frame = encodeEnvelope(message);
    auto error = errorOf(decodeWords(frame));
    INFO(kindOf(message), ": ", error);
    CHECK(error.find("is not below the member count 3") != std::string::npos);
    // Without a member count the same frame decodes.
    CHECK(std::holds_alternative<PeerEnvelope>(decodeEnvelope(frame.asBytes())));
  }
}

TEST_CASE("slots, list order and empty forwards are checked") {
  using namespace election;
  std::vector<std::pair<PeerEnvelope, std::string>> bad = {
      {PeerMessage(Accept{Ballot{1, 0}, 0, {}, 0}), "Accept: slot 0"},
      {PeerMessage(Accepted{Ballot{1, 0}, 0}), "Accepted: slot 0"},
      {PeerMessage(Prepare{Ballot{1, 0}, 0}), "Prepare: slot 0"},
      {PeerMessage(FetchRequest{0}), "FetchRequest: slot 0"},
      {PeerMessage(Promise{Ballot{1, 0}, 5, {LogEntry{4, Ballot{1, 0}, {}}}, 1, 0}),
       "Promise: entry for slot 4 where a slot >= 5 was due"},
      {PeerMessage(Promise{
           Ballot{1, 0}, 5, {LogEntry{7, Ballot{1, 0}, {}}, LogEntry{7, Ballot{1, 0}, {}}}, 1, 0}),
       "Promise: entry for slot 7 where a slot >= 8 was due"},
      {PeerMessage(FetchReply{5, {LogEntry{6, Ballot{1, 0}, {}}}, 1, 9}),
       "FetchReply: entry for slot 6 where slot 5 was due"},
      {PeerMessage(FetchReply{5, {}, 0, 9}), "FetchReply logStart: slot 0"},
      {Forward{}, "Forward: no commands"},
  };
  for (const auto& [message, expected] : bad) {
    auto error = errorOf(decodeWords(encodeEnvelope(message)));
    INFO(error);
    CHECK(error.find(expected) != std::string::npos);
  }
}

TEST_CASE("a list with more elements than the bound is refused") {
  Forward forward;
  forward.commands.resize(MAX_PEER_LIST_ELEMENTS + 1);
  auto error = errorOf(decodeWords(encodeEnvelope(forward)));
  CHECK(error.find("Forward: 1048577 elements") != std::string::npos);
  forward.commands.resize(MAX_PEER_LIST_ELEMENTS);
  CHECK(std::holds_alternative<PeerEnvelope>(decodeWords(encodeEnvelope(forward))));
}

TEST_CASE("every truncation of a frame is refused") {
  for (const auto& sample : sampleEnvelopes()) {
    auto frame = encodeEnvelope(sample);
    auto bytes = frame.asBytes();
    // Every length for small frames; for the large ones every word boundary near the start and
    // the end, and a sample in between.
    for (size_t length = 0; length < bytes.size(); ++length) {
      if (bytes.size() > 2048 && length > 512 && length + 512 < bytes.size() && length % 97 != 0) {
        continue;
      }
      auto decoded = decodeEnvelope(bytes.slice(0, length), threeMembers());
      INFO("kind ", kindOf(sample), " length ", length, " of ", bytes.size());
      REQUIRE(std::holds_alternative<DecodeError>(decoded));
    }
    // And a frame followed by anything is not one frame.
    std::string longer(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
    longer.append(8, '\0');
    auto decoded = decodeEnvelope(
        kj::arrayPtr(reinterpret_cast<const kj::byte*>(longer.data()), longer.size()));
    CHECK(errorOf(decoded).find("8 bytes after the end of the frame") != std::string::npos);
  }
}

TEST_CASE("random garbage and corrupted frames never crash the decoder") {
  std::mt19937_64 random(20240611);
  auto samples = sampleEnvelopes();
  size_t refused = 0;
  size_t tries = 0;
  // Pure garbage of many lengths.
  for (int i = 0; i < 2000; ++i) {
    std::string junk(random() % 300, '\0');
    for (auto& c : junk)
      c = static_cast<char>(random());
    ++tries;
    auto bytes = kj::arrayPtr(reinterpret_cast<const kj::byte*>(junk.data()), junk.size());
    if (std::holds_alternative<DecodeError>(decodeEnvelope(bytes, threeMembers()))) ++refused;
    (void)decodeHello(bytes, threeMembers());
  }
  CHECK(refused == tries);  // random bytes essentially never form a valid frame of version 1
  // Valid frames with bytes overwritten: segment tables, pointers, list sizes, text.
  for (int i = 0; i < 20000; ++i) {
    auto frame = encodeEnvelope(samples[random() % samples.size()]);
    auto bytes = frame.asBytes();
    int flips = 1 + random() % 4;
    for (int f = 0; f < flips; ++f) {
      size_t at = random() % std::min<size_t>(bytes.size(), 256);
      bytes[at] = static_cast<kj::byte>(random());
    }
    auto decoded = decodeEnvelope(bytes, threeMembers());
    if (auto* message = std::get_if<PeerEnvelope>(&decoded)) {
      // Whatever decodes passes the checks again after re-encoding.
      CHECK(std::holds_alternative<PeerEnvelope>(
          decodeWords(encodeEnvelope(*message), threeMembers())));
    }
  }
  for (int i = 0; i < 5000; ++i) {
    auto frame = encodeHello(Hello{PEER_PROTOCOL_VERSION, "cluster", "n1", 0, 42});
    auto bytes = frame.asBytes();
    bytes[random() % bytes.size()] = static_cast<kj::byte>(random());
    (void)decodeHello(bytes, threeMembers());
  }
}

TEST_CASE("probeFrame finds frame ends and refuses oversized or malformed tables early") {
  auto frame = encodeEnvelope(sampleEnvelopes()[14]);  // the FetchReply with 70 kB
  auto words = frame.asPtr();
  auto probe = probeFrame(words.slice(0, 0), DEFAULT_MAX_PEER_MESSAGE_BYTES);
  CHECK(probe.kind == FrameProbe::Kind::NEED_MORE);
  probe = probeFrame(words.slice(0, 1), DEFAULT_MAX_PEER_MESSAGE_BYTES);
  CHECK(probe.kind == FrameProbe::Kind::NEED_MORE);
  CHECK(probe.words == words.size());
  probe = probeFrame(words, DEFAULT_MAX_PEER_MESSAGE_BYTES);
  CHECK(probe.kind == FrameProbe::Kind::COMPLETE);
  CHECK(probe.words == words.size());
  // The limit applies to the declared size, from the first word on.
  probe = probeFrame(words.slice(0, 1), 64 << 10);
  CHECK(probe.kind == FrameProbe::Kind::INVALID);
  CHECK(probe.error.find("over the limit of 65536 bytes") != std::string::npos);
  CHECK(
      errorOf(decodeEnvelope(frame.asBytes(), DecodeLimits{3, 64 << 10})).find("over the limit") !=
      std::string::npos);

  capnp::word table[2] = {};
  uint32_t header[2] = {0xffffffffu, 0};  // 2^32 segments
  memcpy(table, header, sizeof(header));
  probe = probeFrame(kj::arrayPtr(table, 1), DEFAULT_MAX_PEER_MESSAGE_BYTES);
  CHECK(probe.kind == FrameProbe::Kind::INVALID);
  CHECK(probe.error.find("4294967296 segments") != std::string::npos);
  uint32_t huge[2] = {0, 0xffffffffu};  // one segment of 32 GiB
  memcpy(table, huge, sizeof(huge));
  probe = probeFrame(kj::arrayPtr(table, 1), DEFAULT_MAX_PEER_MESSAGE_BYTES);
  CHECK(probe.kind == FrameProbe::Kind::INVALID);
}

TEST_CASE("pointer aliasing cannot amplify a small frame") {
  // Forward with many commands that all point at the same bytes: valid-looking, tiny on the
  // wire, huge when traversed. The traversal limit (twice the frame) refuses it.
  capnp::MallocMessageBuilder builder(8192);  // one segment
  auto envelope = builder.initRoot<peer::Envelope>();
  envelope.setVersion(PEER_PROTOCOL_VERSION);
  auto commands = envelope.initForward().initCommands(4);
  std::string big(8000, 'x');
  for (int i = 0; i < 4; ++i)
    commands.set(i, kj::arrayPtr(reinterpret_cast<const kj::byte*>(big.data()), big.size()));
  auto frame = encodeRaw(builder);
  auto words = frame.asPtr();
  // Layout: table, root pointer, envelope (1 data word + 1 pointer), forward (1 pointer), list
  // of 4 pointers, then 4 blobs of 1000 words. Re-point list elements 1..3 at blob 0.
  const size_t listStart = 1 + 1 + 2 + 1;
  REQUIRE(words.size() == listStart + 4 + 4000);
  uint64_t pointers[4];
  memcpy(pointers, words.begin() + listStart, sizeof(pointers));
  for (int i = 1; i < 4; ++i) {
    // List pointer: offset (in words, from the end of the pointer) in bits 2..31.
    int64_t offsetToBlob0 = (int64_t(pointers[0]) << 32 >> 34) - i;
    uint64_t p = pointers[i] & ~(uint64_t(0x3fffffff) << 2);
    p |= (uint64_t(offsetToBlob0) & 0x3fffffff) << 2;
    memcpy(static_cast<void*>(frame.begin() + listStart + i), &p, sizeof(p));
  }
  // Truncate the now-unreferenced blobs 1..3 away: the frame shrinks to a quarter.
  size_t keptWords = listStart + 4 + 1000;
  uint32_t header[2] = {0, uint32_t(keptWords - 1)};
  memcpy(static_cast<void*>(frame.begin()), header, sizeof(header));
  auto small = frame.asBytes().slice(0, keptWords * sizeof(capnp::word));
  auto decoded = decodeEnvelope(small, threeMembers());
  INFO(errorOf(decoded));
  CHECK(errorOf(decoded).find("traversal limit") != std::string::npos);
}

}  // namespace
}  // namespace synod::daemon
