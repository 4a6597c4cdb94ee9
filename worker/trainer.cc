#include "worker/trainer.h"

#include <sys/resource.h>

#include <chrono>
#include <cmath>
#include <deque>
#include <future>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/files.h"
#include "core/crc32c.h"
#include "google/protobuf/text_format.h"
#include "nlohmann/json.hpp"
#include "core/progress.h"
#include "core/status.h"
#include "core/sysinfo.h"
#include "data/activity.h"
#include "data/dataset.h"
#include "data/shard.h"
#include "glog/logging.h"
#include "choir/config.h"
#include "models/layers.h"
#if CHOIR_WITH_CUDA
#include "models/cuda/cuda.h"
#endif
#include "models/choirrec_model.h"
#include "models/model.h"
#include "models/optimizer.h"
#include "ps/feature_key.h"
#include "models/ranking_model.h"
#include "scheduler/reweighting.h"
#include "tools/eval/report.h"
#include "worker/batch_reader.h"
#include "worker/group_features.h"
#include "worker/keys.h"
#include "worker/local_embedding_store.h"

namespace choir::worker {
namespace {

using models::Tensor;

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
};

// Turns batches into model inputs through the embedding store, and model input gradients
// back into sparse pushes. Keys of one batch, in order: slots, sequences, group ids, group
// attributes, group sequences; all pulled in one deduplicated request.
class SparseBridge {
 public:
  SparseBridge(const models::ModelShape& shape, EmbeddingStore* store, GroupSources groups)
      : shape_(shape), store_(store), groups_(std::move(groups)) {}

  absl::Status Gather(const Batch& batch, models::ModelInputs* in) {
    const int d = shape_.embedding_dim, slots = shape_.num_slots, L = shape_.max_seq_len;
    const int B = batch.size;
    all_keys_.assign(batch.cat_keys.begin(), batch.cat_keys.end());
    for (const auto& keys : batch.seq_keys) all_keys_.insert(all_keys_.end(), keys.begin(), keys.end());
    CollectGroupKeys(batch);
    DedupKeys(all_keys_, &unique_, &index_);
    unique_rows_.resize(unique_.size() * d);
    RETURN_IF_ERROR(store_->Pull(unique_, absl::MakeSpan(unique_rows_)));
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
        if (shape_.activity_features > 0) groups_.activity->ActivityFeatures(user, in->activity.row(b));
        in->purchases[b] = std::max<int64_t>(0, groups_.activity->Purchases(user));
      }
    }
    return absl::OkStatus();
  }

  // Pushes the gradients of the last Gather's inputs, multiplied by `scale` (this worker's share
  // of the global batch).
  absl::Status Scatter(const Batch& batch, const models::ModelGrads& grads, float scale = 1) {
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
  std::vector<std::vector<uint32_t>> group_lengths_;
  std::vector<uint64_t> all_keys_, unique_;
  std::vector<uint32_t> index_;
  std::vector<float> unique_rows_, rows_, grads_, unique_grads_;
};

absl::StatusOr<std::vector<eval::Prediction>> Predict(FileSystem* fs, const std::vector<std::string>& files,
                                                      const FeatureLayout& layout, const JobConfig& job,
                                                      models::Model* model, SparseBridge* bridge,
                                                      const data::ActivityIndex& activity) {
  BatchReaderOptions options;
  options.batch_size = 4096;
  options.shuffle_buffer = 0;
  options.budget.max_errors = job.data().max_bad_rows();
  options.budget.max_fraction = job.data().max_bad_fraction();
  ASSIGN_OR_RETURN(std::unique_ptr<BatchReader> reader, BatchReader::Open(fs, files, layout, options));
  model->SetTraining(false);
  std::vector<eval::Prediction> out;
  Batch batch;
  models::ModelInputs in;
  Tensor<float> logits;
  while (true) {
    ASSIGN_OR_RETURN(bool more, reader->Next(&batch));
    if (!more) break;
    RETURN_IF_ERROR(bridge->Gather(batch, &in));
    model->Forward(in, &logits);
    for (int b = 0; b < batch.size; ++b) {
      eval::Prediction p;
      p.user_id = batch.user_ids[b];
      p.label = batch.labels[b];
      p.score = models::Sigmoid<double>(logits.at(b, 0));
      p.bucket = activity.Of(p.user_id);
      out.push_back(p);
    }
  }
  model->SetTraining(true);
  return out;
}

}  // namespace

absl::StatusOr<scheduler::ReweightingOptions> ReweightingOptionsOf(const ReweightingConfig& rc) {
  auto named = [](const absl::Status& st) {
    return absl::InvalidArgumentError(absl::StrCat("trainer.reweighting.", st.message()));
  };
  scheduler::ReweightingOptions o;
  absl::StatusOr<scheduler::ReweightingPolicy> policy = scheduler::ParseReweightingPolicy(rc.policy());
  if (!policy.ok()) return named(policy.status());
  o.policy = *policy;
  o.beta = rc.beta();
  o.eta = rc.eta();
  o.w_min = rc.w_min();
  o.w_max = rc.w_max();
  o.every_steps = rc.every_steps();
  o.ema = rc.ema();
  if (absl::Status st = scheduler::ValidateReweightingOptions(o); !st.ok()) return named(st);
  return o;
}

