#include "scheduler/scheduler_client.h"

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "glog/logging.h"
#include "scheduler/internal/wire.h"

namespace choir {
namespace {

using scheduler_internal::BodyFrame;
using scheduler_internal::FromWire;
using scheduler_internal::ParseBody;
using scheduler_internal::ReweighterStateFromWire;
using scheduler_internal::ReweighterStateToWire;
using scheduler_internal::Seconds;
using scheduler_internal::ToWaitMicros;
using scheduler_internal::ToWire;
using transport::Frame;
namespace wire = scheduler::wire;

constexpr int kB = data::kNumBuckets;

std::chrono::steady_clock::duration ToSteady(absl::Duration d) {
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      absl::ToChronoNanoseconds(d));
}

// The membership in a register answer, checked: every list complete and in index order.
absl::StatusOr<Membership> ReadMembership(const wire::RegisterResponse& response,
                                          const std::string& what) {
  Membership membership;
  for (PeerRole role : {PeerRole::kServer, PeerRole::kWorker}) {
    const auto& entries = role == PeerRole::kServer ? response.servers() : response.workers();
    std::vector<PeerInfo>& out =
        role == PeerRole::kServer ? membership.servers : membership.workers;
    for (const wire::PeerEntry& entry : entries) {
      absl::StatusOr<PeerInfo> peer = FromWire(entry);
      if (!peer.ok() || peer->role != role || peer->index != static_cast<int>(out.size()) ||
          peer->id.empty()) {
        return absl::DataLossError(absl::StrCat(what, ": the membership's ", PeerRoleName(role),
                                                " entry ", out.size(), " is malformed (role '",
                                                entry.role(), "', index ", entry.index(), ", id '",
                                                entry.id(), "')"));
      }
      out.push_back(*std::move(peer));
    }
  }
  if (membership.workers.empty()) {
    return absl::DataLossError(absl::StrCat(what, ": the membership has no workers"));
  }
  membership.reweight_every_steps = response.reweight_every_steps();
  membership.reweighting_policy = response.reweighting_policy();
  return membership;
}

}  // namespace

absl::Status ValidateSchedulerClientOptions(const SchedulerClientOptions& o) {
  if (o.scheduler_id.empty()) return absl::InvalidArgumentError("scheduler_id must not be empty");
  if (!(o.heartbeat_interval > absl::ZeroDuration()) ||
      o.heartbeat_interval == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("heartbeat_interval must be positive and finite, got ",
                     absl::FormatDuration(o.heartbeat_interval)));
  }
  if (!(o.scheduler_timeout > o.heartbeat_interval) ||
      o.scheduler_timeout == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("scheduler_timeout must be finite and longer than heartbeat_interval (",
                     absl::FormatDuration(o.heartbeat_interval), "), got ",
                     absl::FormatDuration(o.scheduler_timeout)));
  }
  if (o.reply_margin < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("reply_margin must be >= 0, got ", absl::FormatDuration(o.reply_margin)));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<SchedulerClient>> SchedulerClient::Create(
    std::unique_ptr<transport::Endpoint> endpoint, SchedulerClientOptions options) {
  if (endpoint == nullptr) return absl::InvalidArgumentError("scheduler client: no endpoint");
  RETURN_IF_ERROR(Annotate(ValidateSchedulerClientOptions(options), "scheduler client options"));
  RETURN_IF_ERROR(endpoint->AddPeer(options.scheduler_id, options.scheduler_address));
  return std::unique_ptr<SchedulerClient>(
      new SchedulerClient(std::move(endpoint), std::move(options)));
}

SchedulerClient::SchedulerClient(std::unique_ptr<transport::Endpoint> endpoint,
                                 SchedulerClientOptions options)
    : id_(endpoint->id()),
      options_(std::move(options)),
      rpc_(std::make_unique<transport::RpcClient>(std::move(endpoint))) {}

SchedulerClient::~SchedulerClient() { Shutdown(); }

void SchedulerClient::Shutdown() {
  std::thread heartbeat;
  {
    std::lock_guard<std::mutex> lock(mu_);
    shut_down_ = true;
    heartbeat.swap(heartbeat_);
  }
  cv_.notify_all();
  rpc_->Shutdown();  // a heartbeat in flight fails at once
  if (heartbeat.joinable()) heartbeat.join();
}

