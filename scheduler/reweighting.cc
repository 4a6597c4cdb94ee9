#include "scheduler/reweighting.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace choir::scheduler {
namespace {

constexpr int kB = data::kNumBuckets;

// Bound of the adaptive update's exponent: keeps v_b = w_b * exp(.) and the sums over the four
// buckets finite and normal for any finite losses a peer may report (w_b >= w_min > 0).
constexpr double kMaxExponent = 700;

absl::Status Bad(absl::string_view field, absl::string_view want, double got) {
  return absl::InvalidArgumentError(absl::StrCat(field, " must be ", want, ", got ", got));
}

// The weights clamp(c * v_b, lo, hi) of the buckets in `members` for the c > 0 with
// sum_b share_b * clamp(c * v_b, lo, hi) = 1. Requires lo <= 1 <= hi, v_b > 0 and the members'
// shares summing to 1, so that the sum runs from lo (small c) to hi (large c) and such a c
// exists. The sum is continuous, nondecreasing and linear between the breakpoints lo / v_b and
// hi / v_b; the solution lies between the last breakpoint below 1 and the first at or above.
void ClampAndNormalise(const std::array<bool, kB>& members, const std::array<double, kB>& share,
                       const std::array<double, kB>& v, double lo, double hi, BucketWeights* w) {
  auto sum_at = [&](double c, double* fixed, double* slope) {
    *fixed = *slope = 0;
    for (int b = 0; b < kB; ++b) {
      if (!members[b]) continue;
      const double x = c * v[b];
      if (x <= lo) {
        *fixed += share[b] * lo;
      } else if (x >= hi) {
        *fixed += share[b] * hi;
      } else {
        *slope += share[b] * v[b];
      }
    }
    return *fixed + c * *slope;
  };
  std::vector<double> breaks;
  for (int b = 0; b < kB; ++b) {
    if (!members[b]) continue;
    breaks.push_back(lo / v[b]);
    breaks.push_back(hi / v[b]);
  }
  std::sort(breaks.begin(), breaks.end());
  double fixed = 0, slope = 0, c = breaks.back();
  double below = 0;  // the last breakpoint where the sum is below 1 (0: none)
  for (double br : breaks) {
    if (sum_at(br, &fixed, &slope) >= 1) {
      c = br;
      break;
    }
    below = br;
  }
  if (below > 0) {
    // Linear on (below, c): classify the buckets at the midpoint and solve fixed + c * slope = 1.
    sum_at(0.5 * (below + c), &fixed, &slope);
    if (slope > 0) c = (1 - fixed) / slope;
  }
  for (int b = 0; b < kB; ++b) {
    if (members[b]) (*w)[b] = std::clamp(c * v[b], lo, hi);
  }
}

}  // namespace

const char* ReweightingPolicyName(ReweightingPolicy policy) {
  switch (policy) {
    case ReweightingPolicy::kNone:
      return "none";
    case ReweightingPolicy::kInverseFrequency:
      return "inverse_frequency";
    case ReweightingPolicy::kAdaptive:
      return "adaptive";
  }
  return "unknown";
}

absl::StatusOr<ReweightingPolicy> ParseReweightingPolicy(absl::string_view name) {
  for (ReweightingPolicy p :
       {ReweightingPolicy::kNone, ReweightingPolicy::kInverseFrequency, ReweightingPolicy::kAdaptive}) {
    if (name == ReweightingPolicyName(p)) return p;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("policy must be one of none, inverse_frequency, adaptive, got '", name, "'"));
}

