// etcd driven through its HTTP/JSON gRPC gateway with KJ's HTTP client, so that synod-bench loads
// etcd and synod with the same closed-loop clients. The gateway transcodes JSON to gRPC inside the
// etcd process; the README says how that compares with etcd's own gRPC client.
#include <kj/compat/http.h>
#include <kj/debug.h>
#include <kj/encoding.h>

#include "clients/bench.h"

namespace synod::clients::bench {
namespace {

std::string base64(const std::string& bytes) {
  auto text =
      kj::encodeBase64(kj::arrayPtr(reinterpret_cast<const kj::byte*>(bytes.data()), bytes.size()));
  return std::string(text.cStr(), text.size());
}

// The string value of the first `"name":"…"` in a JSON text; empty when absent. The gateway's
// replies are flat enough (ids and base64) that no escaping occurs in the fields read here.
std::string jsonString(const std::string& json, const std::string& name) {
  std::string needle = "\"" + name + "\":\"";
  size_t start = json.find(needle);
  if (start == std::string::npos) return {};
  start += needle.size();
  size_t end = json.find('"', start);
  return end == std::string::npos ? std::string() : json.substr(start, end - start);
}

struct Reply {
  Status status;
  std::string body;
};

class EtcdConnection final : public KvConnection {
 public:
  EtcdConnection(kj::AsyncIoContext& io, const kj::HttpHeaderTable& table, std::string endpoint)
      : io_(io), table_(table), endpoint_(std::move(endpoint)) {}

  kj::Promise<Status> put(const std::string& key, const std::string& value) override {
    return post("/v3/kv/put",
                "{\"key\":\"" + base64(key) + "\",\"value\":\"" + base64(value) + "\"}")
        .then([](Reply r) { return r.status; });
  }

  kj::Promise<Status> get(const std::string& key, bool serializable) override {
    std::string body = "{\"key\":\"" + base64(key) + "\"";
    if (serializable) body += ",\"serializable\":true";
    body += "}";
    return post("/v3/kv/range", body).then([](Reply r) {
      // An empty range has no "kvs" field (and "count" is omitted when 0).
      if (r.status.ok() && r.body.find("\"kvs\"") == std::string::npos) {
        r.status = Status{Code::NOT_FOUND, "no such key"};
      }
      return r.status;
    });
  }

  kj::Promise<Status> txn(const std::string& key, const std::string& expected,
                          const std::string& value) override {
    std::string k = base64(key);
    std::string body = "{\"compare\":[{\"key\":\"" + k +
                       "\",\"target\":\"VALUE\",\"result\":\"EQUAL\",\"value\":\"" +
                       base64(expected) + "\"}],\"success\":[{\"requestPut\":{\"key\":\"" + k +
                       "\",\"value\":\"" + base64(value) + "\"}}]}";
    return post("/v3/kv/txn", body).then([](Reply r) {
      if (r.status.ok() && r.body.find("\"succeeded\":true") == std::string::npos) {
        r.status = Status{Code::COMPARE_FAILED, "the compare did not hold"};
      }
      return r.status;
    });
  }

  kj::Promise<Status> leaseCycle() override {
    return post("/v3/lease/grant", "{\"TTL\":10}").then([this](Reply r) -> kj::Promise<Status> {
      if (!r.status.ok()) return r.status;
      std::string id = jsonString(r.body, "ID");
      if (id.empty()) return Status{Code::INTERNAL, "lease grant reply without an ID: " + r.body};
      return post("/v3/lease/revoke", "{\"ID\":\"" + id + "\"}").then([](Reply r) {
        return r.status;
      });
    });
  }

  kj::Promise<Status> lockCycle(const std::string& name) override {
    if (lease_.empty()) {
      return post("/v3/lease/grant", "{\"TTL\":3600}")
          .then([this, name](Reply r) -> kj::Promise<Status> {
            if (!r.status.ok()) return r.status;
            lease_ = jsonString(r.body, "ID");
            if (lease_.empty()) {
              return Status{Code::INTERNAL, "lease grant reply without an ID: " + r.body};
            }
            return lockCycle(name);
          });
    }
    return post("/v3/lock/lock", "{\"name\":\"" + base64(name) + "\",\"lease\":\"" + lease_ + "\"}")
        .then([this](Reply r) -> kj::Promise<Status> {
          if (!r.status.ok()) return r.status;
          std::string key = jsonString(r.body, "key");
          if (key.empty()) return Status{Code::INTERNAL, "lock reply without a key: " + r.body};
          return post("/v3/lock/unlock", "{\"key\":\"" + key + "\"}").then([](Reply r) {
            return r.status;
          });
        });
  }

