// The local API's Leases, Lease, Locks and Observation service objects (rpc_schema/synod.capnp),
// over the Node's AppLeases (daemon/app_leases.h).
//
// Every handler validates its arguments first (timeoutMs, lease ids, lock names, TTLs, lock
// delays) and answers bad ones with INVALID_ARGUMENT without touching state; expected outcomes are
// statuses, never RPC exceptions. Reads (Leases.list/info, Locks.leader/checkFence) are
// linearizable unless `serializable`, like Kv.get.
#pragma once

#include <kj/memory.h>

#include "daemon/node.h"
#include "daemon/uv_loop.h"  // PeerCredentials
#include "rpc_schema/synod.capnp.h"

namespace synod::daemon {

// `node` must outlive every capability derived from these (the daemon closes all connections
// before destroying the node).
kj::Own<rpc::Leases::Server> newLeasesService(Node& node, PeerCredentials caller);
kj::Own<rpc::Locks::Server> newLocksService(Node& node);
// The capability of lease `id`, held through this member. Destroying it (the app dropped it or
// its connection closed) tells AppLeases::capDropped.
rpc::Lease::Client newLeaseCap(Node& node, uint64_t id);

}  // namespace synod::daemon
