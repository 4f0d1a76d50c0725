@0xbed48331844ae1d5;
# Messages between members. Filled in by the multi-member group work; every message carries a
# protocol version and an unknown version is refused, never guessed.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("synod::peer");

using Records = import "records.capnp";

const protocolVersion :UInt32 = 1;

struct Hello {
  protocolVersion @0 :UInt32;
  clusterId @1 :Text;
  member @2 :Text;
  settingsHash @3 :UInt64;  # hash of what must agree: cluster id, sorted peers, timing
}
