#include "daemon/watch_hub.h"

#include <kj/debug.h>

#include <algorithm>
#include <vector>

#include "daemon/logging.h"

namespace synod::daemon {

namespace {

constexpr uint64_t CHANGE_OVERHEAD_BYTES = 64;

capnp::Data::Reader bytes(std::string_view s) {
  return {reinterpret_cast<const kj::byte*>(s.data()), s.size()};
}

void setKeyValue(rpc::KeyValue::Builder out, std::string_view key,
                 const election::KeyRecord& record) {
  out.setKey(bytes(key));
  out.setValue(bytes(record.value));
  out.setCreateRevision(record.createRevision);
  out.setModRevision(record.modRevision);
  out.setVersion(record.version);
  out.setLease(record.lease);
}

}  // namespace

WatchHub::WatchHub(const election::StateMachine& state, kj::Timer& timer)
    : state_(state), timer_(timer), seen_(state.revision()), tasks_(*this) {}

WatchHub::~WatchHub() = default;

uint64_t WatchHub::changeBytes(const Watcher& watcher, const election::KeyChange& change) const {
  uint64_t total = CHANGE_OVERHEAD_BYTES + change.key.size();
  if (change.record) total += change.record->value.size();
  if (watcher.prevKv && change.prev) total += change.prev->value.size();
  return total;
}

std::variant<WatchHub::Started, std::string> WatchHub::add(election::KeyRange range,
                                                           uint64_t fromRevision, bool prevKv,
                                                           rpc::Watcher::Client client) {
  if (watchers_.size() >= limits_.maxWatchers) {
    return std::string("this member serves ") + std::to_string(watchers_.size()) +
           " watches already, its maximum";
  }
  countNewRevisions();
  auto watcher = std::make_unique<Watcher>(kj::mv(client), timer_.now());
  watcher->id = nextId_++;
  watcher->range = std::move(range);
  watcher->prevKv = prevKv;
  const uint64_t head = state_.revision();
  watcher->next = fromRevision == 0 ? head + 1 : fromRevision;
  watcher->liveFrom = head + 1;
  Started started{watcher->id, watcher->next, false};
  if (watcher->next < state_.history().start()) {
    startResync(*watcher);
    started.startRevision = watcher->resync->revision + 1;
    started.compacted = true;
  }
  Watcher& added = *watcher;
  watchers_.emplace(added.id, std::move(watcher));
  if (progress_ == nullptr) {
    progress_ = progressLoop().eagerlyEvaluate(
        [](kj::Exception&& e) { logError("watch progress timer failed: ", e.getDescription()); });
  }
  pump(added);
  return started;
}

void WatchHub::remove(uint64_t id) {
  watchers_.erase(id);
  if (watchers_.empty()) progress_ = nullptr;
}

void WatchHub::changed() {
  countNewRevisions();
  std::vector<uint64_t> ids;
  for (const auto& [id, watcher] : watchers_)
    ids.push_back(id);
  for (uint64_t id : ids) {
    auto it = watchers_.find(id);
    if (it != watchers_.end()) pump(*it->second);
  }
}

void WatchHub::countNewRevisions() {
  const auto& history = state_.history();
  const auto& kept = history.revisions();
  for (size_t i = history.lowerBound(seen_ + 1); i < kept.size(); ++i) {
    const election::RevisionChanges& revision = *kept[i];
    for (auto& [id, watcher] : watchers_) {
      if (watcher->cancelReason || revision.revision < watcher->liveFrom ||
          revision.revision < watcher->next) {
        continue;
      }
      for (const election::KeyChange& change : revision.changes) {
        if (!watcher->range.contains(change.key)) continue;
        ++watcher->bufferedEvents;
        watcher->bufferedBytes += changeBytes(*watcher, change);
      }
      if (watcher->bufferedEvents > limits_.bufferEvents ||
          watcher->bufferedBytes > limits_.bufferBytes) {
        watcher->cancelReason = "watcher too slow: " + std::to_string(watcher->bufferedEvents) +
                                " undelivered changes (" + std::to_string(watcher->bufferedBytes) +
                                " bytes) exceed its buffer of " +
                                std::to_string(limits_.bufferEvents) + " changes / " +
                                std::to_string(limits_.bufferBytes) + " bytes";
      }
    }
  }
  seen_ = state_.revision();
}

void WatchHub::startResync(Watcher& watcher) {
  watcher.resync = Resync{state_.revision(), {}, false};
  // What the snapshot covers is not counted against the buffer; changes after it are.
  watcher.liveFrom = state_.revision() + 1;
  watcher.bufferedEvents = 0;
  watcher.bufferedBytes = 0;
}

void WatchHub::pump(Watcher& watcher) {
  if (watcher.inFlight || watcher.finished) return;
  auto request = watcher.client.deliverRequest();
  if (!fill(watcher, request.initMessage())) return;
  watcher.inFlight = true;
  watcher.lastSentAt = timer_.now();
  const uint64_t id = watcher.id;
  tasks_.add(request.send().then([this, id](auto&&) { delivered(id); },
                                 [this, id](kj::Exception&&) { remove(id); }));
}

void WatchHub::delivered(uint64_t id) {
  auto it = watchers_.find(id);
  if (it == watchers_.end()) return;
  Watcher& watcher = *it->second;
  watcher.inFlight = false;
  if (watcher.finished) {
    remove(id);
    return;
  }
  pump(watcher);
}

bool WatchHub::fill(Watcher& watcher, rpc::WatchMessage::Builder message) {
  if (!watcher.cancelReason && !watcher.resync && watcher.next < state_.history().start()) {
    startResync(watcher);
  }
  if (watcher.resync && !state_.readableAt(watcher.resync->revision)) {
    watcher.cancelReason = "history compacted past revision " +
                           std::to_string(watcher.resync->revision) +
                           " while its snapshot was delivered";
  }
  if (watcher.cancelReason) {
    message.setRevision(watcher.next - 1);
    message.setCancelled(*watcher.cancelReason);
    watcher.finished = true;
    return true;
  }
  if (watcher.resync) return fillSnapshotPage(watcher, message);
  return fillEvents(watcher, message);
}

bool WatchHub::fillSnapshotPage(Watcher& watcher, rpc::WatchMessage::Builder message) {
  Resync& resync = *watcher.resync;
  message.setRevision(resync.revision);
  if (!resync.announced) {
    message.setCompacted(state_.history().start());
    resync.announced = true;
    return true;
  }
  auto page = state_.listAt(watcher.range, resync.after, limits_.pageKeys, resync.revision);
  size_t count = 0;
  uint64_t pageBytes = 0;
  for (; count < page.kvs.size(); ++count) {
    pageBytes +=
        CHANGE_OVERHEAD_BYTES + page.kvs[count].first.size() + page.kvs[count].second.value.size();
    if (pageBytes > limits_.messageBytes && count > 0) break;
  }
  auto out = message.initSnapshot();
  auto kvs = out.initKvs(static_cast<unsigned>(count));
  for (size_t i = 0; i < count; ++i)
    setKeyValue(kvs[static_cast<unsigned>(i)], page.kvs[i].first, page.kvs[i].second);
  const bool last = !page.more && count == page.kvs.size();
  out.setLast(last);
  if (last) {
    watcher.next = resync.revision + 1;
    watcher.resync.reset();
  } else {
    resync.after = page.kvs[count - 1].first;
  }
  return true;
}

bool WatchHub::fillEvents(Watcher& watcher, rpc::WatchMessage::Builder message) {
  const uint64_t head = state_.revision();
  if (watcher.next > head) return false;
  const auto& history = state_.history();
  const auto& kept = history.revisions();
  std::vector<std::pair<uint64_t, const election::KeyChange*>> changes;
  uint64_t messageBytes = 0;
  uint64_t through = head;
  for (size_t i = history.lowerBound(watcher.next); i < kept.size(); ++i) {
    const election::RevisionChanges& revision = *kept[i];
    if (messageBytes > limits_.messageBytes) {
      through = revision.revision - 1;
      break;
    }
    for (const election::KeyChange& change : revision.changes) {
      if (!watcher.range.contains(change.key)) continue;
      changes.emplace_back(revision.revision, &change);
      messageBytes += changeBytes(watcher, change);
    }
  }
  watcher.next = through + 1;
  if (changes.empty()) return false;  // nothing in range: a progress message will say so
  message.setRevision(through);
  auto events = message.initEvents(static_cast<unsigned>(changes.size()));
  for (size_t i = 0; i < changes.size(); ++i) {
    const auto& [revision, change] = changes[i];
    auto event = events[static_cast<unsigned>(i)];
    if (change->record) {
      event.setKind(rpc::WatchEvent::Kind::PUT);
      setKeyValue(event.initKv(), change->key, *change->record);
    } else {
      event.setKind(rpc::WatchEvent::Kind::DELETE);
      auto kv = event.initKv();
      kv.setKey(bytes(change->key));
      kv.setModRevision(revision);
    }
    if (watcher.prevKv && change->prev) {
      event.setHasPrevKv(true);
      setKeyValue(event.initPrevKv(), change->key, *change->prev);
    }
    if (revision >= watcher.liveFrom) {
      watcher.bufferedEvents -= std::min<uint64_t>(watcher.bufferedEvents, 1);
      watcher.bufferedBytes -= std::min(watcher.bufferedBytes, changeBytes(watcher, *change));
    }
  }
  return true;
}

kj::Promise<void> WatchHub::progressLoop() {
  return timer_.afterDelay(std::max<uint32_t>(limits_.progressMs, 1) * kj::MILLISECONDS)
      .then([this]() {
        progressTick();
        return progressLoop();
      });
}

void WatchHub::progressTick() {
  const kj::TimePoint now = timer_.now();
  const kj::Duration interval = std::max<uint32_t>(limits_.progressMs, 1) * kj::MILLISECONDS;
  for (auto& [id, watcher] : watchers_) {
    if (watcher->inFlight || watcher->finished || watcher->resync || watcher->cancelReason ||
        now - watcher->lastSentAt < interval) {
      continue;
    }
    pump(*watcher);
    if (watcher->inFlight) continue;
    // Nothing to deliver: tell it how far it is current.
    auto request = watcher->client.deliverRequest();
    auto message = request.initMessage();
    message.setRevision(state_.revision());
    message.setProgress();
    watcher->inFlight = true;
    watcher->lastSentAt = now;
    const uint64_t watcherId = id;
    tasks_.add(request.send().then([this, watcherId](auto&&) { delivered(watcherId); },
                                   [this, watcherId](kj::Exception&&) { remove(watcherId); }));
  }
}

void WatchHub::taskFailed(kj::Exception&& exception) {
  logWarning("watch delivery failed: ", exception.getDescription());
}

}  // namespace synod::daemon
