#include "daemon/logging.h"

#include <unistd.h>

#include <string>

namespace synod::daemon {

void logLine(Priority priority, std::string_view message) {
  std::string line = "<" + std::to_string(static_cast<int>(priority)) + ">";
  line.reserve(line.size() + message.size() + 1);
  for (char c : message)
    line.push_back(c == '\n' ? ' ' : c);
  line.push_back('\n');
  // One write() per line so concurrent writers never interleave within a line.
  size_t done = 0;
  while (done < line.size()) {
    ssize_t n = ::write(STDERR_FILENO, line.data() + done, line.size() - done);
    if (n <= 0) return;  // nowhere to log to; nothing better to do
    done += static_cast<size_t>(n);
  }
}

}  // namespace synod::daemon
