#include "clients/cli.h"

#include <doctest/doctest.h>

using namespace synod::clients;

namespace {

Invocation parse(std::vector<std::string> args, ParseMode mode = ParseMode::COMMAND_LINE,
                 GlobalOptions defaults = {}) {
  auto parsed = parseInvocation(args, mode, defaults);
  REQUIRE_MESSAGE(parsed.ok(), parsed.error);
  return *parsed.value;
}

/// The usage error for `args`; fails the test if they parse.
std::string usageError(std::vector<std::string> args, ParseMode mode = ParseMode::COMMAND_LINE) {
  auto parsed = parseInvocation(args, mode);
  REQUIRE_FALSE_MESSAGE(parsed.ok(), "parsed although it should not");
  CHECK_FALSE(parsed.hint.empty());
  return parsed.error;
}

template <typename T>
T commandOf(std::vector<std::string> args) {
  Invocation invocation = parse(std::move(args));
  REQUIRE(std::holds_alternative<T>(invocation.command));
  return std::get<T>(invocation.command);
}

bool contains(const std::string& text, std::string_view part) {
  return text.find(part) != std::string::npos;
}

Compare compare(std::string_view text) {
  auto parsed = parseCompare(text);
  REQUIRE_MESSAGE(parsed.ok(), parsed.error);
  return *parsed.value;
}

std::string compareError(std::string_view text) {
  auto parsed = parseCompare(text);
  REQUIRE_FALSE(parsed.ok());
  return parsed.error;
}

TxnOp txnOp(std::string_view text) {
  auto parsed = parseTxnOp(text);
  REQUIRE_MESSAGE(parsed.ok(), parsed.error);
  return *parsed.value;
}

template <typename T>
Result<T> answered(Code code, T reply = {}, std::string message = {}) {
  Result<T> result;
  result.answered = true;
  result.status = Status{code, std::move(message)};
  result.header = Header{12, "n1", 3, 0};
  result.reply = std::move(reply);
  return result;
}

template <typename T>
Result<T> unanswered(Code code, std::string message) {
  Result<T> result;
  result.status = Status{code, std::move(message)};
  return result;
}

const RenderOptions JSON{true, false};
const RenderOptions HUMAN{false, false};
const RenderOptions TTY{false, true};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Global options

TEST_CASE("global options before the command") {
  Invocation invocation =
      parse({"--socket", "/tmp/s.sock", "--json", "--timeout", "250", "status"});
  CHECK(invocation.global.socketPath == "/tmp/s.sock");
  CHECK(invocation.global.json);
  CHECK(invocation.global.timeoutMs == 250);
  CHECK(std::holds_alternative<StatusCommand>(invocation.command));
}

TEST_CASE("global options after the command and in --name=value form") {
  Invocation invocation = parse({"get", "k", "--json", "--socket=/x.sock", "--timeout=7"});
  CHECK(invocation.global.json);
  CHECK(invocation.global.socketPath == "/x.sock");
  CHECK(invocation.global.timeoutMs == 7);
  CHECK(commandOf<GetCommand>({"get", "k", "--json"}).key == "k");
}

TEST_CASE("defaults apply when options are absent") {
  Invocation invocation = parse({"status"});
  CHECK(invocation.global.socketPath.empty());
  CHECK_FALSE(invocation.global.json);
  CHECK(invocation.global.timeoutMs == DEFAULT_TIMEOUT_MS);
}

TEST_CASE("bad global options are usage errors naming the option") {
  CHECK(contains(usageError({"--timeout", "0", "status"}), "--timeout"));
  CHECK(contains(usageError({"--timeout", "-5", "status"}), "--timeout"));
  CHECK(contains(usageError({"--timeout", "abc", "status"}), "got 'abc'"));
  CHECK(contains(usageError({"--timeout", "99999999999999999999999", "status"}), "--timeout"));
  CHECK(contains(usageError({"--timeout"}), "--timeout needs"));
  CHECK(contains(usageError({"--socket"}), "--socket needs a PATH"));
  CHECK(contains(usageError({"--socket=", "status"}), "--socket needs a PATH"));
  CHECK(contains(usageError({"--json=yes", "status"}), "--json takes no value"));
  CHECK(contains(usageError({"--frobnicate", "status"}), "unknown option --frobnicate"));
  CHECK(contains(usageError({"-x", "status"}), "unknown option -x"));
  CHECK(contains(usageError({}), "missing command"));
  CHECK(contains(usageError({"--json"}), "missing command"));
  CHECK(contains(usageError({"frob"}), "unknown command 'frob'"));
  CHECK(contains(usageError({"--", "get", "k"}), "'--'"));
}

TEST_CASE("help and version") {
  CHECK(std::holds_alternative<HelpCommand>(parse({"--help"}).command));
  CHECK(std::holds_alternative<HelpCommand>(parse({"-h"}).command));
  CHECK(std::holds_alternative<HelpCommand>(parse({"help"}).command));
  CHECK(std::holds_alternative<HelpCommand>(parse({"help", "txn"}).command));
  CHECK(std::holds_alternative<HelpCommand>(parse({"get", "--help"}).command));
  CHECK(std::holds_alternative<VersionCommand>(parse({"--version"}).command));
  CHECK(std::holds_alternative<VersionCommand>(parse({"version"}).command));
  for (std::string_view word :
       {"get KEY", "put KEY VALUE", "del KEY", "list [PREFIX]", "txn", "--if", "status", "shell",
        "--json", "--timeout", "--socket", "value | version | createRevision | modRevision",
        "key_b64", "createRevision", "decidedSlot", "lagSlots", "NO_QUORUM", "SYNOD_SOCKET",
        "3  daemon unreachable"}) {
    CAPTURE(word);
    CHECK(contains(helpText(), word));
  }
}

// ---------------------------------------------------------------------------------------------
// Commands

TEST_CASE("get") {
  auto get = commandOf<GetCommand>({"get", "a/b"});
  CHECK(get.key == "a/b");
  CHECK_FALSE(get.serializable);
  CHECK(commandOf<GetCommand>({"get", "a", "--serializable"}).serializable);
  CHECK(commandOf<GetCommand>({"get", "--serializable", "a"}).serializable);
  CHECK(commandOf<GetCommand>({"get", "-5"}).key == "-5");
  CHECK(commandOf<GetCommand>({"get", "--", "--json"}).key == "--json");
  CHECK(commandOf<GetCommand>({"get", ""}).key == "");
  CHECK(contains(usageError({"get"}), "get: expected 1 argument, got 0"));
  CHECK(contains(usageError({"get", "a", "b"}), "got 2"));
  CHECK(contains(usageError({"get", "a", "--serializable=1"}), "takes no value"));
  CHECK(contains(usageError({"get", "a", "--serializable", "--serializable"}), "given twice"));
  CHECK(contains(usageError({"get", "a", "--prefix"}), "unknown option --prefix for 'get'"));
}

TEST_CASE("put") {
  auto put = commandOf<PutCommand>({"put", "k", "v w"});
  CHECK(put.key == "k");
  CHECK(put.value == "v w");
  CHECK(commandOf<PutCommand>({"put", "k", "-1"}).value == "-1");
  CHECK(commandOf<PutCommand>({"put", "k", ""}).value == "");
  CHECK(commandOf<PutCommand>({"put", "k", "--", "--json"}).value == "--json");
  CHECK(commandOf<PutCommand>({"put", "--", "--k", "--v"}).key == "--k");
  CHECK(contains(usageError({"put", "k"}), "expected 2 arguments, got 1"));
  CHECK(contains(usageError({"put", "k", "v", "x"}), "got 3"));
  CHECK(contains(usageError({"put", "k", "--value"}), "put -- before"));
}

TEST_CASE("del") {
  auto del = commandOf<DelCommand>({"del", "k"});
  CHECK(del.key == "k");
  CHECK(del.rangeEnd.empty());
  CHECK(commandOf<DelCommand>({"del", "app/", "--prefix"}).rangeEnd == "app0");
  CHECK(commandOf<DelCommand>({"del", "a", "--range-end", "m"}).rangeEnd == "m");
  CHECK(commandOf<DelCommand>({"del", "a", "--range-end=m"}).rangeEnd == "m");
  CHECK(commandOf<DelCommand>({"del", "a", "--from-key"}).rangeEnd == std::string(1, '\0'));
  CHECK(commandOf<DelCommand>({"del", "", "--prefix"}).rangeEnd == std::string(1, '\0'));
  CHECK(contains(usageError({"del", "a", "--prefix", "--from-key"}), "choose one"));
  CHECK(contains(usageError({"del", "a", "--range-end"}), "--range-end needs a value"));
  CHECK(contains(usageError({"del", "a", "--range-end", ""}), "non-empty END"));
  CHECK(contains(usageError({"del"}), "expected 1 argument"));
}

TEST_CASE("prefixRangeEnd increments the last byte below 0xff") {
  CHECK(prefixRangeEnd("abc") == "abd");
  CHECK(prefixRangeEnd("a\xff") == "b");
  CHECK(prefixRangeEnd("a\xff\xff") == "b");
  CHECK(prefixRangeEnd("\xff\xff") == std::string(1, '\0'));
  CHECK(prefixRangeEnd("") == std::string(1, '\0'));
}

TEST_CASE("list") {
  auto list = commandOf<ListCommand>({"list", "app/"});
  CHECK(list.prefix == "app/");
  CHECK(list.limit == 0);
  CHECK_FALSE(list.all);
  CHECK_FALSE(list.serializable);
  CHECK(commandOf<ListCommand>({"list"}).prefix.empty());
  list = commandOf<ListCommand>(
      {"list", "p", "--limit", "10", "--all", "--serializable", "--start-after", "p/3"});
  CHECK(list.limit == 10);
  CHECK(list.all);
  CHECK(list.serializable);
  CHECK(list.startAfter == "p/3");
  CHECK(commandOf<ListCommand>({"list", "--limit=4294967295"}).limit == 4294967295u);
  CHECK(contains(usageError({"list", "--limit", "4294967296"}), "--limit"));
  CHECK(contains(usageError({"list", "--limit", "x"}), "got 'x'"));
  CHECK(contains(usageError({"list", "--limit"}), "needs a value"));
  CHECK(contains(usageError({"list", "a", "b"}), "expected 0 or 1 arguments"));
}

TEST_CASE("status, shell") {
  CHECK(std::holds_alternative<StatusCommand>(parse({"status"}).command));
  CHECK(std::holds_alternative<ShellCommand>(parse({"shell"}).command));
  CHECK(contains(usageError({"status", "x"}), "expected 0 arguments"));
  CHECK(contains(usageError({"shell", "x"}), "expected 0 arguments"));
}

TEST_CASE("transfer-leader takes an optional member name") {
  CHECK(commandOf<TransferLeaderCommand>({"transfer-leader"}).target.empty());
  CHECK(commandOf<TransferLeaderCommand>({"transfer-leader", "n2"}).target == "n2");
  CHECK(contains(usageError({"transfer-leader", "n1", "n2"}), "expected 0 or 1 arguments"));
  CHECK(contains(usageError({"transfer-leader", ""}), "empty member name"));
}

TEST_CASE("transfer-leader output names the leader, also when refused") {
  Result<TransferReply> moved = answered(Code::OK, TransferReply{"n3"});
  CHECK(contains(renderTransferLeader({"n3"}, moved, JSON).out, R"("leader":"n3")"));
  CHECK(renderTransferLeader({"n3"}, moved, HUMAN).out == "leader: n3\n");
  Result<TransferReply> refused = answered(Code::UNAVAILABLE, TransferReply{"n1"});
  Rendered json = renderTransferLeader({}, refused, JSON);
  CHECK(contains(json.out, R"("leader":"n1")"));
  CHECK(contains(json.out, R"("ok":false)"));
  CHECK(json.exitCode == 3);
  Result<TransferReply> none = answered(Code::TIMEOUT, TransferReply{});
  CHECK(contains(renderTransferLeader({}, none, JSON).out, R"("leader":null)"));
  CHECK(renderTransferLeader({}, none, JSON).exitCode == 4);
}

TEST_CASE("health takes no arguments") {
  commandOf<HealthCommand>({"health"});
  CHECK(contains(usageError({"health", "x"}), "health: expected 0 argument"));
}

TEST_CASE("shell lines: no --socket, no nested shell, defaults carry over") {
  GlobalOptions defaults{"/s.sock", false, 900};
  Invocation invocation = parse({"get", "k"}, ParseMode::SHELL_LINE, defaults);
  CHECK(invocation.global.socketPath == "/s.sock");
  CHECK(invocation.global.timeoutMs == 900);
  CHECK(parse({"--timeout", "5", "get", "k"}, ParseMode::SHELL_LINE, defaults).global.timeoutMs ==
        5);
  CHECK(contains(usageError({"--socket", "/y", "get", "k"}, ParseMode::SHELL_LINE),
                 "--socket cannot change"));
  CHECK(contains(usageError({"shell"}, ParseMode::SHELL_LINE), "inside a shell"));
}

// ---------------------------------------------------------------------------------------------
// txn

TEST_CASE("txn collects compares and both branches in order") {
  auto txn = commandOf<TxnCommand>({"txn", "--if", "value(a) = 1", "--if", "version(b) = 0",
                                    "--then", "put b 2", "--then", "del c", "--else", "del a"})
                 .txn;
  REQUIRE(txn.compares.size() == 2);
  CHECK(txn.compares[0].key == "a");
  CHECK(txn.compares[0].target == Compare::Target::VALUE);
  CHECK(txn.compares[0].value == "1");
  CHECK(txn.compares[1].target == Compare::Target::VERSION);
  CHECK(txn.compares[1].number == 0);
  REQUIRE(txn.success.size() == 2);
  CHECK(txn.success[0].kind == TxnOp::Kind::PUT);
  CHECK(txn.success[0].key == "b");
  CHECK(txn.success[0].value == "2");
  CHECK(txn.success[1].kind == TxnOp::Kind::DELETE);
  CHECK(txn.success[1].key == "c");
  REQUIRE(txn.failure.size() == 1);
  CHECK(txn.failure[0].key == "a");
}

TEST_CASE("txn usage errors name the faulty part") {
  CHECK(contains(usageError({"txn"}), "at least one"));
  CHECK(contains(usageError({"txn", "--if", "value(a) ~ 1"}), "--if 'value(a) ~ 1'"));
  CHECK(contains(usageError({"txn", "--then", "get a"}), "--then 'get a': unknown operation"));
  CHECK(contains(usageError({"txn", "--else", "put a"}), "--else 'put a': put takes KEY VALUE"));
  CHECK(contains(usageError({"txn", "--if"}), "--if needs a value"));
  CHECK(contains(usageError({"txn", "extra", "--then", "put a 1"}), "expected 0 arguments"));
}

TEST_CASE("compare grammar: targets, operators, spacing") {
  CHECK(compare("value(a) = 1").op == Compare::Op::EQUAL);
  CHECK(compare("value(a) == 1").op == Compare::Op::EQUAL);
  CHECK(compare("value(a) != 1").op == Compare::Op::NOT_EQUAL);
  CHECK(compare("value(a) < 1").op == Compare::Op::LESS);
  CHECK(compare("value(a) > 1").op == Compare::Op::GREATER);
  Compare tight = compare("version(k)!=3");
  CHECK(tight.key == "k");
  CHECK(tight.op == Compare::Op::NOT_EQUAL);
  CHECK(tight.number == 3);
  Compare spaced = compare("  modRevision ( k )  >  18446744073709551615 ");
  CHECK(spaced.target == Compare::Target::MOD_REVISION);
  CHECK(spaced.number == 18446744073709551615u);
  CHECK(compare("createRevision(k) = 5").target == Compare::Target::CREATE_REVISION);
  CHECK(compare("create_revision(k) = 5").target == Compare::Target::CREATE_REVISION);
  CHECK(compare("MODREVISION(k) = 5").target == Compare::Target::MOD_REVISION);
  CHECK(compare("Value(k) = x").target == Compare::Target::VALUE);
}

TEST_CASE("compare grammar: quoted keys and operands") {
  Compare c = compare(R"(value("my key") = "two words")");
  CHECK(c.key == "my key");
  CHECK(c.value == "two words");
  CHECK(compare("value('a)b') = x").key == "a)b");
  CHECK(compare("value(a) = ''").value == "");
  CHECK(compare("value('') = x").key == "");
  CHECK(compare("value(a) = =x").value == "=x");
  CHECK(compare(R"(value(a\ b) = c\ d)").value == "c d");
}

TEST_CASE("compare grammar: errors") {
  CHECK(contains(compareError(""), "expected TARGET(KEY)"));
  CHECK(contains(compareError("size(a) = 1"), "unknown target 'size'"));
  CHECK(contains(compareError("value a = 1"), "expected '('"));
  CHECK(contains(compareError("value() = 1"), "missing KEY"));
  CHECK(contains(compareError("value(a b) = 1"), "expected ')'"));
  CHECK(contains(compareError("value(a = 1"), "expected ')'"));
  CHECK(contains(compareError("value('a) = 1"), "unterminated single quote"));
  CHECK(contains(compareError("value(a) 1"), "expected an operator"));
  CHECK(contains(compareError("value(a) <= 1"), "<= is not supported"));
  CHECK(contains(compareError("value(a) >= 1"), ">= is not supported"));
  CHECK(contains(compareError("value(a) ="), "missing OPERAND"));
  CHECK(contains(compareError("value(a) = two words"), "unexpected text after the operand"));
  CHECK(contains(compareError("version(a) = x"), "compares with a number, got 'x'"));
  CHECK(contains(compareError("version(a) = -1"), "got '-1'"));
  CHECK(contains(compareError("version(a) = 18446744073709551616"), "compares with a number"));
  CHECK(contains(compareError("value(a) = \"x"), "unterminated double quote"));
}

TEST_CASE("txn op grammar") {
  TxnOp put = txnOp("put 'a b' \"c d\"");
  CHECK(put.kind == TxnOp::Kind::PUT);
  CHECK(put.key == "a b");
  CHECK(put.value == "c d");
  CHECK(txnOp("put k ''").value == "");
  TxnOp del = txnOp("del k");
  CHECK(del.kind == TxnOp::Kind::DELETE);
  CHECK(del.rangeEnd.empty());
  CHECK(txnOp("delete k").kind == TxnOp::Kind::DELETE);
  CHECK(txnOp("del app/ --prefix").rangeEnd == "app0");
  CHECK(txnOp("del a --range-end m").rangeEnd == "m");
  CHECK(txnOp("del a --range-end=m").rangeEnd == "m");
  CHECK(txnOp("del a --from-key").rangeEnd == std::string(1, '\0'));
  for (std::string_view bad :
       {"", "put", "put k", "put k v x", "get k", "del", "del --prefix", "del a --prefix x",
        "del a --range-end", "del a --range-end ''", "del a --bogus", "put 'k v"}) {
    CAPTURE(bad);
    CHECK_FALSE(parseTxnOp(bad).ok());
  }
}

// ---------------------------------------------------------------------------------------------
// Exit codes and rendering

TEST_CASE("exit codes per INTERFACES.md") {
  CHECK(exitCodeFor(Code::OK) == 0);
  CHECK(exitCodeFor(Code::NOT_FOUND) == 1);
  CHECK(exitCodeFor(Code::COMPARE_FAILED) == 1);
  CHECK(exitCodeFor(Code::NO_SPACE) == 1);
  CHECK(exitCodeFor(Code::INVALID_ARGUMENT) == 2);
  CHECK(exitCodeFor(Code::UNAVAILABLE) == 3);
  CHECK(exitCodeFor(Code::TIMEOUT) == 4);
  CHECK(exitCodeFor(Code::NO_QUORUM) == 4);
  CHECK(exitCodeFor(Code::INTERNAL) == 4);
}

TEST_CASE("code names are the ones scripts match") {
  CHECK(std::string(codeName(Code::NOT_FOUND)) == "NOT_FOUND");
  CHECK(std::string(codeName(Code::COMPARE_FAILED)) == "COMPARE_FAILED");
  CHECK(std::string(codeName(Code::NO_QUORUM)) == "NO_QUORUM");
  CHECK(std::string(codeName(Code::TIMEOUT)) == "TIMEOUT");
  CHECK(std::string(codeName(Code::INVALID_ARGUMENT)) == "INVALID_ARGUMENT");
  CHECK(std::string(codeName(Code::NO_SPACE)) == "NO_SPACE");
  CHECK(std::string(codeName(Code::UNAVAILABLE)) == "UNAVAILABLE");
}

TEST_CASE("usage errors: stderr always, JSON on stdout with --json") {
  Rendered human = renderUsageError("get: expected 1 argument", "usage: synodctl get KEY", HUMAN);
  CHECK(human.exitCode == 2);
  CHECK(human.out.empty());
  CHECK(human.err ==
        "synodctl: get: expected 1 argument\nusage: synodctl get KEY\nTry 'synodctl --help'.\n");
  Rendered json = renderUsageError("bad", "usage: x", JSON);
  CHECK(json.exitCode == 2);
  CHECK(json.out == R"({"ok":false,"code":"INVALID_ARGUMENT","error":"bad","usage":"usage: x"})"
                    "\n");
}

TEST_CASE("render get: raw value for people, newline only on a terminal") {
  KeyValue kv{"k", std::string("v\0\n", 3), 2, 5, 3, 0};
  GetCommand command{"k", false};
  Rendered piped = renderGet(command, answered(Code::OK, kv), HUMAN);
  CHECK(piped.out == std::string("v\0\n", 3));
  CHECK(piped.exitCode == 0);
  CHECK(renderGet(command, answered(Code::OK, kv), TTY).out == std::string("v\0\n\n", 4));
}

TEST_CASE("render get as JSON, UTF-8 and binary") {
  // NUL and control characters are valid UTF-8: a JSON string with \u escapes.
  KeyValue control{"k", std::string("\x00\x01", 2), 1, 1, 1, 0};
  CHECK(renderGet(GetCommand{"k", false}, answered(Code::OK, control), JSON)
            .out.find(R"("value":"\u0000\u0001")") != std::string::npos);
  GetCommand command{"k", false};
  KeyValue text{"k", "h\xc3\xa9", 2, 5, 3, 0};
  CHECK(renderGet(command, answered(Code::OK, text), JSON).out ==
        "{\"ok\":true,\"key\":\"k\",\"value\":\"h\xc3\xa9\",\"createRevision\":2,"
        "\"modRevision\":5,\"version\":3,\"revision\":12,\"member\":\"n1\"}\n");
  KeyValue binary{std::string("\xff", 1), std::string("\xfe\x01", 2), 1, 1, 1, 9};
  CHECK(renderGet(command, answered(Code::OK, binary), JSON).out ==
        R"({"ok":true,"key_b64":"/w==","value_b64":"/gE=","createRevision":1,"modRevision":1,)"
        R"("version":1,"lease":9,"revision":12,"member":"n1"})"
        "\n");
}

TEST_CASE("render get failures") {
  GetCommand command{"missing", false};
  Rendered json = renderGet(command, answered<KeyValue>(Code::NOT_FOUND, {}, "NOT_FOUND"), JSON);
  CHECK(json.exitCode == 1);
  CHECK(json.out ==
        R"({"ok":false,"code":"NOT_FOUND","error":"key \"missing\" not found","key":"missing",)"
        R"("revision":12,"member":"n1"})"
        "\n");
  Rendered human = renderGet(command, answered<KeyValue>(Code::NOT_FOUND, {}, ""), HUMAN);
  CHECK(human.out.empty());
  CHECK(human.err == "synodctl: key \"missing\" not found (NOT_FOUND)\n");
  CHECK(renderGet(command, answered<KeyValue>(Code::NOT_FOUND, {}, "key not found"), HUMAN).err ==
        "synodctl: key \"missing\" not found (NOT_FOUND)\n");
  Rendered unreachable =
      renderGet(command, unanswered<KeyValue>(Code::UNAVAILABLE, "daemon unreachable at /x"), JSON);
  CHECK(unreachable.exitCode == 3);
  CHECK(unreachable.out ==
        R"({"ok":false,"code":"UNAVAILABLE","error":"daemon unreachable at /x","key":"missing"})"
        "\n");
  CHECK(renderGet(command, unanswered<KeyValue>(Code::TIMEOUT, "slow"), HUMAN).exitCode == 4);
}

