#include "storage/lmdb_store.h"

#include <fcntl.h>
#include <lmdb.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <utility>

#include "storage/record.h"

namespace synod::storage {

namespace {

constexpr uint32_t SCHEMA_VERSION = 1;
constexpr const char* DATA_FILE = "data.mdb";
constexpr const char* LOCK_FILE = "LOCK";
constexpr mode_t DATA_DIR_MODE = 0750;
constexpr mode_t FILE_MODE = 0640;

// Keys of the meta table.
constexpr std::string_view IDENTITY_KEY = "identity";
constexpr std::string_view INCARNATION_KEY = "incarnation";
constexpr std::string_view PROMISE_KEY = "promise";
constexpr std::string_view APPLIED_KEY = "applied";
// Present while the member recovers from an empty data dir; holds the incarnation that found it
// empty (an Incarnation record).
constexpr std::string_view RECOVERING_KEY = "recovering";
// A HistoryStart record: every change with a revision >= it is in the history table.
constexpr std::string_view HISTORY_START_KEY = "history";

std::string errnoText(int err) {
  return std::system_category().message(err);
}

[[noreturn]] void throwLmdb(std::string_view operation, int rc) {
  throw std::runtime_error("LMDB " + std::string(operation) + " failed: " + mdb_strerror(rc));
}

// Thrown out of a write transaction's body when the map is full: the transaction is aborted, the
// map grown and the whole body run again.
struct MapFull {};

void checkWrite(int rc, std::string_view operation) {
  if (rc == 0) return;
  if (rc == MDB_MAP_FULL) throw MapFull{};
  throwLmdb(operation, rc);
}

MDB_val toVal(std::string_view bytes) {
  return {bytes.size(), const_cast<char*>(bytes.data())};
}

std::string_view toView(const MDB_val& val) {
  return {static_cast<const char*>(val.mv_data), val.mv_size};
}

class FileDescriptor {
 public:
  explicit FileDescriptor(int fd = -1) : fd_(fd) {}
  FileDescriptor(FileDescriptor&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  FileDescriptor& operator=(FileDescriptor&&) = delete;
  ~FileDescriptor() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

// One LMDB transaction; aborted unless committed. A write transaction begins and ends on the same
// thread.
class Transaction {
 public:
  Transaction(MDB_env* env, unsigned flags) {
    int rc = mdb_txn_begin(env, nullptr, flags, &txn_);
    if (rc != 0)
      throwLmdb((flags & MDB_RDONLY) ? "begin read transaction" : "begin write transaction", rc);
  }
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  ~Transaction() {
    if (txn_ != nullptr) mdb_txn_abort(txn_);
  }
  MDB_txn* get() const { return txn_; }

  // Durable when this returns (data pages and meta page fsync'd).
  void commit() {
    int rc = mdb_txn_commit(txn_);
    txn_ = nullptr;  // freed by LMDB whatever the outcome
    checkWrite(rc, "commit");
  }

 private:
  MDB_txn* txn_ = nullptr;
};

// Closed before its transaction ends (declare it after the Transaction).
class Cursor {
 public:
  Cursor(MDB_txn* txn, MDB_dbi dbi, std::string_view table) {
    int rc = mdb_cursor_open(txn, dbi, &cursor_);
    if (rc != 0) throwLmdb("open cursor on table " + std::string(table), rc);
  }
  Cursor(const Cursor&) = delete;
  Cursor& operator=(const Cursor&) = delete;
  ~Cursor() { mdb_cursor_close(cursor_); }
  MDB_cursor* get() const { return cursor_; }

 private:
  MDB_cursor* cursor_ = nullptr;
};

std::optional<std::string_view> getValue(MDB_txn* txn, MDB_dbi dbi, std::string_view table,
                                         std::string_view key) {
  MDB_val keyVal = toVal(key);
  MDB_val value;
  int rc = mdb_get(txn, dbi, &keyVal, &value);
  if (rc == MDB_NOTFOUND) return std::nullopt;
  if (rc != 0) throwLmdb("get from table " + std::string(table), rc);
  return toView(value);
}

void putValue(MDB_txn* txn, MDB_dbi dbi, std::string_view table, std::string_view key,
              std::string_view value) {
  MDB_val keyVal = toVal(key);
  MDB_val valueVal = toVal(value);
  checkWrite(mdb_put(txn, dbi, &keyVal, &valueVal, 0), "put into table " + std::string(table));
}

void deleteValue(MDB_txn* txn, MDB_dbi dbi, std::string_view table, std::string_view key) {
  MDB_val keyVal = toVal(key);
  int rc = mdb_del(txn, dbi, &keyVal, nullptr);
  if (rc == MDB_NOTFOUND) return;
  checkWrite(rc, "delete from table " + std::string(table));
}

uint64_t entryCount(MDB_txn* txn, MDB_dbi dbi) {
  MDB_stat stat;
  int rc = mdb_stat(txn, dbi, &stat);
  if (rc != 0) throwLmdb("stat", rc);
  return stat.ms_entries;
}

// Calls fn(key, value) for every entry from `from` (or the first) on, in key order.
void scan(MDB_txn* txn, MDB_dbi dbi, std::string_view table, std::optional<std::string_view> from,
          const std::function<void(std::string_view, std::string_view)>& fn) {
  Cursor cursor(txn, dbi, table);
  MDB_val key{};
  MDB_val value{};
  if (from) key = toVal(*from);
  int rc = mdb_cursor_get(cursor.get(), &key, &value, from ? MDB_SET_RANGE : MDB_FIRST);
  for (; rc == 0; rc = mdb_cursor_get(cursor.get(), &key, &value, MDB_NEXT)) {
    fn(toView(key), toView(value));
  }
  if (rc != MDB_NOTFOUND) throwLmdb("cursor on table " + std::string(table), rc);
}

uint64_t roundUp(uint64_t bytes, uint64_t unit) {
  return (bytes + unit - 1) / unit * unit;
}

// mkdir -p with DATA_DIR_MODE; returns whether the last component was created.
bool makeDataDir(const std::string& dir) {
  struct stat st;
  if (::stat(dir.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) throw OpenError("data dir " + dir + " is not a directory");
    return false;
  }
  for (size_t end = dir.find('/', 1);; end = dir.find('/', end + 1)) {
    std::string prefix = dir.substr(0, end);
    if (::mkdir(prefix.c_str(), DATA_DIR_MODE) != 0 && errno != EEXIST) {
      throw OpenError("cannot create data dir " + dir + ": " + prefix + ": " + errnoText(errno));
    }
    if (end == std::string::npos) break;
  }
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    throw OpenError("cannot create data dir " + dir);
  }
  return true;
}

// Makes a directory entry created in `dir` durable.
void syncDirectory(const std::string& dir) {
  FileDescriptor fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0 || ::fsync(fd.get()) != 0) {
    throw std::runtime_error("cannot sync directory " + dir + ": " + errnoText(errno));
  }
}

std::string readPid(int fd) {
  char buffer[32] = {};
  ssize_t n = ::pread(fd, buffer, sizeof(buffer) - 1, 0);
  std::string pid = n > 0 ? std::string(buffer, static_cast<size_t>(n)) : "";
  while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' '))
    pid.pop_back();
  return pid.empty() ? "unknown" : pid;
}

