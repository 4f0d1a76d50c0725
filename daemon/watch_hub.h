// Watches served from this member's own replica: each watcher gets the changes of its key range
// from the state machine's history (election/history.h), in revision order, with no gaps and no
// duplicates, all changes of one revision in one message (rpc_schema/synod.capnp, Watches).
//
// A watcher reads the shared history at its own position: nothing is copied per watcher. Its
// "buffer" is what it has not received yet of the changes made since it started (or since its
// last snapshot); past WatchLimits::bufferEvents or bufferBytes it is cancelled with the reason and
// the last revision it received, so it can resume. A watcher whose position falls below the
// history's start (compaction, a snapshot install, a start from a compacted revision) gets
// "compacted", then its range's state at the current revision R in pages, then changes from R + 1.
// The pages are read at R through the history, so the state keeps changing meanwhile; if R itself
// is compacted before the last page the watch is cancelled.
//
// Flow control: one delivery call per watcher at a time; a slow watcher never delays another (each
// has its own position) and costs no memory beyond its call in flight.
//
// Ownership: the hub borrows the StateMachine (which must stay at the same address: a snapshot
// install assigns into it) and the timer; the owner calls changed() after every apply or install.
// Single-threaded.
#pragma once

#include <kj/async.h>
#include <kj/timer.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>

#include "election/state_machine.h"
#include "rpc_schema/synod.capnp.h"

namespace synod::daemon {

struct WatchLimits {
  size_t maxWatchers = 10000;
  // Undelivered changes (and their bytes) a watcher may fall behind by before it is cancelled.
  uint64_t bufferEvents = 10000;
  uint64_t bufferBytes = 16ull << 20;
  // A message stops taking more revisions past this many bytes (one revision is never split, so
  // a single huge revision can exceed it); snapshot pages stop there too, or at pageKeys keys.
  uint64_t messageBytes = 1ull << 20;
  uint32_t pageKeys = 1000;
  // An idle watcher is told the revision it is current to this often.
  uint32_t progressMs = 1000;
};

class WatchHub : private kj::TaskSet::ErrorHandler {
 public:
  WatchHub(const election::StateMachine& state, kj::Timer& timer);
  ~WatchHub();

  void setLimits(const WatchLimits& limits) { limits_ = limits; }
  const WatchLimits& limits() const { return limits_; }

  struct Started {
    uint64_t id = 0;
    uint64_t startRevision = 0;  // the first revision whose changes will be delivered
    bool compacted = false;      // a snapshot at startRevision - 1 comes first
  };
  // Starts a watch from `fromRevision` (0 = after the current revision). Returns a refusal text
  // when the member serves limits().maxWatchers already.
  std::variant<Started, std::string> add(election::KeyRange range, uint64_t fromRevision,
                                         bool prevKv, rpc::Watcher::Client watcher);
  // Ends a watch without telling the watcher (it dropped its handle). Unknown ids are ignored.
  void remove(uint64_t id);
  // The state machine applied revisions or was replaced by a snapshot.
  void changed();
  size_t size() const { return watchers_.size(); }

 private:
  struct Resync {
    uint64_t revision = 0;  // the snapshot's revision
    std::string after;      // the last key delivered; empty before the first page
    bool announced = false;
  };
  struct Watcher {
    uint64_t id = 0;
    election::KeyRange range;
    bool prevKv = false;
    rpc::Watcher::Client client;
    uint64_t next = 1;  // the first revision not delivered yet
    bool inFlight = false;
    bool finished = false;  // the cancel message went out: drop it once it returns
    std::optional<Resync> resync;
    std::optional<std::string> cancelReason;
    // Changes made at revisions >= liveFrom not delivered yet.
    uint64_t liveFrom = 1;
    uint64_t bufferedEvents = 0;
    uint64_t bufferedBytes = 0;
    kj::TimePoint lastSentAt;

    Watcher(rpc::Watcher::Client c, kj::TimePoint now) : client(kj::mv(c)), lastSentAt(now) {}
  };

  uint64_t changeBytes(const Watcher& watcher, const election::KeyChange& change) const;
  void countNewRevisions();
  void startResync(Watcher& watcher);
  void pump(Watcher& watcher);
  // Fills the next message for `watcher`; false when it has nothing to say now.
  bool fill(Watcher& watcher, rpc::WatchMessage::Builder message);
  bool fillSnapshotPage(Watcher& watcher, rpc::WatchMessage::Builder message);
  bool fillEvents(Watcher& watcher, rpc::WatchMessage::Builder message);
  void delivered(uint64_t id);
  kj::Promise<void> progressLoop();
  void progressTick();

  void taskFailed(kj::Exception&& exception) override;

  const election::StateMachine& state_;
  kj::Timer& timer_;
  WatchLimits limits_;
  uint64_t nextId_ = 1;
  uint64_t seen_ = 0;  // the revision up to which changes were counted into buffers
  std::map<uint64_t, std::unique_ptr<Watcher>> watchers_;
  kj::Maybe<kj::Promise<void>> progress_;  // runs while any watcher exists
  kj::TaskSet tasks_;
};

}  // namespace synod::daemon
