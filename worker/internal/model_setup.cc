#include "worker/internal/model_setup.h"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <map>
#include <set>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/config.h"
#include "core/crc32c.h"
#include "google/protobuf/text_format.h"
#include "core/error_budget.h"
#include "core/progress.h"
#include "data/row_block.h"
#include "data/shard.h"
#include "models/choirrec_model.h"
#include "models/ranking_model.h"
#include "worker/trainer.h"

namespace choir::worker::internal {

uint32_t DataFingerprint(const data::DatasetManifest& manifest) {
  data::DatasetManifest kept;
  kept.set_source(manifest.source());
  kept.set_split_time(manifest.split_time());
  *kept.mutable_counters() = manifest.counters();
  for (const data::SplitInfo& split : manifest.splits()) {
    if (split.name() == "train") *kept.add_splits() = split;
  }
  std::string text;
  google::protobuf::TextFormat::PrintToString(kept, &text);
  return crc32c::Value(text);
}

absl::Status CheckCheckpointData(FileSystem* fs, const std::string& dir, bool given) {
  if (fs->Exists(JoinPath(dir, data::kManifestName))) return absl::OkStatus();
  return absl::NotFoundError(absl::StrCat(
      "no dataset at ", dir, ", ", given ? "given by --data" : "the data.dir the checkpoint was trained with",
      ": the model's features and the activity buckets come from it; pass --data DIR"));
}

absl::Status CheckSplitSchemas(FileSystem* fs, const std::vector<std::string>& files, const std::string& split,
                               const data::Schema& schema) {
  auto describe = [](const data::Schema& s, int i) {
    if (i >= s.fields_size()) return std::string("no field");
    const data::Field& f = s.fields(i);
    return absl::StrCat("'", f.name(), "' ", data::FieldType_Name(f.type()), " ", data::FieldRole_Name(f.role()));
  };
  for (const std::string& file : files) {
    ASSIGN_OR_RETURN(std::unique_ptr<data::ShardReader> reader, data::ShardReader::Open(fs, file));
    const data::Schema& got = reader->schema();
    const int n = std::max(got.fields_size(), schema.fields_size());
    for (int i = 0; i < n; ++i) {
      // What the reader relies on: the name, type and role of every column (not its doc).
      if (i < got.fields_size() && i < schema.fields_size() && got.fields(i).name() == schema.fields(i).name() &&
          got.fields(i).type() == schema.fields(i).type() && got.fields(i).role() == schema.fields(i).role()) {
        continue;
      }
      return absl::FailedPreconditionError(absl::StrCat(
          file, " (split ", split, "): column ", i, " is ", describe(got, i), ", the first train file's is ",
          describe(schema, i), "; all files of a dataset must share one schema"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<eval::Prediction>> PredictFiles(FileSystem* fs, const std::vector<std::string>& files,
                                                           const FeatureLayout& layout, const JobConfig& job,
                                                           models::Model* model, SparseBridge* bridge,
                                                           const data::ActivityIndex& activity,
                                                           bool every_row) {
  BatchReaderOptions options;
  options.batch_size = 4096;
  options.shuffle_buffer = 0;
  options.keep_unclicked = every_row;
  options.budget.max_errors = job.data().max_bad_rows();
  options.budget.max_fraction = job.data().max_bad_fraction();
  options.decode_threads = job.data().reader_threads();
  ASSIGN_OR_RETURN(std::unique_ptr<BatchReader> reader, BatchReader::Open(fs, files, layout, options));
  model->SetTraining(false);
  Progress progress("samples scored", 0);
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
    progress.Add(batch.size);
  }
  model->SetTraining(true);
  return out;
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
  }, job.data().reader_threads()));
  return counts;
}

bool ReadsGroups(const std::string& type) { return type == "choirrec" || type == "dnn+groupid"; }

absl::StatusOr<std::unique_ptr<GroupFeatures>> LoadGroups(FileSystem* fs, const ModelConfig& model,
                                                          const absl::flat_hash_map<int64_t, OwnCounts>* own,
                                                          const std::string& table, const std::string& priors,
                                                          const AssignedUsers* assigned) {
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
  options.groups_tsv = table.empty() ? gc.table() : table;
  options.priors_dir = priors.empty() ? gc.priors() : priors;
  options.attribute_level = gc.attribute_level();
  options.sequence_level = gc.sequence_level();
  options.own_counts = own;
  options.assigned = assigned;
  ASSIGN_OR_RETURN(std::unique_ptr<GroupFeatures> groups, GroupFeatures::Load(fs, options));
  LOG(INFO) << "groups: " << groups->users() << " users in " << groups->distinct_rows() << " groups at "
            << groups->levels() << " levels (" << options.groups_tsv << ", priors " << options.priors_dir << ")";
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
  // The activity gates' inputs: the features named (each once), in the index's order; all by default.
  constexpr int kAll = data::ActivityIndex::kNumActivityFeatures;
  const auto& names = data::ActivityIndex::kActivityFeatureNames;
  std::vector<bool> chosen(kAll, model.choirrec().activity_features().empty());
  for (const std::string& name : model.choirrec().activity_features()) {
    const auto* it = std::find(std::begin(names), std::end(names), name);
    if (it == std::end(names)) {
      return absl::InvalidArgumentError(absl::StrCat("model.choirrec.activity_features: '", name, "' (",
                                                     absl::StrJoin(names, ", "), ")"));
    }
    if (chosen[it - std::begin(names)]) {
      return absl::InvalidArgumentError(absl::StrCat("model.choirrec.activity_features: '", name, "' named twice"));
    }
    chosen[it - std::begin(names)] = true;
  }
  sources->activity_columns.clear();
  for (int k = 0; k < kAll; ++k) {
    if (chosen[k]) sources->activity_columns.push_back(k);
  }
  shape->activity_features = static_cast<int>(sources->activity_columns.size());
  return absl::OkStatus();
}

absl::Status BuildModel(const JobConfig& job, const data::Schema& schema,
                        std::unique_ptr<GroupFeatures> groups,
                        std::unique_ptr<data::ActivityIndex> activity,
                        models::LayerFactory<float>* factory, ModelSetup* out) {
  const TrainerConfig& tc = job.trainer();
  ASSIGN_OR_RETURN(out->layout, BuildFeatureLayout(schema, job.model(), job.task()));
  FeatureLayout& layout = out->layout;
  models::ModelShape& shape = out->shape;
  shape = models::ModelShape();
  shape.num_slots = layout.num_slots();
  shape.embedding_dim = job.model().embedding_dim();
  shape.num_dense = layout.dense.size();
  shape.max_seq_len = layout.max_seq_len;
  for (const auto& s : layout.sequences) shape.sequence_targets.push_back(s.target);

  // The semantic groups (choirrec, dnn+groupid) and the activity index (bucket reports,
  // choirrec's gates and KD gate).
  const std::string& type = job.model().type();
  const bool choirrec = type == "choirrec";
  GroupSources& sources = out->sources;
  sources = GroupSources();
  if (ReadsGroups(type)) {
    if (groups == nullptr) return absl::InternalError(absl::StrCat("model.type ", type, " without its groups"));
    out->groups = std::move(groups);
    shape.group_levels = out->groups->levels();
    sources.groups = out->groups.get();
    if (choirrec) RETURN_IF_ERROR(AddGroupChannel(job.model(), layout, *out->groups, &shape, &sources));
  }
  if (activity == nullptr) return absl::InternalError("BuildModel without an activity index");
  out->activity = std::move(activity);
  if (choirrec) sources.activity = out->activity.get();

  if (choirrec) {
    ASSIGN_OR_RETURN(out->model, models::ChoirRecModel<float>::Create(job.model(), shape, tc.seed(), factory));
  } else {
    ASSIGN_OR_RETURN(out->model, models::RankingModel::Create(job.model(), shape, tc.seed(), factory));
  }
  // The model's own shape: what its type and ablation switches read.
  shape = out->model->shape();
  if (shape.sequence_targets.empty()) layout.sequences.clear();  // do not read sequences at all
  // Slots after the schema's (0..num_slots-1): group ids, then attribute completion.
  sources.first_group_slot = shape.num_slots;
  sources.first_attribute_slot = shape.num_slots + shape.group_levels;

  TableOptions& table = out->table;
  table = TableOptions();
  table.seed = tc.seed();
  const int total_slots = shape.num_slots + shape.group_levels + shape.group_attribute_slots;
  ASSIGN_OR_RETURN(SlotConfig slot, EmbeddingSlotConfig(tc));
  slot.dim = shape.embedding_dim;
  for (int s = 0; s < total_slots; ++s) table.slots[s] = slot;
  return ApplySlotOverrides(job, layout, sources, shape, &table);
}

absl::Status ApplySlotOverrides(const JobConfig& job, const FeatureLayout& layout, const GroupSources& sources,
                                const models::ModelShape& shape, TableOptions* table) {
  std::map<std::string, std::vector<uint32_t>> slots_of;
  for (const FeatureLayout::Categorical& c : layout.categorical) slots_of[c.field].push_back(c.slot);
  for (int l = 0; l < shape.group_levels; ++l) slots_of["group_ids"].push_back(sources.first_group_slot + l);
  for (int a = 0; a < shape.group_attribute_slots; ++a) {
    slots_of["group_attributes"].push_back(sources.first_attribute_slot + a);
  }
  const int64_t min_capacity = int64_t{table->num_shards} * std::max(1, job.cluster().servers());
  std::set<std::string> named;
  const auto& overrides = job.trainer().sparse_slots();
  for (int i = 0; i < overrides.size(); ++i) {
    const SparseSlotConfig& o = overrides[i];
    const std::string where = absl::StrCat("trainer.sparse_slots[", i, "]");
    auto bad = [&](absl::string_view what) { return absl::InvalidArgumentError(absl::StrCat(where, ": ", what)); };
    if (o.fields().empty()) return bad("fields is empty");
    if (o.has_admit_min_count() && (o.admit_min_count() < 0 || o.admit_min_count() > 65535)) {
      return bad("admit_min_count must be in [0, 65535]");
    }
    if (o.has_ttl_steps() && o.ttl_steps() < 0) return bad("ttl_steps must be >= 0");
    if (o.has_capacity() && o.capacity() != 0 && o.capacity() < min_capacity) {
      return bad(absl::StrCat("capacity must be 0 or >= ", min_capacity, " (16 table shards on each of ",
                              std::max(1, job.cluster().servers()), " server(s))"));
    }
    for (const std::string& field : o.fields()) {
      auto it = slots_of.find(field);
      if (it == slots_of.end()) {
        std::vector<std::string> names;
        for (const auto& [name, slots] : slots_of) names.push_back(name);
        return bad(absl::StrCat("'", field, "' is not an embedding slot of this model (", absl::StrJoin(names, ", "),
                                ")"));
      }
      if (!named.insert(field).second) return bad(absl::StrCat("'", field, "' is named twice in trainer.sparse_slots"));
      for (uint32_t slot : it->second) {
        SlotConfig& config = table->slots.at(slot);
        if (o.has_admit_min_count()) config.admit_min_count = o.admit_min_count();
        if (o.has_ttl_steps()) config.ttl_steps = o.ttl_steps();
        if (o.has_capacity()) config.capacity = o.capacity();
      }
    }
  }
  return absl::OkStatus();
}

TableOptions ServerShare(const TableOptions& table, int server, int num_servers) {
  TableOptions share = table;
  for (auto& [slot, config] : share.slots) {
    if (config.capacity == 0) continue;
    config.capacity = config.capacity / num_servers + (server < config.capacity % num_servers ? 1 : 0);
  }
  return share;
}

absl::StatusOr<SlotConfig> EmbeddingSlotConfig(const TrainerConfig& tc) {
  SlotConfig slot;
  absl::StatusOr<OptimizerKind> kind = ParseOptimizerKind(tc.sparse_optimizer());
  if (!kind.ok()) return absl::InvalidArgumentError(absl::StrCat("trainer.sparse_optimizer: ", kind.status().message()));
  slot.optimizer = *kind;
  slot.learning_rate = static_cast<float>(tc.sparse_learning_rate());
  if (!std::isfinite(tc.sparse_init_scale()) || tc.sparse_init_scale() < 0) {
    return absl::InvalidArgumentError("trainer.sparse_init_scale must be finite and >= 0");
  }
  slot.init_scale = static_cast<float>(tc.sparse_init_scale());
  if (tc.sparse_admit_min_count() < 0 || tc.sparse_admit_min_count() > 65535) {
    return absl::InvalidArgumentError("trainer.sparse_admit_min_count must be in [0, 65535]");
  }
  if (tc.sparse_ttl_steps() < 0) return absl::InvalidArgumentError("trainer.sparse_ttl_steps must be >= 0");
  if (tc.sparse_capacity() < 0) return absl::InvalidArgumentError("trainer.sparse_capacity must be >= 0");
  slot.admit_min_count = tc.sparse_admit_min_count();
  slot.ttl_steps = tc.sparse_ttl_steps();
  slot.capacity = tc.sparse_capacity();
  slot.adagrad_initial_accumulator = static_cast<float>(tc.sparse_initial_accumulator());
  slot.ftrl_initial_accumulator = static_cast<float>(tc.sparse_initial_accumulator());
  if (tc.has_sparse_ftrl() && slot.optimizer != OptimizerKind::kFtrl) {
    return absl::InvalidArgumentError(absl::StrCat("trainer.sparse_ftrl is set but trainer.sparse_optimizer is \"",
                                                   tc.sparse_optimizer(), "\": it would be ignored"));
  }
  const SparseFtrlConfig& ftrl = tc.sparse_ftrl();
  const std::pair<const char*, double> fields[] = {{"beta", ftrl.beta()}, {"l1", ftrl.l1()}, {"l2", ftrl.l2()}};
  for (const auto& [field, value] : fields) {
    if (!std::isfinite(value) || value < 0) {
      return absl::InvalidArgumentError(absl::StrCat("trainer.sparse_ftrl.", field, " must be finite and >= 0"));
    }
  }
  slot.ftrl_beta = static_cast<float>(ftrl.beta());
  slot.ftrl_l1 = static_cast<float>(ftrl.l1());
  slot.ftrl_l2 = static_cast<float>(ftrl.l2());
  if (slot.optimizer == OptimizerKind::kFtrl &&
      !(slot.ftrl_beta + std::sqrt(slot.ftrl_initial_accumulator) + slot.learning_rate * slot.ftrl_l2 > 0)) {
    return absl::InvalidArgumentError(
        "trainer.sparse_optimizer \"ftrl\" needs trainer.sparse_initial_accumulator > 0, or trainer.sparse_ftrl.beta "
        "or .l2 > 0: a row's first update divides by beta + sqrt(accumulator) + sparse_learning_rate * l2");
  }
  if (absl::Status valid = ValidateSlotConfig(slot); !valid.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("the trainer's sparse_* fields: ", valid.message()));
  }
  return slot;
}

namespace {

// The groups must be this dataset's: a table without any of the training period's users (built
// for another dataset, or emptied) would train a group channel that sees only "no group".
absl::Status CheckGroupCoverage(const GroupFeatures& groups, const data::ActivityIndex& activity,
                                const GroupsConfig& config) {
  const std::vector<data::ActivityIndex::UserCounts> known = activity.KnownUsers();
  if (known.empty()) return absl::OkStatus();
  int64_t covered = 0;
  for (const data::ActivityIndex::UserCounts& u : known) covered += groups.Contains(u.user) ? 1 : 0;
  const double share = static_cast<double>(covered) / static_cast<double>(known.size());
  if (covered == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "none of the dataset's ", known.size(), " users of the training period is in ", config.table(), " (",
        groups.users(), " users): the groups belong to another dataset; build them from this one's profiles"));
  }
  if (share < 0.5) {
    LOG(WARNING) << "only " << covered << " of the dataset's " << known.size() << " users of the training period ("
                 << absl::StrFormat("%.1f%%", 100 * share) << ") are in " << config.table()
                 << "; the others get the no-group row";
  }
  return absl::OkStatus();
}

