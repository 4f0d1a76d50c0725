// What only the LMDB store has: files, the lock, identity, map growth, on-disk corruption.
#include "storage/lmdb_store.h"

#include <doctest/doctest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

#include "storage/record.h"
#include "tests/storage/temp_dir.h"

namespace synod::storage {
namespace {

using testing::TempDir;

LmdbOptions optionsFor(const std::string& dataDir, std::string member = "n1") {
  LmdbOptions options;
  options.dataDir = dataDir;
  options.clusterId = "test-group";
  options.memberName = std::move(member);
  return options;
}

template <typename Error>
std::string errorOf(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  FAIL("no error thrown");
  return "";
}

std::string readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void writeFile(const std::string& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  REQUIRE(out);
  out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
  REQUIRE(out);
}

// Applies `edit` at every occurrence of `needle` in the file; returns how many there were.
size_t editEveryOccurrence(const std::string& path, const std::string& needle,
                           const std::function<void(std::string&, size_t)>& edit) {
  std::string contents = readFile(path);
  size_t count = 0;
  for (size_t at = contents.find(needle); at != std::string::npos;
       at = contents.find(needle, at + 1)) {
    edit(contents, at);
    ++count;
  }
  writeFile(path, contents);
  return count;
}

// Runs fn in a child process; returns its exit status (fn's return value).
int inChild(const std::function<int()>& fn) {
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    int code = 99;
    try {
      code = fn();
    } catch (...) {
      code = 98;
    }
    ::_exit(code);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  return WEXITSTATUS(status);
}

TEST_CASE("LmdbStore: creates the data dir with mode 0750, parents too") {
  TempDir tmp;
  std::string dir = tmp.sub("a/b/data");
  auto store = LmdbStore::open(optionsFor(dir));
  struct stat st;
  REQUIRE(::stat(dir.c_str(), &st) == 0);
  mode_t mask = ::umask(0);
  ::umask(mask);
  CHECK((st.st_mode & 0777) == (0750 & ~mask));
  CHECK(::access(store->dataFilePath().c_str(), F_OK) == 0);
  CHECK(store->dataFilePath() == dir + "/data.mdb");
}

TEST_CASE("LmdbStore: refuses unusable options and data dirs without creating state") {
  TempDir tmp;
  writeFile(tmp.sub("file"), "not a dir");
  CHECK(errorOf<OpenError>([&] { LmdbStore::open(optionsFor(tmp.sub("file"))); }) ==
        "data dir " + tmp.sub("file") + " is not a directory");
  CHECK(errorOf<OpenError>([&] { LmdbStore::open(optionsFor(tmp.sub("d"), "")); }) ==
        "member name must not be empty");
  LmdbOptions noCluster = optionsFor(tmp.sub("d"));
  noCluster.clusterId = "";
  CHECK(errorOf<OpenError>([&] { LmdbStore::open(noCluster); }) == "cluster id must not be empty");
  CHECK(::access(tmp.sub("d").c_str(), F_OK) != 0);
}

TEST_CASE("LmdbStore: a data dir belongs to one member of one group") {
  TempDir tmp;
  std::string dir = tmp.sub("data");
  LmdbStore::open(optionsFor(dir, "n1"));

  CHECK(errorOf<OpenError>([&] { LmdbStore::open(optionsFor(dir, "n2")); }) ==
        "data dir " + dir +
            " belongs to member \"n1\" of cluster \"test-group\", not to member \"n2\" of "
            "cluster \"test-group\"");
  LmdbOptions otherGroup = optionsFor(dir, "n1");
  otherGroup.clusterId = "other-group";
  std::string message = errorOf<OpenError>([&] { LmdbStore::open(otherGroup); });
  CHECK(message.find("cluster \"test-group\"") != std::string::npos);
  CHECK(message.find("cluster \"other-group\"") != std::string::npos);

  // Refused opens bumped nothing.
  auto store = LmdbStore::open(optionsFor(dir, "n1"));
  CHECK(store->startState().incarnation == 2);
  CHECK_FALSE(store->startState().fresh);
}

TEST_CASE("LmdbStore: one open store per data dir, in this process or another") {
  TempDir tmp;
  std::string dir = tmp.sub("data");
  auto first = LmdbStore::open(optionsFor(dir));

  std::string expected =
      "data dir " + dir + " is in use by another synod (pid " + std::to_string(::getpid()) + ")";
  CHECK(errorOf<OpenError>([&] { LmdbStore::open(optionsFor(dir)); }) == expected);

  // A second process is refused, and told who holds the lock.
  int childResult = inChild([&] {
    try {
      LmdbStore::open(optionsFor(dir));
      return 1;
    } catch (const OpenError& e) {
      return std::string(e.what()) == expected ? 0 : 2;
    }
  });
  CHECK(childResult == 0);

  first.reset();
  auto second = LmdbStore::open(optionsFor(dir));
  CHECK(second->startState().incarnation == 2);
  second.reset();

  // A process that dies with the store open releases the lock with its life.
  CHECK(inChild([&] {
          auto store = LmdbStore::open(optionsFor(dir));
          return store->startState().incarnation == 3 ? 0 : 1;
        }) == 0);
  CHECK(LmdbStore::open(optionsFor(dir))->startState().incarnation == 4);
}

TEST_CASE("LmdbStore: the map doubles as data grows, and everything is there after reopen") {
  TempDir tmp;
  LmdbOptions options = optionsFor(tmp.sub("data"));
  options.initialMapBytes = 1 << 20;
  constexpr int VALUES = 50;
  constexpr size_t VALUE_BYTES = 1 << 20;
  auto valueOf = [](int i) {
    std::string value(VALUE_BYTES, static_cast<char>('a' + i % 26));
    value.replace(0, 16, "value " + std::to_string(i) + "          ", 0, 16);
    return value;
  };

  auto store = LmdbStore::open(options);
  uint64_t initialMap = store->mapBytes();
  CHECK(initialMap == options.initialMapBytes);
  uint64_t usedBefore = store->usedBytes();
  // 40 commits of one value each, then one commit of ten (growing the map several times within
  // one batch).
  for (int i = 0; i < 40; ++i) {
    WriteBatch batch;
    batch.putKey("big/" + std::to_string(100 + i), {valueOf(i), 1, 1, 1, 0});
    store->commit(batch);
  }
  WriteBatch ten;
  for (int i = 40; i < VALUES; ++i)
    ten.putKey("big/" + std::to_string(100 + i), {valueOf(i), 1, 1, 1, 0});
  store->commit(ten);
  MESSAGE("map " << initialMap << " -> " << store->mapBytes() << " bytes, used " << usedBefore
                 << " -> " << store->usedBytes());
  CHECK(store->usedBytes() >= VALUES * VALUE_BYTES);
  CHECK(store->mapBytes() >= store->usedBytes());

  store.reset();
  store = LmdbStore::open(options);
  int seen = 0;
  store->forEachKey([&](std::string_view key, KeyRecord&& record) {
    CHECK(key == "big/" + std::to_string(100 + seen));
    CHECK(record.value == valueOf(seen));
    ++seen;
  });
  CHECK(seen == VALUES);

  // Still writable: the reopened map starts at the data's size and grows again.
  WriteBatch more;
  more.putKey("big/more", {valueOf(0), 1, 1, 1, 0});
  store->commit(more);
  CHECK(store->usedBytes() >= (VALUES + 1) * VALUE_BYTES);
}

TEST_CASE("LmdbStore: usedBytes falls when keys are deleted; freed pages are reused") {
  TempDir tmp;
  LmdbOptions options = optionsFor(tmp.sub("data"));
  auto store = LmdbStore::open(options);
  const std::string value(64 << 10, 'v');
  auto fill = [&](const std::string& prefix) {
    for (int i = 0; i < 64; ++i) {
      WriteBatch batch;
      batch.putKey(prefix + std::to_string(i), {value, 1, 1, 1, 0});
      store->commit(batch);
    }
  };
  const uint64_t empty = store->usedBytes();
  fill("a/");
  const uint64_t full = store->usedBytes();
  CHECK(full >= empty + 64 * value.size());
  for (int i = 0; i < 64; ++i) {
    WriteBatch batch;
    batch.deleteKey("a/" + std::to_string(i));
    store->commit(batch);
  }
  const uint64_t afterDelete = store->usedBytes();
  MESSAGE("used bytes: empty " << empty << ", full " << full << ", after deleting " << afterDelete);
  // Space is counted as freed, so a store refused NO_SPACE can recover by deleting.
  CHECK(afterDelete < empty + (full - empty) / 4);
  // The same amount written again reuses the freed pages: the file does not grow by as much.
  const uint64_t fileBefore = std::filesystem::file_size(tmp.sub("data") + "/data.mdb");
  fill("b/");
  const uint64_t fileAfter = std::filesystem::file_size(tmp.sub("data") + "/data.mdb");
  CHECK(fileAfter < fileBefore + (full - empty) / 4);
}

TEST_CASE("LmdbStore: a batch that fails half-way (store full) leaves nothing behind") {
  TempDir tmp;
  LmdbOptions options = optionsFor(tmp.sub("data"));
  options.initialMapBytes = 1 << 20;
  options.maxMapBytes = 2 << 20;
  auto store = LmdbStore::open(options);

  WriteBatch small;
  small.promised = Ballot{1, 0};
  small.putKey("small", {"v", 1, 1, 1, 0});
  store->commit(small);

  // The promise, the log entry and the first keys fit; a later key does not.
  WriteBatch big;
  big.promised = Ballot{2, 0};
  big.accepted.push_back({1, {2, 0}, {{"cmd"}}});
  big.applied = {{1, 1}};
  for (int i = 0; i < 10; ++i)
    big.putKey("k" + std::to_string(i), {std::string(300 << 10, 'x'), 1, 1, 1, 0});
  big.sessions[0] = std::string("s");
  std::string message = errorOf<std::runtime_error>([&] { store->commit(big); });
  CHECK(message.find("store full") != std::string::npos);
  CHECK(store->mapBytes() == options.maxMapBytes);

  auto checkUnchanged = [&](LmdbStore& s) {
    std::vector<std::string> keys;
    s.forEachKey([&](std::string_view key, KeyRecord&&) { keys.emplace_back(key); });
    CHECK(keys == std::vector<std::string>{"small"});
    int logEntries = 0;
    s.forEachLogEntry(0, [&](LogEntry&&) { ++logEntries; });
    CHECK(logEntries == 0);
    int sessions = 0;
    s.forEachSession([&](MemberIndex, std::string_view) { ++sessions; });
    CHECK(sessions == 0);
  };
  checkUnchanged(*store);

  // The store is still usable for what fits.
  WriteBatch after;
  after.putKey("after", {"v", 2, 2, 1, 0});
  store->commit(after);

  store.reset();
  store = LmdbStore::open(options);
  CHECK(store->startState().promised == Ballot{1, 0});
  CHECK(store->startState().appliedSlot == 0);
  int keys = 0;
  store->forEachKey([&](std::string_view, KeyRecord&&) { ++keys; });
  CHECK(keys == 2);
}

TEST_CASE("LmdbStore: storeLimitBytes caps the map with 25% headroom") {
  TempDir tmp;
  LmdbOptions options = optionsFor(tmp.sub("data"));
  options.initialMapBytes = 1 << 20;
  options.storeLimitBytes = 4 << 20;
  auto store = LmdbStore::open(options);
  for (int i = 0; i < 20; ++i) {
    WriteBatch batch;
    batch.putKey("k" + std::to_string(i), {std::string(256 << 10, 'x'), 1, 1, 1, 0});
    try {
      store->commit(batch);
    } catch (const std::runtime_error& e) {
      CHECK(std::string(e.what()).find("store full") != std::string::npos);
      break;
    }
  }
  CHECK(store->mapBytes() == 5 << 20);
  CHECK(store->usedBytes() > 4 << 20);
}

TEST_CASE("LmdbStore: a raised storeLimitBytes raises the map's cap; a lowered one keeps it") {
  TempDir tmp;
  LmdbOptions options = optionsFor(tmp.sub("data"));
  options.initialMapBytes = 1 << 20;
  options.storeLimitBytes = 4 << 20;
  auto store = LmdbStore::open(options);
  CHECK(store->maxMapBytes() == 5 << 20);
  store->setStoreLimitBytes(8 << 20);
  CHECK(store->maxMapBytes() == 10 << 20);
  CHECK(store->options().storeLimitBytes == 8 << 20);
  for (int i = 0; i < 24; ++i) {  // 6 MiB: past the old cap
    WriteBatch batch;
    batch.putKey("k" + std::to_string(i), {std::string(256 << 10, 'x'), 1, 1, 1, 0});
    store->commit(batch);
  }
  CHECK(store->usedBytes() > 6 << 20);
  store->setStoreLimitBytes(2 << 20);
  CHECK(store->maxMapBytes() == 10 << 20);
}

TEST_CASE("LmdbStore: a flipped byte in a stored value names table and key") {
  TempDir tmp;
  LmdbOptions options = optionsFor(tmp.sub("data"));
  const std::string marker = "UNIQUE-VALUE-MARKER-7f3a9c";
  {
    auto store = LmdbStore::open(options);
    WriteBatch batch;
    batch.putKey("app/a", {"fine", 1, 1, 1, 0});
    batch.putKey("app/x", {"before " + marker + " after", 2, 2, 1, 0});
    batch.putKey("app/z", {"fine too", 3, 3, 1, 0});
    store->commit(batch);
  }
  size_t found = editEveryOccurrence(options.dataDir + "/data.mdb", marker,
                                     [](std::string& file, size_t at) { file[at + 3] ^= 0x20; });
  REQUIRE(found >= 1);

  auto store = LmdbStore::open(options);  // meta is intact: opening works
  std::vector<std::string> before;
  std::string message = errorOf<CorruptionError>([&] {
    store->forEachKey([&](std::string_view key, KeyRecord&&) { before.emplace_back(key); });
  });
  CHECK(message == "corrupt record in table \"kv\" key \"app/x\": checksum mismatch");
  CHECK(before == std::vector<std::string>{"app/a"});
}

TEST_CASE("LmdbStore: an unknown record version is refused, never guessed") {
  TempDir tmp;
  LmdbOptions options = optionsFor(tmp.sub("data"));
  KeyRecord record{"VERSION-TEST-VALUE-41d2", 1, 1, 1, 0};
  {
    auto store = LmdbStore::open(options);
    WriteBatch batch;
    batch.putKey("app/v", record);
    store->commit(batch);
  }
  size_t found = editEveryOccurrence(options.dataDir + "/data.mdb", encodeKeyRecord(record),
                                     [](std::string& file, size_t at) { file[at] = 2; });
  REQUIRE(found >= 1);
  auto store = LmdbStore::open(options);
  CHECK(
      errorOf<CorruptionError>([&] { store->forEachKey([](std::string_view, KeyRecord&&) {}); }) ==
      "corrupt record in table \"kv\" key \"app/v\": unsupported record version 2 (this synod "
      "reads version 1)");
}

TEST_CASE("LmdbStore: corrupt log entries, sessions and meta records are named too") {
  TempDir tmp;
  LmdbOptions options = optionsFor(tmp.sub("data"));
  {
    auto store = LmdbStore::open(options);
    WriteBatch batch;
    batch.accepted.push_back({41, {1, 0}, {{"fine"}}});
    batch.accepted.push_back({42, {1, 0}, {{"LOG-MARKER-8e1f"}}});
    batch.sessions[3] = std::string("SESSION-MARKER-5b7c");
    batch.leases[0x1000000000005] = std::string("LEASE-MARKER-c41d");
    batch.locks["jobs/a"] = std::string("LOCK-MARKER-07aa");
    batch.applied = {{40, 7}};
    store->commit(batch);
  }
  auto flip = [](std::string& file, size_t at) { file[at] ^= 0x01; };
  std::string dataFile = options.dataDir + "/data.mdb";
  REQUIRE(editEveryOccurrence(dataFile, "LOG-MARKER-8e1f", flip) >= 1);
  REQUIRE(editEveryOccurrence(dataFile, "SESSION-MARKER-5b7c", flip) >= 1);
  REQUIRE(editEveryOccurrence(dataFile, "LEASE-MARKER-c41d", flip) >= 1);
  REQUIRE(editEveryOccurrence(dataFile, "LOCK-MARKER-07aa", flip) >= 1);
  {
    auto store = LmdbStore::open(options);
    CHECK(errorOf<CorruptionError>([&] { store->forEachLogEntry(0, [](LogEntry&&) {}); }) ==
          "corrupt record in table \"log\" key slot 42: checksum mismatch");
    CHECK(errorOf<CorruptionError>([&] {
            store->forEachSession([](MemberIndex, std::string_view) {});
          }) == "corrupt record in table \"sessions\" key member 3: checksum mismatch");
    CHECK(errorOf<CorruptionError>([&] {
            store->forEachLease([](uint64_t, std::string_view) {});
          }) == "corrupt record in table \"leases\" key lease 281474976710661: checksum mismatch");
    CHECK(errorOf<CorruptionError>([&] {
            store->forEachLock([](std::string_view, std::string_view) {});
          }) == "corrupt record in table \"locks\" key \"jobs/a\": checksum mismatch");
  }
  // The applied record is the only one holding 40 then 7 as its payload's data words.
  REQUIRE(editEveryOccurrence(dataFile, encodeApplied(40, 7), flip) >= 1);
  CHECK(errorOf<CorruptionError>([&] { LmdbStore::open(options); }) ==
        "corrupt record in table \"meta\" key \"applied\": unsupported record version 0 (this "
        "synod reads version 1)");
}

TEST_CASE("LmdbStore: latency of one durable commit of a 100-byte key") {
  TempDir tmp;
  auto store = LmdbStore::open(optionsFor(tmp.sub("data")));
  constexpr int COMMITS = 200;
  std::vector<double> micros;
  auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < COMMITS; ++i) {
    WriteBatch batch;
    std::string key = "latency/" + std::to_string(i);
    key.resize(100, 'k');
    batch.putKey(key, {"value", static_cast<uint64_t>(i), static_cast<uint64_t>(i), 1, 0});
    batch.applied = {{static_cast<Slot>(i), static_cast<uint64_t>(i)}};
    auto before = std::chrono::steady_clock::now();
    store->commit(batch);
    micros.push_back(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - before)
            .count());
  }
  double totalSeconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::sort(micros.begin(), micros.end());
  double sum = 0;
  for (double m : micros)
    sum += m;
  MESSAGE("commit of one 100-byte key, fsync included, over "
          << COMMITS << " commits: mean " << sum / COMMITS << " us, p50 " << micros[COMMITS / 2]
          << " us, p99 " << micros[COMMITS * 99 / 100] << " us, max " << micros.back() << " us");
  CHECK(totalSeconds < 60);  // catches a hang only
}

}  // namespace
}  // namespace synod::storage
