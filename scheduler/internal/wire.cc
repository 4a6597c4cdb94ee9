#include "scheduler/internal/wire.h"

#include <cmath>
#include <cstdint>
#include <limits>

#include "absl/strings/str_format.h"

namespace choir::scheduler_internal {

transport::Frame BodyFrame(const google::protobuf::MessageLite& message) {
  return transport::Frame(message.SerializeAsString());
}

absl::Status ParseBody(const std::vector<transport::Frame>& frames, size_t want_frames,
                       const std::string& what, absl::StatusCode code,
                       google::protobuf::MessageLite* out) {
  if (frames.size() != want_frames) {
    return absl::Status(
        code, absl::StrCat(what, ": expected ", want_frames, " frame(s), got ", frames.size()));
  }
  if (frames[0].type() != transport::ELEMENT_BYTES) {
    return absl::Status(code, absl::StrCat(what, ": frame 0 must hold bytes, has element type ",
                                           transport::ElementType_Name(frames[0].type())));
  }
  const absl::string_view bytes = frames[0].bytes();
  if (!out->ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return absl::Status(code, absl::StrCat(what, ": frame 0 is not a valid ", out->GetTypeName(),
                                           " (", bytes.size(), " bytes)"));
  }
  return absl::OkStatus();
}

wire::PeerEntry ToWire(const PeerInfo& peer) {
  wire::PeerEntry entry;
  entry.set_role(PeerRoleName(peer.role));
  entry.set_index(peer.index);
  entry.set_id(peer.id);
  entry.set_address(peer.address);
  return entry;
}

absl::StatusOr<PeerInfo> FromWire(const wire::PeerEntry& entry) {
  absl::StatusOr<PeerRole> role = ParsePeerRole(entry.role());
  if (!role.ok()) return role.status();
  PeerInfo peer;
  peer.role = *role;
  peer.index = entry.index();
  peer.id = entry.id();
  peer.address = entry.address();
  return peer;
}

wire::JobStateCode ToWire(JobState state) {
  switch (state) {
    case JobState::kRunning:
      return wire::JOB_RUNNING;
    case JobState::kStopping:
      return wire::JOB_STOPPING;
    case JobState::kFailed:
      return wire::JOB_FAILED;
  }
  return wire::JOB_STATE_UNSPECIFIED;
}

absl::StatusOr<JobState> FromWire(wire::JobStateCode code) {
  switch (code) {
    case wire::JOB_RUNNING:
      return JobState::kRunning;
    case wire::JOB_STOPPING:
      return JobState::kStopping;
    case wire::JOB_FAILED:
      return JobState::kFailed;
    default:
      return absl::InvalidArgumentError(absl::StrCat("unknown job state ", static_cast<int>(code)));
  }
}

int64_t ToWaitMicros(absl::Duration duration) {
  if (duration <= absl::ZeroDuration()) return 0;
  if (duration == absl::InfiniteDuration()) return std::numeric_limits<int64_t>::max();
  return absl::ToInt64Microseconds(duration);  // saturates
}

std::string Seconds(absl::Duration duration) {
  return absl::StrFormat("%.1f s", absl::ToDoubleSeconds(duration));
}

wire::ReweighterState ReweighterStateToWire(const scheduler::SampleReweighter::State& state) {
  wire::ReweighterState out;
  for (int b = 0; b < data::kNumBuckets; ++b) {
    out.add_weights(state.weights[b]);
    out.add_running_loss(state.running_loss[b]);
    out.add_has_loss(state.has_loss[b]);
    out.add_cumulative(state.cumulative[b]);
  }
  out.set_updates(state.updates);
  return out;
}

absl::StatusOr<scheduler::SampleReweighter::State> ReweighterStateFromWire(const wire::ReweighterState& in) {
  constexpr int kB = data::kNumBuckets;
  if (in.weights_size() != kB || in.running_loss_size() != kB || in.has_loss_size() != kB ||
      in.cumulative_size() != kB || in.updates() < 0) {
    return absl::InvalidArgumentError(absl::StrCat("a reweighter state needs ", kB,
                                                   " weights, running losses, flags and counts"));
  }
  scheduler::SampleReweighter::State state;
  for (int b = 0; b < kB; ++b) {
    if (!(in.weights(b) > 0) || !std::isfinite(in.weights(b)) || !std::isfinite(in.running_loss(b)) ||
        in.cumulative(b) < 0) {
      return absl::InvalidArgumentError(absl::StrCat("reweighter state: bucket ", b, " has weight ",
                                                     in.weights(b), ", loss ", in.running_loss(b),
                                                     ", count ", in.cumulative(b)));
    }
    state.weights[b] = in.weights(b);
    state.running_loss[b] = in.running_loss(b);
    state.has_loss[b] = in.has_loss(b);
    state.cumulative[b] = in.cumulative(b);
  }
  state.updates = in.updates();
  return state;
}

}  // namespace choir::scheduler_internal