int64_t SchedulerClient::WaitMicros(absl::Time deadline) const {
  const absl::Duration left = deadline - absl::Now();
  return ToWaitMicros(left - std::min(options_.reply_margin, left / 4));
}

absl::Status SchedulerClient::JobStatusLocked() const {
  if (state_ == JobState::kFailed)
    return absl::AbortedError(absl::StrCat("job stopped: ", failure_));
  if (state_ == JobState::kStopping) return absl::OkStatus();
  return unreachable_;
}

absl::Status SchedulerClient::JobStatus() const {
  std::lock_guard<std::mutex> lock(mu_);
  return JobStatusLocked();
}

JobState SchedulerClient::state() const {
  std::lock_guard<std::mutex> lock(mu_);
  return state_;
}

std::string SchedulerClient::ApplyStateLocked(const wire::JobStateMessage& message) {
  absl::StatusOr<JobState> state = FromWire(message.state());
  if (!state.ok() || state_ != JobState::kRunning || !unreachable_.ok()) return "";
  state_ = *state;
  cv_.notify_all();
  switch (state_) {
    case JobState::kRunning:
      return "";
    case JobState::kStopping:
      return absl::StrCat("scheduler client ", id_, ": the job is stopping");
    case JobState::kFailed:
      failure_ = message.reason().empty() ? "the scheduler gave no reason" : message.reason();
      return absl::StrCat("scheduler client ", id_, ": job stopped: ", failure_);
  }
  return "";
}

absl::StatusOr<Membership> SchedulerClient::Register(const PeerInfo& self, absl::Time deadline) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shut_down_)
      return absl::UnavailableError(absl::StrCat("scheduler client ", id_, " is shut down"));
    if (registered_) {
      return absl::FailedPreconditionError(
          absl::StrCat("scheduler client ", id_, " has registered already"));
    }
  }
  PeerInfo me = self;
  if (me.id.empty()) me.id = id_;
  wire::RegisterRequest body;
  *body.mutable_peer() = ToWire(me);
  body.set_wait_micros(WaitMicros(deadline));
  std::vector<Frame> frames;
  frames.push_back(BodyFrame(body));
  absl::StatusOr<transport::Response> response =
      rpc_->Call(options_.scheduler_id, kSchedulerRegisterMethod, std::move(frames), deadline);
  if (!response.ok()) return response.status();
  const std::string what = absl::StrCat("register answer from scheduler ", options_.scheduler_id);
  wire::RegisterResponse answer;
  RETURN_IF_ERROR(ParseBody(response->frames, 1, what, absl::StatusCode::kDataLoss, &answer));
  absl::StatusOr<Membership> membership = ReadMembership(answer, what);
  if (!membership.ok()) return membership.status();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shut_down_)
      return absl::UnavailableError(absl::StrCat("scheduler client ", id_, " is shut down"));
    if (!registered_) {  // (a concurrent Register may have won: one heartbeat thread)
      registered_ = true;
      last_answer_ = Clock::now();
      heartbeat_ = std::thread(&SchedulerClient::HeartbeatLoop, this);
    }
  }
  return membership;
}

