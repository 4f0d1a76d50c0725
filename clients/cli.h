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
/// `lock`/`elect -- CMD`: synodctl stopped CMD because the lock or leadership was lost (or its
/// lease could have ended).
inline constexpr int EXIT_LOST = 5;

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
  uint64_t lease = 0;  // --lease ID; 0 = none
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
  bool all = false;       // follow `more` until the last page
  uint64_t revision = 0;  // --rev: read at this past revision (0 = now)
};

struct TxnCommand {
  Txn txn;
};

/// `lease grant|list|info|revoke|keepalive`.
struct LeaseCommand {
  enum class Action { GRANT, LIST, INFO, REVOKE, KEEPALIVE };
  Action action = Action::LIST;
  uint64_t id = 0;            // info, revoke, keepalive
  uint64_t ttlMs = 0;         // grant
  int32_t lockDelayMs = -1;   // grant --lock-delay; -1 = the daemon's default
  bool serializable = false;  // list, info
};

struct LeaderCommand {
  std::string name;
  bool serializable = false;
};

struct CheckFenceCommand {
  std::string name;
  uint64_t fence = 0;
  bool serializable = false;
};

/// `observe NAME [--count N]`: one line per change of the holder; stops after N (0 = never).
struct ObserveCommand {
  std::string name;
  uint64_t count = 0;
};

inline constexpr uint64_t DEFAULT_HOLD_TTL_MS = 10000;
inline constexpr uint32_t DEFAULT_KILL_AFTER_MS = 2000;

/// `lock NAME -- CMD...` and `elect NAME [--value V] -- CMD...`: run CMD only while holding.
struct HoldCommand {
  bool election = false;
  std::string name;
  std::string value;                             // elect --value
  uint64_t ttlMs = DEFAULT_HOLD_TTL_MS;          // of the connection-bound lease (--ttl)
  uint32_t waitTimeoutMs = 0;                    // --timeout-ms: give up waiting; 0 = wait for ever
  uint32_t killAfterMs = DEFAULT_KILL_AFTER_MS;  // SIGTERM, then SIGKILL this much later
  std::vector<std::string> argv;                 // CMD ARGS...

  /// When CMD is stopped: this long before the conservative local deadline of the lease, so
  /// that even a CMD that ignores SIGTERM is killed before the lease can have ended.
  uint64_t stopMarginMs() const { return killAfterMs + ttlMs / 10; }
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

using Command =
    std::variant<GetCommand, PutCommand, DelCommand, ListCommand, TxnCommand, StatusCommand,
                 TransferLeaderCommand, HealthCommand, ShellCommand, HelpCommand, VersionCommand,
                 MembersCommand, LeaseCommand, LeaderCommand, CheckFenceCommand, ObserveCommand,
                 HoldCommand, WatchCommand, CompactCommand>;

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

Rendered renderLease(const LeaseCommand& command, const Result<LeaseInfo>& result,
                     const RenderOptions& options);
Rendered renderLeaseList(const Result<LeaseListReply>& result, const RenderOptions& options);
Rendered renderKeepAlive(const LeaseCommand& command, const Result<KeepAliveReply>& result,
                         const RenderOptions& options);
Rendered renderLeader(const LeaderCommand& command, const Result<LockHolder>& result,
                      const RenderOptions& options);
/// Exit status 0 when the fence is current, 1 when not.
Rendered renderCheckFence(const CheckFenceCommand& command, const Result<CheckFenceReply>& result,
                          const RenderOptions& options);
/// One line of `observe`.
std::string renderChange(const std::string& name, const LockChange& change, bool json);

/// `observe`: writes one line per change to `out`, flushed, until `count` changes (if set) or the
/// connection breaks (exit 3).
int runObserve(Client& client, const ObserveCommand& command, bool json, std::ostream& out,
               std::ostream& err);

/// `lock`/`elect -- CMD` (clients/hold.cc): grant a connection-bound lease, wait for the lock or
/// leadership, run CMD with SYNOD_FENCE, SYNOD_LEASE and SYNOD_LOCK / SYNOD_ELECTION set while it
/// is held, stop it when it is lost. Returns CMD's exit status (128+N for signal N), EXIT_LOST
/// when synodctl stopped it, or the exit status of the failure before it ran.
int runHold(Client& client, const HoldCommand& command, std::ostream& err);

/// Runs one parsed command (not `shell`) against `client` and renders its reply.
Rendered execute(Client& client, const Invocation& invocation, bool tty);

/// Longest line `synodctl shell` accepts; a longer one is answered with an error and skipped.
inline constexpr size_t MAX_SHELL_LINE_BYTES = 8 << 20;

/// `synodctl shell` (clients/shell.cc): one command per line from `in`, one JSON object per line to
/// `out`, flushed after each; blank lines and # comments are skipped. `in` is read synchronously
/// (a stream opened with `watch` or `observe` delivers only while a command runs, and stops at end
/// of input). Returns the exit status: 0 at end of input, 1 when writing to `out` failed (the rest
/// of the input is not run).
int runShell(Client& client, std::istream& in, std::ostream& out, const GlobalOptions& defaults);

/// `synodctl shell` with its own event loop and connection. When `inputFd` is a pipe, socket or
/// terminal it is read on the event loop (streams deliver while the shell waits for input);
/// otherwise (-1, a regular file, /dev/null) `in` is read synchronously.
int runShellCommand(const GlobalOptions& global, std::istream& in, int inputFd, std::ostream& out);

/// All of synodctl: parse `args`, connect, run, write to `out` / `err`; returns the exit status.
/// `inputFd`: the descriptor `in` reads (for `shell`), or -1.
int runSynodctl(const std::vector<std::string>& args, std::istream& in, std::ostream& out,
                std::ostream& err, bool stdoutIsTty, int inputFd = -1);

}  // namespace synod::clients
