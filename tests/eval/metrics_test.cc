#include "tools/eval/metrics.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "gtest/gtest.h"

namespace choir::eval {
namespace {

using data::Bucket;

Prediction P(int64_t user, float label, double score, Bucket bucket = Bucket::kLow) {
  Prediction p;
  p.user_id = user;
  p.label = label;
  p.score = score;
  p.bucket = bucket;
  return p;
}

TEST(MetricsTest, AucCountsTiedPairsAsOneHalf) {
  // Positives 0.4 and 0.8; negatives 0.1, 0.2, 0.4. Wins: 0.4 -> 2 + 1/2, 0.8 -> 3; of 6 pairs.
  const std::vector<Prediction> preds = {P(1, 0, 0.1), P(1, 1, 0.4), P(2, 0, 0.4), P(2, 1, 0.8),
                                         P(3, 0, 0.2)};
  absl::StatusOr<Metrics> m = ComputeMetrics(preds);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_DOUBLE_EQ(m->auc, 11.0 / 12.0);
  EXPECT_EQ(m->samples, 5);
  EXPECT_EQ(m->positives, 2);
  EXPECT_EQ(m->users, 3);
}

TEST(MetricsTest, AucOfAllEqualScoresIsExactlyOneHalf) {
  std::vector<Prediction> preds;
  for (int i = 0; i < 7; ++i) preds.push_back(P(i, i % 3 == 0 ? 1 : 0, 0.25));
  absl::StatusOr<Metrics> m = ComputeMetrics(preds);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->auc, 0.5);
}

TEST(MetricsTest, AucDoesNotDependOnInputOrder) {
  std::vector<Prediction> preds = {P(1, 1, 0.3), P(1, 0, 0.3),  P(2, 1, 0.9),
                                   P(2, 0, 0.5), P(3, 0, 0.95), P(3, 1, 0.3)};
  absl::StatusOr<Metrics> a = ComputeMetrics(preds);
  std::reverse(preds.begin(), preds.end());
  absl::StatusOr<Metrics> b = ComputeMetrics(preds);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->auc, b->auc);
  EXPECT_EQ(a->gauc, b->gauc);
}

TEST(MetricsTest, GaucWeightsUsersBySamplesAndExcludesSingleClassUsers) {
  const std::vector<Prediction> preds = {
      // user 1: 4 samples, AUC 1.
      P(1, 1, 0.9), P(1, 1, 0.8), P(1, 0, 0.1), P(1, 0, 0.2),
      // user 2: 2 samples, AUC 0.
      P(2, 1, 0.1), P(2, 0, 0.9),
      // user 3: negatives only; user 4: one positive sample. Both excluded.
      P(3, 0, 0.5), P(3, 0, 0.6), P(3, 0, 0.7), P(4, 1, 0.3)};
  absl::StatusOr<Metrics> m = ComputeMetrics(preds);
  ASSERT_TRUE(m.ok());
  EXPECT_DOUBLE_EQ(m->gauc, 4.0 / 6.0);
  EXPECT_EQ(m->samples, 10);
  EXPECT_EQ(m->users, 4);
  EXPECT_EQ(m->gauc_users, 2);
  EXPECT_EQ(m->gauc_samples, 6);
}

TEST(MetricsTest, GaucOfUserWithTiesUsesOneHalf) {
  // One user: positive 0.5 ties one negative and beats another -> 1.5 / 2.
  const std::vector<Prediction> preds = {P(7, 1, 0.5), P(7, 0, 0.5), P(7, 0, 0.2)};
  absl::StatusOr<Metrics> m = ComputeMetrics(preds);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->gauc, 0.75);
  EXPECT_EQ(m->auc, 0.75);
}

TEST(MetricsTest, LoglossIsMeanNegativeLogLikelihood) {
  const std::vector<Prediction> preds = {P(1, 1, 0.8), P(1, 0, 0.4)};
  absl::StatusOr<Metrics> m = ComputeMetrics(preds);
  ASSERT_TRUE(m.ok());
  EXPECT_NEAR(m->logloss, -(std::log(0.8) + std::log(0.6)) / 2, 1e-15);
}

TEST(MetricsTest, LoglossClipsCertainWrongPredictions) {
  const std::vector<Prediction> wrong = {P(1, 1, 0.0)};
  absl::StatusOr<Metrics> m = ComputeMetrics(wrong);
  ASSERT_TRUE(m.ok());
  EXPECT_NEAR(m->logloss, -std::log(kLoglossEps), 1e-12);
  const std::vector<Prediction> right = {P(1, 0, 0.0), P(1, 1, 1.0)};
  m = ComputeMetrics(right);
  ASSERT_TRUE(m.ok());
  EXPECT_TRUE(std::isfinite(m->logloss));
  EXPECT_NEAR(m->logloss, 1e-15, 1e-16);
}

