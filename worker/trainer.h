// The training loop of one worker: the input pipeline, the embedding store (in-process, or the
// parameter servers in a cluster), a dnn/din/dnn+groupid/choirrec model on CPU or GPU, dense
// Adagrad with learning-rate decay, sample reweighting, and evaluation on the test split with
// AUC/GAUC per activity bucket. Alone (runtime == nullptr) it is the single-process trainer;
// worker/cluster.h runs it as the workers of a cluster.
#ifndef CHOIR_WORKER_TRAINER_H_
#define CHOIR_WORKER_TRAINER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/fs.h"
#include "core/collective.h"
#include "core/proto/job.pb.h"
#include "ps/sparse_table.h"
#include "scheduler/reweighting.h"
#include "worker/embedding_store.h"
#include "tools/eval/metrics.h"

namespace choir::worker {

struct TrainResult {
  int64_t steps = 0;
  int64_t samples = 0;          // training samples seen (after the task's filter)
  int64_t resumed_samples = 0;  // of which before the checkpoint a resumed run started from
  double seconds = 0;           // training time, evaluation excluded
  double last_loss = 0;         // mean BCE of the last 100 steps
  eval::EvalReport test;        // on the test split (empty when it has none)
  int64_t test_samples = 0;
  double peak_rss_mb = 0;
  // The model's inputs, for reports and FLOP counts.
  int num_slots = 0, num_dense = 0, num_sequences = 0;
};

// What a worker of a cluster brings to the training loop (worker/cluster.h fills it in).
struct WorkerRuntime {
  int worker_index = 0;  // in [0, num_workers)
  int num_workers = 1;
  // Connects to the parameter servers holding `table` (a synchronous remote store: a step's
  // pushes are summed over the workers and applied once). Called once, after the job's model
  // and table are known.
  std::function<absl::StatusOr<std::unique_ptr<EmbeddingStore>>(const TableOptions& table)> make_store;
  // The workers' group: dense gradients are allreduced through it every step, and worker 0's
  // initial parameters broadcast. Not owned.
  Collective* collective = nullptr;
  // How long a rank of `collective` waits for the others before DEADLINE_EXCEEDED (in a
  // cluster, cluster.rpc_deadline_ms). While worker 0 alone restores or writes a checkpoint's
  // sparse rows, it tells the others every quarter of this that it is still at work, so that a
  // large table does not time them out.
  absl::Duration collective_timeout = absl::Seconds(60);
  // The longest worker 0 holds the others so (cluster.checkpoint_deadline_ms): past it, hung
  // work (a stuck file system) lets them time out instead of waiting forever.
  absl::Duration hold_limit = absl::Minutes(30);
  // Waits until every worker has reached barrier `name` (the scheduler's barrier, up to
  // hold_limit; ABORTED at once when the job fails meanwhile). The workers pass "setup" after
  // reading the data and before their first collective: setups may differ by more than a
  // collective's timeout (a large dataset, a slow disk). Null: no wait.
  std::function<absl::Status(const std::string& name)> barrier;
  // Optional: the same group on the dense towers' device (NCCL among GPU workers, whose data
  // calls take device memory). When set, the dense exchange uses it and gradients stay on the
  // GPU; `collective` still carries the host-side exchanges (checkpoint statistics). Not owned.
  Collective* device_collective = nullptr;
  // A reweighting round: this worker's per-bucket statistics since the last round in, the
  // job's new weights out (the scheduler's report RPC). Null: the worker updates its own.
  std::function<absl::StatusOr<scheduler::BucketWeights>(const scheduler::BucketStats&)> report;
  // OK while the job runs, the reason it stopped otherwise (a dead peer); checked every step.
  std::function<absl::Status()> job_status;
  // Checkpoints of a job with reweighting (set with `report`): the scheduler's reweighter state
  // (worker 0 saves it); resuming, restoring it with the rounds completed and their weights
  // (worker 0, before the first step), and the round of the next report (every worker).
  std::function<absl::StatusOr<scheduler::SampleReweighter::State>()> reweighter_state;
  std::function<absl::Status(const scheduler::SampleReweighter::State&, int64_t completed_round,
                             const scheduler::BucketWeights& weights)>
      restore_reweighter;
  std::function<void(int64_t completed_round)> resume_rounds;
};

// Trains `job.model` on DIR/train of `job.data.dir`, evaluates on DIR/test, and writes
// eval.json, preds.tsv (user_id, label, score, bucket) and report.md into job.trainer.out_dir.
// A dataset without a test split is trained but not evaluated (a warning; nothing written).
// A bad field of the job file is INVALID_ARGUMENT naming it. Local mode writes checkpoints into
// out_dir/checkpoint (trainer.checkpoint_every_steps, checkpoint_at_end) and resumes from one
// (trainer.resume); steps and samples then count from the run's start, seconds this process.
//
// With a runtime, this is worker runtime->worker_index of a cluster: each step it trains on its
// slice of a global batch of num_workers * batch_size samples (every worker reads the whole
// stream in the same order and keeps its slice), scales its gradients by the slice's share,
// pushes sparse gradients to the servers and allreduces the dense ones. Worker 0 alone
// evaluates and writes the outputs; steps and samples count the global batches.
absl::StatusOr<TrainResult> TrainAndEvaluate(FileSystem* fs, const JobConfig& job,
                                             const WorkerRuntime* runtime = nullptr);

// What EvaluateCheckpoint measured.
struct CheckpointEval {
  JobConfig job;            // the checkpoint's job (data.dir possibly overridden)
  int64_t step = 0;         // the checkpoint's step
  eval::EvalReport test;    // on the test split
  int64_t test_samples = 0;
};

// Evaluates the model of the checkpoint in `checkpoint_dir` (local or cluster, any number of
// servers) on the test split of `data_dir` (empty: the dataset the checkpoint's job trained
// on), on CPU, and writes `eval_json` and preds.tsv beside it. The predictions are those the
// training run would have written after that step. DATA_LOSS for a damaged checkpoint.
absl::StatusOr<CheckpointEval> EvaluateCheckpoint(FileSystem* fs, const std::string& checkpoint_dir,
                                                  const std::string& data_dir,
                                                  const std::string& eval_json);

// The policy options of trainer.reweighting; INVALID_ARGUMENT naming the field
// ("trainer.reweighting.beta must be ...") when the policy or an option is bad.
absl::StatusOr<scheduler::ReweightingOptions> ReweightingOptionsOf(const ReweightingConfig& rc);

// The device fields of `tc`: device "cpu" or "cuda", dense_allreduce "auto", "host" or "nccl"
// (nccl only with cuda); INVALID_ARGUMENT naming the field otherwise.
absl::Status ValidateDeviceConfig(const TrainerConfig& tc);

// The sparse table of `job` (slots, dims, optimizers, seed): what every parameter server holds.
// Reads what TrainAndEvaluate reads to build the model's shape.
absl::StatusOr<TableOptions> SparseTableFor(FileSystem* fs, const JobConfig& job);

}  // namespace choir::worker

#endif  // CHOIR_WORKER_TRAINER_H_