TEST_CASE("render put, del") {
  PutCommand put{"k", "v"};
  CHECK(renderPut(put, answered<Empty>(Code::OK), JSON).out ==
        R"({"ok":true,"revision":12,"member":"n1"})"
        "\n");
  CHECK(renderPut(put, answered<Empty>(Code::OK), HUMAN).out == "OK (revision 12)\n");
  Rendered noQuorum = renderPut(put, answered<Empty>(Code::NO_QUORUM, {}, "no quorum"), JSON);
  CHECK(noQuorum.exitCode == 4);
  CHECK(contains(noQuorum.out, R"("code":"NO_QUORUM")"));
  Rendered noSpace = renderPut(put, answered<Empty>(Code::NO_SPACE, {}, "store full"), HUMAN);
  CHECK(noSpace.exitCode == 1);
  CHECK(noSpace.err == "synodctl: store full (NO_SPACE)\n");
  CHECK(
      renderPut(put, answered<Empty>(Code::INVALID_ARGUMENT, {}, "key too long"), HUMAN).exitCode ==
      2);

  DelCommand del{"k", {}};
  CHECK(renderDel(del, answered(Code::OK, DeleteReply{2}), JSON).out ==
        R"({"ok":true,"deleted":2,"revision":12,"member":"n1"})"
        "\n");
  CHECK(renderDel(del, answered(Code::OK, DeleteReply{0}), HUMAN).out ==
        "deleted 0 (revision 12)\n");
}

