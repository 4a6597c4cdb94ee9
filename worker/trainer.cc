#include "worker/trainer.h"

#include <sys/resource.h>

#include <chrono>
#include <cmath>
#include <deque>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/progress.h"
#include "core/status.h"
#include "core/sysinfo.h"
#include "data/activity.h"
#include "data/dataset.h"
#include "data/shard.h"
#include "glog/logging.h"
#include "models/layers.h"
#include "models/optimizer.h"
#include "models/ranking_model.h"
#include "tools/eval/report.h"
#include "worker/batch_reader.h"
#include "worker/keys.h"
#include "worker/local_embedding_store.h"

namespace choir::worker {
namespace {

using models::Tensor;

// Turns batches into model inputs through the embedding store, and model input gradients
// back into sparse pushes.
class SparseBridge {
 public:
  SparseBridge(const models::ModelShape& shape, EmbeddingStore* store) : shape_(shape), store_(store) {}

  absl::Status Gather(const Batch& batch, models::ModelInputs* in) {
    const int d = shape_.embedding_dim, slots = shape_.num_slots, L = shape_.max_seq_len;
    const int B = batch.size;
    all_keys_.assign(batch.cat_keys.begin(), batch.cat_keys.end());
    for (const auto& keys : batch.seq_keys) all_keys_.insert(all_keys_.end(), keys.begin(), keys.end());
    DedupKeys(all_keys_, &unique_, &index_);
    unique_rows_.resize(unique_.size() * d);
    RETURN_IF_ERROR(store_->Pull(unique_, absl::MakeSpan(unique_rows_)));
    rows_.resize(all_keys_.size() * d);
    RETURN_IF_ERROR(GatherRows(index_, d, unique_rows_, absl::MakeSpan(rows_)));

    in->slots.ResizeUninitialized(B, slots * d);
    std::copy(rows_.begin(), rows_.begin() + static_cast<size_t>(B) * slots * d, in->slots.data());
    in->dense.ResizeUninitialized(B, shape_.num_dense);
    std::copy(batch.dense.begin(), batch.dense.end(), in->dense.data());
    const size_t q_count = shape_.sequence_targets.size();
    in->sequences.resize(q_count);
    in->lengths.resize(q_count);
    size_t offset = static_cast<size_t>(B) * slots * d;
    for (size_t q = 0; q < q_count; ++q) {
      Tensor<float>& seq = in->sequences[q];
      seq.Resize(B * L, d);
      in->lengths[q].resize(B);
      for (int b = 0; b < B; ++b) {
        const int len = batch.seq_lengths[q][b];
        in->lengths[q][b] = len;
        std::copy(rows_.begin() + offset, rows_.begin() + offset + static_cast<size_t>(len) * d,
                  seq.row(b * L));
        offset += static_cast<size_t>(len) * d;
      }
    }
    return absl::OkStatus();
  }

  // Pushes the gradients of the last Gather's inputs.
  absl::Status Scatter(const Batch& batch, const Tensor<float>& dslots,
                       const std::vector<Tensor<float>>& dsequences) {
    const int d = shape_.embedding_dim, L = shape_.max_seq_len;
    grads_.resize(rows_.size());
    std::copy(dslots.data(), dslots.data() + dslots.size(), grads_.begin());
    size_t offset = static_cast<size_t>(dslots.size());
    for (size_t q = 0; q < dsequences.size(); ++q) {
      for (int b = 0; b < batch.size; ++b) {
        const int len = batch.seq_lengths[q][b];
        const float* src = dsequences[q].row(b * L);
        std::copy(src, src + static_cast<size_t>(len) * d, grads_.begin() + offset);
        offset += static_cast<size_t>(len) * d;
      }
    }
    unique_grads_.assign(unique_.size() * d, 0.0f);
    RETURN_IF_ERROR(SumDuplicateGrads(index_, d, grads_, absl::MakeSpan(unique_grads_)));
    return store_->Push(unique_, unique_grads_);
  }

