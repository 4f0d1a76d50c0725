#include "clients/watch_client.h"

#include <kj/debug.h>

#include <memory>
#include <utility>

namespace synod::clients {

namespace {

std::string text(capnp::Data::Reader data) {
  return {reinterpret_cast<const char*>(data.begin()), data.size()};
}

capnp::Data::Reader bytesOf(const std::string& s) {
  return {reinterpret_cast<const kj::byte*>(s.data()), s.size()};
}

Code codeFrom(rpc::Status::Code code) {
  switch (code) {
    case rpc::Status::Code::OK:
      return Code::OK;
    case rpc::Status::Code::NOT_FOUND:
      return Code::NOT_FOUND;
    case rpc::Status::Code::COMPARE_FAILED:
      return Code::COMPARE_FAILED;
    case rpc::Status::Code::NO_QUORUM:
      return Code::NO_QUORUM;
    case rpc::Status::Code::TIMEOUT:
      return Code::TIMEOUT;
    case rpc::Status::Code::INVALID_ARGUMENT:
      return Code::INVALID_ARGUMENT;
    case rpc::Status::Code::NO_SPACE:
      return Code::NO_SPACE;
    case rpc::Status::Code::UNAVAILABLE:
      return Code::UNAVAILABLE;
    case rpc::Status::Code::INTERNAL:
      return Code::INTERNAL;
  }
  return Code::INTERNAL;
}

template <typename T, typename Reply>
Result<T> answered(const Reply& reply) {
  Result<T> result;
  result.answered = true;
  result.status.code = codeFrom(reply.getStatus().getCode());
  result.status.message = reply.getStatus().getMessage();
  if (result.status.message.empty() && !result.ok())
    result.status.message = codeName(result.status.code);
  auto header = reply.getHeader();
  result.header.revision = header.getRevision();
  result.header.member = header.getMember();
  result.header.ballotRound = header.getBallotRound();
  result.header.ballotMember = header.getBallotMember();
  return result;
}

template <typename T>
Result<T> unavailable(const AsyncClient& client, const kj::Exception& error) {
  Result<T> result;
  result.status.code = Code::UNAVAILABLE;
  result.status.message = "daemon at " + client.socketPath() +
                          " unreachable or connection lost: " + error.getDescription().cStr();
  return result;
}

KeyValue keyValueFrom(rpc::KeyValue::Reader kv) {
  KeyValue out;
  out.key = text(kv.getKey());
  out.value = text(kv.getValue());
  out.createRevision = kv.getCreateRevision();
  out.modRevision = kv.getModRevision();
  out.version = kv.getVersion();
  out.lease = kv.getLease();
  return out;
}

WatchUpdate updateFrom(rpc::WatchMessage::Reader message) {
  WatchUpdate update;
  update.revision = message.getRevision();
  switch (message.which()) {
    case rpc::WatchMessage::EVENTS:
      update.kind = WatchUpdate::Kind::EVENTS;
      for (auto in : message.getEvents()) {
        WatchEvent event;
        event.put = in.getKind() == rpc::WatchEvent::Kind::PUT;
        event.kv = keyValueFrom(in.getKv());
        event.hasPrev = in.getHasPrevKv();
        if (event.hasPrev) event.prev = keyValueFrom(in.getPrevKv());
        update.events.push_back(std::move(event));
      }
      break;
    case rpc::WatchMessage::PROGRESS:
      update.kind = WatchUpdate::Kind::PROGRESS;
      break;
    case rpc::WatchMessage::COMPACTED:
      update.kind = WatchUpdate::Kind::COMPACTED;
      update.oldestRevision = message.getCompacted();
      break;
    case rpc::WatchMessage::SNAPSHOT:
      update.kind = WatchUpdate::Kind::SNAPSHOT;
      for (auto kv : message.getSnapshot().getKvs())
        update.kvs.push_back(keyValueFrom(kv));
      update.last = message.getSnapshot().getLast();
      break;
    case rpc::WatchMessage::CANCELLED:
      update.kind = WatchUpdate::Kind::CANCELLED;
      update.reason = message.getCancelled();
      break;
    default:
      update.kind = WatchUpdate::Kind::CANCELLED;
      update.reason = "the daemon sent a watch message this client does not know";
      break;
  }
  return update;
}

// What the watcher object and the loop waiting for the end share.
struct WatchState {
  std::function<bool(WatchUpdate&&)> onUpdate;
  kj::Own<kj::PromiseFulfiller<Result<WatchStarted>>> ended;
  Result<WatchStarted> started;
  uint64_t messages = 0;  // counts deliveries, for the silence check
  // Messages may overtake the reply to `watch`: they wait until onStarted has run.
  kj::Own<kj::PromiseFulfiller<void>> startedFulfiller;
  kj::ForkedPromise<void> startedPromise = nullptr;