void SchedulerClient::HeartbeatLoop() {
  const Clock::duration interval = ToSteady(options_.heartbeat_interval);
  const Clock::duration timeout = ToSteady(options_.scheduler_timeout);
  const absl::Duration call_wait =
      std::max(options_.heartbeat_interval, options_.scheduler_timeout / 4);
  Clock::time_point next = Clock::now();  // the first heartbeat at once
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (cv_.wait_until(lock, next, [this] { return shut_down_; })) return;
      if (state_ != JobState::kRunning || !unreachable_.ok()) return;  // terminal: kept
    }
    std::vector<Frame> frames;
    frames.push_back(BodyFrame(wire::HeartbeatRequest()));
    absl::StatusOr<transport::Response> response =
        rpc_->Call(options_.scheduler_id, kSchedulerHeartbeatMethod, std::move(frames),
                   absl::Now() + call_wait);
    wire::JobStateMessage message;
    absl::Status answered = response.status();
    if (answered.ok()) {
      answered = ParseBody(response->frames, 1,
                           absl::StrCat("heartbeat answer from scheduler ", options_.scheduler_id),
                           absl::StatusCode::kDataLoss, &message);
    }
    if (answered.ok() && !FromWire(message.state()).ok()) {
      answered = absl::DataLossError(absl::StrCat("heartbeat answer from scheduler ",
                                                  options_.scheduler_id, ": unknown job state ",
                                                  static_cast<int>(message.state())));
    }
    std::string info_line;
    std::string error_line;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (shut_down_) return;
      const Clock::time_point now = Clock::now();
      if (answered.ok()) {
        last_answer_ = now;
        std::string line = ApplyStateLocked(message);
        (state_ == JobState::kFailed ? error_line : info_line) = std::move(line);
      } else {
        last_error_ = answered;
        if (now - last_answer_ > timeout && unreachable_.ok() && state_ == JobState::kRunning) {
          unreachable_ = absl::UnavailableError(absl::StrCat(
              "scheduler ", options_.scheduler_id,
              options_.scheduler_address.empty() ? "" : " at " + options_.scheduler_address,
              " answered no heartbeat for ", Seconds(absl::FromChrono(now - last_answer_)),
              " (last error: ", last_error_.ToString(), ")"));
          error_line = absl::StrCat("scheduler client ", id_, ": ", unreachable_.message());
          cv_.notify_all();
        }
      }
    }
    if (!info_line.empty()) LOG(INFO) << info_line;
    if (!error_line.empty()) LOG(ERROR) << error_line;
    next += interval;
    const Clock::time_point now = Clock::now();
    if (next < now) next = now;
  }
}

absl::Status SchedulerClient::Barrier(const std::string& name, absl::Time deadline) {
  int64_t generation;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = barrier_passed_.find(name);
    generation = (it == barrier_passed_.end() ? 0 : it->second) + 1;
  }
  wire::BarrierRequest body;
  body.set_name(name);
  body.set_generation(generation);
  body.set_wait_micros(WaitMicros(deadline));
  std::vector<Frame> frames;
  frames.push_back(BodyFrame(body));
  absl::StatusOr<transport::Response> response =
      rpc_->Call(options_.scheduler_id, kSchedulerBarrierMethod, std::move(frames), deadline);
  if (!response.ok()) return response.status();
  if (!response->frames.empty()) {
    return absl::DataLossError(absl::StrCat("barrier answer from scheduler ", options_.scheduler_id,
                                            " has ", response->frames.size(),
                                            " frame(s), expected none"));
  }
  std::lock_guard<std::mutex> lock(mu_);
  int64_t& passed = barrier_passed_[name];
  passed = std::max(passed, generation);
  return absl::OkStatus();
}

absl::StatusOr<scheduler::BucketWeights> SchedulerClient::Report(
    const scheduler::BucketStats& stats, absl::Time deadline) {
  int64_t round;
  {
    std::lock_guard<std::mutex> lock(mu_);
    round = rounds_done_ + 1;
  }
  wire::ReportRequest body;
  body.set_round(round);
  body.set_wait_micros(WaitMicros(deadline));
  std::vector<Frame> frames;
  frames.push_back(BodyFrame(body));
  frames.push_back(Frame::FromVector(std::vector<int64_t>(stats.count.begin(), stats.count.end())));
  frames.push_back(
      Frame::FromVector(std::vector<double>(stats.loss_sum.begin(), stats.loss_sum.end())));
  absl::StatusOr<transport::Response> response =
      rpc_->Call(options_.scheduler_id, kSchedulerReportMethod, std::move(frames), deadline);
  if (!response.ok()) return response.status();
  const std::string what = absl::StrCat("report answer from scheduler ", options_.scheduler_id);
  if (response->frames.size() != 1 || response->frames[0].type() != transport::ELEMENT_FLOAT64 ||
      response->frames[0].count() != kB) {
    return absl::DataLossError(
        absl::StrCat(what, ": expected one frame of ", kB, " float64 weights"));
  }
  absl::StatusOr<std::vector<double>> values = response->frames[0].ToVector<double>();
  if (!values.ok()) return absl::DataLossError(absl::StrCat(what, ": ", values.status().message()));
  scheduler::BucketWeights weights;
  for (int b = 0; b < kB; ++b) {
    if (!((*values)[b] > 0) || !std::isfinite((*values)[b])) {
      return absl::DataLossError(absl::StrCat(what, ": weight ", b, " is ", (*values)[b]));
    }
    weights[b] = (*values)[b];
  }
  std::lock_guard<std::mutex> lock(mu_);
  rounds_done_ = std::max(rounds_done_, round);
  return weights;
}