// Each field's own message, so a user knows which line of the job file to change.
absl::Status ValidateConfig(const JobConfig& job) {
  const TrainerConfig& tc = job.trainer();
  const ModelConfig& m = job.model();
  auto bad = [](absl::string_view field, absl::string_view want) {
    return absl::InvalidArgumentError(absl::StrCat(field, " must be ", want));
  };
  RETURN_IF_ERROR(ValidateDataConfig(job.data()));  // also checked by LoadJobConfig; library callers too
  if (tc.batch_size() < 1) return bad("trainer.batch_size", ">= 1");
  if (tc.sparse_staleness() < 0 || tc.sparse_staleness() > 1) return bad("trainer.sparse_staleness", "0 or 1");
  if (tc.epochs() < 1) return bad("trainer.epochs", ">= 1");
  if (tc.max_steps() < 0) return bad("trainer.max_steps", ">= 0");
  if (tc.eval_every_steps() < 0) return bad("trainer.eval_every_steps", ">= 0");
  if (tc.shuffle_buffer() < 0) return bad("trainer.shuffle_buffer", ">= 0");
  if (tc.checkpoint_every_steps() < 0) return bad("trainer.checkpoint_every_steps", ">= 0");
  if (tc.keep_checkpoints() < 1) return bad("trainer.keep_checkpoints", ">= 1");
  if (!(tc.learning_rate() > 0) || !std::isfinite(tc.learning_rate())) {
    return bad("trainer.learning_rate", "finite and > 0");
  }
  if (!(tc.learning_rate_end() > 0) || !std::isfinite(tc.learning_rate_end())) {
    return bad("trainer.learning_rate_end", "finite and > 0");
  }
  if (!(tc.sparse_learning_rate() > 0) || !std::isfinite(tc.sparse_learning_rate())) {
    return bad("trainer.sparse_learning_rate", "finite and > 0");
  }
  if (!(tc.sparse_initial_accumulator() >= 0) || !std::isfinite(tc.sparse_initial_accumulator())) {
    return bad("trainer.sparse_initial_accumulator", "finite and >= 0");
  }
  if (!(tc.dense_initial_accumulator() >= 0) || !std::isfinite(tc.dense_initial_accumulator())) {
    return bad("trainer.dense_initial_accumulator", "finite and >= 0");
  }
  RETURN_IF_ERROR(EmbeddingSlotConfig(tc).status());
  const int64_t min_capacity = int64_t{TableOptions().num_shards} * std::max(1, job.cluster().servers());
  if (tc.sparse_capacity() != 0 && tc.sparse_capacity() < min_capacity) {
    return bad("trainer.sparse_capacity",
               absl::StrCat("0 or >= ", min_capacity, " (16 table shards on each of ", std::max(1, job.cluster().servers()),
                            " server(s))"));
  }
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


}  // namespace

