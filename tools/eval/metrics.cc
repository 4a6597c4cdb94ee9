#include "tools/eval/metrics.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "absl/strings/str_cat.h"

namespace choir::eval {
namespace {

using uint128 = unsigned __int128;

bool IsPositive(const Prediction& p) { return p.label == 1.0f; }

absl::Status Validate(absl::Span<const Prediction> predictions) {
  for (size_t i = 0; i < predictions.size(); ++i) {
    const Prediction& p = predictions[i];
    if (p.label != 0.0f && p.label != 1.0f) {
      return absl::InvalidArgumentError(absl::StrCat("prediction ", i, " (user ", p.user_id,
                                                     "): label ", p.label, " is not 0 or 1"));
    }
    if (!(p.score >= 0.0 && p.score <= 1.0)) {  // also rejects NaN
      return absl::InvalidArgumentError(absl::StrCat("prediction ", i, " (user ", p.user_id,
                                                     "): score ", p.score,
                                                     " is not a probability in [0, 1]"));
    }
    const int b = static_cast<int>(p.bucket);
    if (b < 0 || b >= data::kNumBuckets) {
      return absl::InvalidArgumentError(
          absl::StrCat("prediction ", i, " (user ", p.user_id, "): bad bucket ", b));
    }
  }
  return absl::OkStatus();
}

// Result of counting pairs over a run of samples sorted by score.
struct PairCount {
  uint128 twice_wins = 0;  // 2 * (#(pos, neg) with pos > neg) + #(pos, neg) tied
  int64_t positives = 0;
  int64_t negatives = 0;

  double Auc() const {
    if (positives == 0 || negatives == 0) return std::numeric_limits<double>::quiet_NaN();
    const uint128 pairs = static_cast<uint128>(positives) * static_cast<uint128>(negatives);
    return static_cast<double>(static_cast<long double>(twice_wins) /
                               (2.0L * static_cast<long double>(pairs)));
  }
};

// Counts Mann-Whitney wins over `order[begin, end)`, which must be sorted by ascending score.
// Each group of equal scores with p positives and q negatives adds 2 * p * (negatives below) +
// p * q (the ties count 1/2).
PairCount CountPairs(absl::Span<const Prediction> predictions, const std::vector<uint32_t>& order,
                     size_t begin, size_t end) {
  PairCount count;
  size_t i = begin;
  while (i < end) {
    const double score = predictions[order[i]].score;
    int64_t p = 0;
    int64_t q = 0;
    for (; i < end && predictions[order[i]].score == score; ++i) {
      if (IsPositive(predictions[order[i]])) {
        ++p;
      } else {
        ++q;
      }
    }
    count.twice_wins += 2 * static_cast<uint128>(p) * static_cast<uint128>(count.negatives) +
                        static_cast<uint128>(p) * static_cast<uint128>(q);
    count.positives += p;
    count.negatives += q;
  }
  return count;
}

Metrics ComputeValid(absl::Span<const Prediction> predictions) {
  Metrics m;
  m.samples = static_cast<int64_t>(predictions.size());
  if (predictions.empty()) return m;

  // logloss and calibration, in input order.
  long double loss = 0;
  long double score_sum = 0;
  for (const Prediction& p : predictions) {
    const double clipped = std::clamp(p.score, kLoglossEps, 1.0 - kLoglossEps);
    loss -= IsPositive(p) ? std::log(static_cast<long double>(clipped))
                          : std::log1p(-static_cast<long double>(clipped));
    score_sum += p.score;
    if (IsPositive(p)) ++m.positives;
  }
  m.logloss = static_cast<double>(loss / m.samples);
  if (m.positives > 0) m.calibration = static_cast<double>(score_sum / m.positives);

  // AUC: one sort by score. Indices fit 32 bits for any evaluation set we hold in memory.
  std::vector<uint32_t> order(predictions.size());
  std::iota(order.begin(), order.end(), 0u);
  std::sort(order.begin(), order.end(),
            [&](uint32_t a, uint32_t b) { return predictions[a].score < predictions[b].score; });
  m.auc = CountPairs(predictions, order, 0, order.size()).Auc();

  // GAUC: sort by (user, score) and count pairs within each user.
  std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) {
    const Prediction& x = predictions[a];
    const Prediction& y = predictions[b];
    if (x.user_id != y.user_id) return x.user_id < y.user_id;
    return x.score < y.score;
  });
  long double weighted = 0;
  size_t begin = 0;
  while (begin < order.size()) {
    const int64_t user = predictions[order[begin]].user_id;
    size_t end = begin;
    while (end < order.size() && predictions[order[end]].user_id == user) ++end;
    ++m.users;
    const PairCount count = CountPairs(predictions, order, begin, end);
    if (count.positives > 0 && count.negatives > 0) {
      const int64_t w = static_cast<int64_t>(end - begin);
      ++m.gauc_users;
      m.gauc_samples += w;
      weighted += static_cast<long double>(w) * count.Auc();
    }
    begin = end;
  }
  if (m.gauc_samples > 0) m.gauc = static_cast<double>(weighted / m.gauc_samples);
  return m;
}

}  // namespace

absl::StatusOr<Metrics> ComputeMetrics(absl::Span<const Prediction> predictions) {
  if (predictions.size() > std::numeric_limits<uint32_t>::max()) {
    return absl::InvalidArgumentError(
        absl::StrCat("too many predictions to evaluate: ", predictions.size()));
  }
  if (absl::Status s = Validate(predictions); !s.ok()) return s;
  return ComputeValid(predictions);
}

absl::StatusOr<EvalReport> Evaluate(absl::Span<const Prediction> predictions) {
  EvalReport report;
  absl::StatusOr<Metrics> overall = ComputeMetrics(predictions);
  if (!overall.ok()) return overall.status();
  report.overall = *overall;
  std::array<std::vector<Prediction>, data::kNumBuckets> split;
  for (const Prediction& p : predictions) split[static_cast<int>(p.bucket)].push_back(p);
  for (int b = 0; b < data::kNumBuckets; ++b) report.buckets[b] = ComputeValid(split[b]);
  return report;
}

}  // namespace choir::eval
