// What only the in-memory store has: restart() and copies.
#include "storage/memory_store.h"

#include <doctest/doctest.h>

namespace synod::storage {
namespace {

TEST_CASE("MemoryStore: restart keeps what was committed and bumps the incarnation") {
  MemoryStore store;
  WriteBatch batch;
  batch.promised = Ballot{2, 1};
  batch.applied = {{4, 10}};
  batch.accepted.push_back({5, {2, 1}, {{"c"}}});
  batch.putKey("k", {"v", 1, 1, 1, 0});
  store.commit(batch);
  // The start state describes the start, not what was committed since.
  CHECK(store.startState().promised.isZero());

  const StartState& restarted = store.restart();
  CHECK_FALSE(restarted.fresh);
  CHECK(restarted.incarnation == 2);
  CHECK(restarted.promised == Ballot{2, 1});
  CHECK(restarted.appliedSlot == 4);
  CHECK(restarted.revision == 10);
  CHECK(store.log().size() == 1);
  CHECK(store.keys().at("k").value == "v");
}

TEST_CASE("MemoryStore: a copy is an independent disk") {
  MemoryStore store;
  WriteBatch batch;
  batch.putKey("shared", {"v", 1, 1, 1, 0});
  store.commit(batch);

  std::unique_ptr<MemoryStore> copy = store.clone();
  WriteBatch later;
  later.putKey("only-original", {"v", 2, 2, 1, 0});
  store.commit(later);
  copy->restart();

  CHECK(store.keys().size() == 2);
  CHECK(copy->keys().size() == 1);
  CHECK(store.startState().incarnation == 1);
  CHECK(copy->startState().incarnation == 2);
}

TEST_CASE("MemoryStore: usedBytes follows puts, overwrites and deletes") {
  MemoryStore store;
  CHECK(store.usedBytes() == 0);
  WriteBatch put;
  put.putKey("k", {std::string(1000, 'v'), 1, 1, 1, 0});
  put.accepted.push_back({1, {1, 0}, {{std::string(500, 'c')}}});
  put.sessions[1] = std::string(100, 's');
  store.commit(put);
  uint64_t full = store.usedBytes();
  CHECK(full >= 1600);

  WriteBatch overwrite;
  overwrite.putKey("k", {std::string(1000, 'w'), 1, 2, 2, 0});
  overwrite.accepted.push_back({1, {2, 0}, {{std::string(500, 'd')}}});
  store.commit(overwrite);
  CHECK(store.usedBytes() == full);

  WriteBatch remove;
  remove.deleteKey("k");
  remove.dropLogThrough = 1;
  remove.sessions[1] = std::nullopt;
  store.commit(remove);
  CHECK(store.usedBytes() == 0);
}

}  // namespace
}  // namespace synod::storage
