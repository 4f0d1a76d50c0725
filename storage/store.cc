#include "storage/store.h"

#include "storage/record.h"

namespace synod::storage {

std::optional<std::string> checkBatch(const WriteBatch& batch) {
  for (const auto& [key, record] : batch.keys) {
    if (key.empty()) return std::string("empty key");
    if (key.size() > MAX_KEY_BYTES) {
      return "key of " + std::to_string(key.size()) + " bytes starting " +
             describeKey(std::string_view(key).substr(0, 32)) + " is longer than the limit of " +
             std::to_string(MAX_KEY_BYTES) + " bytes";
    }
  }
  for (const auto& [name, record] : batch.locks) {
    if (name.empty()) return std::string("empty lock name");
    if (name.size() > MAX_KEY_BYTES) {
      return "lock name of " + std::to_string(name.size()) + " bytes starting " +
             describeKey(std::string_view(name).substr(0, 32)) + " is longer than the limit of " +
             std::to_string(MAX_KEY_BYTES) + " bytes";
    }
  }
  if (batch.leases.count(0) != 0) return std::string("lease id 0");
  uint64_t lastRevision = 0;
  for (const auto& revision : batch.history) {
    if (!revision || revision->revision <= lastRevision) {
      return std::string("history revisions missing, 0 or not ascending");
    }
    lastRevision = revision->revision;
    for (const auto& change : revision->changes) {
      if (change.key.empty() || change.key.size() > MAX_KEY_BYTES) {
        return "history revision " + std::to_string(lastRevision) +
               " changes an empty or too long key";
      }
    }
  }
  if (batch.historyStart && *batch.historyStart == 0) return std::string("history start 0");
  for (const LogEntry& entry : batch.accepted) {
    if (entry.slot == 0) return std::string("log entry for slot 0 (slots start at 1)");
  }
  return std::nullopt;
}

}  // namespace synod::storage
