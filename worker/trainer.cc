#include "worker/trainer.h"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <deque>
#include <future>
#include <memory>
#include <optional>

#include "absl/strings/ascii.h"
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
#include "models/model.h"
#include "models/optimizer.h"
#include "scheduler/reweighting.h"
#include "tools/eval/report.h"
#include "worker/batch_reader.h"
#include "worker/keys.h"
#include "worker/internal/dense_exchange.h"
#include "worker/internal/model_setup.h"
#include "worker/internal/worker0_hold.h"
#include "worker/local_embedding_store.h"

namespace choir::worker {
namespace {

using models::Tensor;

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

// Clicked rows of the files (one pass over the click column).
absl::StatusOr<int64_t> CountClicks(FileSystem* fs, const std::vector<std::string>& files,
                                    const FeatureLayout& layout, const JobConfig& job) {
  ErrorCounter errors(ErrorBudget{job.data().max_bad_rows(), job.data().max_bad_fraction()});
  int64_t clicks = 0;
  RETURN_IF_ERROR(data::ForEachBlock(fs, files, &errors, [&](const data::RowBlock& b) {
    for (size_t r = 0; r < b.num_rows(); ++r) clicks += b.Int(layout.click_column, r) != 0;
    return absl::OkStatus();
  }, job.data().reader_threads()));
  return clicks;
}

// The layer factory of trainer.device: the CPU layers, or the CUDA layers on cuda_device.
absl::StatusOr<std::unique_ptr<models::LayerFactory<float>>> MakeLayerFactory(const TrainerConfig& tc) {
  RETURN_IF_ERROR(ValidateDeviceConfig(tc));
  if (tc.device() == "cpu") return std::make_unique<models::CpuLayerFactory<float>>();
#if CHOIR_WITH_CUDA
  // cuda_device -1 is resolved per worker under mpirun (worker/cluster.cc); elsewhere GPU 0.
  models::cuda::CudaOptions cuda;
  cuda.memory_pools = tc.cuda_memory_pools();
  RETURN_IF_ERROR(models::cuda::InitCuda(std::max(0, tc.cuda_device()), cuda));
  models::cuda::MatmulPrecision precision = models::cuda::MatmulPrecision::kFp32;
  CHECK(models::cuda::ParseMatmulPrecision(tc.matmul_precision(), &precision));  // validated above
  if (tc.allow_tf32() && precision == models::cuda::MatmulPrecision::kFp32) {
    precision = models::cuda::MatmulPrecision::kTf32;
  }
  models::cuda::SetMatmulPrecision(precision);
  LOG(INFO) << "dense towers on " << models::cuda::CudaDeviceDescription() << " ("
            << models::cuda::MatmulPrecisionName(precision) << " matrix products)";
  return std::make_unique<models::cuda::CudaLayerFactory<float>>();
#else
  return absl::FailedPreconditionError(
      "trainer.device: 'cuda' but this choir was built without CUDA (rebuild with -DWITH_CUDA=ON)");
#endif
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
                       {"task", Task_Name(job.task())},
                       {"sparse_optimizer", absl::AsciiStrToLower(job.trainer().sparse_optimizer())}};
  // The activity gates' inputs, when not all four (the parameter count alone cannot tell two
  // subsets of one size apart); in the index's order, as the gates read them.
  const auto& chosen = job.model().choirrec().activity_features();
  if (job.model().type() == "choirrec" && !chosen.empty()) {
    nlohmann::json names = nlohmann::json::array();
    for (const char* name : data::ActivityIndex::kActivityFeatureNames) {
      if (std::find(chosen.begin(), chosen.end(), name) != chosen.end()) names.push_back(name);
    }
    id["activity_features"] = std::move(names);
  }
  if (num_workers > 0) {
    id["batch_size"] = job.trainer().batch_size();
    id["workers"] = num_workers;
    id["epochs"] = job.trainer().epochs();
    id["seed"] = job.trainer().seed();
  }
  return id;
}

// Reweighting in a cluster at a checkpoint: the scheduler's reweighter (on worker 0) and every
// worker's statistics since the last round.
struct ClusterReweighting {
  scheduler::SampleReweighter::State scheduler_state;
  std::vector<scheduler::BucketStats> per_worker;
};

// Called by every worker at a checkpoint step: their statistics meet through one allreduce
// (each worker fills its own row of zeros, so the sum is exact). Worker 0 then fetches the
// scheduler's reweighter state into scheduler_state (while it holds the others).
absl::StatusOr<ClusterReweighting> GatherReweighting(const WorkerRuntime& runtime,
                                                     const scheduler::BucketStats& mine) {
  constexpr int kB = data::kNumBuckets;
  const int w = runtime.worker_index, n = runtime.num_workers;
  std::vector<double> all(static_cast<size_t>(n) * 2 * kB, 0.0);
  for (int b = 0; b < kB; ++b) {
    all[(2 * w) * kB + b] = static_cast<double>(mine.count[b]);
    all[(2 * w + 1) * kB + b] = mine.loss_sum[b];
  }
  if (n > 1) {
    if (runtime.collective == nullptr) return absl::InternalError("a cluster checkpoint without a collective");
    RETURN_IF_ERROR(runtime.collective->AllReduceSum(all.data(), static_cast<int64_t>(all.size())));
  }
  ClusterReweighting out;
  out.per_worker.resize(n);
  for (int v = 0; v < n; ++v) {
    for (int b = 0; b < kB; ++b) {
      out.per_worker[v].count[b] = static_cast<int64_t>(all[(2 * v) * kB + b]);
      out.per_worker[v].loss_sum[b] = all[(2 * v + 1) * kB + b];
    }
  }
  return out;
}

// Writes the checkpoint of `state.steps` under `root` and keeps the newest `keep`. With
// `cluster` the reweighter's state is the scheduler's and every worker's statistics are kept.
// `data_fingerprint`: DataFingerprint of the dataset trained on.
absl::Status SaveCheckpoint(FileSystem* fs, const std::string& root, const JobConfig& job,
                            uint32_t data_fingerprint, int num_workers, models::Model* model,
                            models::Adagrad<float>* optimizer, EmbeddingStore* store,
                            const scheduler::SampleReweighter& reweighter, const LoopState& state,
                            const ClusterReweighting* cluster) {
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
  const scheduler::SampleReweighter::State rw = cluster != nullptr ? cluster->scheduler_state : reweighter.state();
  std::string job_text;
  google::protobuf::TextFormat::PrintToString(job, &job_text);
  nlohmann::json run = RunIdentity(job, models::ParamCount(params), num_workers);
  run["data"] = {{"dir", job.data().dir()}, {"fingerprint", data_fingerprint}};
  nlohmann::json meta = {
      {"run", std::move(run)},
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
  if (cluster != nullptr) {
    nlohmann::json counts = nlohmann::json::array(), losses = nlohmann::json::array();
    for (const scheduler::BucketStats& s : cluster->per_worker) {
      counts.push_back(ArrayJson(s.count));
      losses.push_back(ArrayJson(s.loss_sum));
    }
    meta["worker_bucket_count"] = std::move(counts);
    meta["worker_bucket_loss_sum"] = std::move(losses);
  }
  // The table a groups model trained with (a dnn job may name one it never reads: not recorded).
  if (internal::ReadsGroups(job.model().type()) && !job.model().groups().table().empty()) {
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
// when `store` is not null. `num_workers` as for RunIdentity (0: evaluation, any data stream);
// `worker_index`: whose reweighting statistics to take when every worker's were kept;
// `data_fingerprint`: DataFingerprint of this job's dataset (checked when num_workers > 0).
absl::Status LoadCheckpoint(FileSystem* fs, const std::string& dir, const JobConfig& job,
                            uint32_t data_fingerprint, int num_workers, int worker_index, models::Model* model,
                            models::Adagrad<float>* optimizer, EmbeddingStore* store,
                            scheduler::SampleReweighter* reweighter, LoopState* state) {
  ASSIGN_OR_RETURN(checkpoint::Reader reader, checkpoint::Reader::Open(fs, dir));
  const nlohmann::json& meta = reader.meta();
  const std::vector<models::Param<float>*> params = model->Params();
  const nlohmann::json want = RunIdentity(job, models::ParamCount(params), num_workers);
  if (!meta.contains("run") || !meta["run"].is_object()) {
    return absl::DataLossError(absl::StrCat(dir, ": checkpoint meta has no run identity"));
  }
  nlohmann::json trained = meta["run"];
  // Checkpoints from before the choice of sparse optimizer were all Adagrad's.
  if (!trained.contains("sparse_optimizer")) trained["sparse_optimizer"] = "adagrad";
  for (const auto& [field, value] : want.items()) {
    if (!trained.contains(field) || trained[field] != value) {
      return absl::FailedPreconditionError(absl::StrCat(
          dir, " is a checkpoint of another run: its ", field, " is ",
          trained.contains(field) ? trained[field].dump() : "missing", ", this job's is ", value.dump()));
    }
  }
  // Continuing a run reads the same data stream (checkpoints before the data identity had none).
  const nlohmann::json& trained_data = meta["run"].contains("data") ? meta["run"]["data"] : nlohmann::json();
  if (num_workers > 0 && trained_data.is_object() && trained_data.contains("fingerprint")) {
    if (trained_data["fingerprint"] != data_fingerprint) {
      return absl::FailedPreconditionError(absl::StrCat(
          dir, " is a checkpoint of a run on other data: it trained on ", (trained_data.contains("dir") && trained_data["dir"].is_string() ? trained_data["dir"].get<std::string>()
                                                                              : std::string("?")),
          ", whose train split differs from that of ", job.data().dir(),
          " (files, row counts or split time); resume with the data it trained on"));
    }
  }
  if (meta.contains("groups_table_crc32c") && internal::ReadsGroups(job.model().type())) {
    ASSIGN_OR_RETURN(const uint32_t trained_crc, reader.Meta<uint32_t>("groups_table_crc32c"));
    ASSIGN_OR_RETURN(const std::string trained_table, reader.Meta<std::string>("groups_table", ""));
    ASSIGN_OR_RETURN(std::string table, fs->ReadFileToString(job.model().groups().table()));
    if (crc32c::Value(table) != trained_crc) {
      return absl::FailedPreconditionError(absl::StrCat("the group table ", job.model().groups().table(),
                                                        " is not the one the checkpoint was trained with (",
                                                        trained_table, ")"));
    }
  }
  try {
    state->steps = meta.at("steps").get<int64_t>();
    state->samples = meta.at("samples").get<int64_t>();
    if (state->steps < 0 || state->samples < 0 || state->steps != reader.step()) {
      return absl::DataLossError(absl::StrCat(dir, "/MANIFEST.json: the checkpoint's meta says ", state->steps,
                                              " steps and ", state->samples, " samples at step ", reader.step()));
    }
    RETURN_IF_ERROR(ArrayFromJson(meta, "bucket_count", &state->bucket_stats.count));
    RETURN_IF_ERROR(ArrayFromJson(meta, "bucket_loss_sum", &state->bucket_stats.loss_sum));
    if (meta.contains("worker_bucket_count") && num_workers > 0) {
      const nlohmann::json& counts = meta["worker_bucket_count"];
      const nlohmann::json& losses = meta.at("worker_bucket_loss_sum");
      if (!counts.is_array() || !losses.is_array() || counts.size() != static_cast<size_t>(num_workers) ||
          losses.size() != counts.size()) {
        return absl::DataLossError(absl::StrCat(dir, ": checkpoint meta: worker_bucket_* is not one entry per worker"));
      }
      const nlohmann::json mine = {{"count", counts[worker_index]}, {"loss", losses[worker_index]}};
      RETURN_IF_ERROR(ArrayFromJson(mine, "count", &state->bucket_stats.count));
      RETURN_IF_ERROR(ArrayFromJson(mine, "loss", &state->bucket_stats.loss_sum));
    }
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

// Sends the sparse rows of checkpoint `dir` to `store` and sets its tables' step.
absl::Status LoadSparseRows(FileSystem* fs, const std::string& dir, EmbeddingStore* store) {
  ASSIGN_OR_RETURN(checkpoint::Reader reader, checkpoint::Reader::Open(fs, dir));
  uint64_t table_step = 0;
  try {
    table_step = reader.meta().at("table_step").get<uint64_t>();
  } catch (const nlohmann::json::exception& e) {
    return absl::DataLossError(absl::StrCat(dir, ": checkpoint meta: ", e.what()));
  }
  return store->LoadRows(reader, table_step);
}

}  // namespace

absl::StatusOr<CheckpointEval> EvaluateCheckpoint(FileSystem* fs, const std::string& checkpoint_dir,
                                                  const std::string& data_dir,
                                                  const std::string& eval_json) {
  ASSIGN_OR_RETURN(checkpoint::Reader reader, checkpoint::Reader::Open(fs, checkpoint_dir));
  CheckpointEval result;
  result.step = reader.step();
  ASSIGN_OR_RETURN(const std::string job_text, reader.Meta<std::string>("job"));
  if (!google::protobuf::TextFormat::ParseFromString(job_text, &result.job)) {
    return absl::DataLossError(absl::StrCat(checkpoint_dir, ": the checkpoint's job does not parse"));
  }
  JobConfig& job = result.job;
  if (!data_dir.empty()) job.mutable_data()->set_dir(data_dir);
  RETURN_IF_ERROR(internal::CheckCheckpointData(fs, job.data().dir(), !data_dir.empty()));
  internal::RunOnCpu(job.mutable_trainer());
  job.clear_cluster();
  ASSIGN_OR_RETURN(std::unique_ptr<models::LayerFactory<float>> factory, MakeLayerFactory(job.trainer()));
  ASSIGN_OR_RETURN(internal::JobSetup setup, internal::SetupJob(fs, job, factory.get()));
  ASSIGN_OR_RETURN(std::unique_ptr<EmbeddingStore> store, NewLocalEmbeddingStore(setup.table));
  models::Adagrad<float> optimizer{models::AdagradOptions()};
  ASSIGN_OR_RETURN(scheduler::ReweightingOptions rw_options, ReweightingOptionsOf(job.trainer().reweighting()));
  ASSIGN_OR_RETURN(scheduler::SampleReweighter reweighter, scheduler::SampleReweighter::Create(rw_options));
  LoopState state;
  RETURN_IF_ERROR(LoadCheckpoint(fs, checkpoint_dir, job, internal::DataFingerprint(setup.manifest), /*num_workers=*/0,
                                 /*worker_index=*/0, setup.model.get(),
                                 &optimizer, store.get(), &reweighter, &state));
  ASSIGN_OR_RETURN(data::SplitInfo test_split, data::FindSplit(setup.manifest, "test"));
  const std::vector<std::string> test_files = data::SplitPaths(job.data().dir(), test_split);
  internal::SparseBridge bridge(setup.shape, store.get(), setup.sources, internal::SparseBridge::Reads::kEvaluation);
  ASSIGN_OR_RETURN(std::vector<eval::Prediction> preds,
                   internal::PredictFiles(fs, test_files, setup.layout, job, setup.model.get(), &bridge, *setup.activity));
  result.test_samples = static_cast<int64_t>(preds.size());
  ASSIGN_OR_RETURN(result.test, eval::Evaluate(preds));
  RETURN_IF_ERROR(fs->CreateDirs(Dirname(eval_json)));
  RETURN_IF_ERROR(eval::WriteEvalJson(fs, eval_json, result.test));
  RETURN_IF_ERROR(eval::WritePredictionsTsv(fs, JoinPath(Dirname(eval_json), "preds.tsv"), preds));
  return result;
}

absl::Status ValidateDeviceConfig(const TrainerConfig& tc) {
  if (tc.device() != "cpu" && tc.device() != "cuda") {
    return absl::InvalidArgumentError(absl::StrCat("trainer.device: '", tc.device(), "' (cpu or cuda)"));
  }
  const std::string& mode = tc.dense_allreduce();
  if (mode != "auto" && mode != "host" && mode != "nccl") {
    return absl::InvalidArgumentError(absl::StrCat("trainer.dense_allreduce: '", mode, "' (auto, host or nccl)"));
  }
  const std::string& precision = tc.matmul_precision();
  if (precision != "fp32" && precision != "tf32" && precision != "bf16") {
    return absl::InvalidArgumentError(absl::StrCat("trainer.matmul_precision: '", precision, "' (fp32, tf32 or bf16)"));
  }
  if (tc.device() != "cuda" && (precision != "fp32" || tc.allow_tf32())) {
    return absl::InvalidArgumentError(absl::StrCat("trainer.matmul_precision '", precision, "'",
                                                   tc.allow_tf32() ? " (allow_tf32)" : "",
                                                   ": applies to trainer.device 'cuda' (CPU products are fp32)"));
  }
  if (mode == "nccl" && tc.device() != "cuda") {
    return absl::InvalidArgumentError(absl::StrCat(
        "trainer.dense_allreduce: 'nccl' sums gradients on GPUs, but trainer.device is '", tc.device(), "'"));
  }
  return absl::OkStatus();
}

absl::StatusOr<TableOptions> SparseTableFor(FileSystem* fs, const JobConfig& job) {
  models::CpuLayerFactory<float> factory;
  ASSIGN_OR_RETURN(internal::JobSetup setup, internal::SetupJob(fs, job, &factory));
  return setup.table;
}

absl::StatusOr<TrainResult> TrainAndEvaluate(FileSystem* fs, const JobConfig& job, const WorkerRuntime* runtime) {
  const std::string& dir = job.data().dir();
  const TrainerConfig& tc = job.trainer();
  const bool evaluates = runtime == nullptr || runtime->worker_index == 0;
  if (evaluates && tc.out_dir().empty()) {
    return absl::InvalidArgumentError("trainer.out_dir is empty: where to write eval.json?");
  }
  if (!tc.out_dir().empty() && fs->Exists(tc.out_dir()) && !fs->IsDirectory(tc.out_dir())) {
    return absl::FailedPreconditionError(
        absl::StrCat("trainer.out_dir (--out) ", tc.out_dir(), " is a file, not a folder"));
  }
  if (evaluates) {
    // The outputs come after training: a folder that cannot be written fails now, not then.
    const std::string probe = JoinPath(tc.out_dir(), ".choir-write-probe");
    absl::Status writable = fs->CreateDirs(tc.out_dir());
    if (writable.ok()) writable = fs->WriteStringToFileAtomic(probe, "");
    if (writable.ok()) writable = fs->DeleteFile(probe);
    if (!writable.ok()) {
      return absl::Status(writable.code(), absl::StrCat("trainer.out_dir (--out) ", tc.out_dir(),
                                                        " cannot be written: ", writable.message()));
    }
  }
  // Checkpoints: worker 0 of a cluster (or the single process) writes them; the parameter
  // servers write their own rows into the same directory.
  // With reweighting in a cluster the scheduler holds the reweighter and every worker its
  // statistics since the last round (GatherReweighting). Every worker of a cluster joins each
  // checkpoint and waits there for worker 0 to write it (internal::WaitForWorker0).
  const bool cluster_reweighting =
      runtime != nullptr && runtime->report && tc.reweighting().policy() != "none";
  const bool several_workers =
      runtime != nullptr && runtime->num_workers > 1 && runtime->collective != nullptr;
  const bool checkpoints = evaluates && !tc.out_dir().empty();
  const bool joins_checkpoints = checkpoints || (several_workers && !tc.out_dir().empty());
  if (cluster_reweighting && !(runtime->reweighter_state && runtime->restore_reweighter && runtime->resume_rounds)) {
    return absl::InternalError("a cluster worker with reweighting needs the runtime's reweighter hooks");
  }
  const std::string checkpoint_root = JoinPath(tc.out_dir(), "checkpoint");
  // How often worker 0 tells the others it is still writing or restoring a checkpoint.
  const absl::Duration hold_every =
      internal::HoldInterval(runtime != nullptr ? runtime->collective_timeout : absl::InfiniteDuration());
  ASSIGN_OR_RETURN(std::unique_ptr<models::LayerFactory<float>> factory, MakeLayerFactory(tc));
  ASSIGN_OR_RETURN(internal::JobSetup setup, internal::SetupJob(fs, job, factory.get()));
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
  internal::SparseBridge bridge(shape, store, setup.sources);
  // Evaluation's own buffers, and reads that leave the rows as they are.
  internal::SparseBridge eval_bridge(shape, store, setup.sources, internal::SparseBridge::Reads::kEvaluation);
  // In a cluster each step reads one global batch of num_workers * batch_size samples, of which
  // worker w trains on the w-th slice; gradients are scaled by each slice's share, summed
  // (dense: allreduce; sparse: on the servers) and applied once: the same update as one worker
  // with the global batch (up to the order of float additions; Dice's batch statistics are the
  // exception: they are per slice).
  const int num_workers = runtime != nullptr ? runtime->num_workers : 1;
  if (num_workers > 1 && runtime->barrier) {
    // Every worker has read the data before any collective starts its timeout.
    RETURN_IF_ERROR(runtime->barrier("setup"));
  }
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
  ro.decode_threads = job.data().reader_threads();
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
    last_checkpoint = result.steps;
    std::optional<ClusterReweighting> gathered;
    if (cluster_reweighting) {
      ASSIGN_OR_RETURN(gathered, GatherReweighting(*runtime, bucket_stats));
    }
    if (!checkpoints) {  // not worker 0: it waits while worker 0 and the servers write
      return internal::WaitForWorker0(runtime->collective, "writing a checkpoint");
    }
    LoopState state{result.steps, result.samples, bucket_stats, current_weights};
    auto save = [&]() -> absl::Status {
      if (gathered) {
        ASSIGN_OR_RETURN(gathered->scheduler_state, runtime->reweighter_state());
      }
      return SaveCheckpoint(fs, checkpoint_root, job, internal::DataFingerprint(manifest), num_workers, model.get(), &optimizer, store,
                            reweighter, state, gathered ? &*gathered : nullptr);
    };
    RETURN_IF_ERROR(several_workers
                        ? internal::HoldOthersDuring(runtime->collective, hold_every,
                                                     runtime->hold_limit, "writing a checkpoint", save)
                        : save());
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
    // Every worker loads the dense state. Worker 0 then sends the sparse rows to the servers
    // (inside LoadCheckpoint when it is alone) and restores the scheduler's reweighter; in a
    // cluster the others wait for it meanwhile.
    RETURN_IF_ERROR(LoadCheckpoint(fs, resume_dir, job, internal::DataFingerprint(manifest), num_workers, worker_index,
                                   model.get(), &optimizer,
                                   evaluates && !several_workers ? store : nullptr, &reweighter, &state));
    if (joins_checkpoints && (tc.checkpoint_every_steps() > 0 || tc.checkpoint_at_end())) {
      // This run's checkpoints come after the resumed step; a committed (or damaged) one there
      // is another run's, which it must not overwrite: refused now rather than at that step (by
      // every worker of a cluster alike, so that none waits for the others).
      ASSIGN_OR_RETURN(const std::vector<std::string> later,
                       checkpoint::ManifestsAfter(fs, checkpoint_root, state.steps));
      if (!later.empty()) {
        return absl::FailedPreconditionError(absl::StrCat(
            "resuming at step ", state.steps, " from ", resume_dir, ", but ", checkpoint_root, " already holds ",
            later.size(), " later checkpoint(s) (", absl::StrJoin(later, ", "),
            ") that this run could reach and could not overwrite: move them away (or resume from the newest, "
            "if it is not damaged)"));
      }
    }
    const int64_t rounds = cluster_reweighting ? state.steps / reweighting_options.every_steps : 0;
    if (cluster_reweighting) runtime->resume_rounds(rounds);
    auto restore = [&]() -> absl::Status {  // worker 0's part
      if (several_workers) RETURN_IF_ERROR(LoadSparseRows(fs, resume_dir, store));
      if (cluster_reweighting) {
        RETURN_IF_ERROR(runtime->restore_reweighter(reweighter.state(), rounds, state.current_weights));
      }
      return absl::OkStatus();
    };
    constexpr char kRestoring[] = "restoring the checkpoint's sparse rows";
    if (!several_workers) {
      if (evaluates) RETURN_IF_ERROR(restore());
    } else if (evaluates) {
      RETURN_IF_ERROR(internal::HoldOthersDuring(runtime->collective, hold_every, runtime->hold_limit,
                                                 kRestoring, restore));
    } else {
      RETURN_IF_ERROR(internal::WaitForWorker0(runtime->collective, kRestoring));
    }
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
    // Dense gradients (and the step's loss) travel between workers as one flat buffer, on the
    // GPU when the runtime brings a device collective (NCCL), in host memory otherwise.
    std::optional<internal::DenseExchange> exchange;
    if (runtime != nullptr) {
      const bool on_device = runtime->device_collective != nullptr;
      exchange.emplace(params, on_device ? runtime->device_collective : runtime->collective,
                       on_device ? factory->device() : models::Device::kCpu);
      // Every worker starts from worker 0's parameters.
      RETURN_IF_ERROR(exchange->BroadcastFromWorker0());
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
    internal::SparseBridge second_bridge(shape, store, setup.sources);
    internal::SparseBridge* bridges[2] = {&bridge, &second_bridge};
    models::ModelInputs inputs[2];
    Step steps[2];
    // A GPU model: each slot's batch is staged ahead on the upload lane (trainer.overlap_uploads).
    const models::Device model_device = factory->device();
    const bool overlap = model_device != models::Device::kCpu && tc.overlap_uploads();
    models::InputStager<float> stagers[2];
    auto gather = [&bridges, &steps, &inputs, &stagers, &shape, overlap, model_device](int slot) -> absl::Status {
      if (overlap) stagers[slot].AwaitUploads();  // the slot's last copies have read its host batch
      RETURN_IF_ERROR(bridges[slot]->Gather(steps[slot].batch, &inputs[slot]));
      if (overlap) {
        models::PinInputs(model_device, &inputs[slot]);
        stagers[slot].StageAsync(model_device, shape, inputs[slot]);
      }
      return absl::OkStatus();
    };
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
          prefetched = std::async(std::launch::async, [&gather, n] { return gather(n); });
        }
      }
      const float share = static_cast<float>(batch.size) / global_size;
      models::ZeroGrads(params);
      models::LossStats stats;
      if (batch.size > 0) {
        if (!gathered) RETURN_IF_ERROR(gather(cur));
        model->Forward(overlap ? stagers[cur].Ready() : in, &logits);
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
        if (overlap) stagers[cur].Release();  // the slot's next copies wait for this step's kernels
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
      if (exchange.has_value()) {
        // Sum of the slices' gradients, each scaled by its share: the global batch's gradient.
        ASSIGN_OR_RETURN(loss, exchange->AllReduce(share, loss));
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
                         internal::PredictFiles(fs, test_files, layout, job, model.get(), &eval_bridge, *activity));
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
      if (joins_checkpoints && tc.checkpoint_every_steps() > 0 &&
          result.steps % tc.checkpoint_every_steps() == 0) {
        if (prefetched.valid()) prefetched.wait();  // no pull in flight while rows are written
        RETURN_IF_ERROR(save_checkpoint());
      }
      if (prefetch) cur = 1 - cur;
    }
  }
  if (joins_checkpoints && tc.checkpoint_at_end() && result.steps > 0 && last_checkpoint != result.steps) {
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
  if (absl::StatusOr<TableStats> stats = store->Stats(); stats.ok()) {
    LOG(INFO) << "embedding rows: " << stats->total.rows << " (created " << stats->total.admitted << ", evicted by TTL "
              << stats->total.evicted_ttl << " and by capacity " << stats->total.evicted_capacity << ", "
              << stats->total.unadmitted << " ids counted for admission)";
  }

  // Evaluation on the test split, with buckets from the training period (worker 0 in a
  // cluster).
  if (evaluates) RETURN_IF_ERROR(fs->CreateDirs(tc.out_dir()));
  if (evaluates && !test_files.empty()) {
    ASSIGN_OR_RETURN(std::vector<eval::Prediction> preds,
                     internal::PredictFiles(fs, test_files, layout, job, model.get(), &eval_bridge, *activity));
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
