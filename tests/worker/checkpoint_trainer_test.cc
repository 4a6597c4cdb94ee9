// Checkpoints of the local trainer (docs/checkpoints.md): exact resume, damaged and unfinished
// checkpoints, retention, and the refusal in a cluster.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/files.h"
#include "core/fs.h"
#include "data/dataset.h"
#include "gtest/gtest.h"
#include "tests/worker/worker_test_util.h"
#include "tools/eval/report.h"
#include "worker/bundle.h"
#include "worker/predictor.h"
#include "worker/trainer.h"

namespace choir::worker {
namespace {

using testing::Generate;
using testing::SmallJob;

constexpr char kStep7[] = "/full/checkpoint/step-000000000007";
constexpr char kStep20[] = "/full/checkpoint/step-000000000020";

// dnn with adaptive reweighting (its weights move every 5 steps, so the reweighter's state
// matters), 20 steps.
JobConfig Job(const std::string& out_dir) {
  JobConfig job = SmallJob("/ds", out_dir, 3);
  ReweightingConfig* rw = job.mutable_trainer()->mutable_reweighting();
  rw->set_policy("adaptive");
  rw->set_eta(1.0);
  rw->set_every_steps(5);
  return job;
}

std::string Read(FileSystem* fs, const std::string& path) {
  absl::StatusOr<std::string> s = fs->ReadFileToString(path);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *s : std::string();
}

class CheckpointTrainerTest : public ::testing::Test {
 protected:
  // One uninterrupted run with checkpoints at steps 7, 14 and 20, shared by the tests.
  static void SetUpTestSuite() {
    fs_ = new MemFileSystem();
    Generate(fs_, "/ds", 8000, /*seed=*/5);
    JobConfig job = Job("/full");
    job.mutable_trainer()->set_checkpoint_every_steps(7);
    absl::StatusOr<TrainResult> r = TrainAndEvaluate(fs_, job);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->steps, 20);
  }
  static void TearDownTestSuite() { delete fs_; }

  // Copies checkpoint `from` into `to` (a new checkpoint root's step directory).
  static void CopyCheckpoint(const std::string& from, const std::string& to) {
    ASSERT_TRUE(fs_->CreateDirs(to).ok());
    absl::StatusOr<std::vector<std::string>> names = fs_->ListDir(from);
    ASSERT_TRUE(names.ok());
    for (const std::string& name : *names) {
      ASSERT_TRUE(fs_->SetContents(JoinPath(to, name), Read(fs_, JoinPath(from, name))).ok());
    }
  }

  static MemFileSystem* fs_;
};

MemFileSystem* CheckpointTrainerTest::fs_ = nullptr;

TEST_F(CheckpointTrainerTest, CheckpointsDoNotChangeTraining) {
  JobConfig job = Job("/plain");
  job.mutable_trainer()->set_checkpoint_at_end(false);
  ASSERT_TRUE(TrainAndEvaluate(fs_, job).ok());
  EXPECT_EQ(Read(fs_, "/plain/preds.tsv"), Read(fs_, "/full/preds.tsv"));
  EXPECT_FALSE(fs_->Exists("/plain/checkpoint"));
}

TEST_F(CheckpointTrainerTest, AResumedRunEndsExactlyWhereTheUninterruptedOneEnds) {
  JobConfig job = Job("/resumed");
  job.mutable_trainer()->set_resume(kStep7);
  absl::StatusOr<TrainResult> r = TrainAndEvaluate(fs_, job);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->steps, 20);
  EXPECT_EQ(r->resumed_samples, 7 * 256);
  // Same predictions, byte for byte, and the same parameters: dense (with optimizer state) and
  // every sparse row (with its Adagrad state and push count).
  EXPECT_EQ(Read(fs_, "/resumed/preds.tsv"), Read(fs_, "/full/preds.tsv"));
  const std::string end = "/resumed/checkpoint/step-000000000020";
  EXPECT_EQ(Read(fs_, JoinPath(end, "dense.bin")), Read(fs_, JoinPath(kStep20, "dense.bin")));
  EXPECT_EQ(Read(fs_, JoinPath(end, "sparse-0-of-1.bin")),
            Read(fs_, JoinPath(kStep20, "sparse-0-of-1.bin")));
  absl::StatusOr<checkpoint::Reader> a = checkpoint::Reader::Open(fs_, end);
  absl::StatusOr<checkpoint::Reader> b = checkpoint::Reader::Open(fs_, kStep20);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->meta()["reweighter_weights"], b->meta()["reweighter_weights"]);
  EXPECT_EQ(a->meta()["samples"], b->meta()["samples"]);
}

