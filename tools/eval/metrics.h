// Evaluation metrics, exactly as DESIGN.md section 6 defines them.
//
//   - AUC: Mann-Whitney U / (positives * negatives); a positive and a negative with equal scores
//     count 1/2. Computed by sorting, O(n log n), with exact integer counting of pairs.
//   - GAUC: over users with at least one positive and one negative, the AUC of each user weighted
//     by w_u = that user's number of samples: sum_u w_u AUC_u / sum_u w_u. Users with one class
//     only are excluded (counted in `users` but not in `gauc_users`).
//   - logloss: mean of -(y log p + (1-y) log(1-p)) with p clipped to [kLoglossEps, 1-kLoglossEps].
//   - calibration: mean score / mean label (= sum of scores / number of positives); 1 is perfect,
//     > 1 over-predicts.
// A metric that is undefined on its input is NaN (and `null` in eval.json): AUC with one class,
// GAUC with no user having both classes, calibration with no positives, everything on zero
// samples.
//
// All functions are deterministic for a given input order: sums use long double and pair counts
// unsigned 128-bit integers. GAUC needs all samples of a user in one place: evaluate the
// predictions gathered from every worker, never average per-worker numbers.
#ifndef CHOIR_TOOLS_EVAL_METRICS_H_
#define CHOIR_TOOLS_EVAL_METRICS_H_

#include <array>
#include <cstdint>
#include <limits>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "data/activity.h"

namespace choir::eval {

// Probabilities are clipped to [kLoglossEps, 1 - kLoglossEps] in logloss (as scikit-learn did).
inline constexpr double kLoglossEps = 1e-15;

// One evaluated sample.
struct Prediction {
  int64_t user_id = 0;
  float label = 0;                           // 0 or 1 (conversion)
  double score = 0;                          // predicted probability, in [0, 1]
  data::Bucket bucket = data::Bucket::kNew;  // the user's activity bucket (training period)
};

// Metrics of one slice (overall or one bucket). Doubles are NaN where undefined (see top).
struct Metrics {
  double auc = std::numeric_limits<double>::quiet_NaN();
  double gauc = std::numeric_limits<double>::quiet_NaN();
  double logloss = std::numeric_limits<double>::quiet_NaN();
  double calibration = std::numeric_limits<double>::quiet_NaN();
  int64_t samples = 0;       // samples in the slice
  int64_t positives = 0;     // samples with label 1
  int64_t users = 0;         // distinct users in the slice
  int64_t gauc_users = 0;    // users with both classes (included in GAUC)
  int64_t gauc_samples = 0;  // samples of those users (= sum of w_u)
  // Excluded from GAUC: users - gauc_users users, samples - gauc_samples samples.
};

// Overall metrics and one Metrics per activity bucket, indexed by static_cast<int>(Bucket).
// A bucket without samples has samples == 0 and NaN metrics.
struct EvalReport {
  Metrics overall;
  std::array<Metrics, data::kNumBuckets> buckets;

  const Metrics& bucket(data::Bucket b) const { return buckets[static_cast<int>(b)]; }
  Metrics& bucket(data::Bucket b) { return buckets[static_cast<int>(b)]; }
};

// Metrics of all of `predictions`, ignoring their buckets. INVALID_ARGUMENT, naming the index and
// user of the first offender, when a label is not 0 or 1 or a score is not a finite number in
// [0, 1] (a diverged model's NaN scores must not turn into a plausible AUC).
absl::StatusOr<Metrics> ComputeMetrics(absl::Span<const Prediction> predictions);

// Overall metrics plus the metrics of each bucket's predictions. Errors as ComputeMetrics.
absl::StatusOr<EvalReport> Evaluate(absl::Span<const Prediction> predictions);

}  // namespace choir::eval

#endif  // CHOIR_TOOLS_EVAL_METRICS_H_
