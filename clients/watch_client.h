// libsynod: watches, compaction and reads at a past revision (rpc_schema/synod.capnp, Watches),
// on an AsyncClient's connection.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "clients/synod_client.h"

namespace synod::clients {

struct WatchEvent {
  bool put = true;  // false: a delete (kv has the key, and modRevision = the delete's revision)
  KeyValue kv;
  bool hasPrev = false;  // the key existed before and the watch asked for prevKv
  KeyValue prev;
};

/// One message of a watch (WatchMessage in synod.capnp), in the order the daemon sent them.
struct WatchUpdate {
  enum class Kind { EVENTS, PROGRESS, COMPACTED, SNAPSHOT, CANCELLED };
  Kind kind = Kind::EVENTS;
  /// EVENTS, PROGRESS, the last SNAPSHOT page: every change up to this was delivered.
  /// COMPACTED and the other pages: the snapshot's revision. CANCELLED: resume from this + 1.
  uint64_t revision = 0;
  std::vector<WatchEvent> events;  // EVENTS: one or more whole revisions
  uint64_t oldestRevision = 0;     // COMPACTED
  std::vector<KeyValue> kvs;       // SNAPSHOT
  bool last = false;               // SNAPSHOT
  std::string reason;              // CANCELLED
};

struct WatchRequest {
  std::string key;
  bool prefix = true;         // every key starting with `key`; false: `key` alone
  uint64_t fromRevision = 0;  // 0 = from the next change on
  bool prevKv = false;
};

struct WatchStarted {
  uint64_t startRevision = 0;   // the first revision whose events will come
  uint64_t oldestRevision = 0;  // the oldest revision the member keeps
  bool compacted = false;       // a snapshot comes first
};

/// A daemon that sent nothing (not even a progress message, sent every second) for this long is
/// taken as lost.
inline constexpr uint32_t WATCH_SILENCE_MS = 5000;

/// Runs a watch: `onStarted` once the daemon accepted it, then `onUpdate` for every message, in
/// order, on the loop's thread. Resolves when it ends: OK when `onUpdate` returned false or the
/// daemon cancelled it (the CANCELLED update was passed on first); the daemon's refusal; or
/// UNAVAILABLE when the connection broke or the daemon went silent for WATCH_SILENCE_MS.
/// `timer` measures the silence.
kj::Promise<Result<WatchStarted>> runWatch(
    AsyncClient& client, kj::Timer& timer, WatchRequest request,
    std::function<void(const Result<WatchStarted>&)> onStarted,
    std::function<bool(WatchUpdate&&)> onUpdate);

struct CompactReply {
  uint64_t oldestRevision = 0;
};

/// Forgets history below `revision` on every member (a replicated write).
kj::Promise<Result<CompactReply>> compact(AsyncClient& client, uint64_t revision,
                                          uint32_t timeoutMs = 0);
/// Reads at a past revision (0 = the current one), from the member's history.
kj::Promise<Result<KeyValue>> getAt(AsyncClient& client, std::string key, uint64_t revision,
                                    uint32_t timeoutMs = 0);
kj::Promise<Result<ListReply>> listAt(AsyncClient& client, std::string prefix, uint64_t revision,
                                      ListOptions opts = {});

}  // namespace synod::clients
