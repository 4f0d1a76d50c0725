// What synod-bench measures of the host itself: member processes (/proc) and the floor (one LMDB
// commit, one loopback TCP round trip).
#include <arpa/inet.h>
#include <fcntl.h>
#include <kj/debug.h>
#include <lmdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "clients/bench.h"

namespace synod::clients::bench {

double median(std::vector<double>& values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

ProcessSample sampleProcess(pid_t pid) {
  ProcessSample sample;
  std::string proc = "/proc/" + std::to_string(pid);
  std::ifstream stat(proc + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return sample;
  // The command name (field 2) is in parentheses and may hold spaces: count fields after it.
  size_t close = line.rfind(')');
  if (close == std::string::npos) return sample;
  std::istringstream fields(line.substr(close + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int index = 3; fields >> field; ++index) {
    if (index == 14) utime = std::strtoull(field.c_str(), nullptr, 10);
    if (index == 15) {
      stime = std::strtoull(field.c_str(), nullptr, 10);
      break;
    }
  }
  double tick = static_cast<double>(sysconf(_SC_CLK_TCK));
  sample.userSeconds = static_cast<double>(utime) / tick;
  sample.systemSeconds = static_cast<double>(stime) / tick;
  sample.cpuSeconds = sample.userSeconds + sample.systemSeconds;
  // Clock ticks are too coarse for an idle daemon (one tick over 5 s is 0.2 %): sum the threads'
  // nanosecond run times instead where the kernel has them.
  std::error_code error;
  uint64_t runNs = 0;
  bool haveRunNs = false;
  for (const auto& task : std::filesystem::directory_iterator(proc + "/task", error)) {
    std::ifstream schedstat(task.path() / "schedstat");
    unsigned long long ns = 0;
    if (schedstat >> ns) {
      runNs += ns;
      haveRunNs = true;
    }
  }
  if (haveRunNs) sample.cpuSeconds = static_cast<double>(runNs) / 1e9;
  std::ifstream status(proc + "/status");
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) sample.rssKb = std::strtoull(line.c_str() + 6, nullptr, 10);
    if (line.rfind("VmHWM:", 0) == 0) {
      sample.peakRssKb = std::strtoull(line.c_str() + 6, nullptr, 10);
    }
  }
  sample.ok = true;
  return sample;
}

void resetPeakRss(pid_t pid) {
  std::ofstream out("/proc/" + std::to_string(pid) + "/clear_refs");
  if (out) out << "5";
}

double selfCpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval& t) { return t.tv_sec + t.tv_usec / 1e6; };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

namespace {

void checkLmdb(int rc, const char* what) {
  if (rc != 0) KJ_FAIL_REQUIRE("LMDB floor measurement failed", what, mdb_strerror(rc));
}

// An LMDB environment in a fresh directory, both gone when this is.
class ScratchEnv {
 public:
  explicit ScratchEnv(const std::string& parent) {
    std::string pattern = parent + "/synod-bench-floor-XXXXXX";
    KJ_REQUIRE(mkdtemp(pattern.data()) != nullptr, "cannot make a directory for the LMDB floor",
               parent, strerror(errno));
    dir = pattern;
    checkLmdb(mdb_env_create(&env), "env_create");
    checkLmdb(mdb_env_set_mapsize(env, 64 << 20), "set_mapsize");
    checkLmdb(mdb_env_open(env, dir.c_str(), MDB_NOTLS, 0600), "env_open");
  }
  ~ScratchEnv() {
    if (env != nullptr) mdb_env_close(env);
    std::error_code ignored;
    std::filesystem::remove_all(dir, ignored);
  }
  KJ_DISALLOW_COPY(ScratchEnv);

  MDB_env* env = nullptr;
  std::string dir;
};

// A closed fd on scope exit.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) close(fd);
  }
};