TEST_CASE("render list: aligned table, more note, JSON kvs") {
  ListCommand command;
  ListReply reply;
  reply.kvs.push_back(KeyValue{"a", "1", 2, 2, 1, 0});
  reply.kvs.push_back(KeyValue{"bee\n", std::string("\xff", 1), 3, 10, 4, 0});
  reply.more = true;
  Rendered human = renderList(command, answered(Code::OK, reply), HUMAN);
  CHECK(human.out ==
        "KEY    VERSION  CREATE_REV  MOD_REV  VALUE\n"
        "a      1        2           2        1\n"
        "bee\\n  4        3           10       \\xff\n");
  CHECK(human.err == "more keys remain: continue with --start-after 'bee\n', or use --all\n");
  CHECK(
      renderList(command, answered(Code::OK, reply), JSON).out ==
      R"({"ok":true,"kvs":[{"key":"a","value":"1","createRevision":2,"modRevision":2,"version":1},)"
      R"({"key":"bee\n","value_b64":"/w==","createRevision":3,"modRevision":10,"version":4}],)"
      R"("more":true,"revision":12,"member":"n1"})"
      "\n");
  Rendered empty = renderList(command, answered(Code::OK, ListReply{}), HUMAN);
  CHECK(empty.out.empty());
  CHECK(empty.err.empty());
  CHECK(renderList(command, answered(Code::OK, ListReply{}), JSON).out ==
        R"({"ok":true,"kvs":[],"more":false,"revision":12,"member":"n1"})"
        "\n");
}

