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

  uint64_t acceptedConnections() const { return accepted; }
  const std::string& socketPath() const { return path; }

 private:
  kj::Promise<void> acceptLoop();

  std::string path;
  kj::Own<kj::ConnectionReceiver> listener;
  kj::Own<capnp::TwoPartyServer> server;
  uint64_t accepted = 0;
  kj::Promise<void> accepting = nullptr;
};

}  // namespace synod::clients::testing
