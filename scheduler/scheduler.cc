#include "scheduler/scheduler.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
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
using scheduler_internal::ToWire;
using transport::Frame;
using transport::RpcRequest;
namespace wire = scheduler::wire;

constexpr int kB = data::kNumBuckets;
// Bounds on what a peer may make the scheduler keep.
constexpr size_t kMaxBarrierNames = 1024;
constexpr size_t kMaxNameBytes = 256;  // a barrier name
constexpr size_t kMaxIdBytes = 1024;   // a peer's id or address
constexpr int kMaxPeers = 4096;        // num_servers + num_workers (one thread each)
// A report's sample count per bucket: far above any real interval, low enough that summing
// kMaxPeers of them cannot overflow.
constexpr int64_t kMaxReportCount = int64_t{1} << 40;

std::chrono::steady_clock::duration ToSteady(absl::Duration d) {
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      absl::ToChronoNanoseconds(d));
}

// How often the monitor (and WaitForEnd) looks at the heartbeats.
absl::Duration MonitorPeriod(absl::Duration timeout) {
  return std::clamp(timeout / 10, absl::Milliseconds(1), absl::Seconds(1));
}

absl::Status Check(bool ok, absl::string_view what) {
  return ok ? absl::OkStatus() : absl::InvalidArgumentError(what);
}

}  // namespace

