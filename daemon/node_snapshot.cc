// Catch-up of a member that fell behind its peers' logs: snapshot transfer in both roles, and the
// end of recovery from an empty data dir. Part of Node (node.h); same thread, same ownership.
//
// Receiver: when the core reports SnapshotNeeded (a peer no longer holds the slots it needs), it
// asks that peer for a snapshot, one chunk at a time, assembles it off to the side, and installs
// it only once complete: one write transaction replaces the config map, the sessions and the
// applied slot and drops the log up to the snapshot's slot; then the core learns the new applied
// slot and fetches the slots after it. A crash mid-transfer loses only the transfer.
//
// Source: encodes its applied state once per transfer (shared by concurrent transfers while
// still recent enough), holds its log from the snapshot's slot on so the receiver can fetch what
// follows, and serves chunks no faster than SNAPSHOT_BYTES_PER_SECOND.
#include <kj/debug.h>

#include <algorithm>

#include "daemon/app_leases.h"
#include "daemon/logging.h"
#include "daemon/node.h"
#include "storage/store.h"

namespace synod::daemon {

namespace {

Nanos millis(uint64_t ms) {
  return static_cast<Nanos>(ms) * election::NANOS_PER_MS;
}

}  // namespace

void Node::startSnapshot(const election::SnapshotNeeded& needed, Nanos now) {
  if (incoming_ || now < snapshotRetryAt_ || outbox_ == nullptr) return;
  uint64_t requestId = prng_.next() | 1;
  incoming_.emplace();
  incoming_->peer = needed.peer;
  incoming_->requestId = requestId;
  incoming_->lastProgressAt = now;
  logNotice("catching up by snapshot from ", config_.peerNames()[needed.peer].c_str(),
            ": its log starts at slot ", needed.peerLogStart, ", this member applied slot ",
            state_.appliedSlot());
  requestChunk(0);
  rearmTick();
}

void Node::requestChunk(uint32_t index) {
  outbox_->sendSnapshotRequest(incoming_->peer, SnapshotRequest{incoming_->requestId, index});
}

void Node::onSnapshotChunk(MemberIndex from, SnapshotChunk&& chunk) {
  if (!incoming_ || incoming_->peer != from || incoming_->requestId != chunk.requestId) return;
  const std::string peer = config_.peerNames()[from];
  Nanos now = bootTimeNow();
  if (!chunk.unavailable.empty()) {
    logWarning("snapshot from ", peer.c_str(), " unavailable: ", chunk.unavailable.c_str());
    incoming_.reset();
    snapshotRetryAt_ = now + millis(SNAPSHOT_RETRY_MS);
    return;
  }
  election::SnapshotAssembler& assembler = incoming_->assembler;
  if (chunk.index != assembler.chunksReceived()) return;  // a duplicate of a re-request
  if (auto problem = assembler.add(chunk.data, storage::MAX_KEY_BYTES)) {
    logWarning("snapshot from ", peer.c_str(), " refused: ", problem->c_str());
    incoming_.reset();
    snapshotRetryAt_ = now + millis(SNAPSHOT_RETRY_MS);
    return;
  }
  incoming_->totalBytes = chunk.totalBytes;
  incoming_->lastProgressAt = now;
  if (!assembler.complete()) {
    requestChunk(assembler.chunksReceived());
    return;
  }
  maybeInstallSnapshot();
}

void Node::maybeInstallSnapshot() {
  // The core takes a snapshot only between Readys; the pending persist calls this again.
  if (!incoming_ || !incoming_->assembler.complete() || ready_ || commitInFlight_) return;
  IncomingSnapshot incoming = std::move(*incoming_);
  incoming_.reset();
  const Slot slot = incoming.assembler.slot();
  const std::string peer = config_.peerNames()[incoming.peer];
  if (slot <= state_.appliedSlot()) {
    logInfo("snapshot from ", peer.c_str(), " at slot ", slot, " is not ahead of this member");
    return;
  }
  election::StateMachine fresh = incoming.assembler.take();
  storage::WriteBatch batch;
  batch.replaceState = true;
  fresh.forEachKey([&](std::string_view key, const election::KeyRecord& record) {
    batch.putKey(std::string(key), record);
  });
  fresh.forEachSession([&](MemberIndex member, std::string_view encoded) {
    batch.sessions[member] = std::string(encoded);
  });
  fresh.leases().forEachLease(
      [&](const election::Lease& lease) { batch.leases[lease.id] = election::encodeLease(lease); });
  fresh.leases().forEachLock([&](std::string_view name, const election::Lock& lock) {
    batch.locks[std::string(name)] = election::encodeLock(name, lock);
  });
  batch.applied = std::make_pair(slot, fresh.revision());
  // The history restarts at the snapshot: older revisions are compacted on this member.
  batch.historyStart = fresh.history().start();
  fresh.setHistoryLimits(historyLimits());
  batch.dropLogThrough = slot;
  batch.recovered = recoveredPending_;
  // Unmaterialized changes of the old state are superseded: the snapshot is ahead of them.
  store_.commit(batch);
  recoveredPending_ = false;
  state_ = std::move(fresh);
  appLeases_->stateReplaced(state_.takeTouchedLeases(), bootTimeNow());
  materializedSlot_ = slot;
  core_->installSnapshot(slot, bootTimeNow());
  ++snapshotsInstalled_;
  watchHub_->changed();
  logNotice("installed a snapshot from ", peer.c_str(), " at slot ", slot, ": ", state_.keyCount(),
            " keys at revision ", state_.revision(), ", ", incoming.assembler.bytesReceived(),
            " bytes");
  scheduleFlush();
}

void Node::onSnapshotRequest(MemberIndex from, const SnapshotRequest& request) {
  if (outbox_ == nullptr) return;
  Nanos now = bootTimeNow();
  auto refuse = [&](std::string why) {
    SnapshotChunk chunk;
    chunk.requestId = request.requestId;
    chunk.index = request.index;
    chunk.unavailable = std::move(why);
    outbox_->sendSnapshotChunk(from, std::move(chunk));
  };
  auto it = outgoing_.find(request.requestId);
  if (request.index == 0 && it == outgoing_.end()) {
    if (outgoing_.size() >= MAX_SNAPSHOTS_SERVED) {
      refuse("the source already serves " + std::to_string(outgoing_.size()) + " snapshots");
      return;
    }
    // A cached image serves as long as the log still holds the slots right after it.
    if (!lastImage_ || lastImage_->slot + 1 < core_->logStart() ||
        lastImage_->slot < state_.appliedSlot()) {
      if (state_.appliedSlot() == 0) {
        refuse("the source has applied nothing yet");
        return;
      }
      auto image = std::make_shared<SnapshotImage>();
      image->slot = state_.appliedSlot();
      image->chunks = election::encodeSnapshot(state_, SNAPSHOT_CHUNK_BYTES);
      for (const auto& c : image->chunks)
        image->totalBytes += c.size();
      lastImage_ = std::move(image);
    }
    it = outgoing_
             .emplace(request.requestId, OutgoingSnapshot{from, request.requestId, lastImage_, now})
             .first;
    ++snapshotsServed_;
    logNotice("serving a snapshot at slot ", lastImage_->slot, " (", lastImage_->chunks.size(),
              " chunks, ", lastImage_->totalBytes, " bytes) to ",
              config_.peerNames()[from].c_str());
    updateLogHold();
  }
  if (it == outgoing_.end() || it->second.peer != from) {
    refuse("no snapshot transfer " + std::to_string(request.requestId) + " here");
    return;
  }
  if (request.index >= it->second.image->chunks.size()) {
    refuse("chunk " + std::to_string(request.index) + " is past the end of the snapshot");
    return;
  }
  it->second.lastRequestAt = now;
  // Pacing: each chunk takes its share of the byte budget; a chunk due later waits on a timer.
  auto image = it->second.image;
  const uint64_t bytes = image->chunks[request.index].size();
  const Nanos cost =
      static_cast<Nanos>(bytes * election::NANOS_PER_MS * 1000 / SNAPSHOT_BYTES_PER_SECOND);
  const Nanos sendAt = std::max(now, snapshotSendAt_);
  snapshotSendAt_ = sendAt + cost;
  const uint64_t requestId = request.requestId;
  const uint32_t index = request.index;
  if (sendAt <= now) {
    sendChunk(from, requestId, image, index);
    return;
  }
  const uint64_t waitMs = static_cast<uint64_t>((sendAt - now) / election::NANOS_PER_MS) + 1;
  tasks_.add(
      timer_.afterDelay(waitMs * kj::MILLISECONDS).then([this, from, requestId, image, index]() {
        sendChunk(from, requestId, image, index);
      }));
}

void Node::sendChunk(MemberIndex to, uint64_t requestId, std::shared_ptr<const SnapshotImage> image,
                     uint32_t index) {
  if (outbox_ == nullptr) return;
  SnapshotChunk chunk;
  chunk.requestId = requestId;
  chunk.index = index;
  chunk.count = static_cast<uint32_t>(image->chunks.size());
  chunk.slot = image->slot;
  chunk.totalBytes = image->totalBytes;
  chunk.data = image->chunks[index];
  outbox_->sendSnapshotChunk(to, std::move(chunk));
  if (index + 1 == image->chunks.size()) {
    // The receiver has everything: the transfer ends here (the log stays held for a while, for
    // the fetches right after the install).
    auto it = outgoing_.find(requestId);
    if (it != outgoing_.end()) it->second.lastRequestAt = bootTimeNow();
  }
}

void Node::snapshotTick(Nanos now) {
  if (incoming_ && now - incoming_->lastProgressAt >= millis(SNAPSHOT_IDLE_MS)) {
    logWarning("snapshot from ", config_.peerNames()[incoming_->peer].c_str(),
               " stalled; starting over");
    incoming_.reset();
  } else if (incoming_ && !incoming_->assembler.complete() &&
             now - incoming_->lastProgressAt >= millis(SNAPSHOT_RETRY_MS)) {
    requestChunk(incoming_->assembler.chunksReceived());  // a lost request or chunk
  }
  bool changed = false;
  for (auto it = outgoing_.begin(); it != outgoing_.end();) {
    if (now - it->second.lastRequestAt >= millis(SNAPSHOT_IDLE_MS)) {
      it = outgoing_.erase(it);
      changed = true;
    } else {
      ++it;
    }
  }
  if (changed) updateLogHold();
  if (outgoing_.empty() && lastImage_ && lastImage_->slot + 1 < core_->logStart()) {
    lastImage_.reset();  // no longer servable: free its memory
  }
}

void Node::updateLogHold() {
  std::optional<Slot> hold;
  for (const auto& [id, transfer] : outgoing_) {
    Slot from = transfer.image->slot + 1;
    hold = hold ? std::min(*hold, from) : from;
  }
  core_->holdLogFrom(hold);
}

void Node::noteRecovered(election::RecoveryOutcome outcome) {
  recoveredPending_ = true;
  logNotice("recovery finished (", election::recoveryOutcomeName(outcome),
            "): this member votes again");
}

CatchUpStatus Node::catchUpStatus() const {
  CatchUpStatus status;
  election::RecoveryProgress progress = core_->recoveryProgress();
  status.recovering = progress.recovering;
  if (progress.recovering) {
    status.recoveryStage =
        progress.targetKnown
            ? "catching up to slot " + std::to_string(progress.targetSlot) + " before voting"
            : "waiting for answers from " + std::to_string(progress.answersNeeded) +
                  " other members (" + std::to_string(progress.answers) + " so far)";
  }
  if (incoming_) {
    status.snapshotInProgress = true;
    status.snapshotFrom = config_.peerNames()[incoming_->peer];
    status.snapshotSlot = incoming_->assembler.slot();
    status.snapshotBytesReceived = incoming_->assembler.bytesReceived();
    status.snapshotBytesTotal = incoming_->totalBytes;
  }
  status.snapshotsInstalled = snapshotsInstalled_;
  status.snapshotsServed = snapshotsServed_;
  return status;
}

}  // namespace synod::daemon
