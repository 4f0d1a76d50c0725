#include "clients/watch_cli.h"

#include <kj/async-io.h>

#include <ostream>

namespace synod::clients {

namespace {

void kvFields(JsonWriter& json, const KeyValue& kv) {
  json.bytesField("key", kv.key).bytesField("value", kv.value);
  json.field("createRevision", kv.createRevision)
      .field("modRevision", kv.modRevision)
      .field("version", kv.version);
  if (kv.lease != 0) json.field("lease", kv.lease);
}

void eventLine(const WatchEvent& event, bool json, std::string& out) {
  const uint64_t revision = event.kv.modRevision;
  if (json) {
    JsonWriter line;
    line.beginObject().field("type", event.put ? "put" : "delete").field("revision", revision);
    if (event.put) {
      kvFields(line, event.kv);
    } else {
      line.bytesField("key", event.kv.key);
    }
    if (event.hasPrev) {
      line.bytesField("prevValue", event.prev.value);
      line.field("prevModRevision", event.prev.modRevision);
    }
    line.endObject();
    out += line.str() + "\n";
    return;
  }
  out += std::to_string(revision) + (event.put ? " PUT " : " DELETE ") + displayText(event.kv.key);
  if (event.put) out += " " + displayText(event.kv.value);
  if (event.hasPrev) out += " (was " + displayText(event.prev.value) + ")";
  out += "\n";
}

std::string typed(const char* type, uint64_t revision) {
  JsonWriter line;
  line.beginObject().field("type", type).field("revision", revision).endObject();
  return line.str() + "\n";
}

}  // namespace

void renderWatchUpdate(const WatchUpdate& update, bool json, std::string& out, std::string& err) {
  const std::string revision = std::to_string(update.revision);
  switch (update.kind) {
    case WatchUpdate::Kind::EVENTS:
      for (const auto& event : update.events)
        eventLine(event, json, out);
      return;
    case WatchUpdate::Kind::PROGRESS:
      if (json) out += typed("progress", update.revision);
      return;
    case WatchUpdate::Kind::COMPACTED:
      if (json) {
        JsonWriter line;
        line.beginObject().field("type", "compacted").field("revision", update.revision);
        line.field("oldestRevision", update.oldestRevision).endObject();
        out += line.str() + "\n";
      } else {
        out += revision + " COMPACTED oldest " + std::to_string(update.oldestRevision) + "\n";
      }
      return;
    case WatchUpdate::Kind::SNAPSHOT:
      for (const auto& kv : update.kvs) {
        if (json) {
          JsonWriter line;
          line.beginObject().field("type", "snapshot").field("revision", update.revision);
          kvFields(line, kv);
          line.endObject();
          out += line.str() + "\n";
        } else {
          out += revision + " SNAPSHOT " + displayText(kv.key) + " " + displayText(kv.value) + "\n";
        }
      }
      if (update.last)
        out += json ? typed("snapshotEnd", update.revision) : revision + " SNAPSHOT-END\n";
      return;
    case WatchUpdate::Kind::CANCELLED:
      if (json) {
        JsonWriter line;
        line.beginObject().field("type", "cancelled").field("revision", update.revision);
        line.field("reason", update.reason).endObject();
        out += line.str() + "\n";
      } else {
        err += "synodctl: watch cancelled: " + displayText(update.reason) +
               "; resume with --from " + std::to_string(update.revision + 1) + "\n";
      }
      return;
  }
}

int runWatchCommand(const WatchCommand& command, const GlobalOptions& global, std::ostream& out,
                    std::ostream& err) {
  kj::AsyncIoContext io = kj::setupAsyncIo();
  Client client(io, ClientOptions{global.socketPath, global.timeoutMs, DEFAULT_DEADLINE_MARGIN_MS});
  WatchRequest request{command.key, command.prefix, command.fromRevision, command.prevKv};
  bool cancelled = false;
  bool outFailed = false;
  auto ended = runWatch(
      client.async(), io.provider->getTimer(), request,
      [&](const Result<WatchStarted>& started) {
        if (!started.ok() || !global.json) return;
        JsonWriter json;
        json.beginObject().field("ok", true);
        json.field("startRevision", started->startRevision)
            .field("oldestRevision", started->oldestRevision)
            .field("compacted", started->compacted);
        json.field("revision", started.header.revision).field("member", started.header.member);
        json.endObject();
        out << json.str() << "\n";
        out.flush();
      },
      [&](WatchUpdate&& update) {
        std::string lines, errors;
        renderWatchUpdate(update, global.json, lines, errors);
        cancelled = update.kind == WatchUpdate::Kind::CANCELLED;
        out << lines;
        out.flush();
        err << errors;
        if (!out) outFailed = true;
        return !outFailed;
      });
  Result<WatchStarted> result = ended.wait(io.waitScope);
  if (outFailed || cancelled) return EXIT_REFUSED;
  if (!result.ok()) {
    if (global.json) {
      JsonWriter json;
      json.beginObject().field("ok", false).field("code", codeName(result.status.code));
      json.field("error", result.status.message).endObject();
      out << json.str() << "\n";
    } else {
      err << "synodctl: " << displayText(result.status.message) << " ("
          << codeName(result.status.code) << ")\n";
    }
    return exitCodeFor(result.status.code);
  }
  return EXIT_OK;
}

Rendered renderCompact(const Result<CompactReply>& result, const RenderOptions& options) {
  Rendered rendered;
  rendered.exitCode = exitCodeFor(result.status.code);
  if (options.json) {
    JsonWriter json;
    json.beginObject().field("ok", result.ok());
    if (result.ok()) {
      json.field("oldestRevision", result->oldestRevision);
    } else {
      json.field("code", codeName(result.status.code)).field("error", result.status.message);
    }
    if (result.answered) {
      json.field("revision", result.header.revision).field("member", result.header.member);
    }
    json.endObject();
    rendered.out = json.str() + "\n";
  } else if (result.ok()) {
    rendered.out =
        "compacted: the oldest revision kept is " + std::to_string(result->oldestRevision) + "\n";
  } else {
    rendered.err = "synodctl: " + displayText(result.status.message) + " (" +
                   codeName(result.status.code) + ")\n";
  }
  return rendered;
}

Result<KeyValue> getAtRevision(Client& client, const GetCommand& command, uint32_t timeoutMs) {
  return getAt(client.async(), command.key, command.revision, timeoutMs).wait(client.waitScope());
}

Result<ListReply> listAtRevision(Client& client, const ListCommand& command, uint32_t timeoutMs) {
  ListOptions opts;
  opts.limit = command.limit;
  opts.startAfter = command.startAfter;
  opts.timeoutMs = timeoutMs;
  auto result =
      listAt(client.async(), command.prefix, command.revision, opts).wait(client.waitScope());
  while (command.all && result.ok() && result->more && !result->kvs.empty()) {
    opts.startAfter = result->kvs.back().key;
    auto next =
        listAt(client.async(), command.prefix, command.revision, opts).wait(client.waitScope());
    if (!next.ok()) return next;
    for (auto& kv : next->kvs)
      result->kvs.push_back(std::move(kv));
    result->more = next->more;
  }
  return result;
}

}  // namespace synod::clients