absl::StatusOr<scheduler::SampleReweighter::State> SchedulerClient::ReweighterState(absl::Time deadline) {
  wire::ReweighterRequest body;
  return CallReweighter(body, deadline);
}

absl::Status SchedulerClient::RestoreReweighter(const scheduler::SampleReweighter::State& state,
                                                int64_t completed_round, const scheduler::BucketWeights& weights,
                                                absl::Time deadline) {
  wire::ReweighterRequest body;
  body.set_set(true);
  *body.mutable_state() = ReweighterStateToWire(state);
  body.set_completed_round(completed_round);
  for (double w : weights) body.add_round_weights(w);
  return CallReweighter(body, deadline).status();
}

absl::StatusOr<scheduler::SampleReweighter::State> SchedulerClient::CallReweighter(
    const scheduler::wire::ReweighterRequest& body, absl::Time deadline) {
  std::vector<Frame> frames;
  frames.push_back(BodyFrame(body));
  absl::StatusOr<transport::Response> response =
      rpc_->Call(options_.scheduler_id, kSchedulerReweighterMethod, std::move(frames), deadline);
  if (!response.ok()) return response.status();
  const std::string what = absl::StrCat("reweighter answer from scheduler ", options_.scheduler_id);
  wire::ReweighterState out;
  RETURN_IF_ERROR(ParseBody(response->frames, 1, what, absl::StatusCode::kDataLoss, &out));
  absl::StatusOr<scheduler::SampleReweighter::State> state = ReweighterStateFromWire(out);
  if (!state.ok()) return absl::DataLossError(absl::StrCat(what, ": ", state.status().message()));
  return state;
}

void SchedulerClient::ResumeRounds(int64_t completed_round) {
  std::lock_guard<std::mutex> lock(mu_);
  rounds_done_ = completed_round;
}

absl::Status SchedulerClient::Finish(int64_t step, double loss, absl::Time deadline) {
  wire::FinishRequest body;
  body.set_step(step);
  body.set_loss(loss);
  return SendFinish(body, deadline);
}

absl::Status SchedulerClient::Fail(const absl::Status& error, absl::Time deadline) {
  if (error.ok()) return absl::InvalidArgumentError(absl::StrCat("scheduler client ", id_, ": Fail with OK"));
  wire::FinishRequest body;
  body.set_error(error.ToString());
  return SendFinish(body, deadline);
}

absl::Status SchedulerClient::SendFinish(const wire::FinishRequest& body, absl::Time deadline) {
  std::vector<Frame> frames;
  frames.push_back(BodyFrame(body));
  absl::StatusOr<transport::Response> response =
      rpc_->Call(options_.scheduler_id, kSchedulerFinishMethod, std::move(frames), deadline);
  if (!response.ok()) return response.status();
  wire::JobStateMessage message;
  RETURN_IF_ERROR(ParseBody(response->frames, 1,
                            absl::StrCat("finish answer from scheduler ", options_.scheduler_id),
                            absl::StatusCode::kDataLoss, &message));
  std::string line;
  {
    std::lock_guard<std::mutex> lock(mu_);
    line = ApplyStateLocked(message);
  }
  if (!line.empty()) LOG(INFO) << line;
  return absl::OkStatus();
}

absl::Status SchedulerClient::WaitForStop(absl::Duration timeout) {
  const Clock::time_point until =
      Clock::now() + ToSteady(std::clamp(timeout, absl::ZeroDuration(), absl::Hours(24 * 365)));
  std::unique_lock<std::mutex> lock(mu_);
  if (!registered_) {
    return absl::FailedPreconditionError(
        absl::StrCat("scheduler client ", id_, ": WaitForStop before Register"));
  }
  cv_.wait_until(lock, until, [this] {
    return shut_down_ || state_ != JobState::kRunning || !unreachable_.ok();
  });
  if (state_ != JobState::kRunning || !unreachable_.ok()) return JobStatusLocked();
  if (shut_down_) {
    return absl::UnavailableError(absl::StrCat("scheduler client ", id_, " is shut down"));
  }
  return absl::DeadlineExceededError(
      absl::StrCat("scheduler client ", id_, ": the job still runs after ", Seconds(timeout)));
}

}  // namespace choir
