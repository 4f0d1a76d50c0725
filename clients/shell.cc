#include "clients/shell.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <istream>
#include <map>
#include <ostream>
#include <utility>
#include <vector>

#include "clients/watch_cli.h"

namespace synod::clients {

namespace {

/// How often open streams check that their connection still stands.
constexpr uint32_t STREAM_CONNECTION_CHECK_MS = 100;

class IstreamShellInput final : public ShellInput {
 public:
  explicit IstreamShellInput(std::istream& in) : in(in) {}

  kj::Promise<kj::Maybe<ShellLine>> readLine() override {
    ShellLine line;
    std::streambuf* buffer = in.rdbuf();
    bool any = false;
    for (;;) {
      int c = buffer->sbumpc();
      if (c == std::char_traits<char>::eof()) break;
      any = true;
      if (c == '\n') break;
      if (line.text.size() < MAX_SHELL_LINE_BYTES) {
        line.text.push_back(static_cast<char>(c));
      } else {
        line.tooLong = true;
      }
    }
    if (!any) return kj::Maybe<ShellLine>(nullptr);
    if (line.tooLong) line.text.clear();
    if (!line.text.empty() && line.text.back() == '\r') line.text.pop_back();
    return kj::Maybe<ShellLine>(kj::mv(line));
  }

 private:
  std::istream& in;
};

class AsyncShellInput final : public ShellInput {
 public:
  explicit AsyncShellInput(kj::AsyncInputStream& in) : in(in) {}

  kj::Promise<kj::Maybe<ShellLine>> readLine() override {
    KJ_IF_MAYBE (line, take()) {
      return kj::Maybe<ShellLine>(kj::mv(*line));
    }
    if (atEnd) return kj::Maybe<ShellLine>(nullptr);
    return in.tryRead(chunk, 1, sizeof(chunk)).then([this](size_t n) {
      if (n == 0) {
        atEnd = true;
      } else {
        pending.append(chunk, n);
      }
      return readLine();
    });
  }

 private:
  /// A whole line from `pending`, if there is one. Bounds `pending`: the bytes of a line longer
  /// than MAX_SHELL_LINE_BYTES are dropped as they come.
  kj::Maybe<ShellLine> take() {
    size_t end = pending.find('\n');
    if (end == std::string::npos) {
      if (pending.size() > MAX_SHELL_LINE_BYTES) {
        discarding = true;
        pending.clear();
      }
      if (!atEnd || (pending.empty() && !discarding)) return nullptr;
      end = pending.size();
    }
    ShellLine line;
    line.tooLong = discarding;
    discarding = false;
    if (!line.tooLong) line.text = pending.substr(0, end);
    pending.erase(0, end + 1);
    if (line.text.size() > MAX_SHELL_LINE_BYTES) {
      line.tooLong = true;
      line.text.clear();
    }
    if (!line.text.empty() && line.text.back() == '\r') line.text.pop_back();
    return kj::mv(line);
  }

  kj::AsyncInputStream& in;
  std::string pending;
  bool discarding = false;  // the line being read is too long
  bool atEnd = false;
  char chunk[65536];
};

std::string failureJson(const Status& status, bool answered, const Header& header) {
  JsonWriter json;
  json.beginObject().field("ok", false).field("code", codeName(status.code));
  json.field("error", status.message);
  if (answered) json.field("revision", header.revision).field("member", header.member);
  json.endObject();
  return json.str();
}

/// One `synodctl shell` session: runs commands in input order and keeps the open streams.
class Session {
 public:
  Session(Client& client, std::ostream& out, const GlobalOptions& defaults)
      : client(client), out(out), defaults(defaults) {
    auto failed = kj::newPromiseAndFulfiller<void>();
    outputFailed = failed.promise.fork();
    outputFailedFulfiller = kj::mv(failed.fulfiller);
  }

  ~Session() noexcept(false) { streams.clear(); }

