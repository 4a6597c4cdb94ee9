// A training job as a cluster (DESIGN.md section 2, docs/cluster.md): the scheduler, the
// parameter servers and the workers, either as threads of this process (local mode) or as
// this process's MPI rank.
//
//   RunTrainJob: what `choir train` runs. Under mpirun: this rank's role (RunMpiRank).
//   Otherwise cluster.servers > 0: every role as threads (RunLocalCluster); else the plain
//   single-process trainer (TrainAndEvaluate).
//
// Every worker runs worker/trainer.h's loop with a WorkerRuntime: a synchronous remote store
// (each step's pushes summed over the workers and applied once on the servers), the workers'
// collective for the dense gradients (in-process threads, or MPI among the worker ranks), the
// scheduler's reweighting rounds and its job state. Failure: a peer that dies is named by the
// scheduler (heartbeats), every worker stops at its next step with that reason, the servers
// shut down, and the job returns the first error (no hang: every wait has a deadline).
#ifndef CHOIR_WORKER_CLUSTER_H_
#define CHOIR_WORKER_CLUSTER_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/fs.h"
#include "core/proto/job.pb.h"
#include "core/transport.h"
#include "worker/trainer.h"

namespace choir::worker {

// Test hooks of the local mode.
struct LocalClusterHooks {
  // Wraps an endpoint before its owner gets it (fault injection): `role` is "scheduler",
  // "server", "worker" (the store's endpoint) or "client" (a peer's scheduler-client
  // endpoint); `index` the server or worker index (the peer's for "client", -1 for the
  // scheduler).
  std::function<std::unique_ptr<transport::Endpoint>(const std::string& role, int index,
                                                     std::unique_ptr<transport::Endpoint>)>
      wrap_endpoint;
  // Called on worker `index`'s thread before each of its steps.
  std::function<void(int index, int64_t step)> before_step;
  // Called on worker `index`'s thread once it has registered, before it reads the data.
  std::function<void(int index)> before_setup;
  // Simulates the crash of server `kill_server` when worker 0 is about to run step
  // `kill_at_step`: the server stops answering and stops its heartbeats. -1: never.
  int kill_server = -1;
  int64_t kill_at_step = -1;
  // Called once every role has stopped, with the scheduler's status of the job: ABORTED with
  // the reason it failed for, which is what a cluster under mpirun reports.
  std::function<void(const absl::Status& job_status)> job_ended;
};

// The whole job in this process: a scheduler, cluster.servers >= 1 parameter servers and
// cluster.workers >= 1 workers, each on its own thread, over cluster.transport ("inproc" or
// "zmq" on loopback). Returns worker 0's result (it evaluates and writes the outputs); the
// first error of any role otherwise (a dead peer named by the scheduler wins over the errors
// it causes elsewhere).
absl::StatusOr<TrainResult> RunLocalCluster(FileSystem* fs, const JobConfig& job,
                                            const LocalClusterHooks& hooks = {});

// This process as one rank of `mpirun -np N choir train`: rank 0 the scheduler, ranks
// 1..cluster.servers the servers, the rest workers (at least one). MPI must be initialised
// (core/mpi_collective.h MpiInit). Returns worker 0's result on its rank and an empty result
// (steps 0) on the others.
absl::StatusOr<TrainResult> RunMpiRank(FileSystem* fs, const JobConfig& job);

// Local single process, local cluster or MPI rank, as described above.
absl::StatusOr<TrainResult> RunTrainJob(FileSystem* fs, const JobConfig& job);

}  // namespace choir::worker

#endif  // CHOIR_WORKER_CLUSTER_H_
