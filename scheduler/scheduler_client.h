// SchedulerClient: how a parameter server or a worker talks to the job's scheduler
// (scheduler/scheduler.h, scheduler/README.md).
//
// A peer creates one client on an endpoint of its own (not the one its ParamServer or
// RemoteEmbeddingStore uses), registers, and from then on a heartbeat thread calls the
// scheduler every heartbeat_interval and records the job state from the answers:
//
//   servers:  Register -> admit the workers in the membership -> serve ->
//             WaitForStop (returns when the job is stopping, or failed) -> shut down
//   workers:  Register -> build the RemoteEmbeddingStore from membership.servers -> train,
//             checking JobStatus() every step, Report every K steps, Barrier where needed ->
//             Finish
//
// Every call has a deadline and names the scheduler when it fails. register, barrier and
// report are held by the scheduler until the other peers arrive; the client asks it to answer
// reply_margin before the caller's deadline, so that the answer (which names the peers still
// missing) arrives before the call gives up.
//
// The scheduler going away: when no heartbeat has been answered for scheduler_timeout,
// JobStatus() becomes UNAVAILABLE naming the scheduler. The first terminal state seen (failed,
// stopping, scheduler unreachable) is kept: the heartbeat thread stops there.
//
// Thread map: the RpcClient's receive thread hands answers to waiting calls; the heartbeat
// thread (started by a successful Register, stopped by Shutdown) calls heartbeat and updates
// the job state under mu_; Register, Barrier, Report, Finish, WaitForStop and JobStatus run on
// the callers' threads (Register, Barrier and Report one call at a time). mu_ guards all state,
// cv_ wakes the heartbeat thread at shutdown and WaitForStop at a state change. No lock is held
// during an RPC or a log line.
#ifndef CHOIR_SCHEDULER_SCHEDULER_CLIENT_H_
#define CHOIR_SCHEDULER_SCHEDULER_CLIENT_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/transport.h"
#include "scheduler/membership.h"
#include "scheduler/proto/scheduler.pb.h"
#include "scheduler/reweighting.h"

namespace choir {
namespace scheduler::wire {
class JobStateMessage;
}  // namespace scheduler::wire

struct SchedulerClientOptions {
  // The scheduler endpoint's id (Scheduler::id()). Required.
  std::string scheduler_id;
  // Its address (Scheduler::address(); ignored in-process). Required for ZeroMQ.
  std::string scheduler_address;
  // How often the heartbeat thread calls the scheduler (ClusterConfig.heartbeat_ms). Shorter
  // notices a failed job sooner and costs one small message per interval. Default 500 ms; > 0.
  absl::Duration heartbeat_interval = absl::Milliseconds(500);
  // No heartbeat answered for this long: the scheduler is taken for dead and JobStatus()
  // becomes UNAVAILABLE (ClusterConfig.peer_timeout_ms, the scheduler's heartbeat_timeout).
  // Each heartbeat waits max(heartbeat_interval, scheduler_timeout / 4) for its answer.
  // Default 10 s; > heartbeat_interval.
  absl::Duration scheduler_timeout = absl::Seconds(10);
  // register, barrier and report ask the scheduler to answer this long before the caller's
  // deadline (at most a quarter of the time left). Default 200 ms; >= 0.
  absl::Duration reply_margin = absl::Milliseconds(200);
};

// OK, or INVALID_ARGUMENT naming the bad field.
absl::Status ValidateSchedulerClientOptions(const SchedulerClientOptions& options);

class SchedulerClient {
 public:
  // A client calling the scheduler over `endpoint` (it adds the scheduler to the endpoint's
  // address book and owns the endpoint). The scheduler must admit endpoint->id()
  // (Scheduler::AddPeer). INVALID_ARGUMENT for invalid options or no endpoint.
  static absl::StatusOr<std::unique_ptr<SchedulerClient>> Create(
      std::unique_ptr<transport::Endpoint> endpoint, SchedulerClientOptions options);
  ~SchedulerClient();  // Shutdown()

  SchedulerClient(const SchedulerClient&) = delete;
  SchedulerClient& operator=(const SchedulerClient&) = delete;

  // Announces this peer (`self.id` empty: this client's endpoint id) and waits for every
  // expected peer; returns the complete membership and starts the heartbeat thread. Errors:
  // DEADLINE_EXCEEDED naming the peers still missing at `deadline`; the scheduler's
  // INVALID_ARGUMENT (role, index, id) and FAILED_PRECONDITION (the role/index is another
  // peer's); DATA_LOSS for an answer that does not parse; FAILED_PRECONDITION when this client
  // has registered already. A failed Register may be retried.
  absl::StatusOr<Membership> Register(const PeerInfo& self, absl::Time deadline);

