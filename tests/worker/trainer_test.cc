// TrainAndEvaluate end to end on small synthetic datasets: what it writes, that it is a
// function of the seed, how many samples it trains and evaluates on, and the configurations
// it refuses.
#include "worker/trainer.h"

#include <cmath>
#include <cstdlib>  // mkdtemp
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "core/fs.h"
#include "data/dataset.h"
#include "gtest/gtest.h"
#include "tests/worker/worker_test_util.h"
#include "tools/eval/report.h"

namespace choir::worker {
namespace {

using testing::CountRows;
using testing::CountRowsWhere;
using testing::Generate;
using testing::ReadBlocks;
using testing::SmallJob;
using testing::SplitFiles;

constexpr int64_t kUsers = 6000;  // ~6000 clicked train rows: 20 steps of 256 fit

// (user, label) pairs of the samples `task` makes of `blocks`.
std::multiset<std::pair<int64_t, int>> UserLabels(const std::vector<data::RowBlock>& blocks, Task task) {
  std::multiset<std::pair<int64_t, int>> out;
  for (const data::RowBlock& b : blocks) {
    const int user = b.FieldIndex("user_id"), click = b.FieldIndex("click"), conv = b.FieldIndex("conversion");
    for (size_t r = 0; r < b.num_rows(); ++r) {
      if (task == TASK_CVR && b.Int(click, r) == 0) continue;
      out.insert({b.Int(user, r), static_cast<int>(task == TASK_CTR ? b.Int(click, r) : b.Int(conv, r))});
    }
  }
  return out;
}

std::multiset<std::pair<int64_t, int>> UserLabels(const std::vector<eval::Prediction>& preds) {
  std::multiset<std::pair<int64_t, int>> out;
  for (const eval::Prediction& p : preds) out.insert({p.user_id, static_cast<int>(p.label)});
  return out;
}

class TrainerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    fs_ = new MemFileSystem();
    report_ = Generate(fs_, "/ds", kUsers, /*seed=*/5);
    test_blocks_ = new std::vector<data::RowBlock>(ReadBlocks(fs_, SplitFiles(fs_, "/ds", "test")));
  }
  static void TearDownTestSuite() {
    delete test_blocks_;
    delete fs_;
  }

  static MemFileSystem* fs_;
  static data::GeneratorReport report_;
  static std::vector<data::RowBlock>* test_blocks_;
};

MemFileSystem* TrainerTest::fs_ = nullptr;
data::GeneratorReport TrainerTest::report_;
std::vector<data::RowBlock>* TrainerTest::test_blocks_ = nullptr;

TEST_F(TrainerTest, DatasetIsLargeEnoughForTwentyStepsOf256ClickedSamples) {
  EXPECT_GT(report_.train_clicks, 20 * 256);
  EXPECT_GT(CountRowsWhere(*test_blocks_, "click", 1), 500);
}

// On the real file system: a temporary folder holds the dataset and the outputs.
TEST(TrainerPosixTest, WritesEvalJsonPredsAndReportForTheClickedTestRows) {
  std::string root = ::testing::TempDir() + "/choir_trainer_test_XXXXXX";
  ASSERT_NE(mkdtemp(root.data()), nullptr);
  FileSystem* fs = PosixFileSystem();
  const std::string dir = JoinPath(root, "ds"), out = JoinPath(root, "out");
  Generate(fs, dir, kUsers, /*seed=*/5);

  absl::StatusOr<TrainResult> result = TrainAndEvaluate(fs, SmallJob(dir, out, 1));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->steps, 20);
  EXPECT_EQ(result->samples, 20 * 256);

  const std::vector<data::RowBlock> test_blocks = ReadBlocks(fs, SplitFiles(fs, dir, "test"));
  const int64_t test_clicks = CountRowsWhere(test_blocks, "click", 1);
  absl::StatusOr<std::vector<eval::Prediction>> preds = eval::ReadPredictionsTsv(fs, JoinPath(out, "preds.tsv"));
  ASSERT_TRUE(preds.ok()) << preds.status();
  EXPECT_EQ(static_cast<int64_t>(preds->size()), test_clicks);
  EXPECT_EQ(result->test_samples, test_clicks);
  EXPECT_EQ(UserLabels(*preds), UserLabels(test_blocks, TASK_CVR));
  for (const eval::Prediction& p : *preds) {
    ASSERT_GT(p.score, 0.0) << p.user_id;
    ASSERT_LT(p.score, 1.0) << p.user_id;
  }

  absl::StatusOr<eval::EvalReport> report = eval::ReadEvalJson(fs, JoinPath(out, "eval.json"));
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->overall.samples, static_cast<int64_t>(preds->size()));
  EXPECT_EQ(result->test.overall.samples, static_cast<int64_t>(preds->size()));
  int64_t positives = 0;
  for (const eval::Prediction& p : *preds) positives += p.label == 1.0f;
  EXPECT_EQ(report->overall.positives, positives);
  int64_t bucket_samples = 0;
  for (const eval::Metrics& m : report->buckets) bucket_samples += m.samples;
  EXPECT_EQ(bucket_samples, report->overall.samples);

  absl::StatusOr<std::string> md = fs->ReadFileToString(JoinPath(out, "report.md"));
  ASSERT_TRUE(md.ok()) << md.status();
  EXPECT_NE(md->find("trainer_test"), std::string::npos) << *md;
  EXPECT_NE(md->find("dnn"), std::string::npos) << *md;
  EXPECT_NE(md->find(dir), std::string::npos) << *md;
  EXPECT_NE(md->find(eval::MarkdownTable(*report)), std::string::npos) << *md;

  EXPECT_TRUE(fs->DeleteRecursively(root).ok());
}

