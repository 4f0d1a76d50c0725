#include "election/messages.h"

namespace synod::election {

namespace {

template <typename... Names>
struct Overloaded : Names... {
  using Names::operator()...;
};
template <typename... Names>
Overloaded(Names...) -> Overloaded<Names...>;

}  // namespace

const char* messageName(const PeerMessage& message) {
  return std::visit(Overloaded{
                        [](const PreVoteRequest&) { return "PreVoteRequest"; },
                        [](const PreVoteReply&) { return "PreVoteReply"; },
                        [](const Prepare&) { return "Prepare"; },
                        [](const Promise&) { return "Promise"; },
                        [](const Accept&) { return "Accept"; },
                        [](const Accepted&) { return "Accepted"; },
                        [](const Rejected&) { return "Rejected"; },
                        [](const Heartbeat&) { return "Heartbeat"; },
                        [](const HeartbeatAck&) { return "HeartbeatAck"; },
                        [](const FetchRequest&) { return "FetchRequest"; },
                        [](const FetchReply&) { return "FetchReply"; },
                        [](const ReadIndexRequest&) { return "ReadIndexRequest"; },
                        [](const ReadIndexReply&) { return "ReadIndexReply"; },
                        [](const Handoff&) { return "Handoff"; },
                        [](const RecoveryQuery&) { return "RecoveryQuery"; },
                        [](const RecoveryReply&) { return "RecoveryReply"; },
                    },
                    message);
}

}  // namespace synod::election