  // OK while the job runs (and before Register) and once it is stopping; ABORTED
  // "job stopped: <reason>" once the scheduler reported a failure; UNAVAILABLE naming the
  // scheduler when no heartbeat was answered for scheduler_timeout. Cheap: reads the state the
  // heartbeat thread recorded.
  absl::Status JobStatus() const;
  JobState state() const;

  // Workers: passes barrier `name` once every worker has called it as often as this one (the
  // generation is counted per name, advanced when a call succeeds, so a failed call may be
  // retried). DEADLINE_EXCEEDED naming the workers still missing; ABORTED at once when the
  // job fails meanwhile; FAILED_PRECONDITION when a missing worker has finished.
  absl::Status Barrier(const std::string& name, absl::Time deadline);

  // Workers: one reweighting round (rounds counted by the client, advanced when a call
  // succeeds): this worker's per-bucket sample counts and summed unweighted losses since its
  // last report go in; once every worker's report for the round is in, the job's new weights
  // come out (the same for every worker). Errors as Barrier's; a retry after a failure must
  // send the same statistics. DATA_LOSS for an answer without kNumBuckets finite positive
  // weights.
  absl::StatusOr<scheduler::BucketWeights> Report(const scheduler::BucketStats& stats,
                                                  absl::Time deadline);

  // Workers: the scheduler's reweighter state (what a checkpoint keeps).
  absl::StatusOr<scheduler::SampleReweighter::State> ReweighterState(absl::Time deadline);
  // Workers (one of them, before the first step of a resumed job): restores the scheduler's
  // reweighter with `completed_round` rounds done and the last round's `weights`.
  absl::Status RestoreReweighter(const scheduler::SampleReweighter::State& state, int64_t completed_round,
                                 const scheduler::BucketWeights& weights, absl::Time deadline);
  // Workers (every one, before the first step of a resumed job): the next Report is round
  // completed_round + 1.
  void ResumeRounds(int64_t completed_round);

  // Workers: this worker is done after `step` steps with final loss `loss` (for the log).
  // Idempotent. When it is the last worker, the job becomes stopping.
  absl::Status Finish(int64_t step, double loss, absl::Time deadline);
  // Workers: this worker stopped on `error` (not OK): the job fails at once with the worker and
  // its error as the reason, and every peer learns it with its next heartbeat.
  absl::Status Fail(const absl::Status& error, absl::Time deadline);

  // Servers: waits until the job is stopping (OK) or has failed (ABORTED with the reason), or
  // the scheduler is unreachable (UNAVAILABLE). DEADLINE_EXCEEDED after `timeout`;
  // FAILED_PRECONDITION before Register; UNAVAILABLE after Shutdown.
  absl::Status WaitForStop(absl::Duration timeout);

  // Stops the heartbeat thread, fails calls in flight with UNAVAILABLE and closes the
  // endpoint. Idempotent. JobStatus() keeps the last state.
  void Shutdown();

  // This client's endpoint id (what the scheduler sees as the sender).
  const std::string& id() const { return id_; }

 private:
  using Clock = std::chrono::steady_clock;

  SchedulerClient(std::unique_ptr<transport::Endpoint> endpoint, SchedulerClientOptions options);
  void HeartbeatLoop();
  // The wait to ask the scheduler for, for a call ending at `deadline`.
  int64_t WaitMicros(absl::Time deadline) const;
  // One reweighter call (get or set); the state in the answer.
  absl::StatusOr<scheduler::SampleReweighter::State> CallReweighter(const scheduler::wire::ReweighterRequest& body,
                                                                    absl::Time deadline);
  // One finish call (done, or failed when body.error() is set).
  absl::Status SendFinish(const scheduler::wire::FinishRequest& body, absl::Time deadline);
  // Records a job state the scheduler answered; returns a line to log (empty: none).
  std::string ApplyStateLocked(const scheduler::wire::JobStateMessage& message);
  absl::Status JobStatusLocked() const;

  const std::string id_;
  const SchedulerClientOptions options_;
  const std::unique_ptr<transport::RpcClient> rpc_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool registered_ = false;              // guarded by mu_
  bool shut_down_ = false;               // guarded by mu_
  JobState state_ = JobState::kRunning;  // guarded by mu_
  std::string failure_;                  // guarded by mu_: the reason when failed
  absl::Status unreachable_;             // guarded by mu_: UNAVAILABLE once the scheduler is
                                         // taken for dead
  Clock::time_point last_answer_;        // guarded by mu_: the last answered heartbeat
  absl::Status last_error_;              // guarded by mu_: of the last failed heartbeat
  absl::flat_hash_map<std::string, int64_t> barrier_passed_;  // guarded by mu_
  int64_t rounds_done_ = 0;                                   // guarded by mu_
  std::thread heartbeat_;  // started by Register under mu_, joined by Shutdown
};

}  // namespace choir

#endif  // CHOIR_SCHEDULER_SCHEDULER_CLIENT_H_
