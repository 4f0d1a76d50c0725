// Builders of lease and lock commands, and a state machine harness, for the election tests.
#pragma once

#include <capnp/message.h>
#include <doctest/doctest.h>

#include <string>
#include <utility>
#include <vector>

#include "election/state_machine.h"

namespace synod::election::testing {

inline capnp::Data::Reader bytes(const std::string& s) {
  return capnp::Data::Reader(reinterpret_cast<const kj::byte*>(s.data()), s.size());
}

// Every command from member 0, incarnation 1, with increasing sequences.
class Commands {
 public:
  std::string grant(uint64_t id, uint64_t ttlMs, bool detached = false, int32_t pid = 100,
                    uint32_t uid = 1000) {
    return build([&](records::Command::Builder c) {
      auto op = c.initLeaseGrant();
      op.setId(id);
      op.setTtlMs(ttlMs);
      op.setDetached(detached);
      auto holder = op.initHolder();
      holder.setMember(leaseIdMember(id));
      holder.setPid(pid);
      holder.setUid(uid);
    });
  }
  std::string renew(std::vector<std::pair<uint64_t, uint64_t>> idEpochs) {
    return build([&](records::Command::Builder c) {
      auto list = c.initLeaseRenew().initRenewals(static_cast<unsigned>(idEpochs.size()));
      for (size_t i = 0; i < idEpochs.size(); ++i) {
        list[i].setId(idEpochs[i].first);
        list[i].setEpoch(idEpochs[i].second);
      }
    });
  }
  std::string revoke(uint64_t id) {
    return build([&](records::Command::Builder c) { c.initLeaseRevoke().setId(id); });
  }
  std::string expire(uint64_t id, uint64_t epoch) {
    return build([&](records::Command::Builder c) {
      auto op = c.initLeaseExpire();
      op.setId(id);
      op.setEpoch(epoch);
    });
  }
  struct Remaining {
    uint64_t id, epoch, remainingMs;
  };
  std::string checkpoint(std::vector<Remaining> entries) {
    return build([&](records::Command::Builder c) {
      auto list = c.initLeaseCheckpoint().initCheckpoints(static_cast<unsigned>(entries.size()));
      for (size_t i = 0; i < entries.size(); ++i) {
        list[i].setId(entries[i].id);
        list[i].setEpoch(entries[i].epoch);
        list[i].setRemainingMs(entries[i].remainingMs);
      }
    });
  }
  std::string lock(const std::string& name, uint64_t lease, const std::string& value = "",
                   bool wait = true) {
    return build([&](records::Command::Builder c) {
      auto op = c.initLock();
      op.setName(bytes(name));
      op.setLease(lease);
      op.setValue(bytes(value));
      op.setWait(wait);
    });
  }
  std::string unlock(const std::string& name, uint64_t lease) {
    return build([&](records::Command::Builder c) {
      auto op = c.initUnlock();
      op.setName(bytes(name));
      op.setLease(lease);
    });
  }
  std::string proclaim(const std::string& name, uint64_t lease, const std::string& value) {
    return build([&](records::Command::Builder c) {
      auto op = c.initProclaim();
      op.setName(bytes(name));
      op.setLease(lease);
      op.setValue(bytes(value));
    });
  }
  std::string put(const std::string& key, const std::string& value, uint64_t lease = 0) {
    return build([&](records::Command::Builder c) {
      auto op = c.initPut();
      op.setKey(bytes(key));
      op.setValue(bytes(value));
      op.setLease(lease);
    });
  }
  // A txn: if every (lock name, fence) compare holds, put `key`=`value` (attached to `lease`),
  // else put `key`="else".
  std::string fencedPut(std::vector<std::pair<std::string, uint64_t>> fences,
                        const std::string& key, const std::string& value, uint64_t lease = 0,
                        rpc::Compare::Op op = rpc::Compare::Op::EQUAL) {
    return build([&](records::Command::Builder c) {
      auto txn = c.initTxn();
      auto compares = txn.initCompares(static_cast<unsigned>(fences.size()));
      for (size_t i = 0; i < fences.size(); ++i) {
        compares[i].setKey(bytes(fences[i].first));
        compares[i].setOp(op);
        compares[i].getTarget().setFence(fences[i].second);
      }
      auto put = txn.initSuccess(1)[0].initPut();
      put.setKey(bytes(key));
      put.setValue(bytes(value));
      put.setLease(lease);
      auto other = txn.initFailure(1)[0].initPut();
      other.setKey(bytes(key));
      other.setValue(bytes(std::string("else")));
    });
  }

  // The last command built again, same id (a retried duplicate).
  const std::string& last() const { return last_; }

 private:
  template <typename Fn>
  std::string build(Fn&& fill) {
    capnp::MallocMessageBuilder message;
    auto root = message.initRoot<records::Command>();
    auto id = root.initId();
    id.setMember(0);
    id.setIncarnation(1);
    id.setSequence(++sequence_);
    fill(root);
    last_ = encodeCommand(message);
    return last_;
  }

  uint64_t sequence_ = 0;
  std::string last_;
};

struct LeaseHarness {
  StateMachine sm;
  Commands c;

  AppliedCommand one(std::string command) {
    std::vector<AppliedCommand> out;
    sm.apply(sm.appliedSlot() + 1, Value{{std::move(command)}}, out);
    REQUIRE(out.size() == 1);
    return out[0];
  }
  // Applies and requires an OK outcome.
  AppliedCommand ok(std::string command) {
    auto applied = one(std::move(command));
    REQUIRE_MESSAGE(applied.outcome.code == StatusCode::OK, applied.outcome.message);
    return applied;
  }
};

}  // namespace synod::election::testing