  int run(ShellInput& in) {
    for (;;) {
      auto next = in.readLine().exclusiveJoin(
          outputFailed.addBranch().then([]() -> kj::Maybe<ShellLine> { return nullptr; }));
      kj::Maybe<ShellLine> line = next.wait(client.waitScope());
      if (failed) break;
      KJ_IF_MAYBE (got, line) {
        handle(*got);
        // Nobody reads the answers any more: run no further commands whose outcome would be lost.
        if (failed) break;
      } else {
        break;
      }
    }
    streams.clear();
    return failed ? EXIT_REFUSED : EXIT_OK;
  }

 private:
  struct Stream {
    uint64_t id = 0;  // 0 until the command was answered
    bool done = false;
    std::vector<std::string> held;  // events that came before the answer
    Observation observation;
    uint64_t connection = 0;       // AsyncClient::connectionsOpened() when it started
    bool endWhenAnswered = false;  // observe --count: the last change came before the answer
    kj::Own<kj::PromiseFulfiller<void>> answered;  // watch: the daemon accepted or refused it
    kj::Promise<void> task = nullptr;
  };

  /// Writes whole lines at once, flushed. Nothing is written once a write failed.
  void emit(const std::string& lines) {
    if (failed) return;
    out << lines;
    out.flush();
    if (!out) {
      failed = true;
      outputFailedFulfiller->fulfill();
    }
  }

  void emitEvent(Stream& stream, const std::string& eventJson) {
    if (stream.done) return;
    if (stream.id == 0) {
      stream.held.push_back(eventJson);
      return;
    }
    emit("{\"stream\":" + std::to_string(stream.id) + ",\"event\":" + eventJson + "}\n");
  }

  /// The last line of a stream; the stream goes once the current callback has returned.
  void finish(Stream& stream, const std::string& endJson) {
    if (stream.done) return;
    stream.done = true;
    emit("{\"stream\":" + std::to_string(stream.id) + ",\"end\":" + endJson + "}\n");
    uint64_t id = stream.id;
    reaper.add(kj::evalLater([this, id]() { streams.erase(id); }));
  }

  /// Assigns the stream its number and writes the answer, then the events that came before it.
  void accept(Stream& stream, JsonWriter& answer) {
    stream.id = nextStream++;
    stream.connection = client.async().connectionsOpened();
    answer.field("stream", stream.id);
    emit(answer.endObject().str() + "\n");
    auto held = std::move(stream.held);
    for (const auto& event : held)
      emitEvent(stream, event);
  }

  std::string lostJson() const {
    Status status{Code::UNAVAILABLE, "connection to daemon at " + client.socketPath() + " lost"};
    return failureJson(status, false, {});
  }

  /// Resolves once the connection the stream started on is gone.
  kj::Promise<void> connectionLost(Stream& stream) {
    return client.async()
        .timer()
        .afterDelay(STREAM_CONNECTION_CHECK_MS * kj::MILLISECONDS)
        .then([this, &stream]() -> kj::Promise<void> {
          AsyncClient& async = client.async();
          if (!async.connectionAlive() || async.connectionsOpened() != stream.connection) {
            return kj::READY_NOW;
          }
          return connectionLost(stream);
        });
  }

  void handle(const ShellLine& line) {
    const RenderOptions json{true, false};
    if (line.tooLong) {
      emit(renderUsageError("line longer than " + std::to_string(MAX_SHELL_LINE_BYTES) + " bytes",
                            {}, json)
               .out);
      return;
    }
    auto words = splitShellWords(line.text);
    if (!words.ok()) {
      emit(renderUsageError(words.error, {}, json).out);
      return;
    }
    if (words.value->empty()) return;
    if ((*words.value)[0] == "cancel") {
      cancel(*words.value);
      return;
    }
    auto parsed = parseInvocation(*words.value, ParseMode::SHELL_LINE, defaults);
    if (!parsed.ok()) {
      emit(renderUsageError(parsed.error, parsed.hint, json).out);
      return;
    }
    parsed.value->global.json = true;
    if (auto* watch = std::get_if<WatchCommand>(&parsed.value->command)) {
      startWatch(*watch);
    } else if (auto* observe = std::get_if<ObserveCommand>(&parsed.value->command)) {
      startObserve(*observe, parsed.value->global.timeoutMs);
    } else {
      emit(execute(client, *parsed.value, false).out);
    }
  }

