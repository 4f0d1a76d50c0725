// synodctl watch and compact, and reads at a past revision (get/list --rev).
#pragma once

#include <iosfwd>
#include <string>

#include "clients/cli.h"
#include "clients/watch_client.h"

namespace synod::clients {

/// The output lines of one watch message: people get one line per event
/// ("12 PUT app/x 1", "13 DELETE app/x", "(was OLD)" appended with --prev), snapshot keys as
/// "R SNAPSHOT KEY VALUE" and "R SNAPSHOT-END", "R COMPACTED oldest N"; progress prints nothing.
/// JSON: one object per line, `"type"` put / delete / progress / compacted / snapshot /
/// snapshotEnd / cancelled with `"revision"` and the key's fields (as `get`), `"prevValue"` and
/// `"prevModRevision"` with --prev, `"oldestRevision"` (compacted) and `"reason"` (cancelled).
/// A cancel is written to `err` for people.
void renderWatchUpdate(const WatchUpdate& update, bool json, std::string& out, std::string& err);

/// Runs `watch` until the daemon cancels it (exit 1, the reason and the revision to resume from
/// on stderr), the connection is lost (3), the start is refused (exitCodeFor), or writing to
/// `out` fails (1).
int runWatchCommand(const WatchCommand& command, const GlobalOptions& global, std::ostream& out,
                    std::ostream& err);

Rendered renderCompact(const Result<CompactReply>& result, const RenderOptions& options);

/// get/list at a past revision: every page of `list --all` is read at the same revision.
Result<KeyValue> getAtRevision(Client& client, const GetCommand& command, uint32_t timeoutMs);
Result<ListReply> listAtRevision(Client& client, const ListCommand& command, uint32_t timeoutMs);

}  // namespace synod::clients
