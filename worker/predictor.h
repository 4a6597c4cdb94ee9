// The serving Predictor: scores samples from a bundle alone (worker/bundle.h, docs/serving.md),
// on CPU, with the predictions `choir eval` makes from the checkpoint the bundle came from.
//
//   auto p = Predictor::Load(fs, "runs/x/bundle");
//   p->PredictFiles(fs, {"data/test/part-00000.shard"});   // or Predict(batch, &scores)
//
// What a sample reads that the bundle does not hold falls back as the trainer's evaluation does:
//   - a sparse key without a row (an item, a user never trained): the row's deterministic
//     initial values (zeros in a slot with admission);
//   - a user absent from the group table: the groups its profile embedding is coded into with
//     the bundle's codebooks (PredictorOptions::new_users), else no group (ids 0, global rates);
//   - a user absent from the activity index: no activity (bucket "new", the low-activity gate).
#ifndef CHOIR_WORKER_PREDICTOR_H_
#define CHOIR_WORKER_PREDICTOR_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/fs.h"
#include "core/proto/job.pb.h"
#include "data/activity.h"
#include "tools/eval/metrics.h"
#include "worker/batch_reader.h"

namespace choir::worker {

struct PredictorOptions {
  // Users to place in groups through the bundle's codebooks: their ids and profile embeddings
  // ([ids.size(), dim] row-major, as `choir embed` writes them). Users the bundle's group table
  // already holds keep their groups. FAILED_PRECONDITION when the bundle has no codebooks,
  // INVALID_ARGUMENT for another dimension.
  std::vector<int64_t> new_user_ids;
  std::vector<float> new_user_embeddings;
  int embedding_dim = 0;
};

class Predictor {
 public:
  // Reads and checks every file of `bundle` (DATA_LOSS naming a damaged one, FAILED_PRECONDITION
  // for another format version) and builds the model.
  static absl::StatusOr<std::unique_ptr<Predictor>> Load(FileSystem* fs, const std::string& bundle,
                                                         const PredictorOptions& options = {});
  ~Predictor();
  Predictor(const Predictor&) = delete;
  Predictor& operator=(const Predictor&) = delete;

  // The training job (model, task, buckets) and the features a sample must carry.
  const JobConfig& job() const;
  const FeatureLayout& layout() const;
  // The bundle's checkpoint step and stored sparse rows.
  int64_t step() const;
  int64_t sparse_rows() const;

  // The probability of the task's label for each sample of `batch` (built with layout(), e.g.
  // by a BatchReader). Thread-safe; calls run one at a time.
  absl::Status Predict(const Batch& batch, std::vector<double>* scores);

  // Scores the samples of shard files `files` in file order, in batches of 4096, exactly as
  // `choir eval` does: the task's rows (CVR: the clicked ones, as training and evaluation see
  // them), or with `every_row` every row (CVR: the conversion probability of every impression,
  // label = conversion). The files' schema must be the bundle's. Bad blocks count against the
  // job's data error budget (data.max_bad_rows, data.max_bad_fraction).
  absl::StatusOr<std::vector<eval::Prediction>> PredictFiles(FileSystem* fs, const std::vector<std::string>& files,
                                                             bool every_row = false);

  // The user's activity bucket and group ids per level (0: no group; empty for models without
  // groups), as Predict sees them.
  data::Bucket BucketOf(int64_t user) const;
  std::vector<int64_t> GroupIds(int64_t user) const;

 private:
  struct State;
  explicit Predictor(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace choir::worker

#endif  // CHOIR_WORKER_PREDICTOR_H_
