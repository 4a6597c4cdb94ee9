#include "data/activity.h"

#include <functional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "data/dataset.h"
#include "data/shard.h"

namespace choir::data {

const char* BucketName(Bucket bucket) {
  switch (bucket) {
    case Bucket::kLow:
      return "low";
    case Bucket::kMid:
      return "mid";
    case Bucket::kHigh:
      return "high";
    case Bucket::kNew:
      return "new";
  }
  return "?";
}

Bucket ActivityIndex::Of(int64_t user) const {
  auto it = purchases_.find(user);
  if (it == purchases_.end()) return Bucket::kNew;
  if (it->second <= config_.low_max_purchases()) return Bucket::kLow;
  if (it->second >= config_.high_min_purchases()) return Bucket::kHigh;
  return Bucket::kMid;
}

int64_t ActivityIndex::Purchases(int64_t user) const {
  auto it = purchases_.find(user);
  return it == purchases_.end() ? -1 : it->second;
}

namespace {

absl::StatusOr<int> RequireRole(const RowBlock& block, const std::string& file, FieldRole role,
                                absl::string_view what) {
  const int i = block.RoleIndex(role);
  if (i < 0) {
    return absl::FailedPreconditionError(absl::StrCat(file, ": schema has no ", what, " field"));
  }
  return i;
}

// Calls fn(file, block) for every block of every file, so errors can name the file.
absl::Status ForEachFileBlock(
    FileSystem* fs, const std::vector<std::string>& files, ErrorCounter* errors,
    const std::function<absl::Status(const std::string&, const RowBlock&)>& fn) {
  for (const std::string& file : files) {
    RETURN_IF_ERROR(ForEachBlock(fs, {file}, errors,
                                 [&](const RowBlock& block) { return fn(file, block); }));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ActivityIndex> BuildActivityIndex(FileSystem* fs, const std::string& dir,
                                                 const DatasetManifest& manifest,
                                                 const ActivityBuckets& config,
                                                 ErrorCounter* errors) {
  absl::StatusOr<SplitInfo> behaviors = FindSplit(manifest, "behaviors");
  ASSIGN_OR_RETURN(SplitInfo train, FindSplit(manifest, "train"));
  const int64_t split = manifest.split_time();
  const int64_t window_start = split - static_cast<int64_t>(config.window_days()) * 86400;
  ActivityIndex index(config, behaviors.ok() ? "behaviors" : "train conversions");

  // Presence in the train split makes a user known; without a log, its conversions count.
  const std::vector<std::string> train_files = SplitPaths(dir, train);
  RETURN_IF_ERROR(ForEachFileBlock(fs, train_files, errors, [&](const std::string& where, const RowBlock& b) -> absl::Status {
    ASSIGN_OR_RETURN(int user_col, RequireRole(b, where, USER_ID, "user id"));
    const int conv_col = b.RoleIndex(LABEL_CONVERSION);
    for (size_t r = 0; r < b.num_rows(); ++r) {
      // Labels are 0/1 in any dataset Choir wrote; count a conversion whatever its value.
      const int64_t purchases = (!behaviors.ok() && conv_col >= 0 && b.Int(conv_col, r) != 0) ? 1 : 0;
      index.AddKnownUser(b.Int(user_col, r), purchases);
    }
    return absl::OkStatus();
  }));
  if (behaviors.ok()) {
    const std::vector<std::string> files = SplitPaths(dir, *behaviors);
    RETURN_IF_ERROR(ForEachFileBlock(fs, files, errors, [&](const std::string& where, const RowBlock& b) -> absl::Status {
      ASSIGN_OR_RETURN(int user_col, RequireRole(b, where, USER_ID, "user id"));
      ASSIGN_OR_RETURN(int ts_col, RequireRole(b, where, TIMESTAMP, "timestamp"));
      const int type_col = b.FieldIndex("type");
      if (type_col < 0) return absl::FailedPreconditionError(absl::StrCat(where, ": no 'type' field"));
      for (size_t r = 0; r < b.num_rows(); ++r) {
        const int64_t ts = b.Int(ts_col, r);
        if (ts >= split) continue;  // after the split: not training-period information
        const bool purchase = b.Int(type_col, r) == 2 && ts >= window_start;
        index.AddKnownUser(b.Int(user_col, r), purchase ? 1 : 0);
      }
      return absl::OkStatus();
    }));
  }
  return index;
}

}  // namespace choir::data