  void cancel(const std::vector<std::string>& words) {
    const RenderOptions json{true, false};
    uint64_t id = 0;
    bool number = words.size() == 2 && !words[1].empty() && words[1].size() <= 19;
    for (size_t i = 0; number && i < words[1].size(); ++i) {
      if (words[1][i] < '0' || words[1][i] > '9') number = false;
      id = id * 10 + static_cast<uint64_t>(words[1][i] - '0');
    }
    if (!number) {
      emit(
          renderUsageError("cancel: expected the number of an open stream", "usage: cancel N", json)
              .out);
      return;
    }
    auto it = streams.find(id);
    if (it == streams.end() || it->second->done) {
      emit(renderUsageError("cancel: no open stream " + words[1], {}, json).out);
      return;
    }
    streams.erase(it);
    emit("{\"ok\":true}\n");
  }

  void startWatch(const WatchCommand& command) {
    auto owned = kj::heap<Stream>();
    Stream& stream = *owned;
    auto answer = kj::newPromiseAndFulfiller<void>();
    stream.answered = kj::mv(answer.fulfiller);
    WatchRequest request{command.key, command.prefix, command.fromRevision, command.prevKv};
    // The callbacks refer to `stream`: `ended` goes before it when the watch is refused, and
    // `stream.task` holds it otherwise.
    auto ended =
        runWatch(
            client.async(), client.async().timer(), request,
            [this, &stream](const Result<WatchStarted>& started) {
              if (started.ok()) {
                JsonWriter json;
                json.beginObject().field("ok", true);
                json.field("startRevision", started->startRevision)
                    .field("oldestRevision", started->oldestRevision)
                    .field("compacted", started->compacted);
                json.field("revision", started.header.revision)
                    .field("member", started.header.member);
                accept(stream, json);
              }
              stream.answered->fulfill();
            },
            [this, &stream](WatchUpdate&& update) {
              if (stream.done) return false;
              std::string lines, ignored;
              renderWatchUpdate(update, true, lines, ignored);
              for (size_t start = 0; start < lines.size();) {
                size_t end = lines.find('\n', start);
                emitEvent(stream, lines.substr(start, end - start));
                start = end + 1;
              }
              if (update.kind == WatchUpdate::Kind::CANCELLED) {
                Status status{Code::UNAVAILABLE, "watch cancelled by the daemon: " + update.reason};
                std::string end = failureJson(status, false, {});
                // Resuming from the next revision loses no event.
                end.insert(end.size() - 1,
                           ",\"resumeFrom\":" + std::to_string(update.revision + 1));
                finish(stream, end);
              }
              return !failed;
            })
            .fork();
    answer.promise.exclusiveJoin(ended.addBranch().ignoreResult()).wait(client.waitScope());
    if (stream.id == 0) {
      Result<WatchStarted> result = ended.addBranch().wait(client.waitScope());
      emit(failureJson(result.status, result.answered, result.header) + "\n");
      return;
    }
    stream.task = ended.addBranch()
                      .then([this, &stream](Result<WatchStarted>&& result) {
                        if (!result.ok()) finish(stream, failureJson(result.status, false, {}));
                      })
                      .exclusiveJoin(connectionLost(stream).then(
                          [this, &stream]() { finish(stream, lostJson()); }))
                      .eagerlyEvaluate(nullptr);
    streams.emplace(stream.id, kj::mv(owned));
  }