absl::Status ValidateSchedulerOptions(const SchedulerOptions& o) {
  if (o.num_servers < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_servers must be >= 0, got ", o.num_servers));
  }
  if (o.num_workers < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_workers must be >= 1, got ", o.num_workers));
  }
  if (o.num_servers > kMaxPeers - o.num_workers) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_servers + num_workers must be <= ", kMaxPeers, ", got ",
                     int64_t{o.num_servers} + o.num_workers));
  }
  if (!(o.heartbeat_timeout > absl::ZeroDuration()) ||
      o.heartbeat_timeout == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("heartbeat_timeout must be positive and finite, got ",
                     absl::FormatDuration(o.heartbeat_timeout)));
  }
  if (!(o.max_wait > absl::ZeroDuration()) || o.max_wait == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(absl::StrCat("max_wait must be positive and finite, got ",
                                                   absl::FormatDuration(o.max_wait)));
  }
  if (o.rpc.worker_threads < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("rpc.worker_threads must be >= 1, got ", o.rpc.worker_threads));
  }
  if (absl::Status st = scheduler::ValidateReweightingOptions(o.reweighting); !st.ok()) {
    return Annotate(st, "reweighting");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Scheduler>> Scheduler::Start(
    std::unique_ptr<transport::Endpoint> endpoint, SchedulerOptions options) {
  if (endpoint == nullptr) return absl::InvalidArgumentError("scheduler: no endpoint");
  RETURN_IF_ERROR(Annotate(ValidateSchedulerOptions(options), "scheduler options"));
  absl::StatusOr<scheduler::SampleReweighter> reweighter =
      scheduler::SampleReweighter::Create(options.reweighting);
  if (!reweighter.ok()) return reweighter.status();
  std::string id = endpoint->id();
  std::string address = endpoint->address();
  std::unique_ptr<Scheduler> scheduler(
      new Scheduler(std::move(id), std::move(address), options, *std::move(reweighter)));

  transport::RpcServerOptions rpc_options = options.rpc;
  rpc_options.worker_threads =
      std::max(rpc_options.worker_threads, options.num_servers + options.num_workers + 2);
  auto rpc = std::make_unique<transport::RpcServer>(std::move(endpoint), rpc_options);
  Scheduler* self = scheduler.get();
  using Handler = absl::StatusOr<std::vector<Frame>> (Scheduler::*)(RpcRequest&);
  const std::pair<const char*, Handler> methods[] = {
      {kSchedulerRegisterMethod, &Scheduler::HandleRegister},
      {kSchedulerHeartbeatMethod, &Scheduler::HandleHeartbeat},
      {kSchedulerBarrierMethod, &Scheduler::HandleBarrier},
      {kSchedulerReportMethod, &Scheduler::HandleReport},
      {kSchedulerFinishMethod, &Scheduler::HandleFinish},
      {kSchedulerReweighterMethod, &Scheduler::HandleReweighter},
  };
  for (const auto& [name, handler] : methods) {
    RETURN_IF_ERROR(rpc->Register(name, [self, handler = handler](RpcRequest& request) {
      return (self->*handler)(request);
    }));
  }
  RETURN_IF_ERROR(rpc->Start());
  scheduler->rpc_ = std::move(rpc);
  scheduler->monitor_ = std::thread(&Scheduler::MonitorLoop, self);
  LOG(INFO) << "scheduler " << self->id_ << " at " << self->address_ << ": expecting "
            << options.num_servers << " server(s) and " << options.num_workers
            << " worker(s); heartbeat timeout " << Seconds(options.heartbeat_timeout)
            << "; reweighting " << scheduler::ReweightingPolicyName(options.reweighting.policy)
            << " every " << options.reweighting.every_steps << " steps";
  return scheduler;
}

Scheduler::Scheduler(std::string id, std::string address, SchedulerOptions options,
                     scheduler::SampleReweighter reweighter)
    : id_(std::move(id)),
      address_(std::move(address)),
      options_(std::move(options)),
      round_stats_(options_.num_workers),
      reweighter_(std::move(reweighter)) {
  peers_.resize(options_.num_servers + options_.num_workers);
  for (int i = 0; i < static_cast<int>(peers_.size()); ++i) {
    const bool server = i < options_.num_servers;
    peers_[i].info.role = server ? PeerRole::kServer : PeerRole::kWorker;
    peers_[i].info.index = server ? i : i - options_.num_servers;
  }
  round_weights_.fill(1.0);
}

Scheduler::~Scheduler() { Shutdown(); }

absl::Status Scheduler::AddPeer(const std::string& peer, const std::string& address) {
  return rpc_->endpoint()->AddPeer(peer, address);
}

void Scheduler::Shutdown() {
  std::thread monitor;
  {
    std::lock_guard<std::mutex> lock(mu_);
    shutting_down_ = true;
    monitor.swap(monitor_);
  }
  cv_.notify_all();
  if (monitor.joinable()) monitor.join();
  // Handlers blocked in waits have been woken above and return UNAVAILABLE; the RpcServer
  // answers them (and queued requests) and waits for its threads.
  if (rpc_ != nullptr) rpc_->Shutdown();
}

JobState Scheduler::state() const {
  std::lock_guard<std::mutex> lock(mu_);
  return state_;
}

absl::Status Scheduler::JobStatus() const {
  std::lock_guard<std::mutex> lock(mu_);
  return JobStatusLocked();
}

absl::Status Scheduler::JobStatusLocked() const {
  if (state_ == JobState::kFailed)
    return absl::AbortedError(absl::StrCat("job stopped: ", failure_));
  return absl::OkStatus();
}

std::vector<Frame> Scheduler::JobStateFramesLocked() const {
  wire::JobStateMessage message;
  message.set_state(ToWire(state_));
  if (state_ == JobState::kFailed) message.set_reason(failure_);
  std::vector<Frame> frames;
  frames.push_back(BodyFrame(message));
  return frames;
}

bool Scheduler::FailLocked(std::string reason) {
  if (state_ != JobState::kRunning) return false;
  state_ = JobState::kFailed;
  failure_ = std::move(reason);
  cv_.notify_all();
  return true;
}

Scheduler::Clock::time_point Scheduler::WaitUntil(int64_t wait_micros) const {
  const absl::Duration wait = std::min(absl::Microseconds(wait_micros), options_.max_wait);
  return Clock::now() + ToSteady(wait);
}

absl::StatusOr<Scheduler::Peer*> Scheduler::SenderLocked(const RpcRequest& request,
                                                         bool worker_only) {
  auto it = by_sender_.find(request.peer);
  if (it == by_sender_.end()) {
    return absl::FailedPreconditionError(absl::StrCat(
        request.method, " from ", request.peer, ", which has not registered with scheduler ", id_));
  }
  Peer* peer = &peers_[it->second];
  if (worker_only && peer->info.role != PeerRole::kWorker) {
    return absl::InvalidArgumentError(
        absl::StrCat(request.method, " is for workers; ", PeerName(peer->info), " called it"));
  }
  return peer;
}

absl::Status Scheduler::WaitLocked(std::unique_lock<std::mutex>& lock, Peer* peer,
                                   Clock::time_point until, const std::function<bool()>& done,
                                   const std::function<std::vector<int>()>& missing,
                                   const std::string& what) {
  if (done()) return absl::OkStatus();
  if (peer->waiting) {
    return absl::FailedPreconditionError(
        absl::StrCat(what, ": ", peer->registered ? PeerName(peer->info) : peer->sender,
                     " already has a call waiting at the scheduler"));
  }
  // The first missing worker that finished (it will never arrive), or -1.
  auto finished_missing = [&]() -> int {
    if (!missing) return -1;
    for (int i : missing()) {
      if (peers_[i].finished) return i;
    }
    return -1;
  };
  const Clock::time_point start = Clock::now();
  peer->waiting = true;
  cv_.wait_until(lock, until, [&] {
    return done() || shutting_down_ || state_ == JobState::kFailed || finished_missing() >= 0;
  });
  peer->waiting = false;
  if (done()) return absl::OkStatus();
  if (shutting_down_) {
    return absl::UnavailableError(absl::StrCat(what, ": scheduler ", id_, " is shutting down"));
  }
  if (state_ == JobState::kFailed) return Annotate(JobStatusLocked(), what);
  if (int i = finished_missing(); i >= 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(what, ": ", PeerName(peers_[i].info), " has already finished"));
  }
  std::vector<std::string> names;
  if (missing) {
    for (int i : missing()) {
      names.push_back(peers_[i].registered
                          ? PeerName(peers_[i].info)
                          : absl::StrCat(PeerRoleName(peers_[i].info.role), " ",
                                         peers_[i].info.index, " (not registered)"));
    }
  }
  return absl::DeadlineExceededError(
      absl::StrCat(what, ": after ", Seconds(absl::FromChrono(Clock::now() - start)),
                   " still waiting for ", absl::StrJoin(names, ", ")));
}