TEST_CASE("render txn: compare failed is exit 1 with succeeded false") {
  TxnCommand command;
  CHECK(renderTxn(command, answered(Code::OK, TxnReply{true}), JSON).out ==
        R"({"ok":true,"succeeded":true,"revision":12,"member":"n1"})"
        "\n");
  CHECK(renderTxn(command, answered(Code::OK, TxnReply{true}), HUMAN).out ==
        "SUCCEEDED (revision 12)\n");
  auto failed = answered(Code::COMPARE_FAILED, TxnReply{false}, "the compares did not hold");
  Rendered json = renderTxn(command, failed, JSON);
  CHECK(json.exitCode == 1);
  CHECK(json.out == R"({"ok":false,"code":"COMPARE_FAILED","error":"the compares did not hold",)"
                    R"("succeeded":false,"revision":12,"member":"n1"})"
                    "\n");
  Rendered human = renderTxn(command, failed, HUMAN);
  CHECK(human.exitCode == 1);
  CHECK(human.err == "synodctl: the compares did not hold (COMPARE_FAILED)\n");
  CHECK_FALSE(contains(renderTxn(command, answered<TxnReply>(Code::TIMEOUT, {}, "t"), JSON).out,
                       "succeeded"));
}

// n1 reported (this member, current); n3 unreachable, never reported.
std::vector<MemberStatus> twoMembers() {
  MemberStatus n1;
  n1.name = "n1";
  n1.address = "127.0.0.1:7101";
  n1.role = "follower";
  n1.reachable = true;
  n1.reported = true;
  n1.ballotRound = 4;
  n1.ballotMember = 2;
  n1.leader = "n3";
  n1.decidedSlot = 10;
  n1.appliedSlot = 9;
  n1.revision = 12;
  n1.dbSizeBytes = 1536;
  n1.storeLimitBytes = 1 << 30;
  n1.commitP50Us = 800;
  n1.commitP99Us = 2500;
  n1.incarnation = 3;
  n1.uptimeMs = 5000;
  n1.stateDigest = 0xab;
  n1.slotsBehind = 1;
  MemberStatus n3;
  n3.name = "n3";
  n3.address = "127.0.0.1:7103";
  n3.role = "unknown";
  n3.lagSlots = 5;
  n3.stale = true;
  return {n1, n3};
}

