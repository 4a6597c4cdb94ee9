// The sample-reweighting policies (scheduler/reweighting.h) on hand-made counts and losses.
// Expected weights are exact on paper; comparisons allow 1e-12 for the rounding of pow/exp.
#include "scheduler/reweighting.h"

#include <cmath>
#include <limits>

#include "gtest/gtest.h"

namespace choir::scheduler {
namespace {

constexpr double kTol = 1e-12;
constexpr int kLow = static_cast<int>(data::Bucket::kLow);
constexpr int kMid = static_cast<int>(data::Bucket::kMid);
constexpr int kHigh = static_cast<int>(data::Bucket::kHigh);
constexpr int kNew = static_cast<int>(data::Bucket::kNew);

// Stats with `count` samples per bucket whose mean loss is `mean_loss`.
BucketStats Stats(std::array<int64_t, 4> count, std::array<double, 4> mean_loss = {}) {
  BucketStats s;
  for (int b = 0; b < 4; ++b) {
    s.count[b] = count[b];
    s.loss_sum[b] = count[b] * mean_loss[b];
  }
  return s;
}

SampleReweighter Make(ReweightingOptions o) {
  absl::StatusOr<SampleReweighter> r = SampleReweighter::Create(o);
  EXPECT_TRUE(r.ok()) << r.status();
  return *std::move(r);
}

ReweightingOptions Policy(ReweightingPolicy p) {
  ReweightingOptions o;
  o.policy = p;
  return o;
}

double MeanWeightPerSample(const SampleReweighter& r) {
  int64_t total = 0;
  double sum = 0;
  for (int b = 0; b < 4; ++b) {
    total += r.cumulative_count()[b];
    sum += r.cumulative_count()[b] * r.weights()[b];
  }
  return sum / total;
}

TEST(ReweightingTest, PolicyNamesRoundTripAndUnknownNamesAreRejected) {
  for (ReweightingPolicy p :
       {ReweightingPolicy::kNone, ReweightingPolicy::kInverseFrequency, ReweightingPolicy::kAdaptive}) {
    absl::StatusOr<ReweightingPolicy> parsed = ParseReweightingPolicy(ReweightingPolicyName(p));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, p);
  }
  absl::StatusOr<ReweightingPolicy> bad = ParseReweightingPolicy("inverse-frequency");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.status().message(),
            "policy must be one of none, inverse_frequency, adaptive, got 'inverse-frequency'");
}

TEST(ReweightingTest, DefaultsAreTheDocumentedOnes) {
  const ReweightingOptions o;
  EXPECT_EQ(o.policy, ReweightingPolicy::kNone);
  EXPECT_EQ(o.beta, 0.5);
  EXPECT_EQ(o.eta, 0.1);
  EXPECT_EQ(o.w_min, 0.2);
  EXPECT_EQ(o.w_max, 5.0);
  EXPECT_EQ(o.every_steps, 100);
  EXPECT_EQ(o.ema, 0.9);
  EXPECT_TRUE(ValidateReweightingOptions(o).ok());
}

TEST(ReweightingTest, BadOptionsAreRejectedNamingTheField) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  struct Case {
    void (*set)(ReweightingOptions*);
    const char* message;
  };
  const Case cases[] = {
      {[](ReweightingOptions* o) { o->beta = -0.1; }, "beta must be a finite number >= 0, got -0.1"},
      {[](ReweightingOptions* o) { o->eta = -1; }, "eta must be a finite number >= 0, got -1"},
      {[](ReweightingOptions* o) { o->w_min = 0; }, "w_min must be in (0, 1], got 0"},
      {[](ReweightingOptions* o) { o->w_min = 1.5; }, "w_min must be in (0, 1], got 1.5"},
      {[](ReweightingOptions* o) { o->w_max = 0.5; }, "w_max must be a finite number >= 1, got 0.5"},
      {[](ReweightingOptions* o) { o->every_steps = 0; }, "every_steps must be >= 1, got 0"},
      {[](ReweightingOptions* o) { o->ema = 1; }, "ema must be in [0, 1), got 1"},
      {[](ReweightingOptions* o) { o->ema = -0.5; }, "ema must be in [0, 1), got -0.5"},
  };
  for (const Case& c : cases) {
    ReweightingOptions o;
    o.policy = ReweightingPolicy::kAdaptive;
    c.set(&o);
    absl::StatusOr<SampleReweighter> r = SampleReweighter::Create(o);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << c.message;
    EXPECT_EQ(r.status().message(), c.message);
  }
  for (double v : {nan, inf}) {
    ReweightingOptions o;
    o.beta = v;
    EXPECT_EQ(ValidateReweightingOptions(o).code(), absl::StatusCode::kInvalidArgument) << v;
    o = ReweightingOptions();
    o.eta = v;
    EXPECT_EQ(ValidateReweightingOptions(o).code(), absl::StatusCode::kInvalidArgument) << v;
    o = ReweightingOptions();
    o.w_max = v;
    EXPECT_EQ(ValidateReweightingOptions(o).code(), absl::StatusCode::kInvalidArgument) << v;
    o = ReweightingOptions();
    o.ema = v;
    EXPECT_EQ(ValidateReweightingOptions(o).code(), absl::StatusCode::kInvalidArgument) << v;
  }
}