// ---------------------------------------------------------------------------------------------
// register

absl::StatusOr<std::vector<Frame>> Scheduler::HandleRegister(RpcRequest& request) {
  wire::RegisterRequest body;
  RETURN_IF_ERROR(
      ParseBody(request.frames, 1, "register", absl::StatusCode::kInvalidArgument, &body));
  absl::StatusOr<PeerInfo> parsed = FromWire(body.peer());
  if (!parsed.ok()) return Annotate(parsed.status(), absl::StrCat("register from ", request.peer));
  const PeerInfo& info = *parsed;
  const int count = info.role == PeerRole::kServer ? options_.num_servers : options_.num_workers;
  RETURN_IF_ERROR(Check(info.index >= 0 && info.index < count,
                        absl::StrCat("register from ", request.peer, ": ", PeerRoleName(info.role),
                                     " index ", info.index, " is outside [0, ", count, ")")));
  RETURN_IF_ERROR(Check(!info.id.empty() && info.id.size() <= kMaxIdBytes,
                        absl::StrCat("register from ", request.peer, ": id must have 1 to ",
                                     kMaxIdBytes, " bytes, has ", info.id.size())));
  RETURN_IF_ERROR(Check(info.address.size() <= kMaxIdBytes,
                        absl::StrCat("register from ", request.peer, ": address longer than ",
                                     kMaxIdBytes, " bytes")));
  RETURN_IF_ERROR(Check(info.role != PeerRole::kServer || !info.address.empty(),
                        absl::StrCat("register from ", request.peer, ": ", PeerName(info),
                                     " gave no address for workers to reach it")));
  RETURN_IF_ERROR(Check(
      body.wait_micros() >= 0,
      absl::StrCat("register from ", request.peer, ": negative wait_micros ", body.wait_micros())));
  const Clock::time_point until = WaitUntil(body.wait_micros());
  const int slot = (info.role == PeerRole::kServer ? 0 : options_.num_servers) + info.index;

  std::vector<std::string> logs;
  absl::Status status;
  wire::RegisterResponse response;
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (shutting_down_) {
      return absl::UnavailableError(absl::StrCat("register: scheduler ", id_, " is shutting down"));
    }
    Peer& peer = peers_[slot];
    if (peer.registered) {
      if (peer.sender != request.peer) {
        return absl::FailedPreconditionError(absl::StrCat(
            "register: ", PeerName(peer.info), " is already registered by ", peer.sender, "; ",
            request.peer, " cannot register as it (id ", info.id, ")"));
      }
      if (peer.info.id != info.id || peer.info.address != info.address) {
        return absl::FailedPreconditionError(absl::StrCat(
            "register: ", request.peer, " registered ", PeerName(peer.info), " at '",
            peer.info.address, "' and now asks for id ", info.id, " at '", info.address, "'"));
      }
      // The same registration again: a retry, answered like the first.
    } else {
      if (auto it = by_sender_.find(request.peer); it != by_sender_.end()) {
        return absl::FailedPreconditionError(
            absl::StrCat("register: ", request.peer, " already registered as ",
                         PeerName(peers_[it->second].info), " and cannot also be ",
                         PeerRoleName(info.role), " ", info.index));
      }
      for (const Peer& other : peers_) {
        if (other.registered && other.info.id == info.id) {
          return absl::FailedPreconditionError(
              absl::StrCat("register: id ", info.id, " is already taken by ", PeerName(other.info),
                           " (from ", other.sender, "); ", request.peer, " asked for it as ",
                           PeerRoleName(info.role), " ", info.index));
        }
      }
      peer.info.id = info.id;
      peer.info.address = info.address;
      peer.registered = true;
      peer.sender = request.peer;
      by_sender_[request.peer] = slot;
      ++registered_;
      logs.push_back(absl::StrCat("scheduler: ", PeerName(peer.info), " registered from ",
                                  request.peer,
                                  peer.info.address.empty() ? "" : " at " + peer.info.address, " (",
                                  registered_, " of ", peers_.size(), ")"));
      if (registered_ == static_cast<int>(peers_.size())) {
        rendezvous_done_ = true;
        const Clock::time_point now = Clock::now();
        for (Peer& p : peers_) p.last_heartbeat = now;
        logs.push_back(absl::StrCat("scheduler: rendezvous complete: ", options_.num_servers,
                                    " server(s), ", options_.num_workers, " worker(s)"));
        cv_.notify_all();
      }
    }
    status = WaitLocked(
        lock, &peer, until, [this] { return rendezvous_done_; },
        [this] {
          std::vector<int> missing;
          for (int i = 0; i < static_cast<int>(peers_.size()); ++i) {
            if (!peers_[i].registered) missing.push_back(i);
          }
          return missing;
        },
        absl::StrCat("register ", PeerName(peer.info)));
    if (status.ok()) {
      for (const Peer& p : peers_) {
        *(p.info.role == PeerRole::kServer ? response.add_servers() : response.add_workers()) =
            ToWire(p.info);
      }
      response.set_reweight_every_steps(options_.reweighting.every_steps);
      response.set_reweighting_policy(
          scheduler::ReweightingPolicyName(options_.reweighting.policy));
    } else if (absl::IsDeadlineExceeded(status)) {
      status = absl::DeadlineExceededError(absl::StrCat(status.message(), " (", registered_, " of ",
                                                        peers_.size(), " peers registered)"));
    }
  }
  for (const std::string& line : logs) LOG(INFO) << line;
  if (!status.ok()) return status;
  std::vector<Frame> frames;
  frames.push_back(BodyFrame(response));
  return frames;
}