absl::StatusOr<JobSetup> SetupJob(FileSystem* fs, const JobConfig& job, models::LayerFactory<float>* factory) {
  const std::string& dir = job.data().dir();
  if (dir.empty()) return absl::InvalidArgumentError("data.dir is empty: which dataset to train on?");
  RETURN_IF_ERROR(ValidateConfig(job));
  JobSetup setup;
  ASSIGN_OR_RETURN(setup.manifest, data::ReadManifest(fs, dir));
  if (const auto dropped = setup.manifest.counters().find("dropped_conversion_without_click");
      dropped != setup.manifest.counters().end() && dropped->second > 0 && job.task() != TASK_CVR) {
    LOG(WARNING) << dir << " was converted for the CVR task: " << dropped->second
                 << " rows with a conversion but no click were dropped, so this " << Task_Name(job.task())
                 << " job does not see every impression (convert with --task " << (job.task() == TASK_CTR ? "ctr" : "ctcvr")
                 << " to keep them)";
  }
  ASSIGN_OR_RETURN(setup.train_split, data::FindSplit(setup.manifest, "train"));
  setup.train_files = data::SplitPaths(dir, setup.train_split);
  const std::vector<std::string>& train_files = setup.train_files;
  if (train_files.empty()) return absl::FailedPreconditionError(absl::StrCat(dir, ": train split has no files"));
  {
    ASSIGN_OR_RETURN(std::unique_ptr<data::ShardReader> first, data::ShardReader::Open(fs, train_files.front()));
    setup.schema = first->schema();
  }
  // Every file's header now, before anything reads the rows (the reader, the final evaluation).
  RETURN_IF_ERROR(CheckSplitSchemas(fs, train_files, "train", setup.schema));
  if (absl::StatusOr<data::SplitInfo> test = data::FindSplit(setup.manifest, "test"); test.ok()) {
    RETURN_IF_ERROR(CheckSplitSchemas(fs, data::SplitPaths(dir, *test), "test", setup.schema));
  }
  std::unique_ptr<GroupFeatures> groups;
  if (ReadsGroups(job.model().type())) {
    if (job.model().type() == "choirrec") {
      ASSIGN_OR_RETURN(FeatureLayout layout, BuildFeatureLayout(setup.schema, job.model(), job.task()));
      ASSIGN_OR_RETURN(setup.own_counts, CountOwnRows(fs, train_files, layout, job));
    }
    ASSIGN_OR_RETURN(groups, LoadGroups(fs, job.model(), &setup.own_counts));
  }
  std::unique_ptr<data::ActivityIndex> activity;
  {
    ErrorCounter errors(ErrorBudget{job.data().max_bad_rows(), job.data().max_bad_fraction()});
    ASSIGN_OR_RETURN(data::ActivityIndex index,
                     data::BuildActivityIndex(fs, dir, setup.manifest, job.data().buckets(), &errors));
    activity = std::make_unique<data::ActivityIndex>(std::move(index));
  }
  if (groups != nullptr) RETURN_IF_ERROR(CheckGroupCoverage(*groups, *activity, job.model().groups()));
  RETURN_IF_ERROR(BuildModel(job, setup.schema, std::move(groups), std::move(activity), factory, &setup));
  return setup;
}

