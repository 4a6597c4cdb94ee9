// The semantic-group tables the ChoirRec trainer reads (DESIGN.md 1.2): per user, the ids of
// its groups at every level, the attributes and statistics of its groups and the group
// behaviour sequence, from the files of `choir groups build` (groups.tsv) and `choir groups
// priors` (level-<l>.tsv, priors.json); formats in docs/groups.md.
//
// Memory: one GroupRow per distinct full code tuple, shared by its members; a user costs one
// hash-map slot (user id -> row). Sequences are stored once per group at sequence_level.
#ifndef CHOIR_WORKER_GROUP_FEATURES_H_
#define CHOIR_WORKER_GROUP_FEATURES_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/fs.h"

namespace choir::worker {

// One user's rows of the train split (what the priors counted for the user).
struct OwnCounts {
  int64_t impressions = 0, clicks = 0, conversions = 0;
};

// Users given groups after groups.tsv was written: new users whose profile embeddings were
// coded through the codebooks of `choir groups build` (the Predictor does this).
struct AssignedUsers {
  std::vector<int64_t> ids;
  std::vector<int32_t> codes;  // [ids.size(), levels] row-major, as groups::AssignRqCodes
};

struct GroupFeatureOptions {
  // groups.tsv of `choir groups build` / `choir groups assign`. Required.
  std::string groups_tsv;
  // The output folder of `choir groups priors` for that groups.tsv. Required.
  std::string priors_dir;
  // Level (1-based) whose majority attributes fill in the user's (attribute completion).
  // Clamped to [1, levels]. Default 2: the coarsest level is too broad to say much about a
  // user, the finest often too small to have a majority.
  int attribute_level = 2;
  // Level (1-based) whose behaviour sequence the model attends over. Clamped to [1, levels].
  // Default 1: the largest groups have the most purchases to draw the sequence from.
  int sequence_level = 1;
  // Each user's own train rows. When given, UserStats leaves them out of the user's groups
  // (leave-one-out target statistics), so that no sample's features carry its own label: with
  // small groups, the group CVR including the user is mostly the user's own training labels,
  // which a model memorises (train loss far below the test loss). Not owned; read in Load.
  const absl::flat_hash_map<int64_t, OwnCounts>* own_counts = nullptr;
  // Users to add to those of groups.tsv (not owned; may be null). A user of groups.tsv keeps
  // its groups there. An assigned user's code prefix without a group at some level (no
  // training user had it) leaves that level and the finer ones without a group (ids 0,
  // global rates), and attributes or the sequence of such a level empty. Assigned users do not
  // enter the standardisation of UserStats. INVALID_ARGUMENT when codes.size() is not
  // ids.size() * levels.
  const AssignedUsers* assigned = nullptr;
};

// What one user's groups contribute to a sample.
struct GroupRow {
  // Per level (0-based index l), the id of the user's group among that level's groups:
  // 1 + the group's row index in level-<l+1>.tsv (rows sorted by code prefix), so ids are
  // dense in 1..num_groups(l); 0: the user has no group (unknown user).
  std::vector<int64_t> ids;
  // gender, age_bucket, city_tier: the majority of the group at attribute_level (0: missing
  // in every member, or no group).
  std::array<int64_t, 3> attributes{};
  // Per level l, at [4 l, 4 l + 4): log1p(impressions), log1p(clicks), ctr, cvr of the group
  // (rates smoothed toward the global ones, as written by the priors); for no group:
  // 0, 0, global ctr, global cvr. These include every member's train rows; what the trainer
  // feeds the model is UserStats (leave-one-out, standardised).
  std::vector<float> stats;
  // The group behaviour sequence at sequence_level, oldest first as in the file (the reverse
  // of the per-user hist_* sequences, which are most recent first); aligned; empty when the
  // group bought nothing or the user has no group. Point into the GroupFeatures that returned
  // the row and live as long as it.
  absl::Span<const int64_t> seq_items;
  absl::Span<const int64_t> seq_categories;
};

// Immutable after Load; safe to read from any number of threads.
class GroupFeatures {
 public:
  // Reads and checks groups.tsv and every file of the priors folder:
  //   - DATA_LOSS naming file:line for a file that does not parse (header, column count, a
  //     non-numeric or negative field, a malformed code prefix, a rate that is not finite,
  //     seq_items and seq_categories of different lengths, rows not strictly sorted by
  //     prefix); priors.json without integer "levels" or numeric "global" ctr and cvr;
  //   - INVALID_ARGUMENT for files that disagree: levels of groups.tsv and priors.json, a user
  //     twice in groups.tsv, a prefix of groups.tsv (named with its line) with no row in the
  //     level file; empty option paths;
  //   - the file system's error (NOT_FOUND, ...) for a missing file, naming it.
  // Level rows for groups without members in groups.tsv are accepted (ids stay dense over the
  // file), and `members` is not compared with groups.tsv (`groups assign` may add users).
  static absl::StatusOr<std::unique_ptr<GroupFeatures>> Load(FileSystem* fs,
                                                             const GroupFeatureOptions& options);