// Evaluation reads the rows without storing or touching them (EmbeddingStore::Lookup): a run
// that evaluates every 5 steps ends with the checkpoint, sparse rows included, of a run that
// evaluates only at the end. (Pulls would have stored a row for every id of the test split.)
TEST_F(CheckpointTrainerTest, EvaluationDuringTrainingLeavesTheModelAsItWas) {
  JobConfig job = Job("/evals");
  job.mutable_trainer()->set_eval_every_steps(5);
  absl::StatusOr<TrainResult> r = TrainAndEvaluate(fs_, job);
  ASSERT_TRUE(r.ok()) << r.status();
  const std::string end = "/evals/checkpoint/step-000000000020";
  EXPECT_EQ(Read(fs_, JoinPath(end, "sparse-0-of-1.bin")), Read(fs_, JoinPath(kStep20, "sparse-0-of-1.bin")));
  EXPECT_EQ(Read(fs_, JoinPath(end, "dense.bin")), Read(fs_, JoinPath(kStep20, "dense.bin")));
  EXPECT_EQ(Read(fs_, "/evals/preds.tsv"), Read(fs_, "/full/preds.tsv"));
}

TEST_F(CheckpointTrainerTest, EvaluatingTheLastCheckpointReproducesTheRunsPredictions) {
  absl::StatusOr<CheckpointEval> e = EvaluateCheckpoint(fs_, kStep20, "", "/evalck/eval.json");
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->step, 20);
  EXPECT_EQ(Read(fs_, "/evalck/preds.tsv"), Read(fs_, "/full/preds.tsv"));
  EXPECT_EQ(Read(fs_, "/evalck/eval.json"), Read(fs_, "/full/eval.json"));
  // Data that is not there is named, with what to do.
  absl::StatusOr<CheckpointEval> missing = EvaluateCheckpoint(fs_, kStep20, "/moved", "/evalck_moved/eval.json");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound) << missing.status();
  EXPECT_TRUE(absl::StrContains(missing.status().message(), "no dataset at /moved, given by --data"))
      << missing.status();
  // An earlier checkpoint is another model.
  e = EvaluateCheckpoint(fs_, kStep7, "", "/evalck7/eval.json");
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_NE(Read(fs_, "/evalck7/preds.tsv"), Read(fs_, "/full/preds.tsv"));
}

TEST_F(CheckpointTrainerTest, ResumeLatestTakesTheNewestCommittedAndSkipsAnUnfinishedOne) {
  CopyCheckpoint(kStep7, "/latest/checkpoint/step-000000000007");
  CopyCheckpoint("/full/checkpoint/step-000000000014", "/latest/checkpoint/step-000000000014");
  // A checkpoint cut short while being written: files, no manifest.
  ASSERT_TRUE(fs_->SetContents("/latest/checkpoint/step-000000000017/dense.bin", "CHDENSE1").ok());
  absl::StatusOr<std::string> latest = checkpoint::FindLatest(fs_, "/latest/checkpoint");
  ASSERT_TRUE(latest.ok()) << latest.status();
  EXPECT_EQ(*latest, "/latest/checkpoint/step-000000000014");
  JobConfig job = Job("/latest");
  job.mutable_trainer()->set_resume("latest");
  ASSERT_TRUE(TrainAndEvaluate(fs_, job).ok());
  EXPECT_EQ(Read(fs_, "/latest/preds.tsv"), Read(fs_, "/full/preds.tsv"));
  // Retention (3 by default) pruned the unfinished directory older than the newest commit.
  EXPECT_FALSE(fs_->Exists("/latest/checkpoint/step-000000000017"));
}

