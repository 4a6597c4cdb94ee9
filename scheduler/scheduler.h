// Scheduler: the job's coordinator (DESIGN.md 1.5 and 2, scheduler/README.md).
//
// One scheduler per job serves six RPC methods over an RpcServer (core/transport.h). Peers
// call it through SchedulerClient (scheduler/scheduler_client.h). Every request carries a
// serialized message of scheduler/proto/scheduler.proto in frame 0 (element type bytes):
//
//   register   RegisterRequest{peer {role, index, id, address}, wait_micros}
//              -> RegisterResponse{servers, workers (index order), reweight_every_steps, policy}
//              The rendezvous: held until every expected peer has registered, or wait_micros
//              passes (DEADLINE_EXCEEDED naming the missing peers). A second registration of
//              a role/index from another sender, or with another id/address, is
//              FAILED_PRECONDITION; the same again (a retry) is answered like the first.
//   heartbeat  HeartbeatRequest{} -> JobStateMessage{state, reason}
//   barrier    BarrierRequest{name, generation, wait_micros} -> no frames
//              Workers only. Returns when every worker has reached `generation` of `name`
//              (a repeat of the generation just passed returns at once).
//   report     ReportRequest{round, wait_micros}, frame 1 int64[kNumBuckets] sample counts,
//              frame 2 float64[kNumBuckets] summed unweighted losses (data::Bucket order)
//              -> frame 0 float64[kNumBuckets] weights
//              Workers only, rounds 1, 2, ... in step. When every worker's report for the
//              round is in, their statistics are summed in worker order, the reweighter is
//              updated once, the weights logged, and every waiting worker answered with them
//              (a repeat of the round just completed gets its weights again).
//   reweighter ReweighterRequest{set, state, completed_round, round_weights} -> ReweighterState
//              Workers only. get: the reweighter's state (a checkpoint). set: restores it with
//              the rounds completed and their last weights (a resumed job, before its first
//              step); FAILED_PRECONDITION while a round has reports in.
//   finish     FinishRequest{step, loss} -> JobStateMessage
//              Workers only. When every worker has finished, the job state becomes stopping.
//
// Waits end early: a barrier or report fails at once with ABORTED "job stopped: <reason>" for
// every waiting worker when the job fails, and with FAILED_PRECONDITION when a worker it waits
// for has already finished. Shutdown answers waiting calls with UNAVAILABLE.
//
// Validation: nothing from a peer is CHECKed. Bad bodies (frame count or types, unparsable
// proto, unknown role, index out of range, empty id, negative counts, non-finite losses...)
// are INVALID_ARGUMENT naming the problem. Methods other than register from a sender that has
// not registered are FAILED_PRECONDITION, with a WARNING naming the sender. Peers that are not
// in the endpoint's address book (AddPeer) never reach the handlers: the endpoint drops their
// messages with its own log line.
//
// Failure detection: once the rendezvous is complete, a registered peer (other than a worker
// that finished) silent for longer than heartbeat_timeout is declared dead: the job state
// becomes failed with the reason "worker 2 (w2) sent no heartbeat for 10.0 s", logged once
// (ERROR). The first failure wins; a failed or stopping job stays so.
//
// Thread map:
//   - the RpcServer's receive thread reads the endpoint and queues requests;
//   - max(rpc.worker_threads, num_servers + num_workers + 2) handler threads run the methods.
//     register, barrier and report block on cv_ (mu_ released while waiting); each peer may
//     have one such call waiting at a time (another is FAILED_PRECONDITION), so at least two
//     threads are always free for heartbeats and finish, which never block;
//   - one monitor thread wakes every heartbeat_timeout / 10 (1 ms to 1 s), holds mu_ while it
//     scans the peers' last heartbeats, and fails the job;
//   - Start, AddPeer, JobStatus, WaitForEnd and Shutdown run on the caller's thread.
// One mutex, mu_, guards all state; cv_ is notified on every change a waiter may wait for
// (rendezvous complete, barrier passed, round complete, worker finished, job ended, shutdown).
// Log lines are written after mu_ is released; no callback runs under it.
#ifndef CHOIR_SCHEDULER_SCHEDULER_H_
#define CHOIR_SCHEDULER_SCHEDULER_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/transport.h"
#include "scheduler/membership.h"
#include "scheduler/reweighting.h"