// An exclusive flock on dataDir/LOCK, held for as long as the returned descriptor is open. flock
// locks belong to the open file description, so a second open in this process is refused too.
FileDescriptor lockDataDir(const std::string& dir) {
  std::string path = dir + "/" + LOCK_FILE;
  FileDescriptor fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, FILE_MODE));
  if (fd.get() < 0) throw OpenError("cannot open lock file " + path + ": " + errnoText(errno));
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    if (err == EWOULDBLOCK) {
      throw OpenError("data dir " + dir + " is in use by another synod (pid " + readPid(fd.get()) +
                      ")");
    }
    throw OpenError("cannot lock " + path + ": " + errnoText(err));
  }
  std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd.get(), 0) != 0 ||
      ::pwrite(fd.get(), pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    throw OpenError("cannot write lock file " + path + ": " + errnoText(errno));
  }
  return fd;
}

uint64_t fileBytes(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
}

}  // namespace

struct LmdbStore::Environment {
  FileDescriptor lock;  // declared first: released after the environment is closed
  MDB_env* env = nullptr;
  uint64_t maxMapBytes = 0;  // 0 = unlimited
  MDB_dbi meta = 0, log = 0, kv = 0, sessions = 0, leases = 0, locks = 0, history = 0;

  explicit Environment(FileDescriptor lockFd) : lock(std::move(lockFd)) {}
  Environment(const Environment&) = delete;
  Environment& operator=(const Environment&) = delete;
  ~Environment() {
    if (env != nullptr) mdb_env_close(env);
  }

