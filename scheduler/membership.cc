#include "scheduler/membership.h"

#include "absl/strings/str_cat.h"

namespace choir {

const char* PeerRoleName(PeerRole role) {
  switch (role) {
    case PeerRole::kServer:
      return "server";
    case PeerRole::kWorker:
      return "worker";
  }
  return "unknown";
}

absl::StatusOr<PeerRole> ParsePeerRole(absl::string_view name) {
  for (PeerRole role : {PeerRole::kServer, PeerRole::kWorker}) {
    if (name == PeerRoleName(role)) return role;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("role must be \"server\" or \"worker\", got \"", name, "\""));
}

std::string PeerName(const PeerInfo& peer) {
  return absl::StrCat(PeerRoleName(peer.role), " ", peer.index, " (", peer.id, ")");
}

const char* JobStateName(JobState state) {
  switch (state) {
    case JobState::kRunning:
      return "running";
    case JobState::kStopping:
      return "stopping";
    case JobState::kFailed:
      return "failed";
  }
  return "unknown";
}

}  // namespace choir