TEST_F(CheckpointTrainerTest, AFlippedByteInAnyFileIsDataLossNamingIt) {
  absl::StatusOr<std::vector<std::string>> names = fs_->ListDir(kStep7);
  ASSERT_TRUE(names.ok());
  ASSERT_EQ(names->size(), 3u);  // dense.bin, sparse-0-of-1.bin, MANIFEST.json
  int n = 0;
  for (const std::string& name : *names) {
    const std::string root = absl::StrCat("/flip", n++, "/checkpoint");
    const std::string dir = JoinPath(root, "step-000000000007");
    CopyCheckpoint(kStep7, dir);
    std::string bytes = Read(fs_, JoinPath(dir, name));
    for (size_t at : {size_t{0}, bytes.size() / 2, bytes.size() - 2}) {
      std::string flipped = bytes;
      flipped[at] ^= 0x10;
      ASSERT_TRUE(fs_->SetContents(JoinPath(dir, name), flipped).ok());
      JobConfig job = Job(Dirname(root));
      job.mutable_trainer()->set_resume(dir);
      absl::StatusOr<TrainResult> r = TrainAndEvaluate(fs_, job);
      EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss)
          << name << " byte " << at << ": " << r.status();
      EXPECT_TRUE(absl::StrContains(r.status().message(), name)) << r.status();
    }
  }
}

TEST_F(CheckpointTrainerTest, ATruncatedFileIsDataLossNamingIt) {
  const std::string dir = "/trunc/checkpoint/step-000000000007";
  CopyCheckpoint(kStep7, dir);
  const std::string sparse = Read(fs_, JoinPath(dir, "sparse-0-of-1.bin"));
  ASSERT_TRUE(fs_->SetContents(JoinPath(dir, "sparse-0-of-1.bin"),
                               sparse.substr(0, sparse.size() - 100)).ok());
  JobConfig job = Job("/trunc");
  job.mutable_trainer()->set_resume("latest");
  absl::StatusOr<TrainResult> r = TrainAndEvaluate(fs_, job);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "sparse-0-of-1.bin")) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "truncated")) << r.status();
}

TEST_F(CheckpointTrainerTest, ACheckpointOfAnotherRunIsRefusedNamingTheField) {
  JobConfig job = Job("/other");
  job.mutable_trainer()->set_batch_size(128);
  job.mutable_trainer()->set_resume(kStep7);
  absl::StatusOr<TrainResult> r = TrainAndEvaluate(fs_, job);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "batch_size")) << r.status();
}

// A manifest whose checksum holds but whose meta a buggy writer got wrong: DATA_LOSS naming the
// field, never an abort on the JSON library's exception.
TEST_F(CheckpointTrainerTest, AMetaFieldOfTheWrongTypeIsDataLossNamingIt) {
  const std::string dir = "/badmeta/checkpoint/step-000000000007";
  CopyCheckpoint(kStep7, dir);
  testing::EditManifestMeta(fs_, dir, [](nlohmann::json& meta) { meta["job"] = 5; });
  absl::StatusOr<CheckpointEval> e = EvaluateCheckpoint(fs_, dir, "", "/badmeta/eval/eval.json");
  EXPECT_EQ(e.status().code(), absl::StatusCode::kDataLoss) << e.status();
  EXPECT_TRUE(absl::StrContains(e.status().message(), "meta \"job\" holds a JSON number, want a string"))
      << e.status();

  CopyCheckpoint(kStep7, dir);
  testing::EditManifestMeta(fs_, dir, [](nlohmann::json& meta) { meta["steps"] = -3; });
  JobConfig job = Job("/badmeta");
  job.mutable_trainer()->set_resume("latest");
  absl::StatusOr<TrainResult> r = TrainAndEvaluate(fs_, job);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "-3 steps")) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "MANIFEST.json")) << r.status();
}