  GroupFeatures(const GroupFeatures&) = delete;
  GroupFeatures& operator=(const GroupFeatures&) = delete;

  // Code levels (>= 1).
  int levels() const { return static_cast<int>(num_groups_.size()); }
  // Groups at 0-based `level` in [0, levels()) (rows of level-<level+1>.tsv); ids there are
  // 1..num_groups.
  int64_t num_groups(int level) const { return num_groups_[level]; }
  int num_stats() const { return 4 * levels(); }
  // The clamped 1-based levels in use.
  int attribute_level() const { return attribute_level_; }
  int sequence_level() const { return sequence_level_; }

  // The user's row; a user absent from groups.tsv gets the no-group row (ids 0, attributes 0,
  // global-rate stats, empty sequences). The reference lives as long as this object.
  const GroupRow& Of(int64_t user_id) const;
  // Users in groups.tsv.
  int64_t users() const { return static_cast<int64_t>(user_row_.size()); }
  bool Contains(int64_t user_id) const { return user_row_.contains(user_id); }
  // Distinct full code tuples (rows shared by users).
  int64_t distinct_rows() const { return static_cast<int64_t>(rows_.size()); }
  // The global rates of the train split, from priors.json.
  double global_ctr() const { return global_ctr_; }
  double global_cvr() const { return global_cvr_; }
  // The group statistics the model reads, num_stats() floats into `out`: per level
  // log1p(impressions), log1p(clicks), CTR and CVR of the user's group without the user's own
  // train rows (options.own_counts), smoothed toward the global rates with the priors'
  // smoothing, for a user without a group 0, 0, global CTR, global CVR; then each column
  // standardised over the users of groups.tsv: (raw - stats_mean()[c]) * stats_scale()[c]
  // (scale 1 / std, or 1 for a constant column).
  void UserStats(int64_t user_id, float* out) const;
  // UserStats before standardisation.
  void RawUserStats(int64_t user_id, float* out) const;
  const std::vector<float>& stats_mean() const { return stats_mean_; }
  const std::vector<float>& stats_scale() const { return stats_scale_; }

 private:
  GroupFeatures() = default;

  std::vector<int64_t> num_groups_;
  int attribute_level_ = 1;
  int sequence_level_ = 1;
  double global_ctr_ = 0;
  double global_cvr_ = 0;
  double smoothing_ = 20;
  std::vector<std::vector<int64_t>> level_counts_;  // per level [rows, 3]
  absl::flat_hash_map<int64_t, OwnCounts> own_counts_;
  std::vector<float> stats_mean_, stats_scale_;
  // Concatenated sequences of the groups at sequence_level; rows' spans point into them.
  std::vector<int64_t> seq_items_;
  std::vector<int64_t> seq_categories_;
  std::vector<GroupRow> rows_;
  GroupRow no_group_;
  absl::flat_hash_map<int64_t, int32_t> user_row_;  // user id -> index into rows_
};

}  // namespace choir::worker

#endif  // CHOIR_WORKER_GROUP_FEATURES_H_