namespace {

// Each field's own message, so a user knows which line of the job file to change.
absl::Status ValidateConfig(const JobConfig& job) {
  const TrainerConfig& tc = job.trainer();
  const ModelConfig& m = job.model();
  auto bad = [](absl::string_view field, absl::string_view want) {
    return absl::InvalidArgumentError(absl::StrCat(field, " must be ", want));
  };
  if (tc.batch_size() < 1) return bad("trainer.batch_size", ">= 1");
  if (tc.sparse_staleness() < 0 || tc.sparse_staleness() > 1) return bad("trainer.sparse_staleness", "0 or 1");
  if (tc.epochs() < 1) return bad("trainer.epochs", ">= 1");
  if (tc.max_steps() < 0) return bad("trainer.max_steps", ">= 0");
  if (tc.eval_every_steps() < 0) return bad("trainer.eval_every_steps", ">= 0");
  if (tc.shuffle_buffer() < 0) return bad("trainer.shuffle_buffer", ">= 0");
  if (tc.checkpoint_every_steps() < 0) return bad("trainer.checkpoint_every_steps", ">= 0");
  if (tc.keep_checkpoints() < 1) return bad("trainer.keep_checkpoints", ">= 1");
  if (!(tc.learning_rate() > 0) || !std::isfinite(tc.learning_rate())) return bad("trainer.learning_rate", "> 0");
  if (!(tc.learning_rate_end() > 0) || !std::isfinite(tc.learning_rate_end())) {
    return bad("trainer.learning_rate_end", "> 0");
  }
  if (!(tc.sparse_learning_rate() > 0) || !std::isfinite(tc.sparse_learning_rate())) {
    return bad("trainer.sparse_learning_rate", "> 0");
  }
  if (!(tc.sparse_initial_accumulator() >= 0)) return bad("trainer.sparse_initial_accumulator", ">= 0");
  if (!(tc.dense_initial_accumulator() >= 0)) return bad("trainer.dense_initial_accumulator", ">= 0");
  if (m.embedding_dim() < 1) return bad("model.embedding_dim", ">= 1");
  if (m.max_seq_len() < 1) return bad("model.max_seq_len", ">= 1");
  for (int h : m.hidden()) {
    if (h < 1) return bad("model.hidden", "a list of sizes >= 1");
  }
  for (int h : m.attention_hidden()) {
    if (h < 1) return bad("model.attention_hidden", "a list of sizes >= 1");
  }
  return ReweightingOptionsOf(tc.reweighting()).status();
}

// Clicked rows of the files (one pass over the click column).
absl::StatusOr<int64_t> CountClicks(FileSystem* fs, const std::vector<std::string>& files,
                                    const FeatureLayout& layout, const JobConfig& job) {
  ErrorCounter errors(ErrorBudget{job.data().max_bad_rows(), job.data().max_bad_fraction()});
  int64_t clicks = 0;
  RETURN_IF_ERROR(data::ForEachBlock(fs, files, &errors, [&](const data::RowBlock& b) {
    for (size_t r = 0; r < b.num_rows(); ++r) clicks += b.Int(layout.click_column, r) != 0;
    return absl::OkStatus();
  }));
  return clicks;
}

// Each user's rows of the train split (all rows, whatever the task), for the leave-one-out
// group statistics.
absl::StatusOr<absl::flat_hash_map<int64_t, OwnCounts>> CountOwnRows(FileSystem* fs,
                                                                     const std::vector<std::string>& files,
                                                                     const FeatureLayout& layout,
                                                                     const JobConfig& job) {
  ErrorCounter errors(ErrorBudget{job.data().max_bad_rows(), job.data().max_bad_fraction()});
  absl::flat_hash_map<int64_t, OwnCounts> counts;
  RETURN_IF_ERROR(data::ForEachBlock(fs, files, &errors, [&](const data::RowBlock& b) {
    for (size_t r = 0; r < b.num_rows(); ++r) {
      OwnCounts& c = counts[b.Int(layout.user_column, r)];
      ++c.impressions;
      c.clicks += b.Int(layout.click_column, r) != 0;
      if (layout.conversion_column >= 0) c.conversions += b.Int(layout.conversion_column, r) != 0;
    }
    return absl::OkStatus();
  }));
  return counts;
}

absl::StatusOr<std::unique_ptr<GroupFeatures>> LoadGroups(FileSystem* fs, const ModelConfig& model,
                                                          const absl::flat_hash_map<int64_t, OwnCounts>* own) {
  const GroupsConfig& gc = model.groups();
  if (gc.table().empty() || gc.priors().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model.type ", model.type(),
        " needs model.groups.table and model.groups.priors (from `choir groups build` and `choir groups "
        "priors`; on the command line: --groups groups.tsv --priors DIR)"));
  }
  if (gc.attribute_level() < 1) return absl::InvalidArgumentError("model.groups.attribute_level must be >= 1");
  if (gc.sequence_level() < 1) return absl::InvalidArgumentError("model.groups.sequence_level must be >= 1");
  if (gc.max_seq_len() < 1) return absl::InvalidArgumentError("model.groups.max_seq_len must be >= 1");
  GroupFeatureOptions options;
  options.groups_tsv = gc.table();
  options.priors_dir = gc.priors();
  options.attribute_level = gc.attribute_level();
  options.sequence_level = gc.sequence_level();
  options.own_counts = own;
  ASSIGN_OR_RETURN(std::unique_ptr<GroupFeatures> groups, GroupFeatures::Load(fs, options));
  LOG(INFO) << "groups: " << groups->users() << " users in " << groups->distinct_rows() << " groups at "
            << groups->levels() << " levels (" << gc.table() << ", priors " << gc.priors() << ")";
  return groups;
}

// Fills the group channel's part of the shape (attributes, statistics, group sequences, the
// item/context slots it sees, activity features) and where its keys live.
absl::Status AddGroupChannel(const ModelConfig& model, const FeatureLayout& layout, const GroupFeatures& groups,
                             models::ModelShape* shape, GroupSources* sources) {
  const GroupsConfig& gc = model.groups();
  shape->group_attribute_slots = static_cast<int>(GroupRow{}.attributes.size());
  shape->group_stats = groups.num_stats();
  shape->group_max_seq_len = gc.max_seq_len();
  auto slot_of = [&](const std::string& field) {
    for (int i = 0; i < layout.num_slots(); ++i) {
      if (layout.categorical[i].field == field) return i;
    }
    return -1;
  };
  for (const auto& [field, is_item] : {std::pair<std::string, bool>{gc.item_field(), true},
                                       std::pair<std::string, bool>{gc.category_field(), false}}) {
    const int slot = slot_of(field);
    if (slot < 0) {
      LOG(WARNING) << "model.groups: the data has no field '" << field << "'; the group sequence of "
                   << (is_item ? "items" : "categories") << " is left out";
      continue;
    }
    shape->group_sequence_targets.push_back(slot);
    sources->group_sequence_slots.push_back(layout.categorical[slot].slot);
    sources->group_sequence_is_item.push_back(is_item);
  }
  std::vector<std::string> prefixes(model.choirrec().group_channel_fields().begin(),
                                    model.choirrec().group_channel_fields().end());
  if (prefixes.empty()) prefixes = {"item_", "ctx_"};
  for (int i = 0; i < layout.num_slots(); ++i) {
    for (const std::string& prefix : prefixes) {
      if (absl::StartsWith(layout.categorical[i].field, prefix)) {
        shape->group_channel_slots.push_back(i);
        break;
      }
    }
  }
  if (shape->group_channel_slots.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("model.choirrec.group_channel_fields: no categorical field starts with ",
                                                   absl::StrJoin(prefixes, " or ")));
  }
  shape->activity_features = data::ActivityIndex::kNumActivityFeatures;
  return absl::OkStatus();
}

// The layer factory of trainer.device: the CPU layers, or the CUDA layers on cuda_device.
absl::StatusOr<std::unique_ptr<models::LayerFactory<float>>> MakeLayerFactory(const TrainerConfig& tc) {
  if (tc.device() == "cpu") return std::make_unique<models::CpuLayerFactory<float>>();
  if (tc.device() != "cuda") {
    return absl::InvalidArgumentError(absl::StrCat("trainer.device: '", tc.device(), "' (cpu or cuda)"));
  }
#if CHOIR_WITH_CUDA
  RETURN_IF_ERROR(models::cuda::InitCuda(tc.cuda_device()));
  models::cuda::SetAllowTf32(tc.allow_tf32());
  LOG(INFO) << "dense towers on " << models::cuda::CudaDeviceDescription()
            << (tc.allow_tf32() ? " (TF32 products)" : " (fp32)");
  return std::make_unique<models::cuda::CudaLayerFactory<float>>();
#else
  return absl::FailedPreconditionError(
      "trainer.device: 'cuda' but this choir was built without CUDA (rebuild with -DWITH_CUDA=ON)");
#endif
}