// ---------------------------------------------------------------------------------------------
// heartbeat

absl::StatusOr<std::vector<Frame>> Scheduler::HandleHeartbeat(RpcRequest& request) {
  std::vector<Frame> response;
  absl::Status rejected;
  {
    std::lock_guard<std::mutex> lock(mu_);
    absl::StatusOr<Peer*> peer = SenderLocked(request, /*worker_only=*/false);
    if (!peer.ok()) {
      rejected = peer.status();
    } else {
      wire::HeartbeatRequest body;
      rejected =
          ParseBody(request.frames, 1, "heartbeat", absl::StatusCode::kInvalidArgument, &body);
      if (rejected.ok()) {
        (*peer)->last_heartbeat = Clock::now();
        if (state_ != JobState::kRunning && !(*peer)->told_end) {
          (*peer)->told_end = true;
          cv_.notify_all();
        }
        response = JobStateFramesLocked();
      }
    }
  }
  if (!rejected.ok()) {
    LOG(WARNING) << "scheduler " << id_ << ": rejected heartbeat from " << request.peer << ": "
                 << rejected;
    return rejected;
  }
  return response;
}

// ---------------------------------------------------------------------------------------------
// barrier

absl::StatusOr<std::vector<Frame>> Scheduler::HandleBarrier(RpcRequest& request) {
  wire::BarrierRequest body;
  absl::Status status;
  {
    std::unique_lock<std::mutex> lock(mu_);
    absl::StatusOr<Peer*> sender = SenderLocked(request, /*worker_only=*/true);
    status = sender.status();
    if (status.ok()) {
      status = ParseBody(request.frames, 1, "barrier", absl::StatusCode::kInvalidArgument, &body);
    }
    if (status.ok()) {
      Peer* peer = *sender;
      const std::string what = absl::StrCat("barrier '", body.name(), "' generation ",
                                            body.generation(), " of ", PeerName(peer->info));
      if (body.name().empty() || body.name().size() > kMaxNameBytes) {
        return absl::InvalidArgumentError(absl::StrCat("barrier from ", PeerName(peer->info),
                                                       ": name must have 1 to ", kMaxNameBytes,
                                                       " bytes, has ", body.name().size()));
      }
      if (body.generation() < 1 || body.wait_micros() < 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            what, ": generation must be >= 1 and wait_micros >= 0, got ", body.wait_micros()));
      }
      if (state_ == JobState::kFailed) return Annotate(JobStatusLocked(), what);
      auto it = barriers_.find(body.name());
      if (it == barriers_.end()) {
        if (barriers_.size() >= kMaxBarrierNames) {
          return absl::ResourceExhaustedError(
              absl::StrCat(what, ": the scheduler already holds ", kMaxBarrierNames, " barriers"));
        }
        BarrierState fresh;
        fresh.arrived.assign(options_.num_workers, false);
        it = barriers_.emplace(body.name(), std::move(fresh)).first;
      }
      BarrierState& barrier = it->second;
      const int64_t generation = body.generation();
      if (generation == barrier.passed) return std::vector<Frame>();  // a repeat: passed
      if (generation != barrier.passed + 1) {
        return absl::FailedPreconditionError(
            absl::StrCat(what, ": the barrier has passed generation ", barrier.passed,
                         ", so the next is ", barrier.passed + 1));
      }
      const int w = peer->info.index;
      if (!barrier.arrived[w]) {
        barrier.arrived[w] = true;
        ++barrier.arrivals;
      }
      if (barrier.arrivals == options_.num_workers) {
        barrier.passed = generation;
        barrier.arrived.assign(options_.num_workers, false);
        barrier.arrivals = 0;
        cv_.notify_all();
        return std::vector<Frame>();
      }
      status = WaitLocked(
          lock, peer, WaitUntil(body.wait_micros()),
          [&barrier, generation] { return barrier.passed >= generation; },
          [this, &barrier] {
            std::vector<int> missing;
            for (int w = 0; w < options_.num_workers; ++w) {
              if (!barrier.arrived[w]) missing.push_back(options_.num_servers + w);
            }
            return missing;
          },
          what);
      if (status.ok()) return std::vector<Frame>();
      return status;
    }
  }
  LOG(WARNING) << "scheduler " << id_ << ": rejected barrier from " << request.peer << ": "
               << status;
  return status;
}