  void startObserve(const ObserveCommand& command, uint32_t timeoutMs) {
    auto owned = kj::heap<Stream>();
    Stream& stream = *owned;
    uint64_t seen = 0;
    auto observing = client.async()
                         .observe(
                             command.name,
                             [this, &stream, seen, name = command.name,
                              count = command.count](const LockChange& change) mutable {
                               if (stream.done) return;
                               std::string line = renderChange(name, change, true);
                               line.pop_back();
                               emitEvent(stream, line);
                               if (count != 0 && ++seen >= count) {
                                 if (stream.id == 0) {
                                   stream.endWhenAnswered = true;
                                 } else {
                                   finish(stream, "{\"ok\":true}");
                                 }
                               }
                             },
                             timeoutMs)
                         .wait(client.waitScope());
    if (!observing.ok()) {
      emit(failureJson(observing.status, observing.answered, observing.header) + "\n");
      return;
    }
    stream.observation = kj::mv(*observing);
    JsonWriter json;
    json.beginObject().field("ok", true);
    json.field("revision", observing.header.revision).field("member", observing.header.member);
    accept(stream, json);
    if (stream.endWhenAnswered) finish(stream, "{\"ok\":true}");
    stream.task = connectionLost(stream)
                      .then([this, &stream]() { finish(stream, lostJson()); })
                      .eagerlyEvaluate(nullptr);
    streams.emplace(stream.id, kj::mv(owned));
  }

  Client& client;
  std::ostream& out;
  const GlobalOptions& defaults;
  bool failed = false;
  kj::Own<kj::PromiseFulfiller<void>> outputFailedFulfiller;
  kj::ForkedPromise<void> outputFailed = nullptr;
  uint64_t nextStream = 1;
  std::map<uint64_t, kj::Own<Stream>> streams;  // open streams, by number
  struct RethrowErrors : public kj::TaskSet::ErrorHandler {
    void taskFailed(kj::Exception&& exception) override {
      kj::throwFatalException(kj::mv(exception));
    }
  };
  RethrowErrors rethrow;
  kj::TaskSet reaper{rethrow};  // last: its tasks refer to `streams`
};

/// Restores the file status flags of a descriptor (O_NONBLOCK is shared with whoever else holds
/// it, e.g. the terminal's shell).
class SavedFdFlags {
 public:
  explicit SavedFdFlags(int fd) : fd(fd), flags(::fcntl(fd, F_GETFL)) {}
  ~SavedFdFlags() {
    if (flags != -1) ::fcntl(fd, F_SETFL, flags);
  }
  SavedFdFlags(const SavedFdFlags&) = delete;
  SavedFdFlags& operator=(const SavedFdFlags&) = delete;

 private:
  int fd;
  int flags;
};

/// Whether the event loop can wait for `fd` to become readable (epoll refuses regular files and
/// /dev/null).
bool pollable(int fd) {
  struct stat info;
  if (fd < 0 || ::fstat(fd, &info) != 0) return false;
  return S_ISFIFO(info.st_mode) || S_ISSOCK(info.st_mode) ||
         (S_ISCHR(info.st_mode) && ::isatty(fd) == 1);
}

}  // namespace

kj::Own<ShellInput> shellInputFrom(std::istream& in) {
  return kj::heap<IstreamShellInput>(in);
}

kj::Own<ShellInput> shellInputFrom(kj::AsyncInputStream& in) {
  return kj::heap<AsyncShellInput>(in);
}

int runShell(Client& client, ShellInput& in, std::ostream& out, const GlobalOptions& defaults) {
  Session session(client, out, defaults);
  return session.run(in);
}

int runShell(Client& client, std::istream& in, std::ostream& out, const GlobalOptions& defaults) {
  IstreamShellInput input(in);
  return runShell(client, input, out, defaults);
}

int runShellCommand(const GlobalOptions& global, std::istream& in, int inputFd, std::ostream& out) {
  kj::AsyncIoContext io = kj::setupAsyncIo();
  Client client(io, ClientOptions{global.socketPath, global.timeoutMs, DEFAULT_DEADLINE_MARGIN_MS});
  if (!pollable(inputFd)) return runShell(client, in, out, global);
  SavedFdFlags saved(inputFd);
  auto stream = io.lowLevelProvider->wrapInputFd(inputFd);
  AsyncShellInput input(*stream);
  return runShell(client, input, out, global);
}

}  // namespace synod::clients
