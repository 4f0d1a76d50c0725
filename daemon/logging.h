// synod's log lines. Two destinations, chosen once at start-up by configureLogging():
//   - the journal, when stderr is the stream systemd connected to journald (JOURNAL_STREAM names
//     stderr's device and inode, as systemd.exec(5) documents): one entry per line, sent with
//     sd_journal_sendv, with structured fields PRIORITY, MESSAGE, SYSLOG_IDENTIFIER=synod,
//     SYNOD_MEMBER and, where the caller knows them, SYNOD_BALLOT ("round.member") and SYNOD_PEER;
//   - otherwise stderr, one line per call with the "<N>" priority prefix sd-daemon(3) describes.
// One line per call; newlines in the message are replaced by spaces.
//
// The destination is process-wide, like stderr itself: set before the loop starts, read after.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>
#include <vector>

#include <kj/string.h>

namespace synod::daemon {

enum class Priority { ERR = 3, WARNING = 4, NOTICE = 5, INFO = 6, DEBUG = 7 };

// What a log call knows beyond its text; empty fields are left out.
struct LogFields {
  std::string ballot;  // "round.member"
  std::string peer;    // a member's name
};

// Sends every following line to the journal when `journal` is true (see stderrIsJournal), tagged
// with SYNOD_MEMBER=`member`; else to stderr. Call before the loop starts.
void configureLogging(std::string member, bool journal);

// Whether JOURNAL_STREAM (the text "DEV:INODE", decimal) names the file `dev`/`ino`. False for a
// missing or malformed value.
bool journalStreamMatches(const char* journalStream, dev_t dev, ino_t ino);
// journalStreamMatches(getenv("JOURNAL_STREAM"), stderr's device and inode).
bool stderrIsJournal();

// The journal fields of one line, "KEY=value" each, in a fixed order: PRIORITY, MESSAGE,
// SYSLOG_IDENTIFIER, SYNOD_MEMBER (if set), SYNOD_BALLOT, SYNOD_PEER (if known).
std::vector<std::string> journalFields(Priority priority, std::string_view message,
                                       std::string_view member, const LogFields& fields);

void logLine(Priority priority, std::string_view message);
void logLineWith(Priority priority, std::string_view message, const LogFields& fields);

template <typename... Params>
void logAt(Priority priority, const LogFields& fields, Params&&... params) {
  logLineWith(priority, kj::str(kj::fwd<Params>(params)...).cStr(), fields);
}
template <typename... Params>
void logError(Params&&... params) {
  logLine(Priority::ERR, kj::str(kj::fwd<Params>(params)...).cStr());
}
template <typename... Params>
void logWarning(Params&&... params) {
  logLine(Priority::WARNING, kj::str(kj::fwd<Params>(params)...).cStr());
}
template <typename... Params>
void logNotice(Params&&... params) {
  logLine(Priority::NOTICE, kj::str(kj::fwd<Params>(params)...).cStr());
}
template <typename... Params>
void logInfo(Params&&... params) {
  logLine(Priority::INFO, kj::str(kj::fwd<Params>(params)...).cStr());
}

}  // namespace synod::daemon
