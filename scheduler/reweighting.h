// Sample-reweighting policies by activity bucket (DESIGN.md 1.5): the scheduler's policy
// object. Every K steps the workers' per-bucket statistics (sample count and summed unweighted
// loss since the last update) go in and one weight per bucket comes out; each sample's loss is
// then multiplied by its bucket's weight. Pure and deterministic: the same options and the same
// sequence of updates give bit-identical weights, with no clock, randomness or I/O. Not
// thread-safe (the scheduler, or the local trainer, owns one and calls it from one thread).
#ifndef CHOIR_SCHEDULER_REWEIGHTING_H_
#define CHOIR_SCHEDULER_REWEIGHTING_H_

#include <array>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "data/activity.h"

namespace choir::scheduler {

enum class ReweightingPolicy { kNone, kInverseFrequency, kAdaptive };

// "none", "inverse_frequency", "adaptive".
const char* ReweightingPolicyName(ReweightingPolicy policy);
// The inverse of ReweightingPolicyName; INVALID_ARGUMENT naming the choices otherwise.
absl::StatusOr<ReweightingPolicy> ParseReweightingPolicy(absl::string_view name);

struct ReweightingOptions {
  // Which policy. Default none: every weight is 1 whatever the statistics.
  ReweightingPolicy policy = ReweightingPolicy::kNone;
  // inverse_frequency: w_b proportional to share_b^-beta; 0 gives all 1, 1 makes every bucket
  // weigh the same in total, larger values over-weight rare buckets further. >= 0.
  double beta = 0.5;
  // adaptive: step size of w_b <- w_b * exp(eta * (L_b - mean L)). Larger reacts faster to a
  // loss gap and oscillates more. >= 0 (0 keeps every weight 1).
  double eta = 0.1;
  // adaptive: every weight stays in [w_min, w_max]; 0 < w_min <= 1 <= w_max (so that all 1 is
  // always allowed). Tighter bounds limit the variance a rare, hard bucket adds.
  double w_min = 0.2;
  double w_max = 5.0;
  // Steps between updates (the scheduler's broadcast interval K): the caller's schedule, kept
  // here so one struct describes the policy. Shorter follows the losses more closely and
  // costs one gather and broadcast per interval. >= 1.
  int64_t every_steps = 100;
  // adaptive: decay of the running per-bucket mean loss,
  // L_b <- ema * L_b + (1 - ema) * (loss sum / count since the last update); the first
  // interval with samples sets L_b directly. In [0, 1); 0 uses the last interval alone.
  double ema = 0.9;
};

// OK, or INVALID_ARGUMENT whose message starts with the bad field's name ("beta must be ...").
absl::Status ValidateReweightingOptions(const ReweightingOptions& options);

using BucketWeights = std::array<double, data::kNumBuckets>;

// What the workers gathered since the last update, indexed by data::Bucket.
struct BucketStats {
  std::array<int64_t, data::kNumBuckets> count{};   // samples
  std::array<double, data::kNumBuckets> loss_sum{};  // sum of their unweighted losses
};

class SampleReweighter {
 public:
  // INVALID_ARGUMENT when ValidateReweightingOptions rejects `options`.
  static absl::StatusOr<SampleReweighter> Create(const ReweightingOptions& options);

  // Folds `since_last` into the cumulative counts (and, for adaptive, the running losses) and
  // returns the new weights, also kept as weights(). INVALID_ARGUMENT, changing nothing, when a
  // count is negative or a loss sum negative or not finite (the statistics come from peers).
  //
  // share_b = cumulative count of b / cumulative count of all buckets. A bucket that has never
  // had a sample keeps weight 1 and takes no part in normalisation or in mean L; before any
  // sample every weight is 1. The other buckets' weights satisfy sum_b share_b w_b = 1 (mean
  // weight 1 per sample seen so far):
  //   none:              all 1.
  //   inverse_frequency: w_b = share_b^-beta / sum_c share_c^(1-beta); not clipped.
  //   adaptive:          v_b = w_b * exp(eta * (L_b - mean L)) with mean L the unweighted mean
  //                      of the buckets' running losses; w_b = clamp(c * v_b, w_min, w_max)
  //                      with the one c > 0 that makes the mean 1, so that the weights are
  //                      both clipped and normalised. A bucket without samples in this
  //                      interval keeps its running loss.
  absl::StatusOr<BucketWeights> Update(const BucketStats& since_last);

  // The weights to apply now (all 1 before the first update).
  const BucketWeights& weights() const { return weights_; }
  // The running per-bucket mean losses of adaptive (0 for a bucket without samples; other
  // policies keep them too, for logs).
  const BucketWeights& running_loss() const { return running_loss_; }
  const std::array<int64_t, data::kNumBuckets>& cumulative_count() const { return cumulative_; }
  int64_t updates() const { return updates_; }

  // Everything Update reads besides its argument: what a checkpoint keeps.
  struct State {
    BucketWeights weights{};
    BucketWeights running_loss{};
    std::array<bool, data::kNumBuckets> has_loss{};
    std::array<int64_t, data::kNumBuckets> cumulative{};
    int64_t updates = 0;
  };
  State state() const { return {weights_, running_loss_, has_loss_, cumulative_, updates_}; }
  void Restore(const State& state) {
    weights_ = state.weights;
    running_loss_ = state.running_loss;
    has_loss_ = state.has_loss;
    cumulative_ = state.cumulative;
    updates_ = state.updates;
  }
  const ReweightingOptions& options() const { return options_; }

 private:
  explicit SampleReweighter(const ReweightingOptions& options);

  ReweightingOptions options_;
  BucketWeights weights_;
  BucketWeights running_loss_{};
  std::array<bool, data::kNumBuckets> has_loss_{};
  std::array<int64_t, data::kNumBuckets> cumulative_{};
  int64_t updates_ = 0;
};

// "low 1.234 mid 0.987 high 0.876 new 1.000": the weights with three decimals, for logs.
std::string FormatBucketWeights(const BucketWeights& weights);

}  // namespace choir::scheduler

#endif  // CHOIR_SCHEDULER_REWEIGHTING_H_