TEST(ReweightingTest, NoneKeepsEveryWeightOne) {
  SampleReweighter r = Make(Policy(ReweightingPolicy::kNone));
  absl::StatusOr<BucketWeights> w = r.Update(Stats({10, 300, 5000, 0}, {0.9, 0.5, 0.1, 0}));
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(*w, (BucketWeights{1, 1, 1, 1}));
  EXPECT_EQ(r.weights(), (BucketWeights{1, 1, 1, 1}));
  EXPECT_EQ(r.updates(), 1);
}

TEST(ReweightingTest, EveryPolicyGivesOnesBeforeAnySample) {
  for (ReweightingPolicy p :
       {ReweightingPolicy::kNone, ReweightingPolicy::kInverseFrequency, ReweightingPolicy::kAdaptive}) {
    SampleReweighter r = Make(Policy(p));
    EXPECT_EQ(r.weights(), (BucketWeights{1, 1, 1, 1})) << ReweightingPolicyName(p);
    absl::StatusOr<BucketWeights> w = r.Update(BucketStats{});
    ASSERT_TRUE(w.ok()) << w.status();
    EXPECT_EQ(*w, (BucketWeights{1, 1, 1, 1})) << ReweightingPolicyName(p);
  }
}

// Shares 0.2 and 0.8, beta 0.5: w = share^-0.5 / (sqrt(0.2) + sqrt(0.8)), i.e. 1 / (0.2 + 0.4)
// and 1 / (0.4 + 0.8). Buckets without samples (mid, new) stay at 1.
TEST(ReweightingTest, InverseFrequencyWeighsBySquareRootOfShareAndLeavesEmptyBucketsAtOne) {
  SampleReweighter r = Make(Policy(ReweightingPolicy::kInverseFrequency));
  absl::StatusOr<BucketWeights> w = r.Update(Stats({100, 0, 400, 0}));
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_NEAR((*w)[kLow], 5.0 / 3.0, kTol);
  EXPECT_EQ((*w)[kMid], 1.0);
  EXPECT_NEAR((*w)[kHigh], 5.0 / 6.0, kTol);
  EXPECT_EQ((*w)[kNew], 1.0);
  EXPECT_NEAR(MeanWeightPerSample(r), 1.0, kTol);
}

// beta 1: w_b = 1 / (3 share_b) over three buckets, so every bucket weighs 1/3 in total.
TEST(ReweightingTest, InverseFrequencyWithBetaOneEqualisesTheBuckets) {
  ReweightingOptions o = Policy(ReweightingPolicy::kInverseFrequency);
  o.beta = 1;
  SampleReweighter r = Make(o);
  absl::StatusOr<BucketWeights> w = r.Update(Stats({100, 300, 600, 0}));
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_NEAR((*w)[kLow], 10.0 / 3.0, kTol);
  EXPECT_NEAR((*w)[kMid], 10.0 / 9.0, kTol);
  EXPECT_NEAR((*w)[kHigh], 5.0 / 9.0, kTol);
  EXPECT_EQ((*w)[kNew], 1.0);
}

TEST(ReweightingTest, InverseFrequencyUsesTheCumulativeCounts) {
  SampleReweighter r = Make(Policy(ReweightingPolicy::kInverseFrequency));
  ASSERT_TRUE(r.Update(Stats({100, 0, 400, 0})).ok());
  // 500 and 500 so far: equal shares, equal weights, whatever this interval alone says.
  absl::StatusOr<BucketWeights> w = r.Update(Stats({400, 0, 100, 0}));
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_NEAR((*w)[kLow], 1.0, kTol);
  EXPECT_NEAR((*w)[kHigh], 1.0, kTol);
  EXPECT_EQ(r.cumulative_count(), (std::array<int64_t, 4>{500, 0, 500, 0}));
  // An interval without samples changes nothing.
  const BucketWeights before = r.weights();
  ASSERT_TRUE(r.Update(BucketStats{}).ok());
  EXPECT_EQ(r.weights(), before);
}

