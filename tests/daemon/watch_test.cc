// Watches over an in-process pipe: a real Node on a MemoryStore, a real Cap'n Proto RPC
// connection, KJ's own event loop. The watchers are test objects that record every message and can
// hold their calls unanswered (a slow watcher).
#include <capnp/rpc-twoparty.h>
#include <doctest/doctest.h>
#include <kj/async-io.h>

#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "daemon/config.h"
#include "daemon/node.h"
#include "daemon/service.h"
#include "storage/memory_store.h"
#include "tests/daemon/local_connection.h"

namespace synod::daemon {
namespace {

using rpc::Status;

capnp::Data::Reader bytes(const std::string& s) {
  return {reinterpret_cast<const kj::byte*>(s.data()), s.size()};
}
std::string text(capnp::Data::Reader d) {
  return {reinterpret_cast<const char*>(d.begin()), d.size()};
}

Config testConfig(uint64_t historyRevisions = 10000) {
  return parseConfig(
      "cluster_id: test\n"
      "node: n1\n"
      "peers:\n"
      "  n1: 127.0.0.1:7101\n"
      "data_dir: /tmp/unused\n"
      "socket: /tmp/unused.sock\n"
      "history_revisions: " +
          std::to_string(historyRevisions) + "\n",
      "test.yaml");
}

struct Event {
  bool put = true;
  std::string key;
  std::string value;
  uint64_t modRevision = 0;
  bool hasPrev = false;
  std::string prev;
  bool operator==(const Event&) const = default;
};

struct Message {
  enum Kind { EVENTS, PROGRESS, COMPACTED, SNAPSHOT, CANCELLED } kind = EVENTS;
  uint64_t revision = 0;
  std::vector<Event> events;
  std::vector<std::pair<std::string, std::string>> kvs;  // snapshot page
  bool last = false;
  uint64_t oldest = 0;
  std::string reason;
};

// What one watcher received, and its held calls.
struct Inbox {
  std::vector<Message> messages;
  bool hold = false;  // leave calls unanswered until release()
  std::vector<kj::Own<kj::PromiseFulfiller<void>>> held;

  void release() {
    hold = false;
    for (auto& f : held)
      f->fulfill();
    held.clear();
  }
  // Every event, in order, and the revision each message said it is current through.
  std::vector<Event> events() const {
    std::vector<Event> out;
    for (const auto& m : messages)
      if (m.kind == Message::EVENTS) out.insert(out.end(), m.events.begin(), m.events.end());
    return out;
  }
  uint64_t currentThrough() const {
    for (auto it = messages.rbegin(); it != messages.rend(); ++it) {
      if (it->kind == Message::EVENTS || it->kind == Message::PROGRESS ||
          (it->kind == Message::SNAPSHOT && it->last)) {
        return it->revision;
      }
    }
    return 0;
  }
};

class TestWatcher final : public rpc::Watcher::Server {
 public:
  explicit TestWatcher(Inbox& inbox) : inbox_(inbox) {}

  kj::Promise<void> deliver(DeliverContext context) override {
    auto in = context.getParams().getMessage();
    Message m;
    m.revision = in.getRevision();
    switch (in.which()) {
      case rpc::WatchMessage::EVENTS:
        m.kind = Message::EVENTS;
        for (auto e : in.getEvents()) {
          Event event;
          event.put = e.getKind() == rpc::WatchEvent::Kind::PUT;
          event.key = text(e.getKv().getKey());
          event.value = text(e.getKv().getValue());
          event.modRevision = e.getKv().getModRevision();
          event.hasPrev = e.getHasPrevKv();
          if (event.hasPrev) event.prev = text(e.getPrevKv().getValue());
          m.events.push_back(event);
        }
        break;
      case rpc::WatchMessage::PROGRESS:
        m.kind = Message::PROGRESS;
        break;
      case rpc::WatchMessage::COMPACTED:
        m.kind = Message::COMPACTED;
        m.oldest = in.getCompacted();
        break;
      case rpc::WatchMessage::SNAPSHOT:
        m.kind = Message::SNAPSHOT;
        for (auto kv : in.getSnapshot().getKvs())
          m.kvs.emplace_back(text(kv.getKey()), text(kv.getValue()));
        m.last = in.getSnapshot().getLast();
        break;
      case rpc::WatchMessage::CANCELLED:
        m.kind = Message::CANCELLED;
        m.reason = in.getCancelled();
        break;
    }
    inbox_.messages.push_back(std::move(m));
    if (inbox_.hold) {
      auto paf = kj::newPromiseAndFulfiller<void>();
      inbox_.held.push_back(kj::mv(paf.fulfiller));
      return kj::mv(paf.promise);
    }
    return kj::READY_NOW;
  }

