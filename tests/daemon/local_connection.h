// One app's connection to a Node's local API over an in-process pipe (no sockets, no libuv), for
// the RPC tests: the daemon's bootstrap on one end, a Cap'n Proto client on the other.
#pragma once

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>

#include "daemon/node.h"
#include "daemon/service.h"

namespace synod::daemon::testing {

struct LocalConnection {
  kj::Own<kj::AsyncIoStream> serverEnd;
  kj::Own<kj::AsyncIoStream> clientEnd;
  kj::Own<capnp::TwoPartyVatNetwork> serverNetwork;
  kj::Own<capnp::RpcSystem<capnp::rpc::twoparty::VatId>> server;
  kj::Own<capnp::TwoPartyClient> client;
  rpc::Synod::Client synod = nullptr;

  LocalConnection(kj::AsyncIoContext& io, Node& node, PeerCredentials caller) {
    auto pipe = io.provider->newTwoWayPipe();
    serverEnd = kj::mv(pipe.ends[0]);
    clientEnd = kj::mv(pipe.ends[1]);
    serverNetwork =
        kj::heap<capnp::TwoPartyVatNetwork>(*serverEnd, capnp::rpc::twoparty::Side::SERVER);
    server = kj::heap(capnp::makeRpcServer(
        *serverNetwork, capnp::Capability::Client(newSynodBootstrap(node, caller))));
    client = kj::heap<capnp::TwoPartyClient>(*clientEnd);
    synod = client->bootstrap().castAs<rpc::Synod>();
  }

  // Closes the connection as an app that exits would: the client first, then the server side.
  // Capabilities obtained from `synod` must be dropped before this runs.
  ~LocalConnection() {
    synod = nullptr;
    client = nullptr;
    server = nullptr;
    serverNetwork = nullptr;
  }
};

}  // namespace synod::daemon::testing