absl::Status ValidateReweightingOptions(const ReweightingOptions& o) {
  if (!(o.beta >= 0) || !std::isfinite(o.beta)) return Bad("beta", "a finite number >= 0", o.beta);
  if (!(o.eta >= 0) || !std::isfinite(o.eta)) return Bad("eta", "a finite number >= 0", o.eta);
  if (!(o.w_min > 0) || !(o.w_min <= 1)) return Bad("w_min", "in (0, 1]", o.w_min);
  if (!(o.w_max >= 1) || !std::isfinite(o.w_max)) return Bad("w_max", "a finite number >= 1", o.w_max);
  if (o.every_steps < 1) {
    return absl::InvalidArgumentError(absl::StrCat("every_steps must be >= 1, got ", o.every_steps));
  }
  if (!(o.ema >= 0) || !(o.ema < 1)) return Bad("ema", "in [0, 1)", o.ema);
  return absl::OkStatus();
}

absl::StatusOr<SampleReweighter> SampleReweighter::Create(const ReweightingOptions& options) {
  if (absl::Status st = ValidateReweightingOptions(options); !st.ok()) return st;
  return SampleReweighter(options);
}

SampleReweighter::SampleReweighter(const ReweightingOptions& options) : options_(options) {
  weights_.fill(1.0);
}

absl::StatusOr<BucketWeights> SampleReweighter::Update(const BucketStats& since_last) {
  for (int b = 0; b < kB; ++b) {
    const char* name = data::BucketName(static_cast<data::Bucket>(b));
    if (since_last.count[b] < 0) {
      return absl::InvalidArgumentError(absl::StrCat("reweighting: negative sample count ",
                                                     since_last.count[b], " for bucket ", name));
    }
    const double loss = since_last.loss_sum[b];
    if (!(loss >= 0) || !std::isfinite(loss)) {
      return absl::InvalidArgumentError(
          absl::StrCat("reweighting: loss sum of bucket ", name, " must be finite and >= 0, got ", loss));
    }
  }
  ++updates_;
  int64_t total = 0;
  for (int b = 0; b < kB; ++b) {
    cumulative_[b] += since_last.count[b];
    total += cumulative_[b];
    if (since_last.count[b] == 0) continue;
    const double mean = since_last.loss_sum[b] / since_last.count[b];
    running_loss_[b] = has_loss_[b] ? options_.ema * running_loss_[b] + (1 - options_.ema) * mean : mean;
    has_loss_[b] = true;
  }
  if (options_.policy == ReweightingPolicy::kNone || total == 0) return weights_;

  std::array<bool, kB> members{};
  std::array<double, kB> share{};
  for (int b = 0; b < kB; ++b) {
    members[b] = cumulative_[b] > 0;
    share[b] = static_cast<double>(cumulative_[b]) / static_cast<double>(total);
  }
  if (options_.policy == ReweightingPolicy::kInverseFrequency) {
    double norm = 0;
    for (int b = 0; b < kB; ++b) {
      if (members[b]) norm += std::pow(share[b], 1 - options_.beta);
    }
    for (int b = 0; b < kB; ++b) {
      if (members[b]) weights_[b] = std::pow(share[b], -options_.beta) / norm;
    }
    return weights_;
  }

  // adaptive. Members are exactly the buckets with a running loss (both: a sample seen).
  double mean_loss = 0;
  int n = 0;
  for (int b = 0; b < kB; ++b) {
    if (!members[b]) continue;
    mean_loss += running_loss_[b];
    ++n;
  }
  mean_loss /= n;
  std::array<double, kB> v{};
  for (int b = 0; b < kB; ++b) {
    if (!members[b]) continue;
    const double x = std::clamp(options_.eta * (running_loss_[b] - mean_loss), -kMaxExponent, kMaxExponent);
    v[b] = weights_[b] * std::exp(x);
  }
  ClampAndNormalise(members, share, v, options_.w_min, options_.w_max, &weights_);
  return weights_;
}

std::string FormatBucketWeights(const BucketWeights& weights) {
  std::vector<std::string> parts;
  for (data::Bucket b : data::kAllBuckets) {
    parts.push_back(absl::StrFormat("%s %.3f", data::BucketName(b), weights[static_cast<int>(b)]));
  }
  return absl::StrJoin(parts, " ");
}

}  // namespace choir::scheduler