// ---------------------------------------------------------------------------------------------
// report

namespace {

// The statistics in frames 1 and 2 of a report, checked.
absl::StatusOr<scheduler::BucketStats> ReadReportStats(const std::vector<Frame>& frames,
                                                       const std::string& what) {
  const Frame& counts = frames[1];
  const Frame& losses = frames[2];
  if (counts.type() != transport::ELEMENT_INT64 || counts.count() != kB) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": frame 1 must hold ", kB, " int64 sample counts, has ", counts.count(),
                     " of ", transport::ElementType_Name(counts.type())));
  }
  if (losses.type() != transport::ELEMENT_FLOAT64 || losses.count() != kB) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": frame 2 must hold ", kB, " float64 loss sums, has ", losses.count(),
                     " of ", transport::ElementType_Name(losses.type())));
  }
  absl::StatusOr<std::vector<int64_t>> c = counts.ToVector<int64_t>();
  if (!c.ok()) return c.status();
  absl::StatusOr<std::vector<double>> l = losses.ToVector<double>();
  if (!l.ok()) return l.status();
  scheduler::BucketStats stats;
  for (int b = 0; b < kB; ++b) {
    const char* bucket = data::BucketName(static_cast<data::Bucket>(b));
    if ((*c)[b] < 0 || (*c)[b] > kMaxReportCount) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": sample count of bucket ", bucket,
                                                     " must be in [0, 2^40], got ", (*c)[b]));
    }
    if (!((*l)[b] >= 0) || !std::isfinite((*l)[b])) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": loss sum of bucket ", bucket,
                                                     " must be finite and >= 0, got ", (*l)[b]));
    }
    stats.count[b] = (*c)[b];
    stats.loss_sum[b] = (*l)[b];
  }
  return stats;
}

