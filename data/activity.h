// User-activity buckets (DESIGN.md section 6) and the activity-gate features (DESIGN.md 1.3):
// decided from the training period only, never from evaluation labels.
//   - purchases in the `window_days` before the split, from the behaviour log when the dataset
//     has one (split "behaviors", type 2), else from conversions in the train split;
//   - clicks likewise (behaviour type 1, else clicked rows of the train split);
//   - active days: distinct UTC days (floor(timestamp / 86400)) in the window with any
//     behaviour, else with any train row (0 when the train split has no timestamp field);
//   - low <= low_max_purchases < mid < high_min_purchases <= high;
//   - new: a user with no train rows and no behaviour before the split.
#ifndef CHOIR_DATA_ACTIVITY_H_
#define CHOIR_DATA_ACTIVITY_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

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
  void AddKnownUser(int64_t user, int64_t purchases) { users_[user].purchases += purchases; }

  Bucket Of(int64_t user) const;
  // Purchases in the window; -1 for a user unknown to the training period.
  int64_t Purchases(int64_t user) const;
  // Clicks in the window (behaviours of type 1 when the dataset has a behaviour log, else
  // clicked rows of the train split in the window, like its conversions; every one when the
  // dataset has no split time, as converted ones); 0 for a user unknown to the training period.
  int64_t Clicks(int64_t user) const;
  // Distinct days (UTC, floor(timestamp / 86400)) in the window with any behaviour (or, without
  // a log, any train row); 0 for a user unknown to the training period.
  int64_t ActiveDays(int64_t user) const;

  // The activity-gate features of DESIGN.md 1.3, in this order: log1p(purchases),
  // log1p(clicks), log1p(active days), low-activity flag (1 when Of(user) is low or new, else
  // 0). An unknown user counts 0 purchases, clicks and days: {0, 0, 0, 1}.
  static constexpr int kNumActivityFeatures = 4;
  // Their names in job files (ChoirRecConfig.activity_features), in this order.
  static constexpr const char* kActivityFeatureNames[kNumActivityFeatures] = {"purchases", "clicks", "active_days",
                                                                             "low"};
  void ActivityFeatures(int64_t user, float out[kNumActivityFeatures]) const;

  int64_t known_users() const { return users_.size(); }

  // What the index knows of one user: the serving bundle carries it (worker/bundle.h).
  struct UserCounts {
    int64_t user = 0;
    int64_t purchases = 0;
    int64_t clicks = 0;
    int32_t active_days = 0;
  };
  // Every known user, by increasing id.
  std::vector<UserCounts> KnownUsers() const;
  // Records `counts` for its user (replacing what was known).
  void SetKnownUser(const UserCounts& counts);
  // Where the purchase counts came from ("behaviors" or "train conversions").
  const std::string& source() const { return source_; }
  const ActivityBuckets& config() const { return config_; }

 private:
  friend absl::StatusOr<ActivityIndex> BuildActivityIndex(FileSystem*, const std::string&,
                                                          const DatasetManifest&,
                                                          const ActivityBuckets&, ErrorCounter*);
  struct UserActivity {
    int64_t purchases = 0;
    int64_t clicks = 0;
    int32_t active_days = 0;
    // While building: the latest active day seen, relative to the window's first day (-1:
    // none yet); days are counted in one pass while each user's rows come in time order.
    int32_t last_day = -1;
  };

  ActivityBuckets config_;
  std::string source_;
  absl::flat_hash_map<int64_t, UserActivity> users_;
};

// Builds the index of the dataset in `dir`. Bad blocks count against `errors`. Memory: one
// entry per known user. Active days take one pass while each user's rows come in time order
// (the generator's log does); otherwise the day source is read a second time with a temporary
// set of (user, day) pairs, freed before returning.
absl::StatusOr<ActivityIndex> BuildActivityIndex(FileSystem* fs, const std::string& dir,
                                                 const DatasetManifest& manifest,
                                                 const ActivityBuckets& config,
                                                 ErrorCounter* errors);

}  // namespace choir::data

#endif  // CHOIR_DATA_ACTIVITY_H_
