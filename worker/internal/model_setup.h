// What the trainer, checkpoint evaluation, the export and the Predictor share: the model and
// its inputs built from a job, a schema, the semantic groups and the activity index, and the
// bridge from batches to model inputs through an embedding store. Internal to worker/.
#ifndef CHOIR_WORKER_INTERNAL_MODEL_SETUP_H_
#define CHOIR_WORKER_INTERNAL_MODEL_SETUP_H_

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/fs.h"
#include "core/proto/job.pb.h"
#include "core/status.h"
#include "data/activity.h"
#include "data/dataset.h"
#include "data/proto/shard.pb.h"
#include "glog/logging.h"
#include "models/layers.h"
#include "models/model.h"
#include "ps/feature_key.h"
#include "ps/sparse_table.h"
#include "tools/eval/metrics.h"
#include "worker/batch_reader.h"
#include "worker/embedding_store.h"
#include "worker/group_features.h"
#include "worker/keys.h"

namespace choir::worker::internal {

using models::Tensor;

// The trainer fields of a job trained anywhere, for running its model on the CPU (checkpoint
// evaluation, export): device cpu, and the GPU-only settings back to their defaults.
inline void RunOnCpu(TrainerConfig* tc) {
  tc->set_device("cpu");
  tc->clear_cuda_device();
  tc->clear_allow_tf32();
  tc->clear_matmul_precision();
  tc->clear_dense_allreduce();
  tc->clear_overlap_uploads();
}

// Where the group channel's features come from (choirrec, dnn+groupid); null members for
// models that do not read them.
struct GroupSources {
  const GroupFeatures* groups = nullptr;
  const data::ActivityIndex* activity = nullptr;
  // Slots of the group-id embeddings (one per level) and of the attribute-completion
  // embeddings (gender, age, city tier).
  uint32_t first_group_slot = 0;
  uint32_t first_attribute_slot = 0;
  // Slots of the group sequences' keys, parallel to ModelShape::group_sequence_targets: the
  // item slot for seq_items, the category slot for seq_categories.
  std::vector<uint32_t> group_sequence_slots;
  std::vector<bool> group_sequence_is_item;
  // The activity features the gates read: indexes into ActivityIndex::ActivityFeatures's
  // output, increasing (ModelShape::activity_features of them).
  std::vector<int> activity_columns;
};

// Turns batches into model inputs through the embedding store, and model input gradients
// back into sparse pushes. Keys of one batch, in order: slots, sequences, group ids, group
// attributes, group sequences; all pulled in one deduplicated request. Training's bridge pulls
// (Gather then Scatter); evaluation's (`kEvaluation`) looks the rows up without changing the
// store (EmbeddingStore::Lookup) and never scatters.
class SparseBridge {
 public:
  enum class Reads { kTraining, kEvaluation };
  SparseBridge(const models::ModelShape& shape, EmbeddingStore* store, GroupSources groups,
               Reads reads = Reads::kTraining)
      : shape_(shape), store_(store), groups_(std::move(groups)), reads_(reads) {}