 private:
  const models::ModelShape& shape_;
  EmbeddingStore* store_;
  std::vector<uint64_t> all_keys_, unique_;
  std::vector<uint32_t> index_;
  std::vector<float> unique_rows_, rows_, grads_, unique_grads_;
};

absl::StatusOr<std::vector<eval::Prediction>> Predict(FileSystem* fs, const std::vector<std::string>& files,
                                                      const FeatureLayout& layout, const JobConfig& job,
                                                      models::RankingModel* model, SparseBridge* bridge,
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

// Each field's own message, so a user knows which line of the job file to change.
absl::Status ValidateConfig(const JobConfig& job) {
  const TrainerConfig& tc = job.trainer();
  const ModelConfig& m = job.model();
  auto bad = [](absl::string_view field, absl::string_view want) {
    return absl::InvalidArgumentError(absl::StrCat(field, " must be ", want));
  };
  if (tc.batch_size() < 1) return bad("trainer.batch_size", ">= 1");
  if (tc.epochs() < 1) return bad("trainer.epochs", ">= 1");
  if (tc.max_steps() < 0) return bad("trainer.max_steps", ">= 0");
  if (tc.eval_every_steps() < 0) return bad("trainer.eval_every_steps", ">= 0");
  if (tc.shuffle_buffer() < 0) return bad("trainer.shuffle_buffer", ">= 0");
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
  return absl::OkStatus();
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

}  // namespace

absl::StatusOr<TrainResult> TrainAndEvaluate(FileSystem* fs, const JobConfig& job) {
  const std::string& dir = job.data().dir();
  const TrainerConfig& tc = job.trainer();
  if (dir.empty()) return absl::InvalidArgumentError("data.dir is empty: which dataset to train on?");
  if (tc.out_dir().empty()) return absl::InvalidArgumentError("trainer.out_dir is empty: where to write eval.json?");
  RETURN_IF_ERROR(ValidateConfig(job));
  ASSIGN_OR_RETURN(data::DatasetManifest manifest, data::ReadManifest(fs, dir));
  ASSIGN_OR_RETURN(data::SplitInfo train_split, data::FindSplit(manifest, "train"));
  const std::vector<std::string> train_files = data::SplitPaths(dir, train_split);
  if (train_files.empty()) return absl::FailedPreconditionError(absl::StrCat(dir, ": train split has no files"));
  ASSIGN_OR_RETURN(std::unique_ptr<data::ShardReader> first, data::ShardReader::Open(fs, train_files.front()));
  ASSIGN_OR_RETURN(FeatureLayout layout, BuildFeatureLayout(first->schema(), job.model(), job.task()));
  first.reset();

  models::ModelShape shape;
  shape.num_slots = layout.num_slots();
  shape.embedding_dim = job.model().embedding_dim();
  shape.num_dense = layout.dense.size();
  shape.max_seq_len = layout.max_seq_len;
  for (const auto& s : layout.sequences) shape.sequence_targets.push_back(s.target);
  models::CpuLayerFactory<float> factory;
  ASSIGN_OR_RETURN(std::unique_ptr<models::RankingModel> model,
                   models::RankingModel::Create(job.model(), shape, tc.seed(), &factory));
  if (!model->uses_sequences()) {
    layout.sequences.clear();  // dnn: do not read sequences at all
    shape.sequence_targets.clear();
  }

  TableOptions table;
  table.seed = tc.seed();
  for (int s = 0; s < shape.num_slots; ++s) {
    SlotConfig slot;
    slot.dim = shape.embedding_dim;
    slot.optimizer = OptimizerKind::kAdagrad;
    slot.learning_rate = tc.sparse_learning_rate();
    slot.adagrad_initial_accumulator = tc.sparse_initial_accumulator();
    table.slots[s] = slot;
  }
  ASSIGN_OR_RETURN(std::unique_ptr<EmbeddingStore> store, NewLocalEmbeddingStore(table));
  SparseBridge bridge(shape, store.get());

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
  int64_t planned_steps = per_epoch > 0 ? (per_epoch * tc.epochs() + tc.batch_size() - 1) / tc.batch_size() : 0;
  if (tc.max_steps() > 0) planned_steps = planned_steps > 0 ? std::min(planned_steps, tc.max_steps()) : tc.max_steps();
  models::AdagradOptions adagrad;
  adagrad.schedule.lr0 = tc.learning_rate();
  adagrad.schedule.lr_end = tc.learning_rate_end();
  adagrad.schedule.decay_steps = std::max<int64_t>(1, planned_steps);
  adagrad.initial_accumulator = tc.dense_initial_accumulator();
  models::Adagrad<float> optimizer(adagrad);

  BatchReaderOptions ro;
  ro.batch_size = tc.batch_size();
  ro.shuffle_buffer = tc.shuffle_buffer();
  ro.seed = tc.seed();
  ro.epochs = tc.epochs();
  ro.budget.max_errors = job.data().max_bad_rows();
  ro.budget.max_fraction = job.data().max_bad_fraction();
  ASSIGN_OR_RETURN(std::unique_ptr<BatchReader> reader, BatchReader::Open(fs, train_files, layout, ro));

  // The test split and the activity buckets (training period only), for periodic and final
  // evaluation.
  std::vector<std::string> test_files;
  std::unique_ptr<data::ActivityIndex> activity;
  if (absl::StatusOr<data::SplitInfo> test_split = data::FindSplit(manifest, "test"); test_split.ok()) {
    test_files = data::SplitPaths(dir, *test_split);
    ErrorCounter errors(ErrorBudget{job.data().max_bad_rows(), job.data().max_bad_fraction()});
    ASSIGN_OR_RETURN(data::ActivityIndex index,
                     data::BuildActivityIndex(fs, dir, manifest, job.data().buckets(), &errors));
    activity = std::make_unique<data::ActivityIndex>(std::move(index));
  } else {
    LOG(WARNING) << dir << " has no test split: nothing to evaluate";
  }

  LOG(INFO) << "training " << job.model().type() << " on " << dir << ": " << shape.num_slots
            << " categorical slots, " << shape.num_dense << " dense, " << shape.sequence_targets.size()
            << " sequences, " << models::ParamCount(model->Params()) << " dense parameters, task "
            << Task_Name(job.task()) << ", ~" << planned_steps << " steps";
  TrainResult result;
  Batch batch;
  models::ModelInputs in;
  Tensor<float> logits, dlogits, dslots;
  std::vector<Tensor<float>> dsequences;
  std::deque<double> recent_losses;
  double recent_sum = 0;
  const auto start = std::chrono::steady_clock::now();
  double eval_seconds = 0;  // periodic evaluation, not counted as training time
  {
    int64_t planned_samples = per_epoch * tc.epochs();
    if (tc.max_steps() > 0) planned_samples = std::min<int64_t>(planned_samples, tc.max_steps() * tc.batch_size());
    Progress progress("training samples", planned_samples);
    const std::vector<models::Param<float>*> params = model->Params();
    while (tc.max_steps() == 0 || result.steps < tc.max_steps()) {
      ASSIGN_OR_RETURN(bool more, reader->Next(&batch));
      if (!more) break;
      RETURN_IF_ERROR(bridge.Gather(batch, &in));
      model->Forward(in, &logits);
      // Unit weights (an empty span) until the scheduler's reweighting arrives.
      const float loss = models::BinaryCrossEntropy<float>(logits, batch.labels, {}, &dlogits);
      models::ZeroGrads(params);
      model->Backward(dlogits, &dslots, &dsequences);
      RETURN_IF_ERROR(bridge.Scatter(batch, dslots, dsequences));
      optimizer.Step(params);
      ++result.steps;
      result.samples += batch.size;
      recent_losses.push_back(loss);
      recent_sum += loss;
      if (recent_losses.size() > 100) {
        recent_sum -= recent_losses.front();
        recent_losses.pop_front();
      }
      progress.SetDetail(absl::StrFormat("loss %.4f", recent_sum / recent_losses.size()));
      progress.Add(batch.size);
      if (tc.eval_every_steps() > 0 && result.steps % tc.eval_every_steps() == 0 && !test_files.empty()) {
        const auto eval_start = std::chrono::steady_clock::now();
        ASSIGN_OR_RETURN(std::vector<eval::Prediction> preds,
                         Predict(fs, test_files, layout, job, model.get(), &bridge, *activity));
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
                                     optimizer.current_lr());
      }
    }
  }
  result.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() - eval_seconds;
  result.last_loss = recent_losses.empty() ? 0 : recent_sum / recent_losses.size();
  if (result.steps == 0) {
    return absl::FailedPreconditionError(absl::StrCat(dir, ": no training samples for task ", Task_Name(job.task())));
  }
  LOG(INFO) << absl::StrFormat("trained %d steps, %d samples in %.1f s (%.0f samples/s), loss %.5f",
                               result.steps, result.samples, result.seconds, result.samples / result.seconds,
                               result.last_loss);

  // Evaluation on the test split, with buckets from the training period.
  RETURN_IF_ERROR(fs->CreateDirs(tc.out_dir()));
  if (!test_files.empty()) {
    ASSIGN_OR_RETURN(std::vector<eval::Prediction> preds,
                     Predict(fs, test_files, layout, job, model.get(), &bridge, *activity));
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
  result.num_sequences = shape.sequence_targets.size();
  return result;
}

}  // namespace choir::worker
