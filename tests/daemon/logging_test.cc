// Log destinations: the journal's structured fields, and when stderr counts as the journal.
#include "daemon/logging.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <vector>

namespace synod::daemon {
namespace {

using Fields = std::vector<std::string>;

TEST_CASE("journal fields: priority, message, identifier and member, in that order") {
  CHECK(journalFields(Priority::NOTICE, "ready", "n1", {}) ==
        Fields{"PRIORITY=5", "MESSAGE=ready", "SYSLOG_IDENTIFIER=synod", "SYNOD_MEMBER=n1"});
  CHECK(journalFields(Priority::ERR, "bad", "", {}) ==
        Fields{"PRIORITY=3", "MESSAGE=bad", "SYSLOG_IDENTIFIER=synod"});
}

TEST_CASE("journal fields: ballot and peer when the call knows them") {
  CHECK(journalFields(Priority::INFO, "leader is n2", "n1", LogFields{"7.1", "n2"}) ==
        Fields{"PRIORITY=6", "MESSAGE=leader is n2", "SYSLOG_IDENTIFIER=synod", "SYNOD_MEMBER=n1",
               "SYNOD_BALLOT=7.1", "SYNOD_PEER=n2"});
  CHECK(journalFields(Priority::WARNING, "lost", "n1", LogFields{"", "n3"}).back() ==
        "SYNOD_PEER=n3");
}

TEST_CASE("journal fields: one line per entry, like stderr") {
  CHECK(journalFields(Priority::INFO, "a\nb", "n1", {})[1] == "MESSAGE=a b");
}

TEST_CASE("JOURNAL_STREAM must name this very file: DEV:INODE in decimal") {
  CHECK(journalStreamMatches("2049:131", 2049, 131));
  CHECK_FALSE(journalStreamMatches("2049:132", 2049, 131));
  CHECK_FALSE(journalStreamMatches("2048:131", 2049, 131));
  CHECK_FALSE(journalStreamMatches(nullptr, 2049, 131));
  for (const char* bad : {"", ":", "2049", "2049:", ":131", "2049:131x", "x:131", "-1:131",
                          "2049:131:7", " 2049:131"}) {
    CHECK_MESSAGE(!journalStreamMatches(bad, 2049, 131), bad);
  }
}

TEST_CASE("stderrIsJournal compares JOURNAL_STREAM with stderr's device and inode") {
  struct stat st {};
  REQUIRE(::fstat(STDERR_FILENO, &st) == 0);
  std::string mine = std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
  std::string other = std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino + 1);
  REQUIRE(::setenv("JOURNAL_STREAM", mine.c_str(), 1) == 0);
  CHECK(stderrIsJournal());
  // A child whose stderr was redirected inherits the variable but not the stream.
  REQUIRE(::setenv("JOURNAL_STREAM", other.c_str(), 1) == 0);
  CHECK_FALSE(stderrIsJournal());
  REQUIRE(::unsetenv("JOURNAL_STREAM") == 0);
  CHECK_FALSE(stderrIsJournal());
}

}  // namespace
}  // namespace synod::daemon
