@0xea4e5cb2e1cd1cae;
# Test-only interface for tests/daemon/uv_loop_test.cc: Cap'n Proto RPC over sockets driven by the
# libuv loop.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("synod::daemon::test");

interface TestEcho {
  echo @0 (value :UInt64) -> (value :UInt64);

  peerPid @1 () -> (pid :Int32);
  # The pid the server read from SO_PEERCRED when it accepted this connection.

  hang @2 () -> ();
  # Never returns: a call that is pending when the connection goes away.
}