  absl::Status Gather(const Batch& batch, models::ModelInputs* in) {
    const int d = shape_.embedding_dim, slots = shape_.num_slots, L = shape_.max_seq_len;
    const int B = batch.size;
    all_keys_.assign(batch.cat_keys.begin(), batch.cat_keys.end());
    for (const auto& keys : batch.seq_keys) all_keys_.insert(all_keys_.end(), keys.begin(), keys.end());
    CollectGroupKeys(batch);
    DedupKeys(all_keys_, &unique_, &index_);
    unique_rows_.resize(unique_.size() * d);
    RETURN_IF_ERROR(reads_ == Reads::kTraining ? store_->Pull(unique_, absl::MakeSpan(unique_rows_))
                                               : store_->Lookup(unique_, absl::MakeSpan(unique_rows_)));
    rows_.resize(all_keys_.size() * d);
    RETURN_IF_ERROR(GatherRows(index_, d, unique_rows_, absl::MakeSpan(rows_)));

    in->slots.ResizeUninitialized(B, slots * d);
    std::copy(rows_.begin(), rows_.begin() + static_cast<size_t>(B) * slots * d, in->slots.data());
    in->dense.ResizeUninitialized(B, shape_.num_dense);
    std::copy(batch.dense.begin(), batch.dense.end(), in->dense.data());
    size_t offset = static_cast<size_t>(B) * slots * d;
    FillSequences(batch.seq_lengths, L, &offset, &in->sequences, &in->lengths);
    auto take = [&](int width, Tensor<float>* t) {
      t->ResizeUninitialized(B, width * d);
      std::copy(rows_.begin() + offset, rows_.begin() + offset + static_cast<size_t>(B) * width * d, t->data());
      offset += static_cast<size_t>(B) * width * d;
    };
    if (shape_.group_levels > 0) take(shape_.group_levels, &in->group_ids);
    if (shape_.group_attribute_slots > 0) take(shape_.group_attribute_slots, &in->group_attributes);
    FillSequences(group_lengths_, shape_.group_max_seq_len, &offset, &in->group_sequences, &in->group_lengths);
    if (shape_.group_stats > 0) {
      in->group_stats.ResizeUninitialized(B, shape_.group_stats);
      for (int b = 0; b < B; ++b) groups_.groups->UserStats(batch.user_ids[b], in->group_stats.row(b));
    }
    if (groups_.activity != nullptr) {
      in->activity.ResizeUninitialized(B, shape_.activity_features);
      in->purchases.resize(B);
      for (int b = 0; b < B; ++b) {
        const int64_t user = batch.user_ids[b];
        if (shape_.activity_features > 0) {
          float all[data::ActivityIndex::kNumActivityFeatures];
          groups_.activity->ActivityFeatures(user, all);
          float* row = in->activity.row(b);
          for (int k = 0; k < shape_.activity_features; ++k) row[k] = all[groups_.activity_columns[k]];
        }
        in->purchases[b] = std::max<int64_t>(0, groups_.activity->Purchases(user));
      }
    }
    return absl::OkStatus();
  }

  // Pushes the gradients of the last Gather's inputs, multiplied by `scale` (this worker's share
  // of the global batch).
  absl::Status Scatter(const Batch& batch, const models::ModelGrads& grads, float scale = 1) {
    if (reads_ != Reads::kTraining) return absl::InternalError("an evaluation bridge was asked to push gradients");
    const int d = shape_.embedding_dim;
    grads_.resize(rows_.size());
    std::copy(grads.slots.data(), grads.slots.data() + grads.slots.size(), grads_.begin());
    size_t offset = static_cast<size_t>(grads.slots.size());
    ScatterSequences(grads.sequences, batch.seq_lengths, shape_.max_seq_len, &offset);
    auto put = [&](const Tensor<float>& t) {
      std::copy(t.data(), t.data() + t.size(), grads_.begin() + offset);
      offset += t.size();
    };
    if (shape_.group_levels > 0) put(grads.group_ids);
    if (shape_.group_attribute_slots > 0) put(grads.group_attributes);
    ScatterSequences(grads.group_sequences, group_lengths_, shape_.group_max_seq_len, &offset);
    CHECK_EQ(offset, grads_.size());
    unique_grads_.assign(unique_.size() * d, 0.0f);
    RETURN_IF_ERROR(SumDuplicateGrads(index_, d, grads_, absl::MakeSpan(unique_grads_)));
    if (scale != 1) {
      for (float& g : unique_grads_) g *= scale;
    }
    return store_->Push(unique_, unique_grads_);
  }

 private:
  // Appends the group keys of the batch's users (ids, attributes, sequences) to all_keys_ and
  // records the group sequences' lengths.
  void CollectGroupKeys(const Batch& batch) {
    const size_t q_count = shape_.group_sequence_targets.size();
    group_lengths_.assign(q_count, std::vector<uint32_t>(batch.size, 0));
    if (groups_.groups == nullptr) return;
    if (shape_.group_levels > 0) {
      for (int b = 0; b < batch.size; ++b) {
        const GroupRow& row = groups_.groups->Of(batch.user_ids[b]);
        for (int l = 0; l < shape_.group_levels; ++l) {
          all_keys_.push_back(FeatureKey(groups_.first_group_slot + l, row.ids[l]));
        }
      }
    }
    if (shape_.group_attribute_slots > 0) {
      for (int b = 0; b < batch.size; ++b) {
        const GroupRow& row = groups_.groups->Of(batch.user_ids[b]);
        for (int a = 0; a < shape_.group_attribute_slots; ++a) {
          all_keys_.push_back(FeatureKey(groups_.first_attribute_slot + a, row.attributes[a]));
        }
      }
    }
    // Group sequences: the most recent group_max_seq_len elements, most recent first (the
    // order of the users' own sequences).
    for (size_t q = 0; q < q_count; ++q) {
      for (int b = 0; b < batch.size; ++b) {
        const GroupRow& row = groups_.groups->Of(batch.user_ids[b]);
        absl::Span<const int64_t> seq = groups_.group_sequence_is_item[q] ? row.seq_items : row.seq_categories;
        const size_t n = std::min<size_t>(seq.size(), shape_.group_max_seq_len);
        for (size_t k = 0; k < n; ++k) {
          all_keys_.push_back(FeatureKey(groups_.group_sequence_slots[q], seq[seq.size() - 1 - k]));
        }
        group_lengths_[q][b] = n;
      }
    }
  }