namespace choir {

struct SchedulerOptions {
  // The expected membership: the rendezvous completes when num_servers servers (indexes
  // 0..num_servers-1) and num_workers workers have registered. num_servers >= 0 (0: a job of
  // workers only), num_workers >= 1.
  int num_servers = 0;
  int num_workers = 1;
  // A registered peer silent this long is declared dead and the job fails. Longer tolerates
  // longer pauses (a stalled host, a slow heartbeat under load); shorter stops a broken job
  // sooner. Must exceed the peers' heartbeat interval by a good factor (ClusterConfig:
  // heartbeat_ms 500, peer_timeout_ms 10000). Default 10 s; > 0.
  absl::Duration heartbeat_timeout = absl::Seconds(10);
  // Handler threads: raised to num_servers + num_workers + 2 when lower (see the thread map).
  transport::RpcServerOptions rpc;
  // The reweighting policy the report rounds feed (ValidateReweightingOptions); its
  // every_steps is the interval K the workers report at, handed to them in the membership.
  // Default: policy none (every weight stays 1).
  scheduler::ReweightingOptions reweighting;
  // The longest a register, barrier or report call is held, whatever wait the peer asks for.
  // Default 1 h; > 0.
  absl::Duration max_wait = absl::Hours(1);
};

// OK, or INVALID_ARGUMENT naming the bad field.
absl::Status ValidateSchedulerOptions(const SchedulerOptions& options);

class Scheduler {
 public:
  // Starts serving on `endpoint` (ZeroMQ: bound to its bind_address) and starts the monitor.
  // INVALID_ARGUMENT for invalid options or no endpoint; the RpcServer's errors otherwise.
  static absl::StatusOr<std::unique_ptr<Scheduler>> Start(
      std::unique_ptr<transport::Endpoint> endpoint, SchedulerOptions options);
  ~Scheduler();  // Shutdown()

  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Admits a peer that calls the scheduler (the id of its SchedulerClient's endpoint):
  // `address` empty for ZeroMQ peers that connect to this scheduler's bound address (the usual
  // case). Every server and worker must be admitted before it registers. See
  // Endpoint::AddPeer.
  absl::Status AddPeer(const std::string& peer, const std::string& address = "");

  // OK while running or stopping; ABORTED "job stopped: <reason>" once failed.
  absl::Status JobStatus() const;
  JobState state() const;

  // Waits until the job has ended (stopping or failed) and every peer still alive has been
  // told in a heartbeat answer (workers that finished, peers declared dead and peers silent
  // longer than heartbeat_timeout are not waited for), so that shutting the scheduler down
  // next does not look like a scheduler failure to them. Returns JobStatus() then (also when
  // `deadline` passes with the job ended but some peer not yet told: a WARNING names it);
  // DEADLINE_EXCEEDED when the job has not ended by `deadline`; UNAVAILABLE after Shutdown.
  absl::Status WaitForEnd(absl::Time deadline);

  // Answers waiting and queued calls with UNAVAILABLE, stops the monitor, closes the endpoint
  // and waits for the handler threads. Idempotent.
  void Shutdown();

  const std::string& id() const { return id_; }
  // The address peers pass to their endpoint's AddPeer (ZeroMQ: the bound address).
  std::string address() const { return address_; }

 private:
  using Clock = std::chrono::steady_clock;

  struct Peer {
    PeerInfo info;  // role and index fixed; id, address once registered
    bool registered = false;
    std::string sender;                // the id its scheduler client calls from
    Clock::time_point last_heartbeat;  // meaningful once the rendezvous is complete
    bool waiting = false;              // a register, barrier or report call of it is held
    bool finished = false;             // workers: finish received
    bool told_end = false;             // answered with the ended job state
  };
  struct BarrierState {
    int64_t passed = 0;         // the last generation every worker reached
    std::vector<bool> arrived;  // per worker, for generation passed + 1
    int arrivals = 0;
  };

  Scheduler(std::string id, std::string address, SchedulerOptions options,
            scheduler::SampleReweighter reweighter);

  absl::StatusOr<std::vector<transport::Frame>> HandleRegister(transport::RpcRequest& request);
  absl::StatusOr<std::vector<transport::Frame>> HandleHeartbeat(transport::RpcRequest& request);
  absl::StatusOr<std::vector<transport::Frame>> HandleBarrier(transport::RpcRequest& request);
  absl::StatusOr<std::vector<transport::Frame>> HandleReport(transport::RpcRequest& request);
  absl::StatusOr<std::vector<transport::Frame>> HandleFinish(transport::RpcRequest& request);
  absl::StatusOr<std::vector<transport::Frame>> HandleReweighter(transport::RpcRequest& request);
  void MonitorLoop();

  // The registered peer that sent `request`, or FAILED_PRECONDITION naming the sender (the
  // handler logs it); with `worker_only`, INVALID_ARGUMENT for a server.
  absl::StatusOr<Peer*> SenderLocked(const transport::RpcRequest& request, bool worker_only);
  // Holds the caller's call until done(), `until`, the job failing (ABORTED), a peer in
  // missing_workers() (peers_ indexes still awaited) having finished (FAILED_PRECONDITION), or
  // shutdown (UNAVAILABLE); at `until`, DEADLINE_EXCEEDED naming the missing peers. Marks
  // `peer` waiting meanwhile (a second held call of it is FAILED_PRECONDITION). `what` prefixes
  // the messages.
  absl::Status WaitLocked(std::unique_lock<std::mutex>& lock, Peer* peer, Clock::time_point until,
                          const std::function<bool()>& done,
                          const std::function<std::vector<int>()>& missing_workers,
                          const std::string& what);
  Clock::time_point WaitUntil(int64_t wait_micros) const;
  // Fails the job with `reason` unless it already ended; the caller logs.
  bool FailLocked(std::string reason);
  absl::Status JobStatusLocked() const;
  std::vector<transport::Frame> JobStateFramesLocked() const;

  const std::string id_;
  const std::string address_;
  const SchedulerOptions options_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool shutting_down_ = false;  // guarded by mu_
  // Servers (index order) then workers (index order); fixed size, so pointers stay valid.
  std::vector<Peer> peers_;                          // guarded by mu_
  absl::flat_hash_map<std::string, int> by_sender_;  // guarded by mu_: sender -> peers_ index
  int registered_ = 0;                               // guarded by mu_
  bool rendezvous_done_ = false;                     // guarded by mu_
  JobState state_ = JobState::kRunning;              // guarded by mu_
  std::string failure_;                              // guarded by mu_: reason when failed
  int finished_ = 0;                                 // guarded by mu_
  // One entry per barrier name (at most kMaxBarrierNames); std::map keeps references stable.
  std::map<std::string, BarrierState> barriers_;  // guarded by mu_
  // Reweighting rounds: the last completed round, the current round's reports per worker.
  int64_t completed_round_ = 0;                                     // guarded by mu_
  std::vector<std::optional<scheduler::BucketStats>> round_stats_;  // guarded by mu_
  int round_arrivals_ = 0;                                          // guarded by mu_
  scheduler::BucketWeights round_weights_;                          // guarded by mu_: last round's
  scheduler::SampleReweighter reweighter_;                          // guarded by mu_

  std::unique_ptr<transport::RpcServer> rpc_;  // set once in Start, before serving
  std::thread monitor_;                        // started in Start, joined in Shutdown
};

}  // namespace choir

#endif  // CHOIR_SCHEDULER_SCHEDULER_H_