// Everything training needs that follows from the job file and the data: the feature layout,
// the model and its shape, the semantic groups, the activity index and the sparse table.
struct JobSetup {
  data::DatasetManifest manifest;
  data::SplitInfo train_split;
  std::vector<std::string> train_files;
  FeatureLayout layout;
  models::ModelShape shape;
  std::unique_ptr<GroupFeatures> groups;
  GroupSources sources;
  std::unique_ptr<data::ActivityIndex> activity;
  std::unique_ptr<models::Model> model;
  TableOptions table;  // what the embedding store (or every parameter server) holds
};

absl::StatusOr<JobSetup> Setup(FileSystem* fs, const JobConfig& job, models::LayerFactory<float>* factory) {
  const std::string& dir = job.data().dir();
  const TrainerConfig& tc = job.trainer();
  if (dir.empty()) return absl::InvalidArgumentError("data.dir is empty: which dataset to train on?");
  RETURN_IF_ERROR(ValidateConfig(job));
  JobSetup setup;
  ASSIGN_OR_RETURN(setup.manifest, data::ReadManifest(fs, dir));
  ASSIGN_OR_RETURN(setup.train_split, data::FindSplit(setup.manifest, "train"));
  setup.train_files = data::SplitPaths(dir, setup.train_split);
  const std::vector<std::string>& train_files = setup.train_files;
  if (train_files.empty()) return absl::FailedPreconditionError(absl::StrCat(dir, ": train split has no files"));
  ASSIGN_OR_RETURN(std::unique_ptr<data::ShardReader> first, data::ShardReader::Open(fs, train_files.front()));
  ASSIGN_OR_RETURN(setup.layout, BuildFeatureLayout(first->schema(), job.model(), job.task()));
  first.reset();
  FeatureLayout& layout = setup.layout;

  models::ModelShape& shape = setup.shape;
  shape.num_slots = layout.num_slots();
  shape.embedding_dim = job.model().embedding_dim();
  shape.num_dense = layout.dense.size();
  shape.max_seq_len = layout.max_seq_len;
  for (const auto& s : layout.sequences) shape.sequence_targets.push_back(s.target);

  // The semantic groups (choirrec, dnn+groupid) and the activity index (bucket reports,
  // choirrec's gates and KD gate).
  const std::string& type = job.model().type();
  const bool choirrec = type == "choirrec";
  GroupSources& sources = setup.sources;
  if (choirrec || type == "dnn+groupid") {
    absl::flat_hash_map<int64_t, OwnCounts> own;
    if (choirrec) {
      ASSIGN_OR_RETURN(own, CountOwnRows(fs, train_files, layout, job));
    }
    ASSIGN_OR_RETURN(setup.groups, LoadGroups(fs, job.model(), &own));
    shape.group_levels = setup.groups->levels();
    sources.groups = setup.groups.get();
    if (choirrec) RETURN_IF_ERROR(AddGroupChannel(job.model(), layout, *setup.groups, &shape, &sources));
  }
  {
    ErrorCounter errors(ErrorBudget{job.data().max_bad_rows(), job.data().max_bad_fraction()});
    ASSIGN_OR_RETURN(data::ActivityIndex index,
                     data::BuildActivityIndex(fs, dir, setup.manifest, job.data().buckets(), &errors));
    setup.activity = std::make_unique<data::ActivityIndex>(std::move(index));
  }
  if (choirrec) sources.activity = setup.activity.get();

  if (choirrec) {
    ASSIGN_OR_RETURN(setup.model, models::ChoirRecModel<float>::Create(job.model(), shape, tc.seed(), factory));
  } else {
    ASSIGN_OR_RETURN(setup.model, models::RankingModel::Create(job.model(), shape, tc.seed(), factory));
  }
  // The model's own shape: what its type and ablation switches read.
  shape = setup.model->shape();
  if (shape.sequence_targets.empty()) layout.sequences.clear();  // do not read sequences at all
  // Slots after the schema's (0..num_slots-1): group ids, then attribute completion.
  sources.first_group_slot = shape.num_slots;
  sources.first_attribute_slot = shape.num_slots + shape.group_levels;

  TableOptions& table = setup.table;
  table.seed = tc.seed();
  const int total_slots = shape.num_slots + shape.group_levels + shape.group_attribute_slots;
  for (int s = 0; s < total_slots; ++s) {
    SlotConfig slot;
    slot.dim = shape.embedding_dim;
    slot.optimizer = OptimizerKind::kAdagrad;
    slot.learning_rate = tc.sparse_learning_rate();
    slot.adagrad_initial_accumulator = tc.sparse_initial_accumulator();
    table.slots[s] = slot;
  }
  return setup;
}

// Samples [begin, end) of `batch` (whose rows have num_cat categorical keys and num_dense
// dense values each): one worker's slice of the global batch.
Batch SliceBatch(const Batch& batch, int begin, int end, int num_cat, int num_dense) {
  Batch out;
  out.size = end - begin;
  out.labels.assign(batch.labels.begin() + begin, batch.labels.begin() + end);
  out.user_ids.assign(batch.user_ids.begin() + begin, batch.user_ids.begin() + end);
  out.cat_keys.assign(batch.cat_keys.begin() + static_cast<size_t>(begin) * num_cat,
                      batch.cat_keys.begin() + static_cast<size_t>(end) * num_cat);
  out.dense.assign(batch.dense.begin() + static_cast<size_t>(begin) * num_dense,
                   batch.dense.begin() + static_cast<size_t>(end) * num_dense);
  out.seq_keys.resize(batch.seq_keys.size());
  out.seq_lengths.resize(batch.seq_lengths.size());
  for (size_t q = 0; q < batch.seq_keys.size(); ++q) {
    size_t first = 0;
    for (int b = 0; b < begin; ++b) first += batch.seq_lengths[q][b];
    size_t last = first;
    for (int b = begin; b < end; ++b) last += batch.seq_lengths[q][b];
    out.seq_keys[q].assign(batch.seq_keys[q].begin() + first, batch.seq_keys[q].begin() + last);
    out.seq_lengths[q].assign(batch.seq_lengths[q].begin() + begin, batch.seq_lengths[q].begin() + end);
  }
  return out;
}

}  // namespace