 private:
  Inbox& inbox_;
};

struct Fixture {
  kj::AsyncIoContext io = kj::setupAsyncIo();
  Config config;
  storage::MemoryStore store;
  std::unique_ptr<Node> node;
  std::optional<testing::LocalConnection> connection;
  rpc::Kv::Client kv = nullptr;
  rpc::Watches::Client watches = nullptr;

  explicit Fixture(Config configParam = testConfig()) : config(std::move(configParam)) {
    node = std::make_unique<Node>(config, store, io.provider->getTimer(), nullptr, 1);
    connection.emplace(io, *node, PeerCredentials{4242, 7, 8});
    auto& synod = connection->synod;
    kv = synod.kvRequest().send().getKv();
    watches = synod.watchesRequest().send().getWatches();
  }
  ~Fixture() {
    kv = nullptr;
    watches = nullptr;
    connection.reset();
  }

  kj::WaitScope& ws() { return io.waitScope; }

  uint64_t put(const std::string& key, const std::string& value) {
    auto request = kv.putRequest();
    request.getOp().setKey(bytes(key));
    request.getOp().setValue(bytes(value));
    auto reply = request.send().wait(ws());
    REQUIRE(reply.getStatus().getCode() == Status::Code::OK);
    return reply.getHeader().getRevision();
  }
  uint64_t del(const std::string& key, const std::string& end = "") {
    auto request = kv.deleteRequest();
    request.getOp().setKey(bytes(key));
    request.getOp().setRangeEnd(bytes(end));
    auto reply = request.send().wait(ws());
    REQUIRE(reply.getStatus().getCode() == Status::Code::OK);
    return reply.getHeader().getRevision();
  }
  // An unconditional txn of puts and single-key deletes.
  uint64_t txn(std::vector<std::pair<std::string, std::string>> puts,
               std::vector<std::string> deletes) {
    auto request = kv.txnRequest();
    auto ops = request.getTxn().initSuccess(static_cast<unsigned>(puts.size() + deletes.size()));
    unsigned i = 0;
    for (auto& [k, v] : puts) {
      ops[i].initPut().setKey(bytes(k));
      ops[i++].getPut().setValue(bytes(v));
    }
    for (auto& k : deletes)
      ops[i++].initDelete().setKey(bytes(k));
    auto reply = request.send().wait(ws());
    REQUIRE(reply.getStatus().getCode() == Status::Code::OK);
    return reply.getHeader().getRevision();
  }

  struct Started {
    Status::Code code;
    std::string message;
    rpc::Watch::Client watch;
    uint64_t startRevision;
    bool compacted;
  };
  Started watch(Inbox& inbox, const std::string& key, bool prefix, uint64_t from,
                bool prevKv = false) {
    auto request = watches.watchRequest();
    request.setKey(bytes(key));
    request.setPrefix(prefix);
    request.setFromRevision(from);
    request.setPrevKv(prevKv);
    request.setWatcher(kj::heap<TestWatcher>(inbox));
    inboxes.push_back(&inbox);
    auto reply = request.send().wait(ws());
    return {reply.getStatus().getCode(), reply.getStatus().getMessage(), reply.getWatch(),
            reply.getStartRevision(), reply.getCompacted()};
  }