const std::string TWO_MEMBERS_JSON =
    R"("members":[{"name":"n1","address":"127.0.0.1:7101","role":"follower","reachable":true,)"
    R"("lagSlots":0,"reported":true,"stale":false,"reportAgeMs":0,"ballot":{"round":4,"member":2},)"
    R"("leader":"n3","decidedSlot":10,"appliedSlot":9,"revision":12,"leaseLeftMs":0,)"
    R"("dbSizeBytes":1536,"storeLimitBytes":1073741824,"commitP50Us":800,"commitP99Us":2500,)"
    R"("incarnation":3,"uptimeMs":5000,"stateDigest":"00000000000000ab","recovering":false,)"
    R"("recoveryStage":null,"snapshotFrom":null,"snapshotBytesReceived":0,"snapshotBytesTotal":0,)"
    R"("slotsBehind":1},)"
    R"({"name":"n3","address":"127.0.0.1:7103","role":"unknown","reachable":false,"lagSlots":5,)"
    R"("reported":false,"stale":true,"reportAgeMs":null,"ballot":null,"leader":null,)"
    R"("decidedSlot":null,"appliedSlot":null,"revision":null,"leaseLeftMs":null,)"
    R"("dbSizeBytes":null,"storeLimitBytes":null,"commitP50Us":null,"commitP99Us":null,)"
    R"("incarnation":null,"uptimeMs":null,"stateDigest":null,"recovering":null,)"
    R"("recoveryStage":null,"snapshotFrom":null,"snapshotBytesReceived":null,)"
    R"("snapshotBytesTotal":null,"slotsBehind":null}])";

