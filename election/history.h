// The history of the config map: every change of every kept revision, for watches and reads at a
// past revision.
//
// Kept: every revision >= start(). Revisions that changed no key (lock operations, lease grants)
// have no entry; a revision with an entry holds every change that revision made, in the order the
// command made them. What is kept is bounded three ways, each deterministic given the same
// sequence of applied commands and the same limits:
//   - retention: the last `revisions` revisions (history_revisions), counted from the map's
//     current revision, whether or not they changed keys;
//   - bytes: past `maxBytes` the oldest revisions are dropped until it fits again;
//   - compact(revision), a replicated command: every member forgets the same revisions.
// The limits are a member's own configuration: members with different history_revisions keep
// different amounts, and each answers "compacted" by its own start. The map's state and digest
// never depend on the history.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "election/types.h"

namespace synod::election {

// One key (prefix false) or every key starting with `key` (prefix true; "" = every key).
struct KeyRange {
  std::string key;
  bool prefix = false;

  bool contains(std::string_view candidate) const {
    return prefix ? candidate.substr(0, key.size()) == key : candidate == key;
  }
};

// One change of one key.
struct KeyChange {
  std::string key;
  std::optional<KeyRecord> record;  // the key afterwards; nullopt = deleted
  std::optional<KeyRecord> prev;    // the key before; nullopt = it did not exist

  bool operator==(const KeyChange&) const = default;
};

// Every change one revision made.
struct RevisionChanges {
  uint64_t revision = 0;
  std::vector<KeyChange> changes;

  // What it costs to keep: keys, values (new and previous) and a fixed overhead per change.
  uint64_t bytes() const;
  bool operator==(const RevisionChanges&) const = default;
};

// Shared, never changed once recorded: watchers, the store's commit thread and the history hold
// the same object.
using RevisionPtr = std::shared_ptr<const RevisionChanges>;

struct HistoryLimits {
  uint64_t revisions = 10000;        // history_revisions
  uint64_t maxBytes = 256ull << 20;  // the memory the kept changes may take
};

class History {
 public:
  // The oldest revision whose changes are all kept; start() - 1 is the oldest revision a read can
  // reconstruct. 1 for a map that started empty.
  uint64_t start() const { return start_; }
  // Kept revisions with changes, ascending.
  const std::deque<RevisionPtr>& revisions() const { return revisions_; }
  uint64_t bytes() const { return bytes_; }
  const HistoryLimits& limits() const { return limits_; }

  // Forgets everything: nothing below `start` is known (a restore or a snapshot install).
  void reset(uint64_t start);
  // Appends a revision read back from storage; revisions ascending, each >= start().
  void restore(RevisionChanges revision);
  void setLimits(const HistoryLimits& limits) { limits_ = limits; }

  // Adds a change to the revision being recorded (a command in progress).
  void record(uint64_t revision, KeyChange change);
  // Ends the command: the revision being recorded becomes part of the history; then drops what
  // the limits no longer allow, given the map is at `currentRevision`.
  void seal(uint64_t currentRevision);
  // Drops every revision below `revision` (start() becomes at least `revision`).
  void compact(uint64_t revision);

  // The first kept revision with changes >= `revision` (an index into revisions()).
  size_t lowerBound(uint64_t revision) const;

 private:
  void dropFront();

  uint64_t start_ = 1;
  std::deque<RevisionPtr> revisions_;
  std::optional<RevisionChanges> open_;
  uint64_t bytes_ = 0;
  HistoryLimits limits_;
};

}  // namespace synod::election