namespace {

// What the training loop carries from step to step besides the model, the optimizer, the
// store and the reweighter: what a checkpoint keeps of it.
struct LoopState {
  int64_t steps = 0;
  int64_t samples = 0;
  scheduler::BucketStats bucket_stats;  // since the last reweighting update
  scheduler::BucketWeights current_weights{};
};

std::vector<float> HostFloats(const Tensor<float>& t) {
  const Tensor<float> host = t.To(models::Device::kCpu);
  return std::vector<float>(host.data(), host.data() + host.size());
}

absl::Status SetFloats(const std::vector<float>& values, const std::string& what, Tensor<float>* t) {
  if (static_cast<int64_t>(values.size()) != t->size()) {
    return absl::FailedPreconditionError(absl::StrCat("checkpoint: ", what, " has ", values.size(),
                                                      " values, this model has ", t->size()));
  }
  Tensor<float> host(t->rows(), t->cols());
  std::copy(values.begin(), values.end(), host.data());
  t->CopyFrom(host);
  return absl::OkStatus();
}

template <typename A>
nlohmann::json ArrayJson(const A& a) {
  nlohmann::json j = nlohmann::json::array();
  for (const auto& v : a) j.push_back(v);
  return j;
}

template <typename A>
absl::Status ArrayFromJson(const nlohmann::json& meta, const char* key, A* out) {
  const nlohmann::json& j = meta.contains(key) ? meta[key] : nlohmann::json();
  if (!j.is_array() || j.size() != out->size()) {
    return absl::DataLossError(absl::StrCat("checkpoint meta: ", key, " is missing or of the wrong size"));
  }
  for (size_t i = 0; i < out->size(); ++i) (*out)[i] = j[i].get<typename A::value_type>();
  return absl::OkStatus();
}

// The fields of the job that must match for a checkpoint to continue it: the model, and what
// decides the data stream (the global batch of num_workers * batch_size, epochs, seed).
// num_workers 0: the model's alone (evaluation).
nlohmann::json RunIdentity(const JobConfig& job, int64_t param_count, int num_workers) {
  nlohmann::json id = {{"model_type", job.model().type()},
                       {"dense_params", param_count},
                       {"task", Task_Name(job.task())}};
  if (num_workers > 0) {
    id["batch_size"] = job.trainer().batch_size();
    id["workers"] = num_workers;
    id["epochs"] = job.trainer().epochs();
    id["seed"] = job.trainer().seed();
  }
  return id;
}

// Writes the checkpoint of `state.steps` under `root` and keeps the newest `keep`.
absl::Status SaveCheckpoint(FileSystem* fs, const std::string& root, const JobConfig& job,
                            int num_workers, models::Model* model,
                            models::Adagrad<float>* optimizer, EmbeddingStore* store,
                            const scheduler::SampleReweighter& reweighter, const LoopState& state) {
  const auto start = std::chrono::steady_clock::now();
  ASSIGN_OR_RETURN(checkpoint::Writer writer, checkpoint::Writer::Begin(fs, root, state.steps));
  const std::vector<models::Param<float>*> params = model->Params();
  // Dense file: every parameter, then every Adagrad accumulator, then every buffer.
  std::vector<std::vector<float>> dense;
  for (const models::Param<float>* p : params) dense.push_back(HostFloats(p->value));
  for (const Tensor<float>& acc : optimizer->accumulators()) dense.push_back(HostFloats(acc));
  for (const Tensor<float>* b : model->Buffers()) dense.push_back(HostFloats(*b));
  RETURN_IF_ERROR(writer.AddFile("dense.bin", checkpoint::EncodeDenseFloats(dense)));
  ASSIGN_OR_RETURN(auto sparse_files, store->SaveRows(fs, writer.dir()));
  uint64_t bytes = 0;
  for (const auto& [name, info] : sparse_files) {
    writer.AddWrittenFile(name, info);
    bytes += info.bytes;
  }
  const scheduler::SampleReweighter::State rw = reweighter.state();
  std::string job_text;
  google::protobuf::TextFormat::PrintToString(job, &job_text);
  nlohmann::json meta = {
      {"run", RunIdentity(job, models::ParamCount(params), num_workers)},
      {"job", job_text},
      {"steps", state.steps},
      {"samples", state.samples},
      {"optimizer_step", optimizer->step()},
      {"accumulators", optimizer->accumulators().size()},
      {"buffers", model->Buffers().size()},
      {"table_step", state.steps},  // one push per step
      {"reader_global_batches", state.steps},
      {"bucket_count", ArrayJson(state.bucket_stats.count)},
      {"bucket_loss_sum", ArrayJson(state.bucket_stats.loss_sum)},
      {"current_weights", ArrayJson(state.current_weights)},
      {"reweighter_weights", ArrayJson(rw.weights)},
      {"reweighter_running_loss", ArrayJson(rw.running_loss)},
      {"reweighter_has_loss", ArrayJson(rw.has_loss)},
      {"reweighter_cumulative", ArrayJson(rw.cumulative)},
      {"reweighter_updates", rw.updates},
  };
  if (job.model().has_groups() && !job.model().groups().table().empty()) {
    ASSIGN_OR_RETURN(std::string table, fs->ReadFileToString(job.model().groups().table()));
    meta["groups_table"] = job.model().groups().table();
    meta["groups_table_crc32c"] = crc32c::Value(table);
  }
  RETURN_IF_ERROR(writer.Commit(meta));
  RETURN_IF_ERROR(checkpoint::Prune(fs, root, job.trainer().keep_checkpoints()));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  LOG(INFO) << absl::StrFormat("checkpoint of step %d written to %s in %.2f s (%.1f MB of sparse rows)",
                               state.steps, writer.dir(), seconds, bytes / 1e6);
  return absl::OkStatus();
}

// Restores everything SaveCheckpoint wrote from the checkpoint in `dir`; the sparse rows only
// when `store` is not null. `num_workers` as for RunIdentity (0: evaluation, any data stream).
absl::Status LoadCheckpoint(FileSystem* fs, const std::string& dir, const JobConfig& job,
                            int num_workers, models::Model* model,
                            models::Adagrad<float>* optimizer, EmbeddingStore* store,
                            scheduler::SampleReweighter* reweighter, LoopState* state) {
  ASSIGN_OR_RETURN(checkpoint::Reader reader, checkpoint::Reader::Open(fs, dir));
  const nlohmann::json& meta = reader.meta();
  const std::vector<models::Param<float>*> params = model->Params();
  const nlohmann::json want = RunIdentity(job, models::ParamCount(params), num_workers);
  if (!meta.contains("run") || !meta["run"].is_object()) {
    return absl::DataLossError(absl::StrCat(dir, ": checkpoint meta has no run identity"));
  }
  for (const auto& [field, value] : want.items()) {
    if (!meta["run"].contains(field) || meta["run"][field] != value) {
      return absl::FailedPreconditionError(absl::StrCat(
          dir, " is a checkpoint of another run: its ", field, " is ",
          meta["run"].contains(field) ? meta["run"][field].dump() : "missing", ", this job's is ",
          value.dump()));
    }
  }
  if (meta.contains("groups_table_crc32c") && job.model().has_groups()) {
    ASSIGN_OR_RETURN(std::string table, fs->ReadFileToString(job.model().groups().table()));
    if (crc32c::Value(table) != meta["groups_table_crc32c"].get<uint32_t>()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the group table ", job.model().groups().table(),
          " is not the one the checkpoint was trained with (", meta.value("groups_table", ""), ")"));
    }
  }
  try {
    state->steps = meta.at("steps").get<int64_t>();
    state->samples = meta.at("samples").get<int64_t>();
    RETURN_IF_ERROR(ArrayFromJson(meta, "bucket_count", &state->bucket_stats.count));
    RETURN_IF_ERROR(ArrayFromJson(meta, "bucket_loss_sum", &state->bucket_stats.loss_sum));
    RETURN_IF_ERROR(ArrayFromJson(meta, "current_weights", &state->current_weights));
    scheduler::SampleReweighter::State rw;
    RETURN_IF_ERROR(ArrayFromJson(meta, "reweighter_weights", &rw.weights));
    RETURN_IF_ERROR(ArrayFromJson(meta, "reweighter_running_loss", &rw.running_loss));
    RETURN_IF_ERROR(ArrayFromJson(meta, "reweighter_has_loss", &rw.has_loss));
    RETURN_IF_ERROR(ArrayFromJson(meta, "reweighter_cumulative", &rw.cumulative));
    rw.updates = meta.at("reweighter_updates").get<int64_t>();
    reweighter->Restore(rw);
    optimizer->set_step(meta.at("optimizer_step").get<int64_t>());
    const size_t num_acc = meta.at("accumulators").get<size_t>();
    const size_t num_buffers = meta.at("buffers").get<size_t>();
    ASSIGN_OR_RETURN(std::string bytes, reader.ReadFile("dense.bin"));
    ASSIGN_OR_RETURN(std::vector<std::vector<float>> dense,
                     checkpoint::DecodeDenseFloats(bytes, JoinPath(dir, "dense.bin")));
    const std::vector<Tensor<float>*> buffers = model->Buffers();
    if ((num_acc != 0 && num_acc != params.size()) || num_buffers != buffers.size() ||
        dense.size() != params.size() + num_acc + num_buffers) {
      return absl::FailedPreconditionError(absl::StrCat(
          dir, "/dense.bin holds ", dense.size(), " tensors (", num_acc, " accumulators, ",
          num_buffers, " buffers); this model has ", params.size(), " parameters and ",
          buffers.size(), " buffers"));
    }
    size_t t = 0;
    for (models::Param<float>* p : params) RETURN_IF_ERROR(SetFloats(dense[t++], p->name, &p->value));
    std::vector<Tensor<float>>& acc = optimizer->accumulators();
    acc.clear();
    for (size_t i = 0; i < num_acc; ++i) {
      acc.emplace_back(params[i]->value.device());
      acc.back().Resize(params[i]->value.rows(), params[i]->value.cols());
      RETURN_IF_ERROR(SetFloats(dense[t++], params[i]->name + " (accumulator)", &acc.back()));
    }
    for (size_t i = 0; i < buffers.size(); ++i) {
      RETURN_IF_ERROR(SetFloats(dense[t++], absl::StrCat("buffer ", i), buffers[i]));
    }
    if (store != nullptr) RETURN_IF_ERROR(store->LoadRows(reader, meta.at("table_step").get<uint64_t>()));
  } catch (const nlohmann::json::exception& e) {
    return absl::DataLossError(absl::StrCat(dir, ": checkpoint meta: ", e.what()));
  }
  LOG(INFO) << "resuming from " << dir << " at step " << state->steps << " (" << state->samples
            << " samples)";
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<CheckpointEval> EvaluateCheckpoint(FileSystem* fs, const std::string& checkpoint_dir,
                                                  const std::string& data_dir,
                                                  const std::string& eval_json) {
  ASSIGN_OR_RETURN(checkpoint::Reader reader, checkpoint::Reader::Open(fs, checkpoint_dir));
  CheckpointEval result;
  result.step = reader.step();
  const std::string job_text = reader.meta().value("job", "");
  if (!google::protobuf::TextFormat::ParseFromString(job_text, &result.job)) {
    return absl::DataLossError(absl::StrCat(checkpoint_dir, ": the checkpoint's job does not parse"));
  }
  JobConfig& job = result.job;
  if (!data_dir.empty()) job.mutable_data()->set_dir(data_dir);
  job.mutable_trainer()->set_device("cpu");
  job.clear_cluster();
  ASSIGN_OR_RETURN(std::unique_ptr<models::LayerFactory<float>> factory, MakeLayerFactory(job.trainer()));
  ASSIGN_OR_RETURN(JobSetup setup, Setup(fs, job, factory.get()));
  ASSIGN_OR_RETURN(std::unique_ptr<EmbeddingStore> store, NewLocalEmbeddingStore(setup.table));
  models::Adagrad<float> optimizer{models::AdagradOptions()};
  ASSIGN_OR_RETURN(scheduler::ReweightingOptions rw_options, ReweightingOptionsOf(job.trainer().reweighting()));
  ASSIGN_OR_RETURN(scheduler::SampleReweighter reweighter, scheduler::SampleReweighter::Create(rw_options));
  LoopState state;
  RETURN_IF_ERROR(LoadCheckpoint(fs, checkpoint_dir, job, /*num_workers=*/0, setup.model.get(),
                                 &optimizer, store.get(), &reweighter, &state));
  ASSIGN_OR_RETURN(data::SplitInfo test_split, data::FindSplit(setup.manifest, "test"));
  const std::vector<std::string> test_files = data::SplitPaths(job.data().dir(), test_split);
  SparseBridge bridge(setup.shape, store.get(), setup.sources);
  ASSIGN_OR_RETURN(std::vector<eval::Prediction> preds,
                   Predict(fs, test_files, setup.layout, job, setup.model.get(), &bridge, *setup.activity));
  result.test_samples = static_cast<int64_t>(preds.size());
  ASSIGN_OR_RETURN(result.test, eval::Evaluate(preds));
  RETURN_IF_ERROR(fs->CreateDirs(Dirname(eval_json)));
  RETURN_IF_ERROR(eval::WriteEvalJson(fs, eval_json, result.test));
  RETURN_IF_ERROR(eval::WritePredictionsTsv(fs, JoinPath(Dirname(eval_json), "preds.tsv"), preds));
  return result;
}

