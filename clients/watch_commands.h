// synodctl's watch, compact and history commands (clients/watch_cli.h runs them).
#pragma once

#include <cstdint>
#include <string>

namespace synod::clients {

/// `watch KEY [--key] [--from REV] [--prev]`: every key starting with KEY (or KEY alone).
struct WatchCommand {
  std::string key;
  bool prefix = true;
  uint64_t fromRevision = 0;  // 0 = from the next change on
  bool prevKv = false;
};

/// `compact REV`: forget the history below REV on every member.
struct CompactCommand {
  uint64_t revision = 0;
};

}  // namespace synod::clients