// Resuming is refused before any training when it would end at a checkpoint it cannot write:
// "latest" whose newest checkpoint is damaged, or an older one below committed later ones.
TEST_F(CheckpointTrainerTest, AResumeThatWouldMeetALaterManifestIsRefusedUpFront) {
  CopyCheckpoint(kStep7, "/later/checkpoint/step-000000000007");
  CopyCheckpoint("/full/checkpoint/step-000000000014", "/later/checkpoint/step-000000000014");
  const std::string manifest = "/later/checkpoint/step-000000000014/MANIFEST.json";
  std::string bytes = Read(fs_, manifest);
  bytes[bytes.size() / 3] ^= 0x04;
  ASSERT_TRUE(fs_->SetContents(manifest, bytes).ok());
  JobConfig job = Job("/later");
  job.mutable_trainer()->set_resume("latest");
  absl::StatusOr<TrainResult> r = TrainAndEvaluate(fs_, job);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "step-000000000014, is damaged")) << r.status();
  EXPECT_FALSE(fs_->Exists("/later/preds.tsv"));

  job.mutable_trainer()->set_resume("/later/checkpoint/step-000000000007");
  r = TrainAndEvaluate(fs_, job);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "already holds 1 later checkpoint(s)")) << r.status();
  EXPECT_FALSE(fs_->Exists("/later/preds.tsv"));
  EXPECT_EQ(Read(fs_, manifest), bytes);  // left as it was
}

// Continuing a run needs its data: a checkpoint resumed on another dataset (here another seed)
// is refused naming the data it trained on; the same data in another folder is fine.
TEST_F(CheckpointTrainerTest, ACheckpointResumedOnOtherDataIsRefused) {
  Generate(fs_, "/ds_other", 8000, /*seed=*/6);
  JobConfig job = Job("/otherdata");
  job.mutable_data()->set_dir("/ds_other");
  job.mutable_trainer()->set_resume(kStep7);
  absl::StatusOr<TrainResult> r = TrainAndEvaluate(fs_, job);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "a run on other data: it trained on /ds, whose train split differs"))
      << r.status();

  Generate(fs_, "/ds_copy", 8000, /*seed=*/5);  // the same data, elsewhere
  job = Job("/copieddata");
  job.mutable_data()->set_dir("/ds_copy");
  job.mutable_trainer()->set_resume(kStep7);
  r = TrainAndEvaluate(fs_, job);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(Read(fs_, "/copieddata/preds.tsv"), Read(fs_, "/full/preds.tsv"));
}

// A job file shared by several models names the groups; a dnn never reads them, and its
// checkpoints must not either (they read the table for its checksum after training).
TEST_F(CheckpointTrainerTest, AModelWithoutGroupsCheckpointsWhateverTheGroupsSectionNames) {
  JobConfig job = Job("/dnn_groups");
  job.mutable_model()->mutable_groups()->set_table("/nowhere/groups.tsv");
  job.mutable_model()->mutable_groups()->set_priors("/nowhere/priors");
  absl::StatusOr<TrainResult> r = TrainAndEvaluate(fs_, job);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(fs_->Exists("/dnn_groups/checkpoint/step-000000000020/MANIFEST.json"));
  absl::StatusOr<CheckpointEval> e =
      EvaluateCheckpoint(fs_, "/dnn_groups/checkpoint/step-000000000020", "", "/dnn_groups_eval/eval.json");
  EXPECT_TRUE(e.ok()) << e.status();
}