std::vector<Frame> WeightFrames(const scheduler::BucketWeights& weights) {
  std::vector<Frame> frames;
  frames.push_back(Frame::FromVector(std::vector<double>(weights.begin(), weights.end())));
  return frames;
}

bool SameStats(const scheduler::BucketStats& a, const scheduler::BucketStats& b) {
  return a.count == b.count && a.loss_sum == b.loss_sum;
}

}  // namespace

absl::StatusOr<std::vector<Frame>> Scheduler::HandleReport(RpcRequest& request) {
  wire::ReportRequest body;
  absl::Status status;
  std::string log_line;
  std::string failure_line;
  std::vector<Frame> response;
  {
    std::unique_lock<std::mutex> lock(mu_);
    absl::StatusOr<Peer*> sender = SenderLocked(request, /*worker_only=*/true);
    status = sender.status();
    if (status.ok()) {
      status = ParseBody(request.frames, 3, "report", absl::StatusCode::kInvalidArgument, &body);
    }
    if (!status.ok()) {
      lock.unlock();
      LOG(WARNING) << "scheduler " << id_ << ": rejected report from " << request.peer << ": "
                   << status;
      return status;
    }
    Peer* peer = *sender;
    const int64_t round = body.round();
    const std::string what =
        absl::StrCat("reweighting round ", round, " report of ", PeerName(peer->info));
    if (round < 1 || body.wait_micros() < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": round must be >= 1 and wait_micros >= 0, got ", body.wait_micros()));
    }
    absl::StatusOr<scheduler::BucketStats> stats = ReadReportStats(request.frames, what);
    if (!stats.ok()) return stats.status();
    if (state_ == JobState::kFailed) return Annotate(JobStatusLocked(), what);
    if (round == completed_round_) return WeightFrames(round_weights_);  // a repeat
    if (round != completed_round_ + 1) {
      return absl::FailedPreconditionError(
          absl::StrCat(what, ": the scheduler has completed round ", completed_round_,
                       ", so the next is ", completed_round_ + 1));
    }
    const int w = peer->info.index;
    if (!round_stats_[w].has_value()) {
      round_stats_[w] = *stats;
      ++round_arrivals_;
    } else if (!SameStats(*round_stats_[w], *stats)) {
      return absl::FailedPreconditionError(
          absl::StrCat(what, ": differs from the report it already sent for this round"));
    }
    if (round_arrivals_ == options_.num_workers) {
      // Everyone is in: sum in worker order (deterministic), update once, answer everyone.
      scheduler::BucketStats sum;
      for (const std::optional<scheduler::BucketStats>& s : round_stats_) {
        for (int b = 0; b < kB; ++b) {
          sum.count[b] += s->count[b];
          sum.loss_sum[b] += s->loss_sum[b];
        }
      }
      for (std::optional<scheduler::BucketStats>& s : round_stats_) s.reset();
      round_arrivals_ = 0;
      absl::StatusOr<scheduler::BucketWeights> weights = reweighter_.Update(sum);
      if (!weights.ok()) {
        std::string reason =
            absl::StrCat("reweighting round ", round, " failed: ", weights.status().message());
        failure_line = reason;
        FailLocked(std::move(reason));
        status = Annotate(JobStatusLocked(), what);
      } else {
        completed_round_ = round;
        round_weights_ = *weights;
        cv_.notify_all();
        int64_t samples = 0;
        for (int b = 0; b < kB; ++b) samples += sum.count[b];
        log_line = absl::StrCat("scheduler: reweighting round ", round, " (",
                                scheduler::ReweightingPolicyName(options_.reweighting.policy),
                                ", steps up to ", round * options_.reweighting.every_steps, ", ",
                                samples, " samples from ", options_.num_workers,
                                " worker(s)): weights ", scheduler::FormatBucketWeights(*weights));
        response = WeightFrames(round_weights_);
      }
    } else {
      status = WaitLocked(
          lock, peer, WaitUntil(body.wait_micros()),
          [this, round] { return completed_round_ >= round; },
          [this] {
            std::vector<int> missing;
            for (int w = 0; w < options_.num_workers; ++w) {
              if (!round_stats_[w].has_value()) missing.push_back(options_.num_servers + w);
            }
            return missing;
          },
          what);
      if (status.ok()) response = WeightFrames(round_weights_);
    }
  }
  if (!log_line.empty()) LOG(INFO) << log_line;
  if (!failure_line.empty()) LOG(ERROR) << "scheduler " << id_ << ": job failed: " << failure_line;
  if (!status.ok()) return status;
  return response;
}