TEST_F(TrainerTest, SameSeedGivesByteIdenticalPredictionsAndADifferentSeedDoesNot) {
  ASSERT_TRUE(TrainAndEvaluate(fs_, SmallJob("/ds", "/same1", 7)).ok());
  ASSERT_TRUE(TrainAndEvaluate(fs_, SmallJob("/ds", "/same2", 7)).ok());
  ASSERT_TRUE(TrainAndEvaluate(fs_, SmallJob("/ds", "/other", 8)).ok());
  absl::StatusOr<std::string> a = fs_->ReadFileToString("/same1/preds.tsv");
  absl::StatusOr<std::string> b = fs_->ReadFileToString("/same2/preds.tsv");
  absl::StatusOr<std::string> c = fs_->ReadFileToString("/other/preds.tsv");
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_TRUE(*a == *b) << "preds.tsv differs between two runs with seed 7";
  EXPECT_FALSE(*a == *c) << "seeds 7 and 8 gave identical predictions";
  absl::StatusOr<std::string> ja = fs_->ReadFileToString("/same1/eval.json");
  absl::StatusOr<std::string> jb = fs_->ReadFileToString("/same2/eval.json");
  ASSERT_TRUE(ja.ok() && jb.ok());
  EXPECT_EQ(*ja, *jb);
}

TEST_F(TrainerTest, WithoutMaxStepsTrainsOnEveryClickedRowOncePerEpoch) {
  for (int epochs : {1, 2}) {
    JobConfig job = SmallJob("/ds", "/full" + std::to_string(epochs), 1);
    job.mutable_trainer()->set_max_steps(0);
    job.mutable_trainer()->set_epochs(epochs);
    absl::StatusOr<TrainResult> result = TrainAndEvaluate(fs_, job);
    ASSERT_TRUE(result.ok()) << result.status();
    const int64_t want = report_.train_clicks * epochs;
    EXPECT_EQ(result->samples, want) << epochs << " epochs";
    EXPECT_EQ(result->steps, (want + 255) / 256) << epochs << " epochs";
    EXPECT_TRUE(std::isfinite(result->last_loss));
    EXPECT_GT(result->last_loss, 0);
  }
}

TEST_F(TrainerTest, CtrTaskEvaluatesEveryTestRowLabelledByClick) {
  JobConfig job = SmallJob("/ds", "/ctr", 1);
  job.set_task(TASK_CTR);
  absl::StatusOr<TrainResult> result = TrainAndEvaluate(fs_, job);
  ASSERT_TRUE(result.ok()) << result.status();
  absl::StatusOr<std::vector<eval::Prediction>> preds = eval::ReadPredictionsTsv(fs_, "/ctr/preds.tsv");
  ASSERT_TRUE(preds.ok()) << preds.status();
  EXPECT_EQ(static_cast<int64_t>(preds->size()), CountRows(*test_blocks_));
  EXPECT_EQ(UserLabels(*preds), UserLabels(*test_blocks_, TASK_CTR));
}

