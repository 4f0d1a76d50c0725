#include "election/history.h"

#include <kj/debug.h>

#include <algorithm>

namespace synod::election {

namespace {

// Per change: the shared pointer, the optionals, the strings' own bookkeeping.
constexpr uint64_t CHANGE_OVERHEAD_BYTES = 160;
constexpr uint64_t REVISION_OVERHEAD_BYTES = 64;

}  // namespace

uint64_t RevisionChanges::bytes() const {
  uint64_t total = REVISION_OVERHEAD_BYTES;
  for (const KeyChange& change : changes) {
    total += CHANGE_OVERHEAD_BYTES + change.key.size();
    if (change.record) total += change.record->value.size();
    if (change.prev) total += change.prev->value.size();
  }
  return total;
}

void History::reset(uint64_t start) {
  KJ_ASSERT(!open_, "history reset while a revision is being recorded");
  start_ = std::max<uint64_t>(start, 1);
  revisions_.clear();
  bytes_ = 0;
}

void History::restore(RevisionChanges revision) {
  KJ_REQUIRE(revision.revision >= start_, "history revision below the history's start",
             revision.revision, start_);
  KJ_REQUIRE(revisions_.empty() || revisions_.back()->revision < revision.revision,
             "history revisions out of order", revision.revision);
  bytes_ += revision.bytes();
  revisions_.push_back(std::make_shared<const RevisionChanges>(std::move(revision)));
}

void History::record(uint64_t revision, KeyChange change) {
  if (open_ && open_->revision != revision) {
    // A command makes all its changes at one revision; a new one means the last command ended.
    seal(open_->revision);
  }
  if (!open_) {
    KJ_ASSERT(revisions_.empty() || revisions_.back()->revision < revision,
              "history revisions must increase", revision);
    open_.emplace();
    open_->revision = revision;
  }
  open_->changes.push_back(std::move(change));
}

void History::seal(uint64_t currentRevision) {
  if (open_) {
    bytes_ += open_->bytes();
    revisions_.push_back(std::make_shared<const RevisionChanges>(std::move(*open_)));
    open_.reset();
  }
  if (limits_.revisions > 0 && currentRevision >= limits_.revisions) {
    compact(currentRevision - limits_.revisions + 1);
  }
  while (bytes_ > limits_.maxBytes && !revisions_.empty()) {
    start_ = std::max(start_, revisions_.front()->revision + 1);
    dropFront();
  }
}

void History::compact(uint64_t revision) {
  start_ = std::max(start_, revision);
  while (!revisions_.empty() && revisions_.front()->revision < start_)
    dropFront();
}

void History::dropFront() {
  bytes_ -= revisions_.front()->bytes();
  revisions_.pop_front();
}

size_t History::lowerBound(uint64_t revision) const {
  auto it = std::lower_bound(
      revisions_.begin(), revisions_.end(), revision,
      [](const RevisionPtr& entry, uint64_t wanted) { return entry->revision < wanted; });
  return static_cast<size_t>(it - revisions_.begin());
}

}  // namespace synod::election