  void FillSequences(const std::vector<std::vector<uint32_t>>& lengths, int max_len, size_t* offset,
                     std::vector<Tensor<float>>* sequences, std::vector<std::vector<int>>* out_lengths) {
    const int d = shape_.embedding_dim;
    sequences->resize(lengths.size());
    out_lengths->resize(lengths.size());
    for (size_t q = 0; q < lengths.size(); ++q) {
      const int B = lengths[q].size();
      Tensor<float>& seq = (*sequences)[q];
      seq.Resize(B * max_len, d);
      (*out_lengths)[q].resize(B);
      for (int b = 0; b < B; ++b) {
        const int len = lengths[q][b];
        (*out_lengths)[q][b] = len;
        std::copy(rows_.begin() + *offset, rows_.begin() + *offset + static_cast<size_t>(len) * d,
                  seq.row(b * max_len));
        *offset += static_cast<size_t>(len) * d;
      }
    }
  }

  void ScatterSequences(const std::vector<Tensor<float>>& dsequences,
                        const std::vector<std::vector<uint32_t>>& lengths, int max_len, size_t* offset) {
    const int d = shape_.embedding_dim;
    for (size_t q = 0; q < dsequences.size(); ++q) {
      for (size_t b = 0; b < lengths[q].size(); ++b) {
        const int len = lengths[q][b];
        const float* src = dsequences[q].row(b * max_len);
        std::copy(src, src + static_cast<size_t>(len) * d, grads_.begin() + *offset);
        *offset += static_cast<size_t>(len) * d;
      }
    }
  }