TEST_F(TrainerTest, DinTrainsAndEvaluatesTheSameSamples) {
  JobConfig job = SmallJob("/ds", "/din", 1);
  job.mutable_model()->set_type("din");
  job.mutable_model()->set_max_seq_len(10);
  job.mutable_trainer()->set_max_steps(10);
  absl::StatusOr<TrainResult> result = TrainAndEvaluate(fs_, job);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->steps, 10);
  absl::StatusOr<std::vector<eval::Prediction>> preds = eval::ReadPredictionsTsv(fs_, "/din/preds.tsv");
  ASSERT_TRUE(preds.ok()) << preds.status();
  EXPECT_EQ(UserLabels(*preds), UserLabels(*test_blocks_, TASK_CVR));
  // A different model from dnn's on the same data and seed.
  JobConfig dnn = job;
  dnn.mutable_model()->set_type("dnn");
  dnn.mutable_trainer()->set_out_dir("/din_vs_dnn");
  ASSERT_TRUE(TrainAndEvaluate(fs_, dnn).ok());
  EXPECT_NE(*fs_->ReadFileToString("/din/preds.tsv"), *fs_->ReadFileToString("/din_vs_dnn/preds.tsv"));
}

TEST_F(TrainerTest, ResultDescribesTheModelInputs) {
  JobConfig job = SmallJob("/ds", "/inputs", 1);
  job.mutable_trainer()->set_max_steps(2);
  absl::StatusOr<TrainResult> dnn = TrainAndEvaluate(fs_, job);
  ASSERT_TRUE(dnn.ok()) << dnn.status();
  EXPECT_EQ(dnn->num_slots, 11);  // the impression schema's INT64 id and feature fields
  EXPECT_EQ(dnn->num_dense, 1);   // item_price
  EXPECT_EQ(dnn->num_sequences, 0);
  job.mutable_model()->set_type("din");
  absl::StatusOr<TrainResult> din = TrainAndEvaluate(fs_, job);
  ASSERT_TRUE(din.ok()) << din.status();
  EXPECT_EQ(din->num_slots, 11);
  EXPECT_EQ(din->num_sequences, 2);  // hist_item, hist_cate
}

// Evaluating on the test split every few steps reads the model and pulls (lazily initialised)
// embedding rows; neither may change what is trained. Dice is included because evaluation
// switches it to its running statistics and back.
TEST_F(TrainerTest, PeriodicEvaluationDoesNotChangeTheTrainedModel) {
  for (const char* activation : {"relu", "dice"}) {
    for (const char* type : {"dnn", "din"}) {
      const std::string name = std::string(type) + "_" + activation;
      JobConfig job = SmallJob("/ds", "/periodic_off_" + name, 3);
      job.mutable_model()->set_type(type);
      job.mutable_model()->set_activation(activation);
      job.mutable_trainer()->set_max_steps(12);
      ASSERT_TRUE(TrainAndEvaluate(fs_, job).ok()) << name;
      job.mutable_trainer()->set_eval_every_steps(5);
      job.mutable_trainer()->set_out_dir("/periodic_on_" + name);
      ASSERT_TRUE(TrainAndEvaluate(fs_, job).ok()) << name;
      absl::StatusOr<std::string> off = fs_->ReadFileToString("/periodic_off_" + name + "/preds.tsv");
      absl::StatusOr<std::string> on = fs_->ReadFileToString("/periodic_on_" + name + "/preds.tsv");
      ASSERT_TRUE(off.ok() && on.ok()) << name;
      EXPECT_TRUE(*off == *on) << name << ": periodic evaluation changed the predictions";
    }
  }
}