void exchange(int fd, char* buffer, size_t bytes, bool writeFirst) {
  auto writeAll = [&] {
    for (size_t done = 0; done < bytes;) {
      ssize_t n = write(fd, buffer + done, bytes - done);
      KJ_REQUIRE(n > 0, "loopback echo write failed", strerror(errno));
      done += static_cast<size_t>(n);
    }
  };
  auto readAll = [&] {
    for (size_t done = 0; done < bytes;) {
      ssize_t n = read(fd, buffer + done, bytes - done);
      KJ_REQUIRE(n > 0, "loopback echo read failed", strerror(errno));
      done += static_cast<size_t>(n);
    }
  };
  if (writeFirst) {
    writeAll();
    readAll();
  } else {
    readAll();
    writeAll();
  }
}

}  // namespace

double lmdbCommitMedianUs(const std::string& dir, uint32_t commits, size_t valueBytes) {
  ScratchEnv scratch(dir);
  MDB_dbi dbi;
  {
    MDB_txn* txn = nullptr;
    checkLmdb(mdb_txn_begin(scratch.env, nullptr, 0, &txn), "txn_begin");
    checkLmdb(mdb_dbi_open(txn, nullptr, 0, &dbi), "dbi_open");
    checkLmdb(mdb_txn_commit(txn), "txn_commit");
  }
  std::string value(valueBytes, 'v');
  std::vector<double> latencies;
  for (uint32_t i = 0; i < commits; ++i) {
    std::string key = "floor/" + std::to_string(i % 100);
    auto started = Clock::now();
    MDB_txn* txn = nullptr;
    checkLmdb(mdb_txn_begin(scratch.env, nullptr, 0, &txn), "txn_begin");
    MDB_val k{key.size(), key.data()};
    MDB_val v{value.size(), value.data()};
    int rc = mdb_put(txn, dbi, &k, &v, 0);
    if (rc != 0) mdb_txn_abort(txn);
    checkLmdb(rc, "put");
    checkLmdb(mdb_txn_commit(txn), "txn_commit");
    latencies.push_back(std::chrono::duration<double, std::micro>(Clock::now() - started).count());
  }
  return median(latencies);
}

double tcpRoundTripMedianUs(uint32_t rounds) {
  constexpr size_t MESSAGE_BYTES = 64;
  Fd listener{socket(AF_INET, SOCK_STREAM, 0)};
  KJ_REQUIRE(listener.fd >= 0, "socket failed", strerror(errno));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  KJ_REQUIRE(bind(listener.fd, reinterpret_cast<sockaddr*>(&address), length) == 0,
             "cannot bind a loopback port", strerror(errno));
  KJ_REQUIRE(listen(listener.fd, 1) == 0, "listen failed", strerror(errno));
  getsockname(listener.fd, reinterpret_cast<sockaddr*>(&address), &length);

  int one = 1;
  std::thread echo([&listener, rounds, one] {
    Fd conn{accept(listener.fd, nullptr, nullptr)};
    if (conn.fd < 0) return;
    setsockopt(conn.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    char buffer[MESSAGE_BYTES];
    try {
      for (uint32_t i = 0; i < rounds; ++i)
        exchange(conn.fd, buffer, sizeof(buffer), false);
    } catch (const kj::Exception&) {
      // The measuring side reports its own error.
    }
  });
  std::vector<double> latencies;
  kj::Maybe<kj::Exception> failure;
  {
    Fd conn{socket(AF_INET, SOCK_STREAM, 0)};
    try {
      KJ_REQUIRE(conn.fd >= 0 &&
                     connect(conn.fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0,
                 "cannot connect to the loopback echo", strerror(errno));
      setsockopt(conn.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      char buffer[MESSAGE_BYTES] = {};
      for (uint32_t i = 0; i < rounds; ++i) {
        auto started = Clock::now();
        exchange(conn.fd, buffer, sizeof(buffer), true);
        latencies.push_back(
            std::chrono::duration<double, std::micro>(Clock::now() - started).count());
      }
    } catch (kj::Exception& e) {
      failure = kj::mv(e);
      shutdown(listener.fd, SHUT_RDWR);  // an echo thread still in accept() returns
    }
  }
  echo.join();
  KJ_IF_MAYBE (e, failure) {
    kj::throwFatalException(kj::mv(*e));
  }
  return median(latencies);
}

}  // namespace synod::clients::bench
