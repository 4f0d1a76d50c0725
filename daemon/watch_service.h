// The Watches service of the local API (rpc_schema/synod.capnp): watches served by this member's
// WatchHub, compaction (a replicated command) and reads at a past revision from its history.
#pragma once

#include <kj/memory.h>

#include "daemon/node.h"
#include "rpc_schema/synod.capnp.h"

namespace synod::daemon {

// `node` must outlive the service and every Watch handle it hands out.
kj::Own<rpc::Watches::Server> newWatchesService(Node& node);

}  // namespace synod::daemon