// ---------------------------------------------------------------------------------------------
// finish

absl::StatusOr<std::vector<Frame>> Scheduler::HandleFinish(RpcRequest& request) {
  std::vector<std::string> logs;
  std::string failure_line;
  absl::Status status;
  std::vector<Frame> response;
  {
    std::lock_guard<std::mutex> lock(mu_);
    absl::StatusOr<Peer*> sender = SenderLocked(request, /*worker_only=*/true);
    status = sender.status();
    wire::FinishRequest body;
    if (status.ok()) {
      status = ParseBody(request.frames, 1, "finish", absl::StatusCode::kInvalidArgument, &body);
    }
    if (status.ok() && body.step() < 0) {
      status = absl::InvalidArgumentError(
          absl::StrCat("finish from ", PeerName((*sender)->info), ": negative step ", body.step()));
    }
    if (status.ok() && !body.error().empty()) {
      // The worker stopped on an error: the job fails now, naming it and its error.
      Peer* peer = *sender;
      std::string reason = absl::StrCat(PeerName(peer->info), " failed: ", body.error());
      if (FailLocked(reason)) failure_line = std::move(reason);
      peer->told_end = true;
      response = JobStateFramesLocked();
    } else if (status.ok()) {
      Peer* peer = *sender;
      if (!peer->finished) {
        peer->finished = true;
        ++finished_;
        logs.push_back(absl::StrFormat("scheduler: %s finished at step %d, loss %.6g (%d of %d)",
                                       PeerName(peer->info), body.step(), body.loss(), finished_,
                                       options_.num_workers));
        if (finished_ == options_.num_workers && state_ == JobState::kRunning) {
          state_ = JobState::kStopping;
          logs.push_back("scheduler: every worker finished; the job is stopping");
        }
        cv_.notify_all();
      }
      if (state_ != JobState::kRunning) peer->told_end = true;
      response = JobStateFramesLocked();
    }
  }
  for (const std::string& line : logs) LOG(INFO) << line;
  if (!failure_line.empty()) LOG(ERROR) << "scheduler " << id_ << ": job failed: " << failure_line;
  if (!status.ok()) {
    LOG(WARNING) << "scheduler " << id_ << ": rejected finish from " << request.peer << ": "
                 << status;
    return status;
  }
  return response;
}

// ---------------------------------------------------------------------------------------------
// reweighter