// Datasets from `choir data convert` carry no "train_clicks" counter; the trainer uses the
// counter only to plan (the learning-rate decay over the run, the ETA). The model it trains for
// TASK_CVR must be the same with or without it.
TEST_F(TrainerTest, CvrTrainingDoesNotDependOnTheGeneratorsClickCounter) {
  Generate(fs_, "/ds_no_counter", kUsers, /*seed=*/5);  // the same rows as /ds
  absl::StatusOr<data::DatasetManifest> manifest = data::ReadManifest(fs_, "/ds_no_counter");
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  ASSERT_EQ(manifest->counters().at("train_clicks"), report_.train_clicks);
  manifest->mutable_counters()->erase("train_clicks");
  ASSERT_TRUE(data::WriteManifest(fs_, "/ds_no_counter", *manifest).ok());

  JobConfig with = SmallJob("/ds", "/counter_with", 1);
  with.mutable_trainer()->set_max_steps(0);  // one epoch: the schedule is planned from the data
  JobConfig without = with;
  without.mutable_data()->set_dir("/ds_no_counter");
  without.mutable_trainer()->set_out_dir("/counter_without");
  absl::StatusOr<TrainResult> a = TrainAndEvaluate(fs_, with);
  absl::StatusOr<TrainResult> b = TrainAndEvaluate(fs_, without);
  ASSERT_TRUE(a.ok() && b.ok()) << a.status() << " " << b.status();
  EXPECT_EQ(a->samples, b->samples);
  EXPECT_TRUE(*fs_->ReadFileToString("/counter_with/preds.tsv") ==
              *fs_->ReadFileToString("/counter_without/preds.tsv"))
      << "the trained model depends on the manifest's train_clicks counter (test AUC " << a->test.overall.auc
      << " with it, " << b->test.overall.auc << " without)";
}

struct BadConfig {
  std::string what;        // test label
  std::string must_name;   // the field the message must name
  void (*edit)(JobConfig*);
};

TEST_F(TrainerTest, BadConfigsAreInvalidArgumentNamingTheField) {
  const std::vector<BadConfig> cases = {
      {"empty data.dir", "data.dir", [](JobConfig* j) { j->mutable_data()->clear_dir(); }},
      {"empty out_dir", "out_dir", [](JobConfig* j) { j->mutable_trainer()->clear_out_dir(); }},
      {"batch_size 0", "trainer.batch_size", [](JobConfig* j) { j->mutable_trainer()->set_batch_size(0); }},
      {"epochs 0", "trainer.epochs", [](JobConfig* j) { j->mutable_trainer()->set_epochs(0); }},
      {"embedding_dim 0", "model.embedding_dim", [](JobConfig* j) { j->mutable_model()->set_embedding_dim(0); }},
      {"learning_rate 0", "trainer.learning_rate", [](JobConfig* j) { j->mutable_trainer()->set_learning_rate(0); }},
      {"sparse_learning_rate -1", "trainer.sparse_learning_rate",
       [](JobConfig* j) { j->mutable_trainer()->set_sparse_learning_rate(-1); }},
      {"max_seq_len -1", "model.max_seq_len", [](JobConfig* j) { j->mutable_model()->set_max_seq_len(-1); }},
      {"hidden 0", "model.hidden", [](JobConfig* j) { j->mutable_model()->add_hidden(0); }},
      {"dense accumulator -1", "trainer.dense_initial_accumulator",
       [](JobConfig* j) { j->mutable_trainer()->set_dense_initial_accumulator(-1); }},
      {"sparse_optimizer lamb", "trainer.sparse_optimizer",
       [](JobConfig* j) { j->mutable_trainer()->set_sparse_optimizer("lamb"); }},
      {"sparse_ftrl.l1 -1", "trainer.sparse_ftrl.l1",
       [](JobConfig* j) {
         j->mutable_trainer()->set_sparse_optimizer("ftrl");
         j->mutable_trainer()->mutable_sparse_ftrl()->set_l1(-1);
       }},
      {"sparse_init_scale -0.1", "trainer.sparse_init_scale",
       [](JobConfig* j) { j->mutable_trainer()->set_sparse_init_scale(-0.1); }},
      {"sparse_admit_min_count 70000", "trainer.sparse_admit_min_count",
       [](JobConfig* j) { j->mutable_trainer()->set_sparse_admit_min_count(70000); }},
      {"sparse_ttl_steps -1", "trainer.sparse_ttl_steps",
       [](JobConfig* j) { j->mutable_trainer()->set_sparse_ttl_steps(-1); }},
      {"sparse_capacity 5", "trainer.sparse_capacity must be 0 or >= 16",
       [](JobConfig* j) { j->mutable_trainer()->set_sparse_capacity(5); }},
      {"sparse_ftrl under adagrad", "trainer.sparse_ftrl is set but trainer.sparse_optimizer is \"adagrad\"",
       [](JobConfig* j) { j->mutable_trainer()->mutable_sparse_ftrl()->set_l1(0.1); }},
      {"ftrl with a zero denominator", "needs trainer.sparse_initial_accumulator > 0, or trainer.sparse_ftrl.beta",
       [](JobConfig* j) {
         j->mutable_trainer()->set_sparse_optimizer("ftrl");
         j->mutable_trainer()->set_sparse_initial_accumulator(0);
       }},
      {"model.type foo", "model.type", [](JobConfig* j) { j->mutable_model()->set_type("foo"); }},
      {"activation bar", "model.activation", [](JobConfig* j) { j->mutable_model()->set_activation("bar"); }},
      {"unknown excluded field", "model.exclude_fields",
       [](JobConfig* j) { j->mutable_model()->add_exclude_fields("nope"); }},
  };
  for (const BadConfig& c : cases) {
    JobConfig job = SmallJob("/ds", "/bad", 1);
    c.edit(&job);
    absl::StatusOr<TrainResult> result = TrainAndEvaluate(fs_, job);
    ASSERT_FALSE(result.ok()) << c.what;
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << c.what << ": " << result.status();
    EXPECT_NE(result.status().message().find(c.must_name), std::string::npos) << c.what << ": " << result.status();
  }
  EXPECT_FALSE(fs_->Exists("/bad/preds.tsv"));
}