// eta 1, equal shares. First update: L = 0.7 and 0.3 (first interval sets L_b), mean 0.5, so
// w = (e^0.2, e^-0.2) / cosh(0.2) = 2 / (1 + e^-+0.4). Second: intervals 0.3 and 0.7 move the
// running losses to 0.9 * 0.7 + 0.1 * 0.3 = 0.66 and 0.34, and w_low / w_high = e^0.4 * e^0.32.
TEST(ReweightingTest, AdaptiveMultipliesByExpOfTheRunningLossGap) {
  ReweightingOptions o = Policy(ReweightingPolicy::kAdaptive);
  o.eta = 1;
  SampleReweighter r = Make(o);
  absl::StatusOr<BucketWeights> w = r.Update(Stats({100, 0, 100, 0}, {0.7, 0, 0.3, 0}));
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_NEAR((*w)[kLow], 2 / (1 + std::exp(-0.4)), kTol);  // 1.19737...
  EXPECT_NEAR((*w)[kHigh], 2 / (1 + std::exp(0.4)), kTol);  // 0.80262...
  EXPECT_EQ((*w)[kMid], 1.0);
  EXPECT_EQ((*w)[kNew], 1.0);
  w = r.Update(Stats({100, 0, 100, 0}, {0.3, 0, 0.7, 0}));
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_NEAR(r.running_loss()[kLow], 0.66, kTol);
  EXPECT_NEAR(r.running_loss()[kHigh], 0.34, kTol);
  EXPECT_NEAR((*w)[kLow], 2 / (1 + std::exp(-0.72)), kTol);
  EXPECT_NEAR((*w)[kHigh], 2 / (1 + std::exp(0.72)), kTol);
  EXPECT_NEAR(MeanWeightPerSample(r), 1.0, kTol);
}

// eta 10, equal shares: unclipped w_high = 2 / (1 + e^4) = 0.036 < w_min, so high sits at 0.2
// and low takes the rest of the mean: (1 - 0.5 * 0.2) / 0.5 = 1.8.
TEST(ReweightingTest, AdaptiveClipsAtWMinAndStillHasMeanOne) {
  ReweightingOptions o = Policy(ReweightingPolicy::kAdaptive);
  o.eta = 10;
  SampleReweighter r = Make(o);
  absl::StatusOr<BucketWeights> w = r.Update(Stats({100, 0, 100, 0}, {0.7, 0, 0.3, 0}));
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_NEAR((*w)[kLow], 1.8, kTol);
  EXPECT_EQ((*w)[kHigh], 0.2);
  EXPECT_NEAR(MeanWeightPerSample(r), 1.0, kTol);
}

// Shares 0.01 and 0.99, eta 10: unclipped w_low = e^4 / (0.01 e^4 + 0.99) = 35.5 > w_max, so low
// sits at 5 and high = (1 - 0.01 * 5) / 0.99 = 95 / 99.
TEST(ReweightingTest, AdaptiveClipsAtWMaxAndStillHasMeanOne) {
  ReweightingOptions o = Policy(ReweightingPolicy::kAdaptive);
  o.eta = 10;
  SampleReweighter r = Make(o);
  absl::StatusOr<BucketWeights> w = r.Update(Stats({10, 0, 990, 0}, {0.7, 0, 0.3, 0}));
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ((*w)[kLow], 5.0);
  EXPECT_NEAR((*w)[kHigh], 95.0 / 99.0, kTol);
  EXPECT_NEAR(MeanWeightPerSample(r), 1.0, kTol);
}

TEST(ReweightingTest, AdaptiveWeightsStayClippedAndNormalisedOverManyUpdates) {
  ReweightingOptions o = Policy(ReweightingPolicy::kAdaptive);
  o.eta = 3;
  o.ema = 0.5;
  SampleReweighter r = Make(o);
  for (int i = 0; i < 50; ++i) {
    // Low is always the hardest bucket; mid and high alternate.
    absl::StatusOr<BucketWeights> w =
        r.Update(Stats({7 + i, 300, 2000 - i, 0}, {0.9, i % 2 ? 0.2 : 0.4, i % 2 ? 0.4 : 0.2, 0}));
    ASSERT_TRUE(w.ok()) << w.status();
    for (int b = 0; b < 3; ++b) {
      EXPECT_GE((*w)[b], o.w_min) << i << " " << b;
      EXPECT_LE((*w)[b], o.w_max) << i << " " << b;
    }
    EXPECT_EQ((*w)[kNew], 1.0);
    EXPECT_NEAR(MeanWeightPerSample(r), 1.0, kTol) << i;
  }
  EXPECT_EQ(r.weights()[kLow], 5.0);  // pinned at w_max by the persistent loss gap
}