absl::StatusOr<TableOptions> SparseTableFor(FileSystem* fs, const JobConfig& job) {
  models::CpuLayerFactory<float> factory;
  ASSIGN_OR_RETURN(JobSetup setup, Setup(fs, job, &factory));
  return setup.table;
}

absl::StatusOr<TrainResult> TrainAndEvaluate(FileSystem* fs, const JobConfig& job, const WorkerRuntime* runtime) {
  const std::string& dir = job.data().dir();
  const TrainerConfig& tc = job.trainer();
  const bool evaluates = runtime == nullptr || runtime->worker_index == 0;
  if (evaluates && tc.out_dir().empty()) {
    return absl::InvalidArgumentError("trainer.out_dir is empty: where to write eval.json?");
  }
  // Checkpoints: worker 0 of a cluster (or the single process) writes them; the parameter
  // servers write their own rows into the same directory.
  const bool in_cluster = runtime != nullptr;
  const bool cluster_reweighting = in_cluster && tc.reweighting().policy() != "none";
  if (cluster_reweighting && (tc.checkpoint_every_steps() > 0 || !tc.resume().empty())) {
    return absl::InvalidArgumentError(
        "trainer.checkpoint_every_steps and trainer.resume (--resume) with "
        "trainer.reweighting in a cluster: the scheduler's reweighting state is not "
        "checkpointed yet (docs/checkpoints.md); use local mode or reweighting policy none");
  }
  if (cluster_reweighting && evaluates && tc.checkpoint_at_end()) {
    LOG(WARNING) << "no checkpoint at the end: the scheduler's reweighting state is not "
                    "checkpointed yet in a cluster (docs/checkpoints.md)";
  }
  const bool checkpoints = evaluates && !tc.out_dir().empty() && !cluster_reweighting;
  const std::string checkpoint_root = JoinPath(tc.out_dir(), "checkpoint");
  ASSIGN_OR_RETURN(std::unique_ptr<models::LayerFactory<float>> factory, MakeLayerFactory(tc));
  ASSIGN_OR_RETURN(JobSetup setup, Setup(fs, job, factory.get()));
  const data::DatasetManifest& manifest = setup.manifest;
  const data::SplitInfo& train_split = setup.train_split;
  const std::vector<std::string>& train_files = setup.train_files;
  const FeatureLayout& layout = setup.layout;
  const models::ModelShape& shape = setup.shape;
  const std::unique_ptr<data::ActivityIndex>& activity = setup.activity;
  const std::unique_ptr<models::Model>& model = setup.model;
  const bool choirrec = job.model().type() == "choirrec";

  // Sparse parameters: the parameter servers in a cluster, an in-process table otherwise.
  std::unique_ptr<EmbeddingStore> owned_store;
  if (runtime != nullptr && runtime->make_store) {
    ASSIGN_OR_RETURN(owned_store, runtime->make_store(setup.table));
  } else {
    ASSIGN_OR_RETURN(owned_store, NewLocalEmbeddingStore(setup.table));
  }
  EmbeddingStore* store = owned_store.get();
  SparseBridge bridge(shape, store, setup.sources);
  SparseBridge eval_bridge(shape, store, setup.sources);  // evaluation's own buffers
  // In a cluster each step reads one global batch of num_workers * batch_size samples, of which
  // worker w trains on the w-th slice; gradients are scaled by each slice's share, summed
  // (dense: allreduce; sparse: on the servers) and applied once: the same update as one worker
  // with the global batch (up to the order of float additions; Dice's batch statistics are the
  // exception: they are per slice).
  const int num_workers = runtime != nullptr ? runtime->num_workers : 1;
  const int worker_index = runtime != nullptr ? runtime->worker_index : 0;
  const int global_batch = tc.batch_size() * num_workers;

  // Samples per epoch, for the learning-rate schedule and the ETA: all rows for CTR and
  // CTCVR; for CVR the clicked rows, from the generator's counter or by counting.
  int64_t per_epoch = train_split.rows();
  if (job.task() == TASK_CVR) {
    auto it = manifest.counters().find("train_clicks");
    if (it != manifest.counters().end()) {
      per_epoch = it->second;
    } else {
      ASSIGN_OR_RETURN(per_epoch, CountClicks(fs, train_files, layout, job));
    }
  }
  int64_t planned_steps = per_epoch > 0 ? (per_epoch * tc.epochs() + global_batch - 1) / global_batch : 0;
  if (tc.max_steps() > 0) planned_steps = planned_steps > 0 ? std::min(planned_steps, tc.max_steps()) : tc.max_steps();
  models::AdagradOptions adagrad;
  adagrad.schedule.lr0 = tc.learning_rate();
  adagrad.schedule.lr_end = tc.learning_rate_end();
  adagrad.schedule.decay_steps = std::max<int64_t>(1, planned_steps);
  adagrad.initial_accumulator = tc.dense_initial_accumulator();
  models::Adagrad<float> optimizer(adagrad);

  BatchReaderOptions ro;
  ro.batch_size = global_batch;
  ro.shuffle_buffer = tc.shuffle_buffer();
  ro.seed = tc.seed();
  ro.epochs = tc.epochs();
  ro.budget.max_errors = job.data().max_bad_rows();
  ro.budget.max_fraction = job.data().max_bad_fraction();
  ASSIGN_OR_RETURN(std::unique_ptr<BatchReader> reader, BatchReader::Open(fs, train_files, layout, ro));

  // The test split, for periodic and final evaluation (buckets from the training period).
  std::vector<std::string> test_files;
  if (absl::StatusOr<data::SplitInfo> test_split = data::FindSplit(manifest, "test"); test_split.ok()) {
    test_files = data::SplitPaths(dir, *test_split);
  } else {
    LOG(WARNING) << dir << " has no test split: nothing to evaluate";
  }

  LOG(INFO) << "training " << job.model().type() << " on " << dir << ": " << shape.num_slots
            << " categorical slots, " << shape.num_dense << " dense, " << shape.sequence_targets.size()
            << " sequences, " << models::ParamCount(model->Params()) << " dense parameters, task "
            << Task_Name(job.task()) << ", ~" << planned_steps << " steps";
  // Sample reweighting by activity bucket (DESIGN.md 1.5): the local trainer plays the
  // scheduler's part. With policy none nothing below changes training (unit weights, an empty
  // span, no per-sample losses), so that it is exactly the training without reweighting.
  ASSIGN_OR_RETURN(const scheduler::ReweightingOptions reweighting_options,
                   ReweightingOptionsOf(tc.reweighting()));
  ASSIGN_OR_RETURN(scheduler::SampleReweighter reweighter,
                   scheduler::SampleReweighter::Create(reweighting_options));
  const bool reweighting = reweighting_options.policy != scheduler::ReweightingPolicy::kNone;
  scheduler::BucketStats bucket_stats;  // since the last update
  scheduler::BucketWeights current_weights = reweighter.weights();
  std::vector<float> sample_weights;
  std::vector<float> per_sample_bce;
  std::vector<int> sample_buckets;
  if (reweighting) {
    LOG(INFO) << "reweighting samples by activity bucket: policy "
              << scheduler::ReweightingPolicyName(reweighting_options.policy) << ", weights updated every "
              << reweighting_options.every_steps << " steps";
  }

  if (runtime != nullptr && tc.eval_every_steps() > 0) {
    LOG(WARNING) << "trainer.eval_every_steps is ignored in a cluster: worker 0 evaluates once, after training";
  }
  TrainResult result;
  double checkpoint_seconds = 0;  // not counted as training time
  int64_t last_checkpoint = -1;   // the step of the last checkpoint written
  auto save_checkpoint = [&]() -> absl::Status {
    const auto save_start = std::chrono::steady_clock::now();
    LoopState state{result.steps, result.samples, bucket_stats, current_weights};
    RETURN_IF_ERROR(SaveCheckpoint(fs, checkpoint_root, job, num_workers, model.get(), &optimizer,
                                   store, reweighter, state));
    last_checkpoint = result.steps;
    checkpoint_seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - save_start).count();
    return absl::OkStatus();
  };
  if (tc.resume().empty() && checkpoints &&
      (tc.checkpoint_every_steps() > 0 || tc.checkpoint_at_end())) {
    // A fresh run: its checkpoints replace those of an earlier run into the same out_dir (as
    // its eval.json does), so that "latest" never mixes two runs.
    ASSIGN_OR_RETURN(const int cleared, checkpoint::Clear(fs, checkpoint_root));
    if (cleared > 0) {
      LOG(WARNING) << "a fresh run: deleted the " << cleared << " checkpoint(s) of an earlier run in "
                   << checkpoint_root << " (resume with --resume latest to continue a run instead)";
    }
  }
  if (!tc.resume().empty()) {
    ASSIGN_OR_RETURN(const std::string resume_dir, checkpoint::Resolve(fs, tc.resume(), checkpoint_root));
    LoopState state;
    // In a cluster every worker loads the dense state; worker 0 alone sends the sparse rows to
    // the servers (the broadcast before the first step holds the others back until it is done).
    RETURN_IF_ERROR(LoadCheckpoint(fs, resume_dir, job, num_workers, model.get(), &optimizer,
                                   evaluates ? store : nullptr, &reweighter, &state));
    store->ResumeAt(static_cast<uint64_t>(state.steps));
    result.steps = state.steps;
    result.samples = state.samples;
    result.resumed_samples = state.samples;
    bucket_stats = state.bucket_stats;
    current_weights = state.current_weights;
    last_checkpoint = result.steps;
  }
  models::ModelGrads grads;
  Tensor<float> logits;
  double fuse_sum = 0, kd_active = 0;  // choirrec gate statistics since the last log line
  std::deque<double> recent_losses;
  double recent_sum = 0;
  const auto start = std::chrono::steady_clock::now();
  double eval_seconds = 0;  // periodic evaluation, not counted as training time
  {
    int64_t planned_samples = per_epoch * tc.epochs();
    if (tc.max_steps() > 0) planned_samples = std::min<int64_t>(planned_samples, tc.max_steps() * global_batch);
    Progress progress("training samples", planned_samples);
    const std::vector<models::Param<float>*> params = model->Params();
    // Dense gradients (and the step's loss) travel between workers as one flat buffer.
    std::vector<float> flat(num_workers > 1 || runtime != nullptr ? models::ParamCount(params) + 1 : 0);
    if (runtime != nullptr && runtime->collective != nullptr) {
      // Every worker starts from worker 0's parameters.
      flat.resize(models::ParamCount(params) + 1);
      models::CopyValuesTo(params, flat.data());
      RETURN_IF_ERROR(runtime->collective->Broadcast(flat.data(), (flat.size() - 1) * sizeof(float), 0));
      models::CopyValuesFrom(params, flat.data());
    }
    // One step: this worker's slice of a global batch; the last global batch may leave some
    // workers few or no samples (they still join the step's exchanges, with zero gradients).
    struct Step {
      Batch batch;
      int global_size = 0;
    };
    Batch global;
    if (result.steps > 0) {
      // Resuming: replay the data stream (same files, seed and batch size) to the checkpoint's
      // step, so that the rest of the run sees exactly the batches it would have seen.
      for (int64_t i = 0; i < result.steps; ++i) {
        ASSIGN_OR_RETURN(bool more, reader->Next(&global));
        if (!more) {
          return absl::FailedPreconditionError(absl::StrCat(
              "resume: the training data ended after ", i, " batches, before the checkpoint's step ",
              result.steps, ": not the data the checkpoint was trained on"));
        }
      }
      progress.Add(result.samples);
    }
    auto read_step = [&](Step* step) -> absl::StatusOr<bool> {
      ASSIGN_OR_RETURN(bool more, reader->Next(&global));
      if (!more) return false;
      const int begin = std::min(global.size, worker_index * tc.batch_size());
      const int end = std::min(global.size, begin + tc.batch_size());
      if (num_workers == 1) {
        std::swap(step->batch, global);
      } else {
        step->batch = SliceBatch(global, begin, end, static_cast<int>(layout.categorical.size()),
                                 static_cast<int>(layout.dense.size()));
      }
      step->global_size = num_workers == 1 ? step->batch.size : global.size;
      return true;
    };
    // trainer.sparse_staleness 1: the next step's rows are pulled on another thread while this
    // step computes and pushes, so they may miss this step's update (reads at most one step
    // stale). Steps alternate between two bridges and two input buffers.
    const bool prefetch = tc.sparse_staleness() > 0;
    SparseBridge second_bridge(shape, store, setup.sources);
    SparseBridge* bridges[2] = {&bridge, &second_bridge};
    models::ModelInputs inputs[2];
    Step steps[2];
    bool next_read = false;  // steps[1 - cur] holds the next step, already read
    int cur = 0;
    // Declared last: destroyed (and so waited for) before what its thread uses.
    std::future<absl::Status> prefetched;
    while (tc.max_steps() == 0 || result.steps < tc.max_steps()) {
      if (runtime != nullptr && runtime->job_status) RETURN_IF_ERROR(runtime->job_status());
      if (!next_read) {
        ASSIGN_OR_RETURN(bool more, read_step(&steps[cur]));
        if (!more) break;
      }
      const Batch& batch = steps[cur].batch;
      const int global_size = steps[cur].global_size;
      models::ModelInputs& in = inputs[cur];
      bool gathered = false;
      if (prefetched.valid()) {  // this step's rows, pulled during the previous step
        RETURN_IF_ERROR(prefetched.get());
        gathered = true;
      }
      next_read = false;
      if (prefetch && (tc.max_steps() == 0 || result.steps + 1 < tc.max_steps())) {
        const int n = 1 - cur;
        ASSIGN_OR_RETURN(next_read, read_step(&steps[n]));
        if (next_read && steps[n].batch.size > 0) {
          prefetched = std::async(std::launch::async,
                                  [&bridges, &steps, &inputs, n] { return bridges[n]->Gather(steps[n].batch, &inputs[n]); });
        }
      }
      const float share = static_cast<float>(batch.size) / global_size;
      models::ZeroGrads(params);
      models::LossStats stats;
      if (batch.size > 0) {
        if (!gathered) RETURN_IF_ERROR(bridges[cur]->Gather(batch, &in));
        model->Forward(in, &logits);
        if (reweighting) {
          sample_buckets.resize(batch.size);
          sample_weights.resize(batch.size);
          for (int b = 0; b < batch.size; ++b) {
            sample_buckets[b] = static_cast<int>(activity->Of(batch.user_ids[b]));
            sample_weights[b] = static_cast<float>(current_weights[sample_buckets[b]]);
          }
        }
        stats = reweighting ? model->TrainBackward(batch.labels, sample_weights, &grads, &per_sample_bce)
                            : model->TrainBackward(batch.labels, {}, &grads, nullptr);
        if (reweighting) {
          for (int b = 0; b < batch.size; ++b) {
            ++bucket_stats.count[sample_buckets[b]];
            bucket_stats.loss_sum[sample_buckets[b]] += per_sample_bce[b];
          }
        }
        RETURN_IF_ERROR(bridges[cur]->Scatter(batch, grads, share));
      } else {
        RETURN_IF_ERROR(store->Push({}, {}));  // a synchronous step needs every worker's push
      }
      double loss = stats.loss;  // the training objective: weighted when reweighting
      if (!flat.empty()) {
        // Sum of the slices' gradients, each scaled by its share: the global batch's gradient.
        models::CopyGradsTo(params, flat.data());
        if (share != 1) {
          for (float& g : flat) g *= share;
        }
        flat.back() = static_cast<float>(loss * share);
        if (runtime != nullptr && runtime->collective != nullptr) {
          RETURN_IF_ERROR(runtime->collective->AllReduceSum(flat.data(), static_cast<int64_t>(flat.size())));
        }
        models::CopyGradsFrom(params, flat.data());
        loss = flat.back();
      }
      fuse_sum += stats.mean_a_fuse * batch.size;
      kd_active += stats.kd_active;
      optimizer.Step(params);
      ++result.steps;
      result.samples += global_size;
      if (reweighting && result.steps % reweighting_options.every_steps == 0) {
        // In a cluster the scheduler sums every worker's statistics and answers with the weights.
        scheduler::BucketWeights weights;
        if (runtime != nullptr && runtime->report) {
          ASSIGN_OR_RETURN(weights, runtime->report(bucket_stats));
        } else {
          ASSIGN_OR_RETURN(weights, reweighter.Update(bucket_stats));
        }
        current_weights = weights;
        bucket_stats = scheduler::BucketStats();
        LOG(INFO) << "reweighting step " << result.steps << ": weights " << scheduler::FormatBucketWeights(weights)
                  << " (policy " << scheduler::ReweightingPolicyName(reweighting_options.policy) << ")";
      }
      recent_losses.push_back(loss);
      recent_sum += loss;
      if (recent_losses.size() > 100) {
        recent_sum -= recent_losses.front();
        recent_losses.pop_front();
      }
      progress.SetDetail(absl::StrFormat("loss %.4f", recent_sum / recent_losses.size()));
      progress.Add(global_size);
      if (tc.eval_every_steps() > 0 && result.steps % tc.eval_every_steps() == 0 && !test_files.empty() &&
          runtime == nullptr) {
        const auto eval_start = std::chrono::steady_clock::now();
        ASSIGN_OR_RETURN(std::vector<eval::Prediction> preds,
                         Predict(fs, test_files, layout, job, model.get(), &eval_bridge, *activity));
        ASSIGN_OR_RETURN(eval::EvalReport report, eval::Evaluate(preds));
        LOG(INFO) << absl::StrFormat("step %d: test AUC %.4f, GAUC %.4f (low %.4f, high %.4f), logloss %.4f",
                                     result.steps, report.overall.auc, report.overall.gauc,
                                     report.bucket(data::Bucket::kLow).gauc,
                                     report.bucket(data::Bucket::kHigh).gauc, report.overall.logloss);
        eval_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - eval_start).count();
      }
      if (result.steps % 200 == 0) {
        LOG(INFO) << absl::StrFormat("step %d: loss %.5f (mean of last %d), lr %.5f", result.steps,
                                     recent_sum / recent_losses.size(), recent_losses.size(),
                                     optimizer.current_lr())
                  << (choirrec ? absl::StrFormat(", mean a_fuse %.3f, KD gate open for %.1f%% of samples",
                                                 fuse_sum / (200.0 * tc.batch_size()),
                                                 100.0 * kd_active / (200.0 * tc.batch_size()))
                               : std::string())
                  << (num_workers > 1 ? absl::StrFormat(" [worker %d of %d]", worker_index, num_workers)
                               : std::string());
        fuse_sum = kd_active = 0;
      }
      if (checkpoints && tc.checkpoint_every_steps() > 0 &&
          result.steps % tc.checkpoint_every_steps() == 0) {
        if (prefetched.valid()) prefetched.wait();  // no pull in flight while rows are written
        RETURN_IF_ERROR(save_checkpoint());
      }
      if (prefetch) cur = 1 - cur;
    }
  }
  if (checkpoints && tc.checkpoint_at_end() && result.steps > 0 && last_checkpoint != result.steps) {
    RETURN_IF_ERROR(save_checkpoint());
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() -
                   eval_seconds - checkpoint_seconds;
  result.last_loss = recent_losses.empty() ? 0 : recent_sum / recent_losses.size();
  if (result.steps == 0) {
    return absl::FailedPreconditionError(absl::StrCat(dir, ": no training samples for task ", Task_Name(job.task())));
  }
  LOG(INFO) << absl::StrFormat("trained %d steps, %d samples in %.1f s (%.0f samples/s), loss %.5f",
                               result.steps, result.samples, result.seconds, result.samples / result.seconds,
                               result.last_loss);

  // Evaluation on the test split, with buckets from the training period (worker 0 in a
  // cluster).
  if (evaluates) RETURN_IF_ERROR(fs->CreateDirs(tc.out_dir()));
  if (evaluates && !test_files.empty()) {
    ASSIGN_OR_RETURN(std::vector<eval::Prediction> preds,
                     Predict(fs, test_files, layout, job, model.get(), &eval_bridge, *activity));
    result.test_samples = preds.size();
    ASSIGN_OR_RETURN(result.test, eval::Evaluate(preds));
    RETURN_IF_ERROR(eval::WriteEvalJson(fs, JoinPath(tc.out_dir(), "eval.json"), result.test));
    RETURN_IF_ERROR(eval::WritePredictionsTsv(fs, JoinPath(tc.out_dir(), "preds.tsv"), preds));
    RETURN_IF_ERROR(fs->WriteStringToFileAtomic(
        JoinPath(tc.out_dir(), "report.md"),
        absl::StrCat("# ", job.name(), ": ", job.model().type(), " on ", dir, "\n\n",
                     eval::MarkdownTable(result.test))));
  }
  result.peak_rss_mb = PeakRssMb();
  result.num_slots = shape.num_slots;
  result.num_dense = shape.num_dense;
  result.num_sequences = shape.sequence_targets.size() + shape.group_sequence_targets.size();
  return result;
}

}  // namespace choir::worker