  // Opens (creating) every table. The handles stay valid for the environment's life once the
  // transaction commits.
  void openTables(MDB_txn* txn) {
    std::pair<const char*, MDB_dbi*> tables[] = {
        {"meta", &meta},     {"log", &log},     {"kv", &kv},           {"sessions", &sessions},
        {"leases", &leases}, {"locks", &locks}, {"history", &history},
    };
    for (auto [name, dbi] : tables) {
      int rc = mdb_dbi_open(txn, name, MDB_CREATE, dbi);
      if (rc != 0) throwLmdb(std::string("open table ") + name, rc);
    }
  }

  uint64_t mapBytes() const {
    MDB_envinfo info;
    int rc = mdb_env_info(env, &info);
    if (rc != 0) throwLmdb("env_info", rc);
    return info.me_mapsize;
  }

  // Doubles the map, up to maxMapBytes. Precondition: no transaction is live in this process.
  void growMap() {
    uint64_t current = mapBytes();
    if (maxMapBytes != 0 && current >= maxMapBytes) {
      throw std::runtime_error("store full: the LMDB map reached its limit of " +
                               std::to_string(maxMapBytes) + " bytes");
    }
    uint64_t next = current * 2;
    if (maxMapBytes != 0 && next > maxMapBytes) next = maxMapBytes;
    int rc = mdb_env_set_mapsize(env, next);
    if (rc != 0) throwLmdb("grow map to " + std::to_string(next) + " bytes", rc);
  }

  // Runs `body` in one write transaction and commits it: all or nothing. On MDB_MAP_FULL the
  // transaction is aborted, the map grown and `body` run again from the start, so `body` must
  // only write through `txn`.
  void write(const std::function<void(MDB_txn*)>& body) {
    for (;;) {
      try {
        Transaction txn(env, 0);
        body(txn.get());
        txn.commit();
        return;
      } catch (const MapFull&) {
        // txn is already aborted here: the map may be resized.
      }
      growMap();
    }
  }
};

LmdbStore::LmdbStore(LmdbOptions options, std::unique_ptr<Environment> environment)
    : options_(std::move(options)), environment_(std::move(environment)) {}

LmdbStore::~LmdbStore() = default;

namespace {

void checkOptions(const LmdbOptions& options) {
  if (options.dataDir.empty()) throw OpenError("data dir must not be empty");
  if (options.clusterId.empty()) throw OpenError("cluster id must not be empty");
  if (options.memberName.empty()) throw OpenError("member name must not be empty");
  if (options.initialMapBytes == 0) throw OpenError("initial map size must not be 0");
}

// Reads or writes the identity; returns whether the store was fresh. Throws OpenError if the data
// dir belongs to another member or group.
bool checkIdentity(MDB_txn* txn, const LmdbStore::Environment& e, const LmdbOptions& options) {
  RecordName name{"meta", IDENTITY_KEY};
  std::optional<std::string_view> stored = getValue(txn, e.meta, "meta", IDENTITY_KEY);
  if (!stored) {
    for (MDB_dbi dbi : {e.meta, e.log, e.kv, e.sessions, e.leases, e.locks, e.history}) {
      if (entryCount(txn, dbi) != 0) {
        throw OpenError("data dir " + options.dataDir +
                        " holds synod state but no identity record; refusing to guess whose");
      }
    }
    putValue(txn, e.meta, "meta", IDENTITY_KEY,
             encodeIdentity({options.clusterId, options.memberName, SCHEMA_VERSION}));
    return true;
  }
  Identity identity = decodeIdentity(*stored, name);
  if (identity.schemaVersion != SCHEMA_VERSION) {
    throw OpenError("data dir " + options.dataDir + " has schema version " +
                    std::to_string(identity.schemaVersion) + "; this synod reads version " +
                    std::to_string(SCHEMA_VERSION));
  }
  if (identity.clusterId != options.clusterId || identity.member != options.memberName) {
    throw OpenError("data dir " + options.dataDir + " belongs to member \"" + identity.member +
                    "\" of cluster \"" + identity.clusterId + "\", not to member \"" +
                    options.memberName + "\" of cluster \"" + options.clusterId + "\"");
  }
  return false;
}

StartState start(MDB_txn* txn, LmdbStore::Environment& e, const LmdbOptions& options) {
  StartState state;
  e.openTables(txn);
  state.fresh = checkIdentity(txn, e, options);

  std::optional<std::string_view> incarnation = getValue(txn, e.meta, "meta", INCARNATION_KEY);
  state.incarnation = incarnation ? decodeIncarnation(*incarnation, {"meta", INCARNATION_KEY}) + 1
                                  : std::max<uint64_t>(options.firstIncarnation, 1);
  putValue(txn, e.meta, "meta", INCARNATION_KEY, encodeIncarnation(state.incarnation));

  if (auto promise = getValue(txn, e.meta, "meta", PROMISE_KEY)) {
    state.promised = decodePromise(*promise, {"meta", PROMISE_KEY});
  }
  if (auto applied = getValue(txn, e.meta, "meta", APPLIED_KEY)) {
    std::tie(state.appliedSlot, state.revision) = decodeApplied(*applied, {"meta", APPLIED_KEY});
  }
  if (auto history = getValue(txn, e.meta, "meta", HISTORY_START_KEY)) {
    state.historyStart = decodeHistoryStart(*history, {"meta", HISTORY_START_KEY});
  }
  if (state.fresh) {
    putValue(txn, e.meta, "meta", RECOVERING_KEY, encodeIncarnation(state.incarnation));
  }
  if (auto recovering = getValue(txn, e.meta, "meta", RECOVERING_KEY)) {
    decodeIncarnation(*recovering, {"meta", RECOVERING_KEY});
    state.recovering = true;
  }
  return state;
}

}  // namespace

