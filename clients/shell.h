// `synodctl shell`: commands from lines, answers and stream events as JSON lines.
#pragma once

#include <kj/async-io.h>

#include <iosfwd>
#include <string>

#include "clients/cli.h"

namespace synod::clients {

/// One input line without its '\n' (and without a '\r' before it). `tooLong`: the line had more
/// than MAX_SHELL_LINE_BYTES; its bytes were dropped and `text` is empty.
struct ShellLine {
  bool tooLong = false;
  std::string text;
};

/// Where the shell reads its lines.
class ShellInput {
 public:
  virtual ~ShellInput() noexcept(false) = default;
  /// The next line; nullptr at end of input. A final line without '\n' still counts. At most one
  /// call may be outstanding.
  virtual kj::Promise<kj::Maybe<ShellLine>> readLine() = 0;
};

/// Reads `in` synchronously: every promise is ready when returned.
kj::Own<ShellInput> shellInputFrom(std::istream& in);
/// Reads `in` on the event loop; a line is answered while other lines are still arriving.
kj::Own<ShellInput> shellInputFrom(kj::AsyncInputStream& in);

/// The shell on `client`'s event loop. Commands run one at a time in input order, each answered
/// by one line. `watch` and `observe` answer `{"ok":true,"stream":N,…}` and keep going: their
/// events arrive as `{"stream":N,"event":{…}}` lines between the answers, whenever the loop runs
/// (while a command waits for its answer, and while the shell waits for input). A stream that ends
/// by itself writes a last `{"stream":N,"end":{…}}`; `cancel N` stops one. Every line is written
/// whole and flushed. At end of input every stream is stopped and 0 returned; 1 when writing to
/// `out` failed.
int runShell(Client& client, ShellInput& in, std::ostream& out, const GlobalOptions& defaults);

}  // namespace synod::clients