const std::string TWO_MEMBERS_TABLE =
    "NAME  ROLE      BALLOT  DECIDED  APPLIED  LAG  LEASE_MS  DB_SIZE  COMMIT_P50/P99_US  "
    "DIGEST            REPORT_AGE_MS  REACHABLE  CATCH_UP\n"
    "n1    follower  4.2     10       9        0    -         1.5 KiB  800/2500           "
    "00000000000000ab  0              yes        1 slot behind\n"
    "n3    unknown   -       -        -        5    -         -        -                  "
    "-                 none           no         -\n";

TEST_CASE("render status") {
  StatusInfo info;
  info.member = "n1";
  info.role = "follower";
  info.ballotRound = 4;
  info.ballotMember = 2;
  info.decidedSlot = 10;
  info.appliedSlot = 9;
  info.revision = 12;
  info.clusterId = "c";
  info.members.push_back(twoMembers()[0]);
  info.members.push_back(twoMembers()[1]);
  info.leaseLeftMs = 0;
  info.commitP50Us = 800;
  info.commitP99Us = 2500;
  info.stateDigest = 0x00ab;
  Rendered json = renderStatus(answered(Code::OK, info), JSON);
  CHECK(json.out ==
        R"({"ok":true,"revision":12,"member":"n1","clusterId":"c","role":"follower",)"
        R"("ballot":{"round":4,"member":2},"leader":null,"decidedSlot":10,"appliedSlot":9,)" +
            TWO_MEMBERS_JSON +
            R"(,"incarnation":0,"dbSizeBytes":0,"storeLimitBytes":0,"version":"","uptimeMs":0,)"
            R"("leaseLeftMs":0,"commitP50Us":800,"commitP99Us":2500,)"
            R"("stateDigest":"00000000000000ab"})"
            "\n");
  info.leader = "n3";
  CHECK(contains(renderStatus(answered(Code::OK, info), JSON).out, R"("leader":"n3")"));
  Rendered human = renderStatus(answered(Code::OK, info), HUMAN);
  CHECK(contains(human.out, "role          follower\n"));
  CHECK(contains(human.out, "ballot        round 4, member 2\n"));
  CHECK(contains(human.out, "leader        n3\n"));
  CHECK(contains(human.out, "decided slot  10\n"));
  CHECK(contains(human.out, "applied slot  9\n"));
  CHECK(contains(human.out, "fsync p50/99  800 / 2500 us\n"));
  CHECK(contains(human.out, "state digest  00000000000000ab\n"));
  CHECK(contains(human.out, TWO_MEMBERS_TABLE));
  CHECK(renderStatus(unanswered<StatusInfo>(Code::UNAVAILABLE, "x"), HUMAN).exitCode == 3);
}