  void end(Result<WatchStarted> result) {
    if (ended->isWaiting()) ended->fulfill(std::move(result));
  }
};

class WatcherImpl final : public rpc::Watcher::Server {
 public:
  explicit WatcherImpl(std::shared_ptr<WatchState> state) : state_(std::move(state)) {}

  kj::Promise<void> deliver(DeliverContext context) override {
    return state_->startedPromise.addBranch().then(
        [state = state_, context]() mutable { handle(*state, context.getParams().getMessage()); });
  }

 private:
  static void handle(WatchState& state, rpc::WatchMessage::Reader message) {
    ++state.messages;
    if (!state.ended->isWaiting()) return;
    WatchUpdate update = updateFrom(message);
    const bool cancelled = update.kind == WatchUpdate::Kind::CANCELLED;
    const bool more = state.onUpdate(std::move(update));
    if (cancelled || !more) state.end(state.started);
  }

  std::shared_ptr<WatchState> state_;
};

kj::Promise<void> watchSilence(kj::Timer& timer, std::shared_ptr<WatchState> state, uint64_t seen) {
  return timer.afterDelay(WATCH_SILENCE_MS * kj::MILLISECONDS).then([&timer, state, seen]() {
    if (!state->ended->isWaiting()) return kj::Promise<void>(kj::READY_NOW);
    if (state->messages == seen) {
      Result<WatchStarted> lost = state->started;
      lost.status.code = Code::UNAVAILABLE;
      lost.status.message = "the daemon sent nothing for " + std::to_string(WATCH_SILENCE_MS) +
                            " ms: connection lost";
      state->end(std::move(lost));
      return kj::Promise<void>(kj::READY_NOW);
    }
    return watchSilence(timer, state, state->messages);
  });
}

}  // namespace

kj::Promise<Result<WatchStarted>> runWatch(
    AsyncClient& client, kj::Timer& timer, WatchRequest request,
    std::function<void(const Result<WatchStarted>&)> onStarted,
    std::function<bool(WatchUpdate&&)> onUpdate) {
  auto paf = kj::newPromiseAndFulfiller<Result<WatchStarted>>();
  auto state = std::make_shared<WatchState>();
  state->onUpdate = std::move(onUpdate);
  state->ended = kj::mv(paf.fulfiller);
  auto startedPaf = kj::newPromiseAndFulfiller<void>();
  state->startedFulfiller = kj::mv(startedPaf.fulfiller);
  state->startedPromise = startedPaf.promise.fork();
  auto started =
      client.bootstrap()
          .then([state, request = std::move(request)](rpc::Synod::Client synod) {
            auto call = synod.watchesRequest().send().getWatches().watchRequest();
            call.setKey(bytesOf(request.key));
            call.setPrefix(request.prefix);
            call.setFromRevision(request.fromRevision);
            call.setPrevKv(request.prevKv);
            call.setWatcher(kj::heap<WatcherImpl>(state));
            return call.send();
          })
          .then(
              [state, &timer, onStarted = std::move(onStarted)](
                  capnp::Response<rpc::Watches::WatchResults>&& reply) -> kj::Promise<void> {
                Result<WatchStarted> result = answered<WatchStarted>(reply);
                result.reply.startRevision = reply.getStartRevision();
                result.reply.oldestRevision = reply.getOldestRevision();
                result.reply.compacted = reply.getCompacted();
                state->started = result;
                onStarted(result);
                state->startedFulfiller->fulfill();
                if (!result.ok()) {
                  state->end(std::move(result));
                  return kj::READY_NOW;
                }
                // Holding the Watch handle keeps the watch alive until this promise ends.
                rpc::Watch::Client handle = reply.getWatch();
                return watchSilence(timer, state, state->messages).attach(kj::mv(handle));
              },
              [state, &client](kj::Exception&& error) -> kj::Promise<void> {
                state->end(unavailable<WatchStarted>(client, error));
                return kj::READY_NOW;
              });
  // `started` ends once the watch has ended (or never started): `paf` has the outcome by then.
  return paf.promise.exclusiveJoin(
      started.then([]() -> kj::Promise<Result<WatchStarted>> { return kj::NEVER_DONE; }));
}

kj::Promise<Result<CompactReply>> compact(AsyncClient& client, uint64_t revision,
                                          uint32_t timeoutMs) {
  return client.bootstrap()
      .then([revision, timeoutMs](rpc::Synod::Client synod) {
        auto call = synod.watchesRequest().send().getWatches().compactRequest();
        call.setRevision(revision);
        call.setTimeoutMs(timeoutMs);
        return call.send();
      })
      .then(
          [](capnp::Response<rpc::Watches::CompactResults>&& reply) {
            auto result = answered<CompactReply>(reply);
            result.reply.oldestRevision = reply.getOldestRevision();
            return result;
          },
          [&client](kj::Exception&& error) { return unavailable<CompactReply>(client, error); });
}

kj::Promise<Result<KeyValue>> getAt(AsyncClient& client, std::string key, uint64_t revision,
                                    uint32_t timeoutMs) {
  return client.bootstrap()
      .then([key = std::move(key), revision, timeoutMs](rpc::Synod::Client synod) {
        auto call = synod.watchesRequest().send().getWatches().getRequest();
        call.setKey(bytesOf(key));
        call.setRevision(revision);
        call.setTimeoutMs(timeoutMs);
        return call.send();
      })
      .then(
          [](capnp::Response<rpc::Watches::GetResults>&& reply) {
            auto result = answered<KeyValue>(reply);
            if (result.ok()) result.reply = keyValueFrom(reply.getKv());
            return result;
          },
          [&client](kj::Exception&& error) { return unavailable<KeyValue>(client, error); });
}

kj::Promise<Result<ListReply>> listAt(AsyncClient& client, std::string prefix, uint64_t revision,
                                      ListOptions opts) {
  return client.bootstrap()
      .then([prefix = std::move(prefix), revision, opts](rpc::Synod::Client synod) {
        auto call = synod.watchesRequest().send().getWatches().listRequest();
        call.setPrefix(bytesOf(prefix));
        call.setRevision(revision);
        call.setLimit(opts.limit);
        call.setStartAfter(bytesOf(opts.startAfter));
        call.setTimeoutMs(opts.timeoutMs);
        return call.send();
      })
      .then(
          [](capnp::Response<rpc::Watches::ListResults>&& reply) {
            auto result = answered<ListReply>(reply);
            if (result.ok()) {
              for (auto kv : reply.getKvs())
                result.reply.kvs.push_back(keyValueFrom(kv));
              result.reply.more = reply.getMore();
            }
            return result;
          },
          [&client](kj::Exception&& error) { return unavailable<ListReply>(client, error); });
}

}  // namespace synod::clients
