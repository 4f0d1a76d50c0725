// An in-memory stand-in for the daemon's local API, serving rpc_schema/synod.capnp on a real Unix
// socket from the test's own KJ event loop. It keeps a plain map and a revision counter — enough
// to check what the client sends and how it renders every kind of answer — and can be told to
// hang, to answer every Kv call with a given status, or to drop every connection.
#pragma once

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>

#include <cstdint>
#include <map>
#include <string>

#include "rpc_schema/synod.capnp.h"

namespace synod::clients::testing {

struct FakeEntry {
  std::string value;
  uint64_t createRevision = 0;
  uint64_t modRevision = 0;
  uint64_t version = 0;
  uint64_t lease = 0;
};

struct FakeLease {
  uint64_t ttlMs = 0;
  bool detached = false;
  int32_t lockDelayMs = -1;
  uint64_t fence = 0;  // the revision of the grant
  uint64_t epoch = 1;  // keepAlives + 1
  bool attached = false;
};

struct FakeLock {
  uint64_t holder = 0;  // lease; 0 = free
  std::string value;
  uint64_t fence = 0;
};

/// What the fake holds and how it behaves; tests read and change it between calls.
struct FakeState {
  std::map<std::string, FakeEntry> kvs;  // std::string orders bytes as unsigned: byte order
  uint64_t revision = 1;
  std::string member = "fake1";

  bool hang = false;                        // Kv and Admin calls never answer
  bool unimplemented = false;               // Kv calls throw UNIMPLEMENTED
  kj::Maybe<rpc::Status::Code> forcedCode;  // every Kv call answers with this status
  uint32_t maxListLimit = 10000;
  bool ready = true;  // Admin.health's answer
  std::string notReadyReason = "waiting for a quorum: 1 of 3 members reachable";

  // Leases and locks. Leases end only by revoke (here, by the app, or as their connection-bound
  // capability goes); the fake keeps no TTL clock.
  std::map<uint64_t, FakeLease> leases;
  std::map<std::string, FakeLock> locks;  // only held locks
  uint64_t nextLeaseId = 7000;
  uint64_t leaseTtlMinMs = 50;
  uint64_t leaseTtlMaxMs = 600000;
  kj::Maybe<uint64_t> keepAliveRemainingMs;    // keepAlive's answer; default the TTL
  kj::Maybe<rpc::Status::Code> keepAliveCode;  // keepAlive answers with this status
  bool hangKeepAlive = false;                  // keepAlive never answers
  uint64_t keepAlives = 0;
  uint64_t revokes = 0;    // leases ended by revoke or by their connection
  uint64_t observers = 0;  // observations running

  // What the last call carried.
  uint32_t lastTimeoutMs = 0;
  bool lastSerializable = false;
  uint64_t calls = 0;
};

class FakeDaemon {
 public:
  /// Binds and listens on `socketPath` (removing a stale file first).
  FakeDaemon(kj::AsyncIoContext& io, std::string socketPath);
  ~FakeDaemon() noexcept(false);

  FakeState state;

  /// Drops every open connection, as a daemon restart would; keeps listening.
  void dropConnections();

  /// Ends lease `id` as the group would: its keys are deleted, its locks pass on, its waits fail.
  /// False when there is no such lease.
  bool revokeLease(uint64_t id);

  class Runtime;

  uint64_t acceptedConnections() const { return accepted; }
  const std::string& socketPath() const { return path; }

 private:
  kj::Promise<void> acceptLoop();

  std::string path;
  kj::Own<Runtime> runtime;  // before the server: outlives the capabilities it serves
  kj::Own<kj::ConnectionReceiver> listener;
  kj::Own<capnp::TwoPartyServer> server;
  uint64_t accepted = 0;
  kj::Promise<void> accepting = nullptr;
};

}  // namespace synod::clients::testing