std::unique_ptr<LmdbStore> LmdbStore::open(const LmdbOptions& options) {
  checkOptions(options);
  const std::string& dir = options.dataDir;
  bool createdDir = makeDataDir(dir);
  auto e = std::make_unique<Environment>(lockDataDir(dir));

  std::string dataFile = dir + "/" + DATA_FILE;
  bool createdFile = fileBytes(dataFile) == 0;
  uint64_t pageBytes = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  e->maxMapBytes = options.maxMapBytes != 0 ? options.maxMapBytes
                                            : options.storeLimitBytes + options.storeLimitBytes / 4;
  if (e->maxMapBytes != 0) e->maxMapBytes = roundUp(e->maxMapBytes, pageBytes);
  uint64_t mapBytes = roundUp(options.initialMapBytes, pageBytes);
  if (e->maxMapBytes != 0) mapBytes = std::min(mapBytes, e->maxMapBytes);
  mapBytes = std::max(mapBytes, roundUp(fileBytes(dataFile), pageBytes));

  int rc = mdb_env_create(&e->env);
  if (rc != 0) throwLmdb("env_create", rc);
  if ((rc = mdb_env_set_maxdbs(e->env, 8)) != 0) throwLmdb("set_maxdbs", rc);
  if ((rc = mdb_env_set_mapsize(e->env, mapBytes)) != 0) throwLmdb("set_mapsize", rc);
  if ((rc = mdb_env_open(e->env, dir.c_str(), MDB_NOTLS, FILE_MODE)) != 0) {
    throw OpenError("cannot open the LMDB environment in " + dir + ": " + mdb_strerror(rc));
  }
  if (mdb_env_get_maxkeysize(e->env) < static_cast<int>(MAX_KEY_BYTES)) {
    throw OpenError("this liblmdb allows keys of only " +
                    std::to_string(mdb_env_get_maxkeysize(e->env)) + " bytes; synod needs " +
                    std::to_string(MAX_KEY_BYTES));
  }
  int staleReaders = 0;
  if ((rc = mdb_reader_check(e->env, &staleReaders)) != 0) throwLmdb("reader_check", rc);

  StartState state;
  e->write([&](MDB_txn* txn) { state = start(txn, *e, options); });
  if (createdFile) syncDirectory(dir);
  if (createdDir) {
    std::string parent = std::filesystem::path(dir).lexically_normal().parent_path().string();
    syncDirectory(parent.empty() ? "." : parent);
  }

  std::unique_ptr<LmdbStore> store(new LmdbStore(options, std::move(e)));
  store->startState_ = state;
  return store;
}