TEST(ReweightingTest, NormalisationHoldsForEveryPolicyAndSkewedCounts) {
  for (ReweightingPolicy p : {ReweightingPolicy::kInverseFrequency, ReweightingPolicy::kAdaptive}) {
    for (double beta : {0.0, 0.25, 0.5, 1.0, 2.0}) {
      ReweightingOptions o = Policy(p);
      o.beta = beta;
      SampleReweighter r = Make(o);
      ASSERT_TRUE(r.Update(Stats({3, 170, 9000, 1}, {1.2, 0.6, 0.25, 2.0})).ok());
      ASSERT_TRUE(r.Update(Stats({0, 12, 800, 5}, {0, 0.5, 0.3, 1.5})).ok());
      EXPECT_NEAR(MeanWeightPerSample(r), 1.0, kTol) << ReweightingPolicyName(p) << " beta " << beta;
    }
  }
}

TEST(ReweightingTest, SameUpdatesGiveBitIdenticalWeights) {
  for (ReweightingPolicy p : {ReweightingPolicy::kInverseFrequency, ReweightingPolicy::kAdaptive}) {
    SampleReweighter a = Make(Policy(p)), b = Make(Policy(p));
    for (int i = 0; i < 20; ++i) {
      const BucketStats s = Stats({11 * i, 97, 1000 + 13 * i, i % 3}, {0.3 + 0.01 * i, 0.4, 0.2, 0.8});
      absl::StatusOr<BucketWeights> wa = a.Update(s), wb = b.Update(s);
      ASSERT_TRUE(wa.ok() && wb.ok());
      EXPECT_EQ(*wa, *wb) << ReweightingPolicyName(p) << " update " << i;
    }
  }
}

// A bucket absent from an interval keeps its running loss (no decay towards 0), and one never
// seen keeps weight 1 and stays out of mean L: with only low and high seen, the weights are those
// of the two-bucket case.
TEST(ReweightingTest, AdaptiveIgnoresBucketsWithoutSamples) {
  ReweightingOptions o = Policy(ReweightingPolicy::kAdaptive);
  o.eta = 1;
  SampleReweighter r = Make(o);
  ASSERT_TRUE(r.Update(Stats({100, 0, 100, 0}, {0.7, 0, 0.3, 0})).ok());
  absl::StatusOr<BucketWeights> w = r.Update(Stats({0, 0, 100, 0}, {0, 0, 0.3, 0}));
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_NEAR(r.running_loss()[kLow], 0.7, kTol);
  EXPECT_EQ(r.running_loss()[kMid], 0.0);
  EXPECT_EQ((*w)[kMid], 1.0);
  EXPECT_EQ((*w)[kNew], 1.0);
  // Gap 0.2 twice: w_low / w_high = e^0.8, shares 1/3 and 2/3.
  const double e = std::exp(0.8);
  EXPECT_NEAR((*w)[kLow], e / (e / 3 + 2.0 / 3), kTol);
  EXPECT_NEAR((*w)[kHigh], 1 / (e / 3 + 2.0 / 3), kTol);
}

TEST(ReweightingTest, BadStatisticsAreRejectedAndChangeNothing) {
  SampleReweighter r = Make(Policy(ReweightingPolicy::kAdaptive));
  BucketStats negative = Stats({10, 10, 10, 0}, {0.5, 0.5, 0.5, 0});
  negative.count[kMid] = -1;
  absl::StatusOr<BucketWeights> w = r.Update(negative);
  EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(w.status().message(), "reweighting: negative sample count -1 for bucket mid");
  BucketStats nan = Stats({10, 10, 10, 0}, {0.5, 0.5, 0.5, 0});
  nan.loss_sum[kHigh] = std::numeric_limits<double>::quiet_NaN();
  w = r.Update(nan);
  EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(w.status().message(), "reweighting: loss sum of bucket high must be finite and >= 0, got nan");
  EXPECT_EQ(r.updates(), 0);
  EXPECT_EQ(r.cumulative_count(), (std::array<int64_t, 4>{0, 0, 0, 0}));
  EXPECT_EQ(r.weights(), (BucketWeights{1, 1, 1, 1}));
}

TEST(ReweightingTest, FormatsWeightsWithBucketNames) {
  EXPECT_EQ(FormatBucketWeights({1.23456, 0.5, 2, 1}), "low 1.235 mid 0.500 high 2.000 new 1.000");
}

}  // namespace
}  // namespace choir::scheduler
