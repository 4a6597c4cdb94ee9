// Group priors (`choir groups priors`): per semantic group at each level, computed from the
// training period only, the tables the trainer (and later the servers) load:
//   - attribute completion: majority vote of gender, age_bucket, city_tier over the group's
//     members in the users split, ignoring 0 (missing); ties go to the smallest value; a
//     group whose members are all missing gets 0;
//   - statistics: the members' impressions, clicks and conversions in the train split, with
//     CTR = clicks / impressions and CVR = conversions / clicks smoothed toward the global
//     rates of the whole train split: (events + smoothing * global) / (trials + smoothing);
//   - the behaviour sequence: purchases (behaviors split, type 2, timestamp < split_time) of
//     the members; the top_categories categories by purchase count (ties: smaller id), for
//     each its items_per_category most purchased items (ties: smaller id), the selected items
//     ordered by the group's mean purchase time of each (oldest first; ties: smaller id).
// The group key at level l is the code prefix c1..cl, written "c1", "c1-c2", "c1-c2-c3".
//
// Output, each file written atomically:
//   OUT/level-<l>.tsv   header "group members gender age_bucket city_tier impressions clicks
//                       conversions ctr cvr seq_items seq_categories" (tab-separated; the
//                       sequences '|'-joined, empty when the group has no purchase), one row
//                       per non-empty group, ordered by code prefix
//   OUT/priors.json     levels, options, global rates, counts
// Users of groups.tsv absent from the dataset's users split are counted, not an error.
#ifndef CHOIR_DATA_GROUPS_PRIORS_H_
#define CHOIR_DATA_GROUPS_PRIORS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/fs.h"

namespace choir::groups {

struct PriorsOptions {
  // Categories in a group's behaviour sequence (>= 0).
  int top_categories = 5;
  // Head items per selected category (>= 0).
  int items_per_category = 2;
  // Prior strength (>= 0): smoothed rate = (events + smoothing * global) / (trials + smoothing).
  double smoothing = 20;
};

struct PriorsReport {
  int levels = 0;
  int64_t users = 0;          // users in groups.tsv
  int64_t users_absent = 0;   // of those, not in the dataset's users split
  int64_t users_without_train = 0;  // of those, without a train row
  int64_t train_rows = 0, train_clicks = 0, train_conversions = 0;  // whole train split
  double global_ctr = 0, global_cvr = 0;
  int64_t purchases = 0;      // training-period purchases of grouped users that were used
  bool has_behaviors = false; // false: the dataset has no behaviors split, sequences are empty
  std::vector<int64_t> groups_per_level;  // rows written per level
  std::vector<std::string> files;         // files written
};

// Reads the dataset in `data_dir` and `groups_tsv`, writes the tables into `out_dir`
// (created when missing). INVALID_ARGUMENT for bad options; errors about inputs name the file.
absl::StatusOr<PriorsReport> WriteGroupPriors(FileSystem* fs, const std::string& data_dir,
                                              const std::string& groups_tsv,
                                              const std::string& out_dir,
                                              const PriorsOptions& options);

}  // namespace choir::groups

#endif  // CHOIR_DATA_GROUPS_PRIORS_H_
