#include "daemon/watch_service.h"

#include <capnp/message.h>
#include <kj/debug.h>

namespace synod::daemon {

namespace {

using rpc::Status;

constexpr uint32_t MAX_LIST_LIMIT = 10000;
constexpr size_t MAX_LIST_REPLY_BYTES = 16 << 20;

std::string_view view(capnp::Data::Reader data) {
  return {reinterpret_cast<const char*>(data.begin()), data.size()};
}

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

// Fills status and header; the header's revision is `revision` when non-zero.
template <typename Results>
void answer(Results results, const Node& node, StatusCode code, kj::StringPtr message,
            uint64_t revision = 0) {
  auto status = results.initStatus();
  status.setCode(code);
  status.setMessage(message);
  auto header = results.initHeader();
  header.setRevision(revision != 0 ? revision : node.state().revision());
  header.setMember(node.config().node);
  header.setBallotRound(node.ballot().round);
  header.setBallotMember(node.ballot().member);
  results.setOldestRevision(node.state().history().start());
}

kj::Maybe<kj::String> checkTimeout(uint32_t timeoutMs) {
  if (timeoutMs > Node::MAX_TIMEOUT_MS) {
    return kj::str("timeoutMs ", timeoutMs, " is more than the maximum ", Node::MAX_TIMEOUT_MS);
  }
  return nullptr;
}

kj::Maybe<kj::String> checkKeyBytes(const Node& node, kj::StringPtr what, size_t size) {
  if (size > node.config().maxKeyBytes) {
    return kj::str(what, " is ", size, " bytes, more than max_key_bytes (",
                   node.config().maxKeyBytes, ")");
  }
  return nullptr;
}

// Why `revision` cannot be read here, or nullptr. Call after a read barrier when it is ahead.
kj::Maybe<kj::String> checkReadable(const Node& node, uint64_t revision) {
  const auto& state = node.state();
  if (revision > state.revision()) {
    return kj::str("revision ", revision, " is ahead of the current revision ", state.revision());
  }
  if (!state.readableAt(revision)) {
    return kj::str("revision ", revision, " is compacted: the oldest revision readable here is ",
                   state.history().start() - 1);
  }
  return nullptr;
}

// The app's handle on one watch: dropping it ends the watch.
class WatchHandle final : public rpc::Watch::Server {
 public:
  WatchHandle(WatchHub& hub, uint64_t id) : hub_(hub), id_(id) {}
  ~WatchHandle() { hub_.remove(id_); }

  kj::Promise<void> cancel(CancelContext) override {
    hub_.remove(id_);
    return kj::READY_NOW;
  }

 private:
  WatchHub& hub_;
  uint64_t id_;
};

class WatchesService final : public rpc::Watches::Server {
 public:
  explicit WatchesService(Node& node) : node_(node) {}

  kj::Promise<void> watch(WatchContext context) override {
    auto params = context.getParams();
    auto results = context.getResults();
    if (!params.getPrefix() && params.getKey().size() == 0) {
      answer(results, node_, StatusCode::INVALID_ARGUMENT,
             "watch: empty key (watch with prefix true to see every key)");
      return kj::READY_NOW;
    }
    KJ_IF_MAYBE (bad, checkKeyBytes(node_, "watch: key", params.getKey().size())) {
      answer(results, node_, StatusCode::INVALID_ARGUMENT, *bad);
      return kj::READY_NOW;
    }
    election::KeyRange range{std::string(view(params.getKey())), params.getPrefix()};
    auto started = node_.watchHub().add(std::move(range), params.getFromRevision(),
                                        params.getPrevKv(), params.getWatcher());
    if (auto* refused = std::get_if<std::string>(&started)) {
      answer(results, node_, StatusCode::UNAVAILABLE, *refused);
      return kj::READY_NOW;
    }
    const auto& ok = std::get<WatchHub::Started>(started);
    answer(results, node_, StatusCode::OK, "");
    results.setWatch(kj::heap<WatchHandle>(node_.watchHub(), ok.id));
    results.setStartRevision(ok.startRevision);
    results.setCompacted(ok.compacted);
    return kj::READY_NOW;
  }

  kj::Promise<void> compact(CompactContext context) override {
    auto params = context.getParams();
    KJ_IF_MAYBE (bad, checkTimeout(params.getTimeoutMs())) {
      answer(context.getResults(), node_, StatusCode::INVALID_ARGUMENT, *bad);
      return kj::READY_NOW;
    }
    if (params.getRevision() == 0) {
      answer(context.getResults(), node_, StatusCode::INVALID_ARGUMENT, "compact: revision 0");
      return kj::READY_NOW;
    }
    auto message = kj::heap<capnp::MallocMessageBuilder>();
    message->initRoot<records::Command>().initCompact().setRevision(params.getRevision());
    auto written = node_.write(*message, params.getTimeoutMs());
    return written.then([this, context, message = kj::mv(message)](CommandOutcome outcome) mutable {
      answer(context.getResults(), node_, outcome.code, outcome.message, outcome.revision);
    });
  }

