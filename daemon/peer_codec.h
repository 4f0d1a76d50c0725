// Translation between the messages members exchange (election/messages.h plus the daemon's own
// command forwarding) and their wire form (rpc_schema/peer.capnp), one frame per message in Cap'n
// Proto's standard stream framing: segment table, then segments; always whole 8-byte words.
//
// Every byte a decoder sees is untrusted input from the network. Decoders never throw and never
// crash: they return the message or a DecodeError naming what was wrong. They check the
// protocol version, the frame structure and size, and every field as far as a message can be
// judged alone (member indexes below the member count, slot numbers, list order and sizes); the
// consensus core judges the rest.

#pragma once

#include <capnp/common.h>
#include <capnp/message.h>
#include <kj/array.h>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "daemon/member_report.h"
#include "election/messages.h"
#include "election/types.h"

namespace synod::daemon {

// The protocol version this build speaks (peer.capnp's protocolVersion). A frame with another
// version is refused.
extern const uint32_t PEER_PROTOCOL_VERSION;

// Default bound on one encoded message. A FetchReply carries at most a few MiB of log (the core's
// maxFetchBytes), an Accept one batch: 64 MiB leaves room while bounding what a peer can make
// this member allocate.
constexpr size_t DEFAULT_MAX_PEER_MESSAGE_BYTES = size_t(64) << 20;

// Upper bound on the element count of any list in a message (commands of a value or a forward,
// log entries), whatever the byte limit: each element costs a std::string or a LogEntry once
// decoded, far more than its 8 bytes on the wire.
constexpr size_t MAX_PEER_LIST_ELEMENTS = size_t(1) << 20;

// A follower hands commands from its local apps to the member it believes leads. `commands` are
// encoded records.capnp Commands (opaque here), at least one.
struct Forward {
  std::vector<std::string> commands;
};

// The receiver of a Forward does not lead: the commands come back untouched, with the member the
// receiver believes leads, if it knows one.
struct ForwardRefused {
  std::vector<std::string> commands;
  std::optional<election::MemberIndex> leaderHint;
};

// A member behind every peer's log asks for chunk `index` of a snapshot (index 0 starts transfer
// `requestId`).
struct SnapshotRequest {
  uint64_t requestId = 0;
  uint32_t index = 0;
};

// Chunk `index` of `count` of a snapshot at `slot` (data: an encoded records::SnapshotChunk), or
// `unavailable` (non-empty: why) when the source cannot serve the request.
struct SnapshotChunk {
  uint64_t requestId = 0;
  uint32_t index = 0;
  uint32_t count = 0;
  uint64_t slot = 0;
  uint64_t totalBytes = 0;
  std::string data;
  std::string unavailable;
};

// Everything that travels between members after the handshake.
using PeerEnvelope = std::variant<election::PeerMessage, Forward, ForwardRefused, SnapshotRequest,
                                  SnapshotChunk, MemberReport>;

// The handshake frame, first on every connection in both directions.
struct Hello {
  uint32_t protocolVersion = 0;
  std::string clusterId;
  std::string member;  // the sender's name in `peers`
  election::MemberIndex memberIndex = 0;
  uint64_t settingsHash = 0;
};

struct DecodeError {
  std::string message;  // one line naming what was wrong, for a log line
};

template <typename T>
using Decoded = std::variant<T, DecodeError>;

struct DecodeLimits {
  // Member indexes (ballots, leader hints, a Hello's sender) must be below it; nullopt skips the
  // check.
  std::optional<uint32_t> memberCount;
  // Bound on the whole frame, segment table included.
  size_t maxMessageBytes = DEFAULT_MAX_PEER_MESSAGE_BYTES;
};

// One frame, ready to write to a stream; its size in bytes is words.asBytes().size().
kj::Array<capnp::word> encodeEnvelope(const PeerEnvelope& message);
kj::Array<capnp::word> encodeHello(const Hello& hello);

// Decode exactly one whole frame. `frame` may be unaligned (it is copied then).
Decoded<PeerEnvelope> decodeEnvelope(kj::ArrayPtr<const kj::byte> frame,
                                     const DecodeLimits& limits = {});
Decoded<Hello> decodeHello(kj::ArrayPtr<const kj::byte> frame, const DecodeLimits& limits = {});

// Same, from a reader whose frame was already checked (e.g. capnp::readMessage with ReaderOptions
// bounding the traversal). Still never throws.
Decoded<PeerEnvelope> decodeEnvelope(capnp::MessageReader& reader, const DecodeLimits& limits = {});
Decoded<Hello> decodeHello(capnp::MessageReader& reader, const DecodeLimits& limits = {});

// Where the next frame ends in a stream of frames, judged from the words received so far.
struct FrameProbe {
  enum class Kind {
    NEED_MORE,  // `words` is how many words are needed at least to know more
    COMPLETE,   // the first frame is `words` words long (and fits the limit)
    INVALID,    // the stream cannot be framed or the frame is over the limit: `error` says why
  };
  Kind kind = Kind::NEED_MORE;
  size_t words = 0;
  std::string error;
};

// Reads the segment table at the start of `received`. At most 512 segments (as
// capnp::readMessage); the declared size is compared with `maxMessageBytes` before any segment
// arrives, so an oversized frame is refused without buffering it.
FrameProbe probeFrame(kj::ArrayPtr<const capnp::word> received, size_t maxMessageBytes);

// capnp::ReaderOptions for a frame of `frameWords` words: traversal limited to twice the frame,
// which legitimate messages (every object read once) never reach and pointer-aliasing
// amplification cannot exceed.
capnp::ReaderOptions readerOptionsFor(size_t frameWords);

}  // namespace synod::daemon