absl::StatusOr<std::vector<Frame>> Scheduler::HandleReweighter(RpcRequest& request) {
  wire::ReweighterRequest body;
  absl::Status status;
  std::string log_line;
  wire::ReweighterState out;
  {
    std::lock_guard<std::mutex> lock(mu_);
    absl::StatusOr<Peer*> sender = SenderLocked(request, /*worker_only=*/true);
    status = sender.status();
    if (status.ok()) {
      status = ParseBody(request.frames, 1, "reweighter", absl::StatusCode::kInvalidArgument, &body);
    }
    if (status.ok() && body.set()) {
      const std::string what = absl::StrCat("reweighter state from ", PeerName((*sender)->info));
      absl::StatusOr<scheduler::SampleReweighter::State> state = ReweighterStateFromWire(body.state());
      if (!state.ok()) {
        status = absl::InvalidArgumentError(absl::StrCat(what, ": ", state.status().message()));
      } else if (body.completed_round() < 0 || body.round_weights_size() != kB) {
        status = absl::InvalidArgumentError(
            absl::StrCat(what, ": completed_round must be >= 0 with ", kB, " round weights"));
      } else if (round_arrivals_ > 0) {
        status = absl::FailedPreconditionError(
            absl::StrCat(what, ": round ", completed_round_ + 1, " already has reports"));
      } else {
        for (int b = 0; b < kB; ++b) {
          if (!(body.round_weights(b) > 0) || !std::isfinite(body.round_weights(b))) {
            status = absl::InvalidArgumentError(absl::StrCat(what, ": round weight ", b, " is ",
                                                             body.round_weights(b)));
          }
        }
        if (status.ok()) {
          reweighter_.Restore(*state);
          completed_round_ = body.completed_round();
          for (int b = 0; b < kB; ++b) round_weights_[b] = body.round_weights(b);
          log_line = absl::StrCat("scheduler: reweighter restored by ", PeerName((*sender)->info),
                                  " at round ", completed_round_, ": weights ",
                                  scheduler::FormatBucketWeights(round_weights_));
        }
      }
    }
    if (status.ok()) out = ReweighterStateToWire(reweighter_.state());
  }
  if (!status.ok()) {
    LOG(WARNING) << "scheduler " << id_ << ": rejected reweighter call from " << request.peer << ": "
                 << status;
    return status;
  }
  if (!log_line.empty()) LOG(INFO) << log_line;
  std::vector<Frame> frames;
  frames.push_back(BodyFrame(out));
  return frames;
}

// ---------------------------------------------------------------------------------------------
// Failure detection and the end of the job

void Scheduler::MonitorLoop() {
  const auto period = ToSteady(MonitorPeriod(options_.heartbeat_timeout));
  const auto timeout = ToSteady(options_.heartbeat_timeout);
  std::unique_lock<std::mutex> lock(mu_);
  while (!cv_.wait_for(lock, period, [this] { return shutting_down_; })) {
    if (!rendezvous_done_ || state_ != JobState::kRunning) continue;
    const Clock::time_point now = Clock::now();
    for (const Peer& peer : peers_) {
      if (peer.finished) continue;  // a worker that is done may go away
      const Clock::duration silence = now - peer.last_heartbeat;
      if (silence <= timeout) continue;
      std::string reason = absl::StrCat(PeerName(peer.info), " sent no heartbeat for ",
                                        Seconds(absl::FromChrono(silence)));
      FailLocked(reason);
      lock.unlock();
      LOG(ERROR) << "scheduler " << id_ << ": job failed: " << reason;
      lock.lock();
      break;
    }
  }
}

absl::Status Scheduler::WaitForEnd(absl::Time deadline) {
  const Clock::time_point until =
      Clock::now() +
      ToSteady(std::clamp(deadline - absl::Now(), absl::ZeroDuration(), absl::Hours(24 * 365)));
  const auto period = ToSteady(MonitorPeriod(options_.heartbeat_timeout));
  const auto timeout = ToSteady(options_.heartbeat_timeout);
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    if (shutting_down_) {
      return absl::UnavailableError(absl::StrCat("scheduler ", id_, " is shut down"));
    }
    const Clock::time_point now = Clock::now();
    if (state_ != JobState::kRunning) {
      std::vector<std::string> untold;
      for (const Peer& peer : peers_) {
        if (!peer.registered || peer.told_end || peer.finished) continue;
        if (now - peer.last_heartbeat > timeout) continue;  // gone
        untold.push_back(PeerName(peer.info));
      }
      absl::Status status = JobStatusLocked();
      if (untold.empty()) return status;
      if (now >= until) {
        const char* state = JobStateName(state_);
        lock.unlock();
        LOG(WARNING) << "scheduler " << id_ << ": the job is " << state << " but "
                     << absl::StrJoin(untold, ", ") << " have not been told yet";
        return status;
      }
    } else if (now >= until) {
      return absl::DeadlineExceededError(
          absl::StrCat("scheduler ", id_, ": the job is still running (", finished_, " of ",
                       options_.num_workers, " workers finished)"));
    }
    cv_.wait_until(lock, std::min(now + period, until));
  }
}

}  // namespace choir