  /// The raw reply of one POST; a transport failure or a non-200 answer is a failed status.
  kj::Promise<Reply> post(const char* path, std::string body) {
    if (broken_) {
      http_ = nullptr;
      broken_ = false;
    }
    if (http_.get() == nullptr) {
      return io_.provider->getNetwork()
          .parseAddress(endpoint_)
          .then(
              [this](kj::Own<kj::NetworkAddress> address) -> kj::Maybe<kj::Exception> {
                address_ = kj::mv(address);
                http_ = kj::newHttpClient(io_.provider->getTimer(), table_, *address_);
                return nullptr;
              },
              [](kj::Exception&& e) -> kj::Maybe<kj::Exception> { return kj::mv(e); })
          .then([this, path, body = kj::mv(body)](
                    kj::Maybe<kj::Exception> error) mutable -> kj::Promise<Reply> {
            KJ_IF_MAYBE (e, error) {
              return Reply{Status{Code::UNAVAILABLE,
                                  "etcd address " + endpoint_ + ": " + e->getDescription().cStr()},
                           {}};
            }
            return post(path, kj::mv(body));
          });
    }
    kj::HttpHeaders headers(table_);
    headers.set(kj::HttpHeaderId::HOST, endpoint_.c_str());
    headers.set(kj::HttpHeaderId::CONTENT_TYPE, "application/json");
    auto request = http_->request(kj::HttpMethod::POST, path, headers, body.size());
    auto bytes = kj::heapString(body.data(), body.size());
    auto sent = request.body->write(bytes.begin(), bytes.size())
                    .attach(kj::mv(request.body), kj::mv(bytes));
    return sent.then([response = kj::mv(request.response)]() mutable { return kj::mv(response); })
        .then([](kj::HttpClient::Response response) {
          uint statusCode = response.statusCode;
          return response.body->readAllText()
              .attach(kj::mv(response.body))
              .then([statusCode](kj::String text) {
                Reply reply{Status{}, std::string(text.cStr(), text.size())};
                if (statusCode != 200) {
                  reply.status =
                      Status{Code::INTERNAL, "etcd answered HTTP " + std::to_string(statusCode) +
                                                 ": " + reply.body.substr(0, 200)};
                }
                return reply;
              });
        })
        .catch_([this](kj::Exception&& e) {
          broken_ = true;  // reconnect on the next call (not from inside the client's own chain)
          return Reply{
              Status{Code::UNAVAILABLE, "etcd at " + endpoint_ + ": " + e.getDescription().cStr()},
              {}};
        });
  }

 private:
  kj::AsyncIoContext& io_;
  const kj::HttpHeaderTable& table_;
  std::string endpoint_;
  kj::Own<kj::NetworkAddress> address_;
  kj::Own<kj::HttpClient> http_;
  bool broken_ = false;
  std::string lease_;  // the lock workload's lease, as the gateway spells its ID
};

class EtcdSystem final : public System {
 public:
  EtcdSystem(kj::AsyncIoContext& io, std::vector<std::string> endpoints)
      : io_(io), endpoints_(std::move(endpoints)) {}

  const char* name() const override { return "etcd"; }
  size_t members() const override { return endpoints_.size(); }
  std::string memberName(size_t member) const override { return endpoints_[member]; }

  kj::Own<KvConnection> connect(size_t member) override {
    return kj::heap<EtcdConnection>(io_, table_, endpoints_[member]);
  }

  int leader(kj::WaitScope& waitScope) override {
    for (size_t i = 0; i < endpoints_.size(); ++i) {
      EtcdConnection connection(io_, table_, endpoints_[i]);
      Reply reply = connection.post("/v3/maintenance/status", "{}").wait(waitScope);
      if (!reply.status.ok()) continue;
      std::string self = jsonString(reply.body, "member_id");
      if (!self.empty() && self == jsonString(reply.body, "leader")) return static_cast<int>(i);
    }
    return -1;
  }

 private:
  kj::AsyncIoContext& io_;
  kj::HttpHeaderTable table_;
  std::vector<std::string> endpoints_;
};

}  // namespace

kj::Own<System> newEtcdSystem(kj::AsyncIoContext& io, std::vector<std::string> endpoints) {
  return kj::heap<EtcdSystem>(io, std::move(endpoints));
}

}  // namespace synod::clients::bench
