// Encoding of the scheduler's RPC bodies (scheduler/proto/scheduler.proto): shared by the
// scheduler and its client, private to scheduler/.
#ifndef CHOIR_SCHEDULER_INTERNAL_WIRE_H_
#define CHOIR_SCHEDULER_INTERNAL_WIRE_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "core/transport.h"
#include "google/protobuf/message_lite.h"
#include "scheduler/membership.h"
#include "scheduler/proto/scheduler.pb.h"
#include "scheduler/reweighting.h"

namespace choir::scheduler_internal {

namespace wire = ::choir::scheduler::wire;

// `message` serialized into a bytes frame.
transport::Frame BodyFrame(const google::protobuf::MessageLite& message);

// Parses frame 0 of `frames` into `out` after checking that there are `want_frames` frames
// and frame 0 holds bytes. `what` names the method for messages; the error code is `code`
// (INVALID_ARGUMENT for requests, DATA_LOSS for responses).
absl::Status ParseBody(const std::vector<transport::Frame>& frames, size_t want_frames,
                       const std::string& what, absl::StatusCode code,
                       google::protobuf::MessageLite* out);

wire::PeerEntry ToWire(const PeerInfo& peer);

// The reweighter's state on the wire; INVALID_ARGUMENT unless every array has kNumBuckets
// entries, the weights are finite and positive, the losses finite, the counts and updates >= 0.
wire::ReweighterState ReweighterStateToWire(const scheduler::SampleReweighter::State& state);
absl::StatusOr<scheduler::SampleReweighter::State> ReweighterStateFromWire(const wire::ReweighterState& in);
// INVALID_ARGUMENT for an unknown role; the index and id are not checked here.
absl::StatusOr<PeerInfo> FromWire(const wire::PeerEntry& entry);

wire::JobStateCode ToWire(JobState state);
// INVALID_ARGUMENT for JOB_STATE_UNSPECIFIED or an unknown value.
absl::StatusOr<JobState> FromWire(wire::JobStateCode code);

// A duration as the wire's microseconds, clamped to [0, int64 max]; infinite -> int64 max.
int64_t ToWaitMicros(absl::Duration duration);

// "0.3 s", "10.0 s": durations in messages.
std::string Seconds(absl::Duration duration);

}  // namespace choir::scheduler_internal

#endif  // CHOIR_SCHEDULER_INTERNAL_WIRE_H_
