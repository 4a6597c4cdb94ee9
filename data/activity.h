// User-activity buckets (DESIGN.md section 6): decided from the training period only, never
// from evaluation labels.
//   - purchases in the `window_days` before the split, from the behaviour log when the dataset
//     has one (split "behaviors", type 2), else from conversions in the train split;
//   - low <= low_max_purchases < mid < high_min_purchases <= high;
//   - new: a user with no train rows and no behaviour before the split.
#ifndef CHOIR_DATA_ACTIVITY_H_
#define CHOIR_DATA_ACTIVITY_H_

#include <array>
#include <cstdint>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "core/error_budget.h"
#include "core/fs.h"
#include "core/proto/job.pb.h"
#include "data/proto/shard.pb.h"

namespace choir::data {

enum class Bucket : int { kLow = 0, kMid = 1, kHigh = 2, kNew = 3 };
inline constexpr int kNumBuckets = 4;
inline constexpr std::array<Bucket, kNumBuckets> kAllBuckets = {Bucket::kLow, Bucket::kMid,
                                                                 Bucket::kHigh, Bucket::kNew};
// "low", "mid", "high", "new".
const char* BucketName(Bucket bucket);

class ActivityIndex {
 public:
  ActivityIndex(ActivityBuckets config, std::string source)
      : config_(std::move(config)), source_(std::move(source)) {}

  // Records that `user` was present in the training period with `purchases` in the window.
  void AddKnownUser(int64_t user, int64_t purchases) { purchases_[user] += purchases; }

  Bucket Of(int64_t user) const;
  // Purchases in the window; -1 for a user unknown to the training period.
  int64_t Purchases(int64_t user) const;
  int64_t known_users() const { return purchases_.size(); }
  // Where the purchase counts came from ("behaviors" or "train conversions").
  const std::string& source() const { return source_; }
  const ActivityBuckets& config() const { return config_; }

 private:
  ActivityBuckets config_;
  std::string source_;
  absl::flat_hash_map<int64_t, int64_t> purchases_;
};

// Builds the index of the dataset in `dir`. Bad blocks count against `errors`.
absl::StatusOr<ActivityIndex> BuildActivityIndex(FileSystem* fs, const std::string& dir,
                                                 const DatasetManifest& manifest,
                                                 const ActivityBuckets& config,
                                                 ErrorCounter* errors);

}  // namespace choir::data

#endif  // CHOIR_DATA_ACTIVITY_H_