TEST_CASE("render members: the table alone, every field in JSON, null when never reported") {
  StatusInfo info;
  info.members = twoMembers();
  Result<StatusInfo> result = answered(Code::OK, info);
  result.header.revision = 12;
  result.header.member = "n1";
  CHECK(renderMembers(result, JSON).out == R"({"ok":true,)" + TWO_MEMBERS_JSON +
                                               R"(,"revision":12,"member":"n1"})"
                                               "\n");
  Rendered human = renderMembers(result, HUMAN);
  CHECK(human.out == TWO_MEMBERS_TABLE);
  CHECK(human.exitCode == 0);
  Rendered failed = renderMembers(unanswered<StatusInfo>(Code::UNAVAILABLE, "down"), JSON);
  CHECK(contains(failed.out, R"("ok":false)"));
  CHECK(failed.exitCode == 3);
  CHECK(digestHex(0xfedcba9876543210ull) == "fedcba9876543210");
}

TEST_CASE("CATCH_UP: recovering, a snapshot arriving, slots behind, or nothing") {
  MemberStatus member = twoMembers()[0];
  CHECK(catchUpCell(member) == "1 slot behind");
  member.slotsBehind = 0;
  CHECK(catchUpCell(member) == "-");
  member.slotsBehind = 4200;
  CHECK(catchUpCell(member) == "4200 slots behind");
  member.snapshotFrom = "n2";
  member.snapshotBytesReceived = 3250586;  // 3.1 MiB
  member.snapshotBytesTotal = 10485760;    // 10.0 MiB
  CHECK(catchUpCell(member) == "snapshot 3.1/10.0 MiB from n2");
  member.snapshotBytesReceived = 0;
  member.snapshotBytesTotal = 900;
  CHECK(catchUpCell(member) == "snapshot 0/900 B from n2");
  member.snapshotBytesTotal = 0;  // before the first chunk told the size
  member.snapshotBytesReceived = 0;
  CHECK(catchUpCell(member) == "snapshot 0 B from n2");
  member.recovering = true;
  member.recoveryStage = "catching up to slot 90 before voting";
  member.snapshotBytesReceived = 1536;
  member.snapshotBytesTotal = 4096;
  CHECK(catchUpCell(member) == "recovering: snapshot 1.5/4.0 KiB from n2");
  member.snapshotFrom.clear();
  CHECK(catchUpCell(member) == "recovering: catching up to slot 90 before voting");
  member.recoveryStage = "tab\there";  // a peer's text is escaped in a table
  CHECK(catchUpCell(member) == "recovering: tab\\there");
  member.reported = false;
  CHECK(catchUpCell(member) == "-");
}

