#include "daemon/logging.h"

#include <sys/stat.h>
#include <sys/uio.h>
#include <systemd/sd-journal.h>
#include <unistd.h>

#include <charconv>
#include <cstdlib>
#include <cstring>
#include <string>

namespace synod::daemon {

namespace {

struct Destination {
  std::string member;
  bool journal = false;
};

// Process-wide, like stderr: written by configureLogging before the loop starts.
Destination& destination() {
  static Destination instance;
  return instance;
}

std::string oneLine(std::string_view message) {
  std::string line(message);
  for (char& c : line) {
    if (c == '\n') c = ' ';
  }
  return line;
}

void writeStderr(Priority priority, std::string_view message) {
  std::string line = "<" + std::to_string(static_cast<int>(priority)) + ">" + oneLine(message);
  line.push_back('\n');
  // One write() per line so concurrent writers never interleave within a line.
  size_t done = 0;
  while (done < line.size()) {
    ssize_t n = ::write(STDERR_FILENO, line.data() + done, line.size() - done);
    if (n <= 0) return;  // nowhere to log to; nothing better to do
    done += static_cast<size_t>(n);
  }
}

bool parseDecimal(std::string_view text, uint64_t& value) {
  if (text.empty()) return false;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  return ec == std::errc() && end == text.data() + text.size();
}

}  // namespace

void configureLogging(std::string member, bool journal) {
  destination() = Destination{std::move(member), journal};
}

bool journalStreamMatches(const char* journalStream, dev_t dev, ino_t ino) {
  if (journalStream == nullptr) return false;
  std::string_view text(journalStream);
  size_t colon = text.find(':');
  if (colon == std::string_view::npos) return false;
  uint64_t wantDev = 0, wantIno = 0;
  if (!parseDecimal(text.substr(0, colon), wantDev) ||
      !parseDecimal(text.substr(colon + 1), wantIno)) {
    return false;
  }
  return wantDev == static_cast<uint64_t>(dev) && wantIno == static_cast<uint64_t>(ino);
}

bool stderrIsJournal() {
  struct stat st {};
  if (::fstat(STDERR_FILENO, &st) != 0) return false;
  return journalStreamMatches(std::getenv("JOURNAL_STREAM"), st.st_dev, st.st_ino);
}

std::vector<std::string> journalFields(Priority priority, std::string_view message,
                                       std::string_view member, const LogFields& fields) {
  std::vector<std::string> out;
  out.push_back("PRIORITY=" + std::to_string(static_cast<int>(priority)));
  out.push_back("MESSAGE=" + oneLine(message));
  out.push_back("SYSLOG_IDENTIFIER=synod");
  if (!member.empty()) out.push_back("SYNOD_MEMBER=" + std::string(member));
  if (!fields.ballot.empty()) out.push_back("SYNOD_BALLOT=" + fields.ballot);
  if (!fields.peer.empty()) out.push_back("SYNOD_PEER=" + fields.peer);
  return out;
}

void logLine(Priority priority, std::string_view message) {
  logLineWith(priority, message, LogFields{});
}

void logLineWith(Priority priority, std::string_view message, const LogFields& fields) {
  const Destination& to = destination();
  if (to.journal) {
    std::vector<std::string> entry = journalFields(priority, message, to.member, fields);
    std::vector<iovec> parts;
    parts.reserve(entry.size());
    for (std::string& field : entry)
      parts.push_back(iovec{field.data(), field.size()});
    if (sd_journal_sendv(parts.data(), static_cast<int>(parts.size())) >= 0) return;
    // The journal refused it: stderr is still connected to it.
  }
  writeStderr(priority, message);
}

}  // namespace synod::daemon
