// The local API's service objects (rpc_schema/synod.capnp). One Synod bootstrap per connection,
// carrying the caller's credentials as the kernel reported them (SO_PEERCRED); everything else
// hangs off it, so a dropped connection drops every capability the app held.
//
// Every handler validates its arguments first and answers bad ones with INVALID_ARGUMENT without
// touching state; expected outcomes are statuses, never RPC exceptions.
#pragma once

#include <sys/types.h>

#include <kj/memory.h>

#include "daemon/node.h"
#include "daemon/uv_loop.h"  // PeerCredentials
#include "rpc_schema/synod.capnp.h"

namespace synod::daemon {

// Creates the bootstrap capability for one connection. `node` must outlive every capability
// derived from it (the daemon closes all connections before destroying the node).
kj::Own<rpc::Synod::Server> newSynodBootstrap(Node& node, PeerCredentials caller);

}  // namespace synod::daemon
