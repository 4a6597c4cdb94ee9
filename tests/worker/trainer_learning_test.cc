// The trainer learns: on a synthetic dataset large enough for the click signal (rank position,
// item quality, user interest) to be learnable, dnn trained for two epochs on TASK_CTR ranks
// the test split's clicks well above chance.
#include <cmath>
#include <cstdio>
#include <string>

#include "core/fs.h"
#include "gtest/gtest.h"
#include "tests/worker/worker_test_util.h"
#include "worker/trainer.h"

namespace choir::worker {
namespace {

TEST(TrainerLearningTest, DnnOnCtrBeatsChanceClearlyOnTheTestSplit) {
  MemFileSystem fs;
  const data::GeneratorReport report = testing::Generate(&fs, "/ds", 20000, /*seed=*/21);
  ASSERT_GT(report.train_rows, 100000);

  JobConfig job;
  job.set_name("learning");
  job.set_task(TASK_CTR);
  job.mutable_data()->set_dir("/ds");
  job.mutable_model()->set_type("dnn");
  job.mutable_trainer()->set_batch_size(1024);
  job.mutable_trainer()->set_epochs(2);
  job.mutable_trainer()->set_seed(1);
  job.mutable_trainer()->set_out_dir("/out");
  absl::StatusOr<TrainResult> result = TrainAndEvaluate(&fs, job);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->samples, 2 * report.train_rows);
  const double auc = result->test.overall.auc;
  std::printf("test AUC %.4f, GAUC %.4f, logloss %.4f, last train loss %.4f, %lld steps in %.1f s\n", auc,
              result->test.overall.gauc, result->test.overall.logloss, result->last_loss,
              static_cast<long long>(result->steps), result->seconds);
  // Measured (2 cores, RelWithDebInfo, ~6 s): AUC 0.5887 for this dataset seed and trainer
  // seed; 0.584-0.590 over dataset seeds 21-23 x trainer seeds 1-2. 0.56 leaves ~8x that spread.
  EXPECT_GT(auc, 0.56);
  // Lower logloss than the best constant predictor (the test split's own click rate, an oracle
  // baseline). Measured: 0.2994 vs 0.3036 here; the gap was 0.0036-0.0042 over the six runs
  // above, so 0.001 is a margin the trained model keeps and a model that learnt nothing fails.
  const double p = static_cast<double>(result->test.overall.positives) / result->test.overall.samples;
  const double constant_logloss = -(p * std::log(p) + (1 - p) * std::log(1 - p));
  std::printf("constant predictor logloss %.4f (click rate %.4f)\n", constant_logloss, p);
  EXPECT_LT(result->test.overall.logloss, constant_logloss - 0.001);
}

}  // namespace
}  // namespace choir::worker