TEST(MetricsTest, CalibrationIsMeanScoreOverMeanLabel) {
  const std::vector<Prediction> preds = {P(1, 0, 0.2), P(1, 1, 0.4), P(2, 0, 0.6)};
  absl::StatusOr<Metrics> m = ComputeMetrics(preds);
  ASSERT_TRUE(m.ok());
  EXPECT_DOUBLE_EQ(m->calibration, 1.2);  // mean score 0.4 / mean label 1/3
}

TEST(MetricsTest, UndefinedMetricsAreNaN) {
  absl::StatusOr<Metrics> empty = ComputeMetrics({});
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->samples, 0);
  EXPECT_TRUE(std::isnan(empty->auc));
  EXPECT_TRUE(std::isnan(empty->gauc));
  EXPECT_TRUE(std::isnan(empty->logloss));
  EXPECT_TRUE(std::isnan(empty->calibration));

  const std::vector<Prediction> negatives = {P(1, 0, 0.2), P(2, 0, 0.3)};
  absl::StatusOr<Metrics> m = ComputeMetrics(negatives);
  ASSERT_TRUE(m.ok());
  EXPECT_TRUE(std::isnan(m->auc));
  EXPECT_TRUE(std::isnan(m->gauc));
  EXPECT_TRUE(std::isnan(m->calibration));
  EXPECT_FALSE(std::isnan(m->logloss));
  EXPECT_EQ(m->users, 2);
  EXPECT_EQ(m->gauc_users, 0);

  // Both classes overall, but no single user has both: AUC defined, GAUC not.
  const std::vector<Prediction> split = {P(1, 0, 0.2), P(2, 1, 0.3)};
  m = ComputeMetrics(split);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->auc, 1.0);
  EXPECT_TRUE(std::isnan(m->gauc));
}

TEST(MetricsTest, RejectsBadLabelsAndScores) {
  for (const Prediction& bad :
       {P(5, 0.5f, 0.3), P(5, 1, std::nan("")), P(5, 1, 1.5), P(5, 0, -0.1), P(5, 0, INFINITY)}) {
    const std::vector<Prediction> preds = {P(1, 0, 0.1), bad};
    absl::StatusOr<Metrics> m = ComputeMetrics(preds);
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(m.status().message().find("prediction 1 (user 5)"), std::string::npos) << m.status();
    EXPECT_EQ(Evaluate(preds).status().code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST(MetricsTest, EvaluateSplitsByBucket) {
  const std::vector<Prediction> preds = {P(1, 1, 0.9, Bucket::kLow),  P(1, 0, 0.1, Bucket::kLow),
                                         P(2, 1, 0.2, Bucket::kHigh), P(2, 0, 0.8, Bucket::kHigh),
                                         P(3, 1, 0.6, Bucket::kNew),  P(4, 0, 0.7, Bucket::kNew)};
  absl::StatusOr<EvalReport> r = Evaluate(preds);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->overall.samples, 6);
  EXPECT_EQ(r->overall.users, 4);
  EXPECT_EQ(r->overall.gauc_users, 2);
  EXPECT_EQ(r->overall.gauc, 0.5);

  EXPECT_EQ(r->bucket(Bucket::kLow).samples, 2);
  EXPECT_EQ(r->bucket(Bucket::kLow).auc, 1.0);
  EXPECT_EQ(r->bucket(Bucket::kLow).gauc, 1.0);
  EXPECT_EQ(r->bucket(Bucket::kHigh).auc, 0.0);
  EXPECT_EQ(r->bucket(Bucket::kHigh).gauc, 0.0);
  EXPECT_EQ(r->bucket(Bucket::kNew).users, 2);
  EXPECT_EQ(r->bucket(Bucket::kNew).auc, 0.0);
  EXPECT_TRUE(std::isnan(r->bucket(Bucket::kNew).gauc));
  EXPECT_EQ(r->bucket(Bucket::kNew).gauc_users, 0);

  const Metrics& mid = r->bucket(Bucket::kMid);
  EXPECT_EQ(mid.samples, 0);
  EXPECT_EQ(mid.users, 0);
  EXPECT_TRUE(std::isnan(mid.auc));
  EXPECT_TRUE(std::isnan(mid.logloss));
}

}  // namespace
}  // namespace choir::eval
