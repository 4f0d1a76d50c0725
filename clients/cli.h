// synodctl's logic: argument parsing, the txn grammar, rendering replies for people and as JSON,
// exit codes, and the shell mode. main() only wires stdin/stdout and a Client to these.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "clients/synod_client.h"
#include "clients/text.h"
#include "clients/watch_commands.h"

namespace synod::clients {

/// Exit statuses of synodctl (INTERFACES.md).
inline constexpr int EXIT_OK = 0;
inline constexpr int EXIT_REFUSED = 1;      // not found, compare failed, no space
inline constexpr int EXIT_USAGE = 2;        // bad arguments (also INVALID_ARGUMENT from the daemon)
inline constexpr int EXIT_UNAVAILABLE = 3;  // daemon unreachable or connection lost
inline constexpr int EXIT_UNKNOWN = 4;      // timeout, no quorum, internal error: outcome unknown

int exitCodeFor(Code code);

/// `synodctl health`: the daemon answered but cannot serve linearizable requests yet.
inline constexpr int EXIT_NOT_READY = 1;

struct GlobalOptions {
  std::string socketPath;  // empty: defaultSocketPath()
  bool json = false;
  uint32_t timeoutMs = DEFAULT_TIMEOUT_MS;
};

struct GetCommand {
  std::string key;
  bool serializable = false;
  uint64_t revision = 0;  // --rev: read at this past revision (0 = now)
};

struct PutCommand {
  std::string key;
  std::string value;
};

struct DelCommand {
  std::string key;
  std::string rangeEnd;  // empty: `key` alone
};

struct ListCommand {
  std::string prefix;
  uint32_t limit = 0;  // page size; 0 = the daemon's maximum
  std::string startAfter;
  bool serializable = false;
  bool all = false;  // follow `more` until the last page
  uint64_t revision = 0;  // --rev: read at this past revision (0 = now)
};

struct TxnCommand {
  Txn txn;
};

struct StatusCommand {};
struct MembersCommand {};
struct TransferLeaderCommand {
  std::string target;  // empty: any up-to-date follower
};
struct HealthCommand {};
struct ShellCommand {};
struct HelpCommand {};
struct VersionCommand {};

using Command = std::variant<GetCommand, PutCommand, DelCommand, ListCommand, TxnCommand,
                             StatusCommand, TransferLeaderCommand, HealthCommand, ShellCommand,
                             HelpCommand, VersionCommand, MembersCommand, WatchCommand,
                             CompactCommand>;

struct Invocation {
  GlobalOptions global;
  Command command;
};

enum class ParseMode {
  COMMAND_LINE,  // argv of synodctl
  SHELL_LINE,    // one line of `synodctl shell`: no --socket, no nested shell
};

/// Parses `args` (without the program name). `defaults` are the global options in force before
/// the words (for a shell line: those the shell was started with). Global options may come before
/// or after the command. After the command only words starting with "--" are options; "--" ends
/// options, so `put k -- --json` stores "--json".
Parsed<Invocation> parseInvocation(const std::vector<std::string>& args, ParseMode mode,
                                   const GlobalOptions& defaults = {});

/// One txn condition: `TARGET(KEY) OP OPERAND`, TARGET value | version | createRevision |
/// modRevision (case and '_' ignored), OP = == != < >, KEY and OPERAND shell-quoted words
/// (a key containing spaces or parentheses must be quoted). Numeric targets need a decimal
/// operand.
Parsed<Compare> parseCompare(std::string_view text);

/// One txn write: `put KEY VALUE` or `del KEY [--prefix | --range-end END | --from-key]`, split
/// into shell words.
Parsed<TxnOp> parseTxnOp(std::string_view text);

/// The full `synodctl --help` text.
const std::string& helpText();

/// What one command produced: the bytes for stdout and stderr, and the exit status.
struct Rendered {
  std::string out;
  std::string err;
  int exitCode = EXIT_OK;
};

struct RenderOptions {
  bool json = false;
  bool tty = false;  // stdout is a terminal: `get` adds a newline after the raw value
};

Rendered renderUsageError(const std::string& error, const std::string& hint,
                          const RenderOptions& options);
Rendered renderGet(const GetCommand& command, const Result<KeyValue>& result,
                   const RenderOptions& options);
Rendered renderPut(const PutCommand& command, const Result<Empty>& result,
                   const RenderOptions& options);
Rendered renderDel(const DelCommand& command, const Result<DeleteReply>& result,
                   const RenderOptions& options);
Rendered renderList(const ListCommand& command, const Result<ListReply>& result,
                    const RenderOptions& options);
Rendered renderTxn(const TxnCommand& command, const Result<TxnReply>& result,
                   const RenderOptions& options);
Rendered renderStatus(const Result<StatusInfo>& result, const RenderOptions& options);
/// `members`: the member table of a status reply alone.
Rendered renderMembers(const Result<StatusInfo>& result, const RenderOptions& options);
/// A state digest as JSON and tables show it: 16 lowercase hex digits (a JSON number could not
/// hold 64 bits exactly for every reader).
std::string digestHex(uint64_t digest);
/// The CATCH_UP cell of a member row: "-" when there is nothing to tell (or no report);
/// "snapshot 3.1/10.0 MiB from n2" while a snapshot arrives (prefixed "recovering: " during a
/// recovery); "recovering: STAGE"; else "N slots behind" when N > 0.
std::string catchUpCell(const MemberStatus& member);
Rendered renderTransferLeader(const TransferLeaderCommand& command,
                              const Result<TransferReply>& result, const RenderOptions& options);
/// Exit status EXIT_OK when ready, EXIT_NOT_READY when live but not ready, EXIT_UNAVAILABLE when
/// the daemon did not answer (unreachable, or no answer within the timeout).
Rendered renderHealth(const Result<HealthReply>& result, const RenderOptions& options);

/// Runs one parsed command (not `shell`) against `client` and renders its reply.
Rendered execute(Client& client, const Invocation& invocation, bool tty);

/// Longest line `synodctl shell` accepts; a longer one is answered with an error and skipped.
inline constexpr size_t MAX_SHELL_LINE_BYTES = 8 << 20;

/// `synodctl shell`: one command per line from `in`, one JSON object per line to `out`, flushed
/// after each; blank lines and # comments are skipped. Returns the exit status: 0 at end of
/// input, 1 when writing to `out` failed (the rest of the input is not run).
int runShell(Client& client, std::istream& in, std::ostream& out, const GlobalOptions& defaults);

/// All of synodctl: parse `args`, connect, run, write to `out` / `err`; returns the exit status.
int runSynodctl(const std::vector<std::string>& args, std::istream& in, std::ostream& out,
                std::ostream& err, bool stdoutIsTty);

}  // namespace synod::clients