// A test file of another schema, or an out_dir that is a file, fails before the first step
// (it used to fail after training, at the final evaluation), naming the file and the split.
TEST_F(TrainerTest, ATestFileOfAnotherSchemaFailsBeforeTrainingNamingIt) {
  // A copy of /ds (its files are one folder deep) whose test split lists a users shard.
  std::vector<std::string> subs = {""};
  const absl::StatusOr<std::vector<std::string>> top = fs_->ListDir("/ds");
  ASSERT_TRUE(top.ok()) << top.status();
  for (const std::string& name : *top) {
    if (fs_->IsDirectory("/ds/" + name)) subs.push_back("/" + name);
  }
  for (const std::string& sub : subs) {
    const absl::StatusOr<std::vector<std::string>> names = fs_->ListDir("/ds" + sub);
    ASSERT_TRUE(names.ok()) << names.status();
    for (const std::string& name : *names) {
      const std::string from = absl::StrCat("/ds", sub, "/", name);
      if (fs_->IsDirectory(from)) continue;
      ASSERT_TRUE(fs_->SetContents(absl::StrCat("/mixed", sub, "/", name), *fs_->GetContents(from)).ok());
    }
  }
  std::string manifest = *fs_->GetContents("/mixed/dataset.pbtxt");
  const size_t at = manifest.find("test/part-00000.shard");
  ASSERT_NE(at, std::string::npos) << manifest;
  manifest.replace(at, 4, "users");
  ASSERT_TRUE(fs_->SetContents("/mixed/dataset.pbtxt", manifest).ok());
  JobConfig job = SmallJob("/mixed", "/mixed_out", 1);
  absl::StatusOr<TrainResult> result = TrainAndEvaluate(fs_, job);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kFailedPrecondition) << result.status();
  EXPECT_NE(result.status().message().find("/mixed/users/part-00000.shard (split test): column"), std::string::npos)
      << result.status();
  EXPECT_FALSE(fs_->Exists("/mixed_out/checkpoint"));

  ASSERT_TRUE(fs_->SetContents("/a_file", "x").ok());
  result = TrainAndEvaluate(fs_, SmallJob("/ds", "/a_file", 1));
  EXPECT_EQ(result.status().code(), absl::StatusCode::kFailedPrecondition) << result.status();
  EXPECT_NE(result.status().message().find("/a_file is a file, not a folder"), std::string::npos) << result.status();

  // An out_dir that cannot be written (here its first file's rename fails) fails before training.
  FaultInjectingFileSystem faulty(fs_);
  faulty.FailNextRename();
  result = TrainAndEvaluate(&faulty, SmallJob("/ds", "/unwritable", 1));
  EXPECT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find("trainer.out_dir (--out) /unwritable cannot be written"), std::string::npos)
      << result.status();
  EXPECT_FALSE(fs_->Exists("/unwritable/checkpoint"));
}

TEST_F(TrainerTest, MissingDatasetFailsWithoutWritingOutputs) {
  absl::StatusOr<TrainResult> result = TrainAndEvaluate(fs_, SmallJob("/no_such_dataset", "/missing", 1));
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find("/no_such_dataset"), std::string::npos) << result.status();
  EXPECT_FALSE(fs_->Exists("/missing/preds.tsv"));
}

}  // namespace
}  // namespace choir::worker