void LmdbStore::commit(const WriteBatch& batch) {
  if (auto problem = checkBatch(batch)) {
    throw InvalidBatchError("refusing write batch: " + *problem);
  }
  if (batch.empty()) return;
  Environment& e = *environment_;
  e.write([&](MDB_txn* txn) {
    if (batch.promised) putValue(txn, e.meta, "meta", PROMISE_KEY, encodePromise(*batch.promised));
    for (const LogEntry& entry : batch.accepted) {
      putValue(txn, e.log, "log", slotKey(entry.slot), encodeLogRecord(entry));
    }
    if (batch.dropLogThrough) {
      std::string through = slotKey(*batch.dropLogThrough);
      Cursor cursor(txn, e.log, "log");
      MDB_val key{};
      MDB_val value{};
      int rc = mdb_cursor_get(cursor.get(), &key, &value, MDB_FIRST);
      // Big-endian slots: byte order is slot order.
      for (; rc == 0 && toView(key) <= through;
           rc = mdb_cursor_get(cursor.get(), &key, &value, MDB_NEXT)) {
        checkWrite(mdb_cursor_del(cursor.get(), 0), "delete from table log");
      }
      if (rc != 0 && rc != MDB_NOTFOUND) throwLmdb("cursor on table log", rc);
    }
    if (batch.recovered) deleteValue(txn, e.meta, "meta", RECOVERING_KEY);
    if (batch.replaceState) {
      checkWrite(mdb_drop(txn, e.kv, 0), "empty table kv");
      checkWrite(mdb_drop(txn, e.sessions, 0), "empty table sessions");
      checkWrite(mdb_drop(txn, e.leases, 0), "empty table leases");
      checkWrite(mdb_drop(txn, e.locks, 0), "empty table locks");
      checkWrite(mdb_drop(txn, e.history, 0), "empty table history");
    }
    if (batch.applied) {
      putValue(txn, e.meta, "meta", APPLIED_KEY,
               encodeApplied(batch.applied->first, batch.applied->second));
    }
    for (const auto& [key, record] : batch.keys) {
      if (record) {
        putValue(txn, e.kv, "kv", key, encodeKeyRecord(*record));
      } else {
        deleteValue(txn, e.kv, "kv", key);
      }
    }
    for (const auto& [member, encoded] : batch.sessions) {
      if (encoded) {
        putValue(txn, e.sessions, "sessions", memberKey(member), frameRecord(*encoded));
      } else {
        deleteValue(txn, e.sessions, "sessions", memberKey(member));
      }
    }
    for (const auto& [id, encoded] : batch.leases) {
      if (encoded) {
        putValue(txn, e.leases, "leases", leaseKey(id), frameRecord(*encoded));
      } else {
        deleteValue(txn, e.leases, "leases", leaseKey(id));
      }
    }
    for (const auto& [name, encoded] : batch.locks) {
      if (encoded) {
        putValue(txn, e.locks, "locks", name, frameRecord(*encoded));
      } else {
        deleteValue(txn, e.locks, "locks", name);
      }
    }
    writeHistory(txn, e, batch);
  });
}

void LmdbStore::writeHistory(MDB_txn* txn, Environment& e, const WriteBatch& batch) {
  const uint64_t start = batch.historyStart.value_or(0);
  if (batch.historyStart) {
    putValue(txn, e.meta, "meta", HISTORY_START_KEY, encodeHistoryStart(start));
    // Big-endian revisions: byte order is revision order.
    const std::string below = slotKey(start);
    Cursor cursor(txn, e.history, "history");
    MDB_val key{};
    MDB_val value{};
    int rc = mdb_cursor_get(cursor.get(), &key, &value, MDB_FIRST);
    for (; rc == 0 && toView(key) < below;
         rc = mdb_cursor_get(cursor.get(), &key, &value, MDB_NEXT)) {
      checkWrite(mdb_cursor_del(cursor.get(), 0), "delete from table history");
    }
    if (rc != 0 && rc != MDB_NOTFOUND) throwLmdb("cursor on table history", rc);
  }
  for (const auto& revision : batch.history) {
    if (revision->revision < start) continue;
    putValue(txn, e.history, "history", slotKey(revision->revision),
             encodeHistoryRevision(*revision));
  }
}

void LmdbStore::forEachHistory(const std::function<void(election::RevisionChanges&&)>& fn) {
  Transaction txn(environment_->env, MDB_RDONLY);
  scan(txn.get(), environment_->history, "history", std::nullopt,
       [&](std::string_view key, std::string_view value) {
         RecordName name{"history", key, KeyFormat::SLOT};
         if (key.size() != sizeof(uint64_t)) throwCorrupt(name, "key is not 8 bytes");
         election::RevisionChanges revision = decodeHistoryRevision(value, name);
         if (revision.revision != loadBigEndian(key)) {
           throwCorrupt(name, "holds revision " + std::to_string(revision.revision));
         }
         fn(std::move(revision));
       });
}

void LmdbStore::forEachKey(const std::function<void(std::string_view key, KeyRecord&&)>& fn) {
  Transaction txn(environment_->env, MDB_RDONLY);
  scan(txn.get(), environment_->kv, "kv", std::nullopt,
       [&](std::string_view key, std::string_view value) {
         fn(key, decodeKeyRecord(value, {"kv", key}));
       });
}

