// What the scheduler (scheduler/scheduler.h) and its clients (scheduler/scheduler_client.h)
// share: the roles, a job's membership, the job state and the RPC method names.
#ifndef CHOIR_SCHEDULER_MEMBERSHIP_H_
#define CHOIR_SCHEDULER_MEMBERSHIP_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace choir {

// The scheduler's methods (wire formats in scheduler/scheduler.h).
inline constexpr char kSchedulerRegisterMethod[] = "register";
inline constexpr char kSchedulerHeartbeatMethod[] = "heartbeat";
inline constexpr char kSchedulerBarrierMethod[] = "barrier";
inline constexpr char kSchedulerReportMethod[] = "report";
inline constexpr char kSchedulerFinishMethod[] = "finish";
inline constexpr char kSchedulerReweighterMethod[] = "reweighter";

enum class PeerRole { kServer, kWorker };

// "server", "worker".
const char* PeerRoleName(PeerRole role);
// The inverse of PeerRoleName; INVALID_ARGUMENT naming the choices otherwise.
absl::StatusOr<PeerRole> ParsePeerRole(absl::string_view name);

// One server or worker of a job.
struct PeerInfo {
  PeerRole role = PeerRole::kWorker;
  int index = 0;  // in [0, servers) or [0, workers)
  // The id of the peer's data endpoint: what servers admit (ParamServer::AddPeer) and what
  // workers call (RemoteEmbeddingStoreOptions::Server::id). It may differ from the id of the
  // endpoint that talks to the scheduler (in one InProcessNetwork the two must differ).
  std::string id;
  // Servers: their data endpoint's address() (what workers pass to AddPeer). Workers: empty
  // unless something calls them.
  std::string address;
};

// "worker 2 (w2)": how errors and logs name a peer.
std::string PeerName(const PeerInfo& peer);

// A job's peers, as the scheduler hands them out once every expected peer has registered.
struct Membership {
  std::vector<PeerInfo> servers;  // servers[i].index == i
  std::vector<PeerInfo> workers;  // workers[i].index == i
  // The scheduler's reweighting interval K (ReweightingOptions::every_steps) and policy name.
  int64_t reweight_every_steps = 0;
  std::string reweighting_policy;
};

enum class JobState {
  kRunning,   // training (or still at the rendezvous)
  kStopping,  // every worker finished: servers shut down cleanly
  kFailed,    // a peer died (or a reweighting round failed); the reason names it
};

// "running", "stopping", "failed".
const char* JobStateName(JobState state);

}  // namespace choir

#endif  // CHOIR_SCHEDULER_MEMBERSHIP_H_