// The job's sparse_optimizer "ftrl" with L1 and rows starting at 0, end to end: it trains
// another model than Adagrad, resumes exactly from a checkpoint, a checkpoint evaluates to the
// run's predictions and its bundle (values only, no FTRL state, and without the rows L1 kept at
// their initial 0) scores them too.
TEST_F(CheckpointTrainerTest, AnFtrlRunResumesEvaluatesAndExportsExactly) {
  auto ftrl_job = [](const std::string& out) {
    JobConfig job = Job(out);
    job.mutable_trainer()->set_sparse_optimizer("ftrl");
    job.mutable_trainer()->mutable_sparse_ftrl()->set_l1(2e-3);
    job.mutable_trainer()->set_sparse_init_scale(0);
    job.mutable_trainer()->set_checkpoint_every_steps(7);
    return job;
  };
  ASSERT_TRUE(TrainAndEvaluate(fs_, ftrl_job("/ftrl")).ok());
  EXPECT_NE(Read(fs_, "/ftrl/preds.tsv"), Read(fs_, "/full/preds.tsv"));
  const std::string end = "/ftrl/checkpoint/step-000000000020";

  // The rows hold values, z and n (3 x 8 floats); L1 keeps some elements and some whole rows
  // at exactly 0.
  int64_t rows = 0, zero_rows = 0, elements = 0, zeros = 0;
  ASSERT_TRUE(checkpoint::ReadSparseRows(Read(fs_, JoinPath(end, "sparse-0-of-1.bin")), "ftrl rows",
                                         [&](uint64_t, absl::Span<const float> row, uint32_t) {
                                           EXPECT_EQ(row.size(), 24u);
                                           ++rows;
                                           int row_zeros = 0;
                                           for (int j = 0; j < 8; ++j) row_zeros += row[j] == 0.0f ? 1 : 0;
                                           elements += 8;
                                           zeros += row_zeros;
                                           zero_rows += row_zeros == 8 ? 1 : 0;
                                           return absl::OkStatus();
                                         })
                  .ok());
  std::printf("ftrl l1 2e-3 from 0: %lld rows (%lld all 0), %lld of %lld elements exactly 0\n",
              static_cast<long long>(rows), static_cast<long long>(zero_rows), static_cast<long long>(zeros),
              static_cast<long long>(elements));
  EXPECT_GT(zero_rows, 0);
  EXPECT_LT(zeros, elements);

  JobConfig resumed = ftrl_job("/ftrl_resumed");
  resumed.mutable_trainer()->set_resume("/ftrl/checkpoint/step-000000000007");
  ASSERT_TRUE(TrainAndEvaluate(fs_, resumed).ok());
  EXPECT_EQ(Read(fs_, "/ftrl_resumed/preds.tsv"), Read(fs_, "/ftrl/preds.tsv"));
  EXPECT_EQ(Read(fs_, "/ftrl_resumed/checkpoint/step-000000000020/sparse-0-of-1.bin"),
            Read(fs_, JoinPath(end, "sparse-0-of-1.bin")));

  absl::StatusOr<CheckpointEval> e = EvaluateCheckpoint(fs_, end, "", "/ftrl_eval/eval.json");
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(Read(fs_, "/ftrl_eval/preds.tsv"), Read(fs_, "/ftrl/preds.tsv"));

  absl::StatusOr<ExportSummary> bundle = ExportBundle(fs_, end, "/ftrl_bundle", ExportOptions());
  ASSERT_TRUE(bundle.ok()) << bundle.status();
  EXPECT_EQ(bundle->rows_at_initial_values, zero_rows);
  EXPECT_EQ(bundle->sparse_rows, rows - zero_rows);
  absl::StatusOr<std::unique_ptr<Predictor>> predictor = Predictor::Load(fs_, "/ftrl_bundle");
  ASSERT_TRUE(predictor.ok()) << predictor.status();
  absl::StatusOr<data::DatasetManifest> manifest = data::ReadManifest(fs_, "/ds");
  ASSERT_TRUE(manifest.ok());
  absl::StatusOr<data::SplitInfo> test = data::FindSplit(*manifest, "test");
  ASSERT_TRUE(test.ok());
  absl::StatusOr<std::vector<eval::Prediction>> got = (*predictor)->PredictFiles(fs_, data::SplitPaths("/ds", *test));
  absl::StatusOr<std::vector<eval::Prediction>> want = eval::ReadPredictionsTsv(fs_, "/ftrl/preds.tsv");
  ASSERT_TRUE(got.ok() && want.ok()) << got.status() << " " << want.status();
  ASSERT_EQ(got->size(), want->size());
  double worst = 0;
  for (size_t i = 0; i < got->size(); ++i) worst = std::max(worst, std::fabs((*got)[i].score - (*want)[i].score));
  EXPECT_LE(worst, 1e-6);
}