void LmdbStore::forEachSession(
    const std::function<void(MemberIndex member, std::string_view encoded)>& fn) {
  Transaction txn(environment_->env, MDB_RDONLY);
  scan(txn.get(), environment_->sessions, "sessions", std::nullopt,
       [&](std::string_view key, std::string_view value) {
         RecordName name{"sessions", key, KeyFormat::MEMBER};
         if (key.size() != sizeof(MemberIndex)) throwCorrupt(name, "key is not 4 bytes");
         std::string_view encoded = unframeRecord(value, name);
         fn(static_cast<MemberIndex>(loadBigEndian(key)), encoded);
       });
}

void LmdbStore::forEachLease(const std::function<void(uint64_t id, std::string_view encoded)>& fn) {
  Transaction txn(environment_->env, MDB_RDONLY);
  scan(txn.get(), environment_->leases, "leases", std::nullopt,
       [&](std::string_view key, std::string_view value) {
         RecordName name{"leases", key, KeyFormat::LEASE};
         if (key.size() != sizeof(uint64_t)) throwCorrupt(name, "key is not 8 bytes");
         fn(loadBigEndian(key), unframeRecord(value, name));
       });
}

void LmdbStore::forEachLock(
    const std::function<void(std::string_view name, std::string_view encoded)>& fn) {
  Transaction txn(environment_->env, MDB_RDONLY);
  scan(txn.get(), environment_->locks, "locks", std::nullopt,
       [&](std::string_view key, std::string_view value) {
         fn(key, unframeRecord(value, {"locks", key}));
       });
}

void LmdbStore::forEachLogEntry(Slot from, const std::function<void(LogEntry&&)>& fn) {
  Transaction txn(environment_->env, MDB_RDONLY);
  std::string fromKey = slotKey(from);
  scan(txn.get(), environment_->log, "log", fromKey,
       [&](std::string_view key, std::string_view value) {
         RecordName name{"log", key, KeyFormat::SLOT};
         if (key.size() != sizeof(Slot)) throwCorrupt(name, "key is not 8 bytes");
         fn(decodeLogRecord(loadBigEndian(key), value, name));
       });
}

uint64_t LmdbStore::usedBytes() const {
  // One read transaction, so the high-water mark and the free list describe the same moment.
  Transaction txn(environment_->env, MDB_RDONLY);
  MDB_envinfo info;
  MDB_stat stat;
  int rc = mdb_env_info(environment_->env, &info);
  if (rc == 0) rc = mdb_env_stat(environment_->env, &stat);
  if (rc != 0) throwLmdb("env_info", rc);
  // LMDB's free list (database 0): each record lists pages freed by one transaction, the first
  // word the count (an IDL). Those pages are reused before the file grows again.
  uint64_t freePages = 0;
  Cursor cursor(txn.get(), 0, "free list");
  MDB_val key{};
  MDB_val value{};
  while ((rc = mdb_cursor_get(cursor.get(), &key, &value, MDB_NEXT)) == 0) {
    if (value.mv_size >= sizeof(size_t)) {
      size_t count = 0;
      std::memcpy(&count, value.mv_data, sizeof(count));
      freePages += count;
    }
  }
  if (rc != MDB_NOTFOUND) throwLmdb("read the free list", rc);
  const uint64_t highWater = static_cast<uint64_t>(info.me_last_pgno) + 1;
  return (highWater - std::min(freePages, highWater)) * stat.ms_psize;
}

uint64_t LmdbStore::mapBytes() const {
  return environment_->mapBytes();
}

void LmdbStore::setStoreLimitBytes(uint64_t storeLimitBytes) {
  options_.storeLimitBytes = storeLimitBytes;
  if (options_.maxMapBytes != 0 || environment_->maxMapBytes == 0) return;  // fixed or unlimited
  uint64_t pageBytes = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  uint64_t cap =
      storeLimitBytes == 0 ? 0 : roundUp(storeLimitBytes + storeLimitBytes / 4, pageBytes);
  if (cap == 0 || cap > environment_->maxMapBytes) environment_->maxMapBytes = cap;
}

uint64_t LmdbStore::maxMapBytes() const {
  return environment_->maxMapBytes;
}

std::string LmdbStore::dataFilePath() const {
  return options_.dataDir + "/" + DATA_FILE;
}

}  // namespace synod::storage
