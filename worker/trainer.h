// Single-process training (local mode): the input pipeline, the in-process embedding store,
// a dnn/din model on CPU, dense Adagrad with learning-rate decay, and evaluation on the test
// split with AUC/GAUC per activity bucket. The distributed issue replaces the embedding store
// by parameter servers without touching the model.
#ifndef CHOIR_WORKER_TRAINER_H_
#define CHOIR_WORKER_TRAINER_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "core/fs.h"
#include "core/proto/job.pb.h"
#include "tools/eval/metrics.h"

namespace choir::worker {

struct TrainResult {
  int64_t steps = 0;
  int64_t samples = 0;          // training samples seen (after the task's filter)
  double seconds = 0;           // training time, evaluation excluded
  double last_loss = 0;         // mean BCE of the last 100 steps
  eval::EvalReport test;        // on the test split (empty when it has none)
  int64_t test_samples = 0;
  double peak_rss_mb = 0;
  // The model's inputs, for reports and FLOP counts.
  int num_slots = 0, num_dense = 0, num_sequences = 0;
};

// Trains `job.model` on DIR/train of `job.data.dir`, evaluates on DIR/test, and writes
// eval.json, preds.tsv (user_id, label, score, bucket) and report.md into job.trainer.out_dir.
// A dataset without a test split is trained but not evaluated (a warning; nothing written).
// A bad field of the job file is INVALID_ARGUMENT naming it.
absl::StatusOr<TrainResult> TrainAndEvaluate(FileSystem* fs, const JobConfig& job);

}  // namespace choir::worker

#endif  // CHOIR_WORKER_TRAINER_H_
