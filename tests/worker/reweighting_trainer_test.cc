// TrainAndEvaluate with trainer.reweighting (DESIGN.md 1.5, local mode): policy none trains
// exactly as without the message, the other policies change the model deterministically, and
// bad options are refused naming the field.
#include <string>

#include "core/fs.h"
#include "gtest/gtest.h"
#include "tests/worker/worker_test_util.h"
#include "worker/trainer.h"

namespace choir::worker {
namespace {

constexpr int64_t kUsers = 6000;  // ~6000 clicked train rows: 20 steps of 256 fit

// The shared small dnn job on /ds with seed 3.
JobConfig SmallJob(const std::string& out_dir) { return testing::SmallJob("/ds", out_dir, 3); }

class ReweightingTrainerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    fs_ = new MemFileSystem();
    testing::Generate(fs_, "/ds", kUsers, /*seed=*/5);
  }
  static void TearDownTestSuite() { delete fs_; }

  // Trains `job` and returns its preds.tsv ("" after a failure, which is also reported).
  static std::string TrainPreds(const JobConfig& job) {
    absl::StatusOr<TrainResult> result = TrainAndEvaluate(fs_, job);
    EXPECT_TRUE(result.ok()) << result.status();
    if (!result.ok()) return "";
    EXPECT_EQ(result->steps, 20);
    absl::StatusOr<std::string> preds = fs_->ReadFileToString(job.trainer().out_dir() + "/preds.tsv");
    EXPECT_TRUE(preds.ok()) << preds.status();
    return preds.ok() ? *preds : "";
  }

  static MemFileSystem* fs_;
};

MemFileSystem* ReweightingTrainerTest::fs_ = nullptr;

TEST_F(ReweightingTrainerTest, PolicyNoneGivesByteIdenticalPredictionsToNoReweightingMessage) {
  const std::string plain = TrainPreds(SmallJob("/plain"));
  JobConfig none = SmallJob("/none");
  ReweightingConfig* rc = none.mutable_trainer()->mutable_reweighting();
  rc->set_policy("none");
  rc->set_beta(2);
  rc->set_every_steps(5);
  ASSERT_FALSE(plain.empty());
  EXPECT_TRUE(plain == TrainPreds(none)) << "policy none changed the predictions";
}

TEST_F(ReweightingTrainerTest, InverseFrequencyAndAdaptiveChangePredictionsDeterministically) {
  const std::string plain = TrainPreds(SmallJob("/base"));
  ASSERT_FALSE(plain.empty());
  std::string previous = plain;
  for (const char* policy : {"inverse_frequency", "adaptive"}) {
    JobConfig job = SmallJob(std::string("/") + policy + "1");
    ReweightingConfig* rc = job.mutable_trainer()->mutable_reweighting();
    rc->set_policy(policy);
    rc->set_every_steps(5);
    rc->set_eta(2);  // adaptive: large enough to move the weights within 20 steps
    const std::string a = TrainPreds(job);
    job.mutable_trainer()->set_out_dir(std::string("/") + policy + "2");
    const std::string b = TrainPreds(job);
    ASSERT_FALSE(a.empty());
    EXPECT_TRUE(a == b) << policy << ": two runs with the same seed differ";
    EXPECT_FALSE(a == plain) << policy << " gave the predictions of training without reweighting";
    EXPECT_FALSE(a == previous) << policy << " gave the predictions of the previous policy";
    previous = a;
  }
}

TEST_F(ReweightingTrainerTest, BadReweightingOptionsAreInvalidArgumentNamingTheField) {
  struct Case {
    void (*set)(ReweightingConfig*);
    const char* message;
  };
  const Case cases[] = {
      {[](ReweightingConfig* r) { r->set_policy("inverse"); },
       "trainer.reweighting.policy must be one of none, inverse_frequency, adaptive, got 'inverse'"},
      {[](ReweightingConfig* r) { r->set_beta(-1); }, "trainer.reweighting.beta must be a finite number >= 0, got -1"},
      {[](ReweightingConfig* r) { r->set_eta(-0.5); }, "trainer.reweighting.eta must be a finite number >= 0, got -0.5"},
      {[](ReweightingConfig* r) { r->set_w_min(0); }, "trainer.reweighting.w_min must be in (0, 1], got 0"},
      {[](ReweightingConfig* r) { r->set_w_max(0.9); }, "trainer.reweighting.w_max must be a finite number >= 1, got 0.9"},
      {[](ReweightingConfig* r) { r->set_every_steps(0); }, "trainer.reweighting.every_steps must be >= 1, got 0"},
      {[](ReweightingConfig* r) { r->set_ema(1); }, "trainer.reweighting.ema must be in [0, 1), got 1"},
  };
  for (const Case& c : cases) {
    JobConfig job = SmallJob("/bad");
    job.mutable_trainer()->mutable_reweighting()->set_policy("adaptive");
    c.set(job.mutable_trainer()->mutable_reweighting());
    absl::StatusOr<TrainResult> result = TrainAndEvaluate(fs_, job);
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << c.message;
    EXPECT_EQ(result.status().message(), c.message);
  }
  // Options are checked whatever the policy: a job file that switches the policy on later
  // should not start failing then.
  JobConfig job = SmallJob("/bad_none");
  job.mutable_trainer()->mutable_reweighting()->set_beta(-1);
  EXPECT_EQ(TrainAndEvaluate(fs_, job).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(fs_->Exists("/bad/preds.tsv"));
}

}  // namespace
}  // namespace choir::worker