  const models::ModelShape& shape_;
  EmbeddingStore* store_;
  GroupSources groups_;
  Reads reads_;
  std::vector<std::vector<uint32_t>> group_lengths_;
  std::vector<uint64_t> all_keys_, unique_;
  std::vector<uint32_t> index_;
  std::vector<float> unique_rows_, rows_, grads_, unique_grads_;
};

// The data a run's stream is made of: CRC32C of its dataset manifest's source, split time (the
// activity buckets' reference), the generator's or converter's counters and the train split
// (files and row count); not of the paths (a folder moved or regenerated with the same seed is
// the same data) nor of the other splits. Checkpoints keep it (meta run.data.fingerprint).
uint32_t DataFingerprint(const data::DatasetManifest& manifest);

// Evaluating or exporting a checkpoint: NOT_FOUND when `dir` (from --data when `given`, else the
// checkpoint's own data.dir) holds no dataset, saying that --data names one.
absl::Status CheckCheckpointData(FileSystem* fs, const std::string& dir, bool given);

// OK when every file of `files` (split `split`) opens and has the columns of `schema` (name,
// type and role, in order): the header alone is read, so a missing file or one of another schema
// fails before training, naming the file, the split and the first column that differs. SetupJob
// checks the train and test splits.
absl::Status CheckSplitSchemas(FileSystem* fs, const std::vector<std::string>& files, const std::string& split,
                               const data::Schema& schema);

// Scores the samples of `files` (file order, the task's filter unless `every_row`) with
// `model` in evaluation mode, batches of 4096; bad blocks count against the job's data error
// budget.
absl::StatusOr<std::vector<eval::Prediction>> PredictFiles(FileSystem* fs, const std::vector<std::string>& files,
                                                           const FeatureLayout& layout, const JobConfig& job,
                                                           models::Model* model, SparseBridge* bridge,
                                                           const data::ActivityIndex& activity,
                                                           bool every_row = false);

// Each user's rows of `files` (all rows, whatever the task): the leave-one-out group
// statistics of choirrec.
absl::StatusOr<absl::flat_hash_map<int64_t, OwnCounts>> CountOwnRows(FileSystem* fs,
                                                                     const std::vector<std::string>& files,
                                                                     const FeatureLayout& layout,
                                                                     const JobConfig& job);

// Whether models of `type` read the semantic groups (choirrec, dnn+groupid).
bool ReadsGroups(const std::string& type);

// Loads the group tables of model.groups (their paths replaced by `table` and `priors` when
// not empty, e.g. a bundle's copies) with the users' own rows `own` and users assigned to
// groups later (`assigned`, may be null).
absl::StatusOr<std::unique_ptr<GroupFeatures>> LoadGroups(FileSystem* fs, const ModelConfig& model,
                                                          const absl::flat_hash_map<int64_t, OwnCounts>* own,
                                                          const std::string& table = "",
                                                          const std::string& priors = "",
                                                          const AssignedUsers* assigned = nullptr);

// The settings every embedding slot of the job gets from its trainer fields (sparse_optimizer,
// sparse_learning_rate, sparse_initial_accumulator, sparse_init_scale, sparse_ftrl and the
// admission and eviction fields; capacity is the whole job's), all but the width:
// INVALID_ARGUMENT naming the field for a bad value.
absl::StatusOr<SlotConfig> EmbeddingSlotConfig(const TrainerConfig& tc);

// What parameter server `server` of `num_servers` holds of the job's table `table`: the same
// slots with its share of each slot's capacity (capacity / num_servers, the first
// capacity % num_servers servers one more).
TableOptions ServerShare(const TableOptions& table, int server, int num_servers);

// Applies trainer.sparse_slots (per-field admission and eviction) to `table`, whose slots
// follow `layout` and `sources` for a model of `shape`: INVALID_ARGUMENT naming the entry for an
// unknown or twice-named field or a value out of range.
absl::Status ApplySlotOverrides(const JobConfig& job, const FeatureLayout& layout, const GroupSources& sources,
                                const models::ModelShape& shape, TableOptions* table);

// The model of a job and everything that feeds it.
struct ModelSetup {
  FeatureLayout layout;
  models::ModelShape shape;
  std::unique_ptr<GroupFeatures> groups;
  GroupSources sources;
  std::unique_ptr<data::ActivityIndex> activity;
  std::unique_ptr<models::Model> model;
  TableOptions table;  // what the embedding store (or every parameter server) holds
};

// Builds `out` for `job` on data of `schema`: the feature layout, the model (initialised from
// trainer.seed), its shape and the sparse table. `groups` is required for models that read
// them (ReadsGroups), ignored otherwise.
absl::Status BuildModel(const JobConfig& job, const data::Schema& schema,
                        std::unique_ptr<GroupFeatures> groups,
                        std::unique_ptr<data::ActivityIndex> activity,
                        models::LayerFactory<float>* factory, ModelSetup* out);

// Everything training (and the export) needs that follows from the job file and the data: the
// model and its inputs (ModelSetup) and the training files.
struct JobSetup : ModelSetup {
  data::DatasetManifest manifest;
  data::SplitInfo train_split;
  std::vector<std::string> train_files;
  data::Schema schema;  // of the train split's first file
  absl::flat_hash_map<int64_t, OwnCounts> own_counts;  // choirrec: each user's train rows
};

// Reads the dataset of job.data.dir (its train split's schema, the users' own rows for choirrec,
// the groups, the activity index) and builds the model: INVALID_ARGUMENT naming the job field
// for a bad job, the reader's error for bad data.
absl::StatusOr<JobSetup> SetupJob(FileSystem* fs, const JobConfig& job, models::LayerFactory<float>* factory);

// Sets the model's dense state as a bundle stores it: every parameter's values, then every
// buffer (Dice statistics). FAILED_PRECONDITION naming `what` and the tensor for a count or
// size that does not fit this model.
absl::Status SetModelWeights(const std::vector<std::vector<float>>& weights, const std::string& what,
                             models::Model* model);

}  // namespace choir::worker::internal

#endif  // CHOIR_WORKER_INTERNAL_MODEL_SETUP_H_
