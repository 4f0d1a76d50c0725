// Log lines on stderr with the "<N>" priority prefixes journald understands (sd-daemon(3)).
// One line per call; the message must not contain newlines (they are replaced).
#pragma once

#include <string_view>

#include <kj/string.h>

namespace synod::daemon {

enum class Priority { ERR = 3, WARNING = 4, NOTICE = 5, INFO = 6, DEBUG = 7 };

void logLine(Priority priority, std::string_view message);

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