  kj::Promise<void> get(GetContext context) override {
    auto params = context.getParams();
    KJ_IF_MAYBE (bad, checkTimeout(params.getTimeoutMs())) {
      answer(context.getResults(), node_, StatusCode::INVALID_ARGUMENT, *bad);
      return kj::READY_NOW;
    }
    if (params.getKey().size() == 0) {
      answer(context.getResults(), node_, StatusCode::INVALID_ARGUMENT, "get: empty key");
      return kj::READY_NOW;
    }
    KJ_IF_MAYBE (bad, checkKeyBytes(node_, "get: key", params.getKey().size())) {
      answer(context.getResults(), node_, StatusCode::INVALID_ARGUMENT, *bad);
      return kj::READY_NOW;
    }
    return atRevision(params.getRevision(), params.getTimeoutMs())
        .then([this, context](Refusal refusal) mutable {
          auto params = context.getParams();
          auto results = context.getResults();
          const uint64_t revision = revisionOf(params.getRevision());
          if (refusal.code != StatusCode::OK) {
            answer(results, node_, refusal.code, refusal.message);
            return;
          }
          auto record = node_.state().getAt(view(params.getKey()), revision);
          if (!record) {
            answer(results, node_, StatusCode::NOT_FOUND, "key not found", revision);
            return;
          }
          answer(results, node_, StatusCode::OK, "", revision);
          setKeyValue(results.initKv(), view(params.getKey()), *record);
        });
  }

  kj::Promise<void> list(ListContext context) override {
    auto params = context.getParams();
    KJ_IF_MAYBE (bad, checkTimeout(params.getTimeoutMs())) {
      answer(context.getResults(), node_, StatusCode::INVALID_ARGUMENT, *bad);
      return kj::READY_NOW;
    }
    if (params.getLimit() > MAX_LIST_LIMIT) {
      answer(
          context.getResults(), node_, StatusCode::INVALID_ARGUMENT,
          kj::str("list: limit ", params.getLimit(), " is more than the maximum ", MAX_LIST_LIMIT));
      return kj::READY_NOW;
    }
    KJ_IF_MAYBE (bad, checkKeyBytes(
                          node_, "list: prefix or startAfter",
                          std::max(params.getPrefix().size(), params.getStartAfter().size()))) {
      answer(context.getResults(), node_, StatusCode::INVALID_ARGUMENT, *bad);
      return kj::READY_NOW;
    }
    return atRevision(params.getRevision(), params.getTimeoutMs())
        .then([this, context](Refusal refusal) mutable {
          auto params = context.getParams();
          auto results = context.getResults();
          const uint64_t revision = revisionOf(params.getRevision());
          if (refusal.code != StatusCode::OK) {
            answer(results, node_, refusal.code, refusal.message);
            return;
          }
          const uint32_t limit = params.getLimit() == 0 ? MAX_LIST_LIMIT : params.getLimit();
          auto page = node_.state().listAt({std::string(view(params.getPrefix())), true},
                                           view(params.getStartAfter()), limit, revision);
          size_t replyBytes = 0;
          size_t count = 0;
          for (; count < page.kvs.size(); ++count) {
            replyBytes += page.kvs[count].first.size() + page.kvs[count].second.value.size() + 64;
            if (replyBytes > MAX_LIST_REPLY_BYTES && count > 0) break;
          }
          answer(results, node_, StatusCode::OK, "", revision);
          auto kvs = results.initKvs(static_cast<unsigned>(count));
          for (size_t i = 0; i < count; ++i)
            setKeyValue(kvs[static_cast<unsigned>(i)], page.kvs[i].first, page.kvs[i].second);
          results.setMore(page.more || count < page.kvs.size());
        });
  }

 private:
  uint64_t revisionOf(uint64_t requested) const {
    return requested == 0 ? node_.state().revision() : requested;
  }

  // Resolves OK once `revision` (0 = the current one) can be read here. The state at a past
  // revision is the same on every member, so only a revision this member has not reached yet
  // needs a linearizable barrier (after which it may still be ahead of the group).
  kj::Promise<Refusal> atRevision(uint64_t revision, uint32_t timeoutMs) {
    if (revision == 0) return Refusal{};
    if (revision <= node_.state().revision()) return readable(revision);
    return node_.readBarrier(timeoutMs, false).then([this, revision](Refusal refusal) {
      if (refusal.code != StatusCode::OK) return refusal;
      return readable(revision);
    });
  }

  Refusal readable(uint64_t revision) const {
    KJ_IF_MAYBE (bad, checkReadable(node_, revision)) {
      return Refusal{StatusCode::INVALID_ARGUMENT, bad->cStr()};
    }
    return Refusal{};
  }

  Node& node_;
};

}  // namespace

kj::Own<rpc::Watches::Server> newWatchesService(Node& node) {
  return kj::heap<WatchesService>(node);
}

}  // namespace synod::daemon