absl::Status SetModelWeights(const std::vector<std::vector<float>>& weights, const std::string& what,
                             models::Model* model) {
  const std::vector<models::Param<float>*> params = model->Params();
  const std::vector<Tensor<float>*> buffers = model->Buffers();
  if (weights.size() != params.size() + buffers.size()) {
    return absl::FailedPreconditionError(absl::StrCat(what, " holds ", weights.size(),
                                                      " tensors; this model has ", params.size(),
                                                      " parameters and ", buffers.size(), " buffers"));
  }
  auto set = [&](const std::vector<float>& values, const std::string& name, Tensor<float>* t) {
    if (static_cast<int64_t>(values.size()) != t->size()) {
      return absl::FailedPreconditionError(absl::StrCat(what, ": ", name, " has ", values.size(),
                                                        " values, this model has ", t->size()));
    }
    Tensor<float> host(t->rows(), t->cols());
    std::copy(values.begin(), values.end(), host.data());
    t->CopyFrom(host);
    return absl::OkStatus();
  };
  size_t i = 0;
  for (models::Param<float>* p : params) RETURN_IF_ERROR(set(weights[i++], p->name, &p->value));
  for (size_t b = 0; b < buffers.size(); ++b) RETURN_IF_ERROR(set(weights[i++], absl::StrCat("buffer ", b), buffers[b]));
  return absl::OkStatus();
}

}  // namespace choir::worker::internal