TEST_CASE("render members: catch-up fields in JSON and the table") {
  MemberStatus n2 = twoMembers()[0];
  n2.name = "n2";
  n2.recovering = true;
  n2.recoveryStage = "waiting for answers from 2 other members (1 so far)";
  n2.snapshotFrom = "n3";
  n2.snapshotBytesReceived = 3250586;
  n2.snapshotBytesTotal = 10485760;
  n2.slotsBehind = 78;
  StatusInfo info;
  info.members = {n2};
  Result<StatusInfo> result = answered(Code::OK, info);
  std::string json = renderMembers(result, JSON).out;
  CHECK(contains(json, R"("stateDigest":"00000000000000ab","recovering":true,)"
                       R"x("recoveryStage":"waiting for answers from 2 other members (1 so far)",)x"
                       R"("snapshotFrom":"n3","snapshotBytesReceived":3250586,)"
                       R"("snapshotBytesTotal":10485760,"slotsBehind":78})"));
  std::string table = renderMembers(result, HUMAN).out;
  CHECK(contains(table, "REACHABLE  CATCH_UP\n"));
  CHECK(contains(table, "  yes        recovering: snapshot 3.1/10.0 MiB from n3\n"));
}

TEST_CASE("members parses, also in the shell, and is in --help") {
  auto parsed = parseInvocation({"members"}, ParseMode::COMMAND_LINE);
  REQUIRE(parsed.ok());
  CHECK(std::holds_alternative<MembersCommand>(parsed.value->command));
  CHECK(parseInvocation({"members"}, ParseMode::SHELL_LINE).ok());
  CHECK_FALSE(parseInvocation({"members", "extra"}, ParseMode::COMMAND_LINE).ok());
  CHECK(contains(helpText(), "  members\n"));
  CHECK(contains(helpText(), "commitP99Us"));
  for (const char* field : {"recovering", "recoveryStage", "snapshotFrom", "snapshotBytesReceived",
                            "snapshotBytesTotal", "slotsBehind", "CATCH_UP"})
    CHECK(contains(helpText(), field));
}