// A checkpoint continues only under the sparse optimizer that wrote its rows; one from before
// the choice (no sparse_optimizer in its run identity) was Adagrad's.
TEST_F(CheckpointTrainerTest, ACheckpointIsRefusedUnderAnotherSparseOptimizer) {
  JobConfig job = Job("/switch");
  job.mutable_trainer()->set_sparse_optimizer("ftrl");
  job.mutable_trainer()->set_resume(kStep7);
  absl::StatusOr<TrainResult> r = TrainAndEvaluate(fs_, job);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "its sparse_optimizer is \"adagrad\", this job's is \"ftrl\""))
      << r.status();

  const std::string old = "/old/checkpoint/step-000000000007";
  CopyCheckpoint(kStep7, old);
  testing::EditManifestMeta(fs_, old, [](nlohmann::json& meta) { meta["run"].erase("sparse_optimizer"); });
  job.mutable_trainer()->set_resume(old);
  r = TrainAndEvaluate(fs_, job);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "its sparse_optimizer is \"adagrad\"")) << r.status();
  JobConfig adagrad = Job("/old");
  adagrad.mutable_trainer()->set_resume(old);
  ASSERT_TRUE(TrainAndEvaluate(fs_, adagrad).ok());
  EXPECT_EQ(Read(fs_, "/old/preds.tsv"), Read(fs_, "/full/preds.tsv"));
}

TEST_F(CheckpointTrainerTest, OnlyTheNewestCheckpointsAreKept) {
  JobConfig job = Job("/keep");
  job.mutable_trainer()->set_checkpoint_every_steps(3);
  job.mutable_trainer()->set_keep_checkpoints(2);
  ASSERT_TRUE(TrainAndEvaluate(fs_, job).ok());
  absl::StatusOr<std::vector<std::string>> names = fs_->ListDir("/keep/checkpoint");
  ASSERT_TRUE(names.ok());
  EXPECT_EQ(*names, (std::vector<std::string>{"step-000000000018", "step-000000000020"}));
}

TEST_F(CheckpointTrainerTest, AFreshRunReplacesTheCheckpointsOfAnEarlierRun) {
  CopyCheckpoint(kStep7, "/fresh/checkpoint/step-000000000007");
  CopyCheckpoint("/full/checkpoint/step-000000000014", "/fresh/checkpoint/step-000000000099");
  ASSERT_TRUE(fs_->SetContents("/fresh/checkpoint/step-000000000100/dense.bin", "x").ok());
  ASSERT_TRUE(fs_->SetContents("/fresh/checkpoint/notes.txt", "kept").ok());
  ASSERT_TRUE(TrainAndEvaluate(fs_, Job("/fresh")).ok());
  absl::StatusOr<std::vector<std::string>> names = fs_->ListDir("/fresh/checkpoint");
  ASSERT_TRUE(names.ok());
  EXPECT_EQ(*names, (std::vector<std::string>{"notes.txt", "step-000000000020"}));
}

TEST_F(CheckpointTrainerTest, ResumingFromNothingIsNotFound) {
  JobConfig job = Job("/nothing");
  job.mutable_trainer()->set_resume("latest");
  absl::StatusOr<TrainResult> r = TrainAndEvaluate(fs_, job);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "/nothing/checkpoint")) << r.status();
}

}  // namespace
}  // namespace choir::worker