  std::vector<Inbox*> inboxes;
  std::string messagesSeen() const {
    std::string out;
    for (const Inbox* inbox : inboxes) {
      out += "[";
      for (const auto& m : inbox->messages)
        out += std::to_string(int(m.kind)) + "@" + std::to_string(m.revision) + " ";
      out += "]";
    }
    return out + " state at " + std::to_string(node->state().revision());
  }
  // Runs the loop until `done` holds; fails after a generous bound (a hang, not a timing claim).
  template <typename Done>
  void until(Done&& done, const char* what) {
    auto& timer = io.provider->getTimer();
    const auto deadline = timer.now() + 10 * kj::SECONDS;
    while (!done()) {
      if (timer.now() > deadline)
        FAIL("gave up waiting for: " << std::string(what) << "; messages " << messagesSeen());
      timer.afterDelay(1 * kj::MILLISECONDS).wait(ws());
    }
  }
};

// Every change of a range, as the history recorded them, from `from` on.
std::vector<Event> expectedEvents(const Node& node, const election::KeyRange& range, uint64_t from,
                                  bool prevKv = false) {
  std::vector<Event> out;
  for (const auto& revision : node.state().history().revisions()) {
    if (revision->revision < from) continue;
    for (const auto& change : revision->changes) {
      if (!range.contains(change.key)) continue;
      Event e;
      e.put = change.record.has_value();
      e.key = change.key;
      e.value = change.record ? change.record->value : "";
      e.modRevision = revision->revision;
      e.hasPrev = prevKv && change.prev.has_value();
      if (e.hasPrev) e.prev = change.prev->value;
      out.push_back(e);
    }
  }
  return out;
}

TEST_CASE("a watch streams its range's changes in order, a transaction in one message") {
  Fixture f;
  f.put("other", "x");
  Inbox inbox;
  auto started = f.watch(inbox, "app/", true, 0, true);
  REQUIRE(started.code == Status::Code::OK);
  CHECK(started.startRevision == 2);
  f.put("app/a", "1");  // 2
  f.put("other", "y");  // 3: not in range
  uint64_t txnRevision = f.txn({{"app/b", "2"}, {"app/c", "3"}, {"zzz", "4"}}, {"app/a"});  // 4
  f.put("app/a", "5");                                                                      // 5
  f.del("app/", "app0");  // 6: range delete of a, b, c
  f.until([&] { return inbox.currentThrough() >= 6; }, "events through revision 6");

  std::vector<Event> expected{
      {true, "app/a", "1", 2, false, ""}, {true, "app/b", "2", 4, false, ""},
      {true, "app/c", "3", 4, false, ""}, {false, "app/a", "", 4, true, "1"},
      {true, "app/a", "5", 5, false, ""}, {false, "app/a", "", 6, true, "5"},
      {false, "app/b", "", 6, true, "2"}, {false, "app/c", "", 6, true, "3"},
  };
  CHECK(inbox.events() == expected);
  CHECK(inbox.events() == expectedEvents(*f.node, {"app/", true}, 2, true));
  // The transaction's changes came in one message.
  bool together = false;
  for (const auto& m : inbox.messages) {
    size_t atTxn = 0;
    for (const auto& e : m.events)
      atTxn += e.modRevision == txnRevision;
    if (atTxn > 0) {
      CHECK(atTxn == 3);
      together = true;
    }
  }
  CHECK(together);
}

TEST_CASE("a watch of one key, and resuming from the last revision + 1 misses nothing") {
  Fixture f;
  std::mt19937_64 random(11);
  for (int i = 0; i < 60; ++i) {
    const std::string key = "k" + std::to_string(random() % 5);
    if (random() % 4 == 0) {
      f.txn({{key, std::to_string(i)}, {"k9", "t"}}, {});
    } else {
      f.put(key, std::to_string(i));
    }
  }
  const uint64_t head = f.node->state().revision();
  for (uint64_t from : {uint64_t{1}, uint64_t{17}, head}) {
    INFO("from ", from);
    Inbox prefix;
    auto started = f.watch(prefix, "k", true, from);
    REQUIRE(started.code == Status::Code::OK);
    CHECK(!started.compacted);
    f.until([&] { return prefix.currentThrough() >= head; }, "the backlog");
    CHECK(prefix.events() == expectedEvents(*f.node, {"k", true}, from));

    Inbox single;
    auto singleWatch = f.watch(single, "k3", false, from);
    f.put("k3", "tick");  // something to deliver even if k3 did not change since `from`
    f.until([&] { return single.currentThrough() >= f.node->state().revision(); }, "k3");
    CHECK(single.events() == expectedEvents(*f.node, {"k3", false}, from));
  }

  // Interrupt a watch midway and resume from the revision it was current through + 1.
  Inbox first;
  {
    auto started = f.watch(first, "", true, 1);
    f.until([&] { return first.currentThrough() >= 20; }, "twenty revisions");
  }  // the Watch handle is dropped: the watch ends
  const uint64_t resumeFrom = first.currentThrough() + 1;
  for (int i = 0; i < 5; ++i)
    f.put("late" + std::to_string(i), "v");
  Inbox second;
  auto secondWatch = f.watch(second, "", true, resumeFrom);
  f.until([&] { return second.currentThrough() >= f.node->state().revision(); }, "resumed");
  std::vector<Event> joined = first.events();
  // Whatever the first delivered past resumeFrom - 1 it did so only in whole revisions.
  joined.erase(std::remove_if(joined.begin(), joined.end(),
                              [&](const Event& e) { return e.modRevision >= resumeFrom; }),
               joined.end());
  for (const auto& e : second.events())
    joined.push_back(e);
  CHECK(joined == expectedEvents(*f.node, {"", true}, 1));
}

TEST_CASE("a watch from a compacted revision gets compacted, snapshot pages, then live events") {
  Fixture f;
  for (int i = 0; i < 10; ++i)
    f.put("cfg/" + std::to_string(i), std::string(100, char('a' + i)));
  f.del("cfg/3");
  f.put("noise", "n");
  f.node->watchHub().setLimits({100, 10000, 1 << 20, 1 << 20, 3, 1000});
  // Compact through the RPC: a replicated command.
  auto compact = f.watches.compactRequest();
  compact.setRevision(f.node->state().revision());
  auto compacted = compact.send().wait(f.ws());
  REQUIRE(compacted.getStatus().getCode() == Status::Code::OK);
  CHECK(compacted.getOldestRevision() == f.node->state().revision());
  const uint64_t snapshotAt = f.node->state().revision();

  Inbox inbox;
  inbox.hold = true;  // the pages wait until the writes below are applied
  auto started = f.watch(inbox, "cfg/", true, 1);
  REQUIRE(started.code == Status::Code::OK);
  CHECK(started.compacted);
  CHECK(started.startRevision == snapshotAt + 1);
  // Writes while the pages go out: they come after the last page, never inside it.
  f.put("cfg/0", "changed");
  f.del("cfg/5");
  CHECK(inbox.messages.size() == 1);
  inbox.release();
  f.until([&] { return inbox.events().size() == 2; }, "the live events");

  REQUIRE(inbox.messages.front().kind == Message::COMPACTED);
  CHECK(inbox.messages.front().revision == snapshotAt);
  CHECK(inbox.messages.front().oldest == snapshotAt);
  std::vector<std::pair<std::string, std::string>> snapshot;
  size_t pages = 0;
  size_t i = 1;
  for (; i < inbox.messages.size() && inbox.messages[i].kind == Message::SNAPSHOT; ++i) {
    ++pages;
    CHECK(inbox.messages[i].kvs.size() <= 3);
    CHECK(inbox.messages[i].revision == snapshotAt);
    snapshot.insert(snapshot.end(), inbox.messages[i].kvs.begin(), inbox.messages[i].kvs.end());
    if (inbox.messages[i].last) {
      ++i;
      break;
    }
  }
  CHECK(pages == 3);
  REQUIRE(snapshot.size() == 9);
  CHECK(snapshot[0] == std::make_pair(std::string("cfg/0"), std::string(100, 'a')));
  CHECK(snapshot[3].first == "cfg/4");
  REQUIRE(i < inbox.messages.size());
  CHECK(inbox.messages[i].kind == Message::EVENTS);
  CHECK(inbox.events()[0] == Event{true, "cfg/0", "changed", snapshotAt + 1, false, ""});
  CHECK(inbox.events()[1] == Event{false, "cfg/5", "", snapshotAt + 2, false, ""});
  CHECK(snapshot[4].first == "cfg/5");

  // Reads at the compacted revisions are refused; at the oldest kept one they work.
  auto old = f.watches.getRequest();
  old.setKey(bytes("cfg/3"));
  old.setRevision(snapshotAt - 2);
  CHECK(old.send().wait(f.ws()).getStatus().getCode() == Status::Code::INVALID_ARGUMENT);
  auto kept = f.watches.listRequest();
  kept.setPrefix(bytes("cfg/"));
  kept.setRevision(snapshotAt);
  auto list = kept.send().wait(f.ws());
  REQUIRE(list.getStatus().getCode() == Status::Code::OK);
  CHECK(list.getKvs().size() == 9);
  CHECK(text(list.getKvs()[0].getValue()) == std::string(100, 'a'));
  CHECK(list.getHeader().getRevision() == snapshotAt);
}

TEST_CASE("a compacted range larger than the watcher's buffer is resynced page by page") {
  Fixture f;
  for (int i = 0; i < 12; ++i)
    f.put("big/" + std::to_string(10 + i), std::string(200, char('a' + i)));
  // The range (12 keys, 2.4 KB) is three times the buffer (4 changes, 800 bytes): the pages go
  // out one call at a time, never buffered all at once, so the watcher is not cancelled.
  f.node->watchHub().setLimits({100, 4, 800, 1 << 20, 3, 60000});
  auto compact = f.watches.compactRequest();
  compact.setRevision(f.node->state().revision());
  REQUIRE(compact.send().wait(f.ws()).getStatus().getCode() == Status::Code::OK);

  Inbox inbox;
  auto started = f.watch(inbox, "big/", true, 1);
  REQUIRE(started.code == Status::Code::OK);
  CHECK(started.compacted);
  f.until(
      [&] {
        return !inbox.messages.empty() && inbox.messages.back().kind == Message::SNAPSHOT &&
               inbox.messages.back().last;
      },
      "the last snapshot page");
  size_t keys = 0;
  for (const Message& m : inbox.messages) {
    CHECK(m.kind != Message::CANCELLED);
    if (m.kind == Message::SNAPSHOT) {
      CHECK(m.kvs.size() <= 3);
      keys += m.kvs.size();
    }
  }
  CHECK(keys == 12);
  f.put("big/live", "after");
  f.until([&] { return inbox.events().size() == 1; }, "the live event");
  CHECK(inbox.events()[0].key == "big/live");
}

TEST_CASE("a slow watcher is cancelled with its reason while a fast one gets everything") {
  Fixture f;
  f.node->watchHub().setLimits({100, 5, 1 << 20, 1 << 20, 1000, 60000});
  Inbox fast, slow;
  // Dropping the Watch handle would end the watch: keep them.
  auto fastWatch = f.watch(fast, "s/", true, 0);
  auto slowWatch = f.watch(slow, "s/", true, 0);
  slow.hold = true;
  const uint64_t first = f.put("s/0", "v");
  f.until([&] { return slow.messages.size() == 1; }, "the slow watcher's first call");
  for (int i = 1; i < 20; ++i)
    f.put("s/" + std::to_string(i), "v");
  f.until([&] { return fast.currentThrough() >= f.node->state().revision(); }, "fast watcher");
  CHECK(fast.events().size() == 20);
  CHECK(slow.messages.size() == 1);  // one call at a time: nothing else was sent meanwhile
  slow.release();
  f.until([&] { return !slow.messages.empty() && slow.messages.back().kind == Message::CANCELLED; },
          "the cancel message");
  const Message& cancelled = slow.messages.back();
  CHECK(slow.messages.size() == 2);
  CHECK(cancelled.revision == first);  // what it received: resume from first + 1
  CHECK(cancelled.reason.find("too slow") != std::string::npos);
  CHECK(f.node->watchHub().size() == 1);

  // Resuming from there gets the rest.
  Inbox resumed;
  auto resumedWatch = f.watch(resumed, "s/", true, cancelled.revision + 1);
  f.until([&] { return resumed.currentThrough() >= f.node->state().revision(); }, "resume");
  CHECK(resumed.events().size() == 19);
}

TEST_CASE("an idle watcher is told the revision it is current to") {
  Fixture f;
  f.node->watchHub().setLimits({100, 10000, 1 << 20, 1 << 20, 1000, 20});
  Inbox inbox;
  auto quiet = f.watch(inbox, "quiet/", true, 0);
  f.put("elsewhere", "1");
  f.put("elsewhere", "2");
  f.until(
      [&] {
        return !inbox.messages.empty() && inbox.messages.back().kind == Message::PROGRESS &&
               inbox.messages.back().revision == 2;
      },
      "a progress message at revision 2");
  CHECK(inbox.events().empty());
}

TEST_CASE("bad watch requests are refused and change nothing") {
  Fixture f;
  Inbox inbox;
  auto empty = f.watch(inbox, "", false, 0);
  CHECK(empty.code == Status::Code::INVALID_ARGUMENT);
  CHECK(empty.message.find("empty key") != std::string::npos);
  auto tooLong = f.watch(inbox, std::string(2000, 'k'), true, 0);
  CHECK(tooLong.code == Status::Code::INVALID_ARGUMENT);
  CHECK(f.node->watchHub().size() == 0);
  auto compact = f.watches.compactRequest();
  compact.setRevision(50);
  CHECK(compact.send().wait(f.ws()).getStatus().getCode() == Status::Code::INVALID_ARGUMENT);
  auto ahead = f.watches.getRequest();
  ahead.setKey(bytes("k"));
  ahead.setRevision(99);
  auto reply = ahead.send().wait(f.ws());
  CHECK(reply.getStatus().getCode() == Status::Code::INVALID_ARGUMENT);
  CHECK(std::string(reply.getStatus().getMessage()).find("ahead") != std::string::npos);
}

}  // namespace
}  // namespace synod::daemon
